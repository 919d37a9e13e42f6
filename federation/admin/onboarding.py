"""Onboarding a partner's IdP: look at it before trusting it, test it once it is connected.

Specs: OpenID Connect Discovery 1.0 (§3 provider metadata, §4.3 the issuer must be the one
the document was fetched for); RFC 7517 (JWK ``use``/``alg``); RFC 7636 (PKCE S256);
SAML 2.0 Metadata (§2.3.2 EntityDescriptor and ``validUntil``, §2.4.3 IDPSSODescriptor,
§2.4.1.1 KeyDescriptor, §3 signed metadata); RFC 5280 (certificate validity).

* :func:`inspect_oidc` reads a discovery document (issuer URL or the full
  ``/.well-known/openid-configuration`` URL) and its JWKS;
* :func:`inspect_saml` reads SAML metadata (URL or XML) through the same hardened parse as
  the SAML connector, and checks a metadata signature with xmlsec1 (pysaml2's backend);
* :func:`test_connection` runs the same checks for a connection the registry holds and
  adds the link of the test login (``/admin/test-login/{connection_id}``, served by
  ``federation.web.upstream``).

Each returns a :class:`Report`: one :class:`Check` per finding (``ok``, ``warning``,
``error``, with a sentence an admin can act on) and, from the inspections, suggested
connection settings already validated by their pydantic model. Bad input — an unreachable
URL, malformed metadata, a wrong issuer — is an error check, never an exception.
Nothing here imports starlette; docs/onboarding.md lists every check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ValidationError

from connectors.keycloak import oidc_settings as keycloak_oidc_settings
from connectors.registry import ConnectorContext
from connectors.saml.guard import (
    DS,
    MD,
    UnsafeMessage,
    parse_document,
    verify_metadata_signature,
)
from connectors.saml.keys import cert_info, der_from_base64
from connectors.saml.metadata import MAX_METADATA_BYTES, IdpMetadata, parse_idp_metadata
from federation import jose
from federation.admin.service import Actor, Forbidden
from federation.admin.tokens import Role
from federation.errors import NotFound
from federation.settings import (
    ConnectionSettings,
    KeycloakConnectionSettings,
    MockConnectionSettings,
    OidcConnectionSettings,
    OtpConnectionSettings,
    SamlConnectionSettings,
)

if TYPE_CHECKING:
    from federation.hub import Hub

Status = Literal["ok", "warning", "error"]
WELL_KNOWN = "/.well-known/openid-configuration"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TIMEOUT_SECONDS = 10.0
MAX_JSON_BYTES = 1024 * 1024
CERT_WARNING_DAYS = 30
# What Isthmus accepts for ID tokens: the allow-list of OidcConnectionSettings.algorithms.
ALLOWED_ALGORITHMS: tuple[str, ...] = get_args(
    get_args(OidcConnectionSettings.model_fields["algorithms"].annotation)[0]
)
_STRENGTH = {"ok": 0, "warning": 1, "error": 2}


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: ``name`` is stable (docs/onboarding.md), ``detail`` is for people."""

    name: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    # Suggested connection settings (inspections) — valid for their pydantic model.
    connection: dict[str, Any] | None = None
    test_login_url: str | None = None

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return all(c.status != "error" for c in self.checks)

    @property
    def status(self) -> Status:
        """The worst status of the checks."""
        worst: Status = "ok"
        for check in self.checks:
            if _STRENGTH[check.status] > _STRENGTH[worst]:
                worst = check.status
        return worst

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "checks": [c.to_dict() for c in self.checks],
            "connection": self.connection,
            "test_login_url": self.test_login_url,
        }


# ================================================================== OIDC


async def inspect_oidc(
    discovery_url: str,
    context: ConnectorContext,
    *,
    connection_id: str,
    client_id: str = "",
    client_secret: str | None = None,
    timeout_seconds: float = TIMEOUT_SECONDS,
) -> Report:
    """Read an OIDC IdP's discovery document and JWKS; suggest its connection settings."""
    report = Report()
    urls = _discovery_urls(discovery_url)
    if isinstance(urls, str):
        report.add("url", "error", urls)
        return report
    issuer, document_url = urls
    _transport_check(report, "https", issuer, "the IdP")
    async with context.http_client(timeout_seconds) as http:
        document = await _fetch_json(report, http, document_url, "discovery", timeout_seconds)
        if document is None:
            return report
        report.add("discovery", "ok", f"discovery document read from {document_url}")
        found_issuer = _issuer_check(report, document, issuer)
        endpoints = _endpoint_checks(report, document, found_issuer or issuer)
        _response_type_check(report, document)
        _pkce_check(report, document)
        keys: list[_JwkInfo] | None = None
        if "jwks_uri" in endpoints:
            jwks = await _fetch_json(report, http, endpoints["jwks_uri"], "jwks", timeout_seconds)
            keys = _jwks_checks(report, jwks, endpoints["jwks_uri"]) if jwks is not None else None
    algorithms = _algorithm_check(report, document, keys)
    auth_method = _token_auth_check(report, document, client_secret)
    _client_check(report, client_id, context, connection_id)
    if found_issuer is not None and algorithms:
        report.connection = _validated(
            report,
            OidcConnectionSettings,
            {
                "type": "oidc",
                "id": connection_id,
                "issuer": found_issuer,
                "client_id": client_id,
                "client_secret": client_secret,
                "token_endpoint_auth_method": auth_method,
                "algorithms": algorithms,
            },
        )
    return report


def _discovery_urls(url: str) -> tuple[str, str] | str:
    """(issuer, discovery document URL), or why ``url`` cannot be either."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an absolute http(s) URL"
    if parts.username or parts.password:
        return "the URL must not carry a user name or password"
    if parts.query or parts.fragment:
        return "an issuer URL has no query and no fragment (OIDC Discovery §3)"
    if parts.path.rstrip("/").endswith(WELL_KNOWN):
        issuer = text.rstrip("/")[: -len(WELL_KNOWN)]
        return issuer, issuer + WELL_KNOWN
    return text, text.rstrip("/") + WELL_KNOWN


def _is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in LOCAL_HOSTS


def _transport_check(report: Report, name: str, url: str, what: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme == "https":
        report.add(name, "ok", f"{what} is reached over https")
    elif _is_local(url):
        report.add(name, "ok", f"plain http to {what}, allowed on this machine only (loopback)")
    else:
        report.add(
            name,
            "error",
            f"{what} must be reached over https: {url} is plain http on another machine, "
            "where anyone on the path can read or change what it says",
        )


async def _fetch(
    http: httpx.AsyncClient, url: str, what: str, accept: str, limit: int, timeout_seconds: float
) -> httpx.Response | str:
    """The 200 answer at ``url`` (body capped at ``limit``), or why there is none."""
    try:
        async with asyncio.timeout(timeout_seconds):
            async with http.stream("GET", url, headers={"Accept": accept}) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > limit:
                        return f"the {what} at {url} is larger than {limit // 1024} KiB"
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        return _network_problem(exc, url, what, timeout_seconds)
    if response.status_code in (301, 302, 303, 307, 308):
        target = response.headers.get("location", "?")
        return f"{url} redirects (HTTP {response.status_code}) to {target}: give that URL instead"
    if response.status_code != 200:
        return f"the {what} at {url} answered HTTP {response.status_code}, not 200"
    return httpx.Response(200, headers=response.headers, content=bytes(body))


def _network_problem(exc: BaseException, url: str, what: str, timeout_seconds: float) -> str:
    """A sentence for a failed request: DNS, refused, TLS, timeout or else."""
    host = urlsplit(url).hostname or url
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return f"the {what} at {url} did not answer within {timeout_seconds:g} s (timeout)"
    text = " ".join(str(e) for e in _causes(exc)).lower()
    if any(isinstance(e, ssl.SSLError) for e in _causes(exc)) or "certificate" in text:
        return f"TLS with {host} failed: {_first_line(exc)} (is its certificate trusted here?)"
    dns = ("name or service not known", "nodename nor servname", "name resolution", "getaddrinfo")
    if any(marker in text for marker in dns) or "no address associated" in text:
        return f"the host name {host!r} does not resolve (DNS): check the URL"
    if "connection refused" in text or "errno 111" in text:
        return f"{host}:{port} refused the connection: nothing listens there"
    if "network is unreachable" in text or "no route to host" in text:
        return f"{host}:{port} is not reachable from the hub (network unreachable)"
    return f"the {what} at {url} is unreachable: {type(exc).__name__}: {_first_line(exc)}"


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


async def _fetch_json(
    report: Report, http: httpx.AsyncClient, url: str, name: str, timeout_seconds: float
) -> dict[str, Any] | None:
    what = "discovery document" if name == "discovery" else "JWKS"
    response = await _fetch(http, url, what, "application/json", MAX_JSON_BYTES, timeout_seconds)
    if isinstance(response, str):
        report.add(name, "error", response)
        return None
    try:
        document = json.loads(response.content)
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        report.add(name, "error", f"the {what} at {url} is not JSON ({kind})")
        return None
    if not isinstance(document, dict):
        report.add(name, "error", f"the {what} at {url} is JSON but not an object")
        return None
    return document


def _issuer_check(report: Report, document: Mapping[str, Any], expected: str) -> str | None:
    """The document's issuer when it is the expected one (a trailing slash aside)."""
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        report.add("issuer", "error", "the discovery document names no issuer")
        return None
    if issuer.rstrip("/") != expected.rstrip("/"):
        report.add(
            "issuer",
            "error",
            f"the discovery document names issuer {issuer!r}, not {expected!r} "
            "(OIDC Discovery §4.3): the URL is not this IdP's issuer, or a proxy in front "
            "of it rewrites its address",
        )
        return None
    report.add("issuer", "ok", f"issuer {issuer}")
    return issuer


REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")


def _endpoint_checks(report: Report, document: Mapping[str, Any], issuer: str) -> dict[str, str]:
    """The endpoints that are absolute URLs (https unless the issuer is local)."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for name in (*REQUIRED_ENDPOINTS, "userinfo_endpoint"):
        value = document.get(name)
        if value is None and name == "userinfo_endpoint":
            continue
        url = value if isinstance(value, str) else ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"{name} is missing or not an absolute URL")
        elif parts.scheme == "http" and not (_is_local(url) and _is_local(issuer)):
            problems.append(f"{name} {url} is plain http")
        else:
            found[name] = url
    if problems:
        report.add("endpoints", "error", "; ".join(problems))
    else:
        userinfo = "with" if "userinfo_endpoint" in found else "without"
        report.add(
            "endpoints", "ok", f"authorization, token and JWKS endpoints, {userinfo} userinfo"
        )
    return found


def _strings(value: Any) -> list[str] | None:
    """A list of strings from the document, or None when it is absent or malformed."""
    if not isinstance(value, list):
        return None
    return [v for v in value if isinstance(v, str)]


def _response_type_check(report: Report, document: Mapping[str, Any]) -> None:
    types = _strings(document.get("response_types_supported"))
    if types is None:
        report.add(
            "response_type",
            "warning",
            "response_types_supported is not advertised; the hub uses the code flow",
        )
    elif "code" in types:
        report.add("response_type", "ok", "the authorization code flow is supported")
    else:
        report.add(
            "response_type",
            "error",
            f"the IdP offers response types {types}, not 'code': the hub signs in with the "
            "authorization code flow only",
        )


def _pkce_check(report: Report, document: Mapping[str, Any]) -> None:
    methods = _strings(document.get("code_challenge_methods_supported"))
    if methods is not None and "S256" in methods:
        report.add("pkce", "ok", "PKCE with S256 is supported")
        return
    offered = "not advertised" if methods is None else f"advertised as {methods}"
    report.add(
        "pkce",
        "warning",
        f"PKCE S256 is {offered}: the hub always sends an S256 code challenge; an IdP "
        "without PKCE ignores it, so the code is protected by the client secret only",
    )


@dataclass(frozen=True, slots=True)
class _JwkInfo:
    kid: str | None
    kty: str
    algorithms: frozenset[str]
    labelled: bool  # has both "alg" and "use"


def _jwks_checks(report: Report, jwks: Mapping[str, Any], url: str) -> list[_JwkInfo]:
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        report.add("jwks", "error", f"the JWKS at {url} has no 'keys' list")
        return []
    usable: list[_JwkInfo] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        # The hub's own reading of a key (jose.keys_from_jwks): what it will verify with.
        verified = jose.keys_from_jwks({"keys": [entry]}, ALLOWED_ALGORITHMS)
        if verified:
            usable.append(
                _JwkInfo(
                    entry.get("kid") if isinstance(entry.get("kid"), str) else None,
                    str(entry.get("kty")),
                    verified[0].algorithms,
                    "alg" in entry and "use" in entry,
                )
            )
    if not usable:
        report.add(
            "jwks",
            "error",
            f"the JWKS at {url} holds {len(entries)} key(s), none usable to verify ID tokens "
            f"with {', '.join(ALLOWED_ALGORITHMS)} (RSA, EC or Ed25519 signature keys)",
        )
        return []
    described = ", ".join(
        f"{k.kid or '(no kid)'} {k.kty} [{', '.join(_ordered(k.algorithms))}]" for k in usable
    )
    report.add("jwks", "ok", f"{len(usable)} signing key(s): {described}")
    unlabelled = [k.kid or "(no kid)" for k in usable if not k.labelled]
    if unlabelled:
        report.add(
            "jwks_labels",
            "warning",
            f"key(s) {', '.join(unlabelled)} carry no 'alg' or no 'use': the hub accepts "
            "them for every algorithm their type allows within the connection's allow-list",
        )
    return usable


def _ordered(algorithms: Iterable[str]) -> list[str]:
    wanted = set(algorithms)
    return [a for a in ALLOWED_ALGORITHMS if a in wanted]


def _algorithm_check(
    report: Report, document: Mapping[str, Any], keys: list[_JwkInfo] | None
) -> list[str]:
    """ID-token algorithms: advertised ∩ allowed (∩ what the JWKS keys verify)."""
    advertised = _strings(document.get("id_token_signing_alg_values_supported"))
    from_keys = set().union(*(k.algorithms for k in keys)) if keys else set()
    if advertised is None:
        candidates = _ordered(from_keys)
        source = "not advertised; taken from the JWKS keys"
    else:
        candidates = _ordered(set(advertised))
        source = f"advertised: {', '.join(advertised)}"
        if keys:
            candidates = [a for a in candidates if a in from_keys] or candidates
    if not candidates:
        report.add(
            "algorithms",
            "error",
            f"no ID-token signing algorithm in common ({source}); Isthmus accepts "
            f"{', '.join(ALLOWED_ALGORITHMS)} only (never none or HMAC)",
        )
        return []
    report.add("algorithms", "ok", f"ID tokens accepted with {', '.join(candidates)} ({source})")
    return candidates


def _token_auth_check(
    report: Report, document: Mapping[str, Any], client_secret: str | None
) -> str:
    """The token endpoint authentication the suggested connection uses."""
    methods = _strings(document.get("token_endpoint_auth_methods_supported"))
    if not client_secret:
        report.add(
            "token_auth",
            "ok" if methods is None or "none" in methods else "warning",
            "no client secret: a public client (PKCE only)"
            + ("" if methods is None or "none" in methods else f"; the IdP advertises {methods}"),
        )
        return "none"
    if methods is None:  # OIDC Discovery §3: the default is client_secret_basic
        report.add("token_auth", "ok", "client_secret_basic (the discovery default)")
        return "client_secret_basic"
    for method in ("client_secret_basic", "client_secret_post"):
        if method in methods:
            report.add("token_auth", "ok", method)
            return method
    report.add(
        "token_auth",
        "warning",
        f"the IdP advertises {methods} at its token endpoint; the hub authenticates with a "
        "client secret (client_secret_basic or client_secret_post) only",
    )
    return "client_secret_basic"


def _client_check(
    report: Report, client_id: str, context: ConnectorContext, connection_id: str
) -> None:
    redirect = f"{context.hub_base_url.rstrip('/')}/callback/{connection_id}"
    if client_id:
        report.add("client", "ok", f"client {client_id}; its redirect URI at the IdP: {redirect}")
    else:
        report.add(
            "client",
            "warning",
            f"no client_id yet: register the hub at the IdP with redirect URI {redirect}, "
            "then set client_id (and the secret)",
        )


def _validated(
    report: Report, model: type[BaseModel], values: dict[str, Any]
) -> dict[str, Any] | None:
    """``values`` as the model accepts them (JSON types), or None with an error check."""
    try:
        settings = model(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        report.add("connection", "error", f"the suggested connection is not valid: {problems}")
        return None
    report.add("connection", "ok", "suggested connection settings are valid")
    data: dict[str, Any] = settings.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    return data


# ================================================================== SAML


async def inspect_saml(
    context: ConnectorContext,
    *,
    connection_id: str,
    metadata_url: str | None = None,
    metadata_xml: str | None = None,
    signing_cert_pem: str | None = None,
    idp_entity_id: str | None = None,
    timeout_seconds: float = TIMEOUT_SECONDS,
    metadata_signing_certs: Sequence[str] = (),
    require_signed_metadata: bool | None = None,
) -> Report:
    """Read a SAML IdP's metadata (URL or XML); suggest its connection settings.

    ``signing_cert_pem``: the certificate the metadata must be signed with (from the
    partner or the federation operator); ``idp_entity_id`` picks one IdP of an aggregate.
    ``metadata_signing_certs`` / ``require_signed_metadata``: a configured connection's
    (as :class:`SamlConnectionSettings` reads them: with certificates, signed by default).
    A signature verified with the given certificate puts it in the suggested connection.
    """
    report = Report()
    if (metadata_url is None) == (metadata_xml is None):
        report.add("source", "error", "give the metadata URL or the metadata XML (one of them)")
        return report
    given = [*metadata_signing_certs, *([signing_cert_pem] if signing_cert_pem else [])]
    trusted = [pem for pem in (_trusted_certificate(report, text) for text in given) if pem]
    required = bool(trusted) if require_signed_metadata is None else require_signed_metadata
    if metadata_url is not None:
        data = await _download_metadata(report, context, metadata_url, timeout_seconds)
        if data is None:
            return report
    else:
        assert metadata_xml is not None
        data = metadata_xml.encode()
        report.add("source", "ok", f"metadata uploaded ({len(data)} bytes)")
    now = dt.datetime.fromtimestamp(context.wall_clock(), dt.UTC)
    trust = _Trust(tuple(trusted), required)
    checks, idp = await asyncio.to_thread(
        _saml_checks, data, trust, metadata_url, idp_entity_id, connection_id, now
    )
    report.checks.extend(checks)
    if idp is not None:
        values: dict[str, Any] = {"type": "saml", "id": connection_id}
        if metadata_url is not None:
            values["idp_metadata_url"] = metadata_url
        else:
            values["idp_metadata_xml"] = data.decode("utf-8")
        if idp_entity_id is not None:
            values["idp_entity_id"] = idp_entity_id
        if idp.signature_verified:
            values["metadata_signing_certs"] = list(trusted)
        report.connection = _validated(report, SamlConnectionSettings, values)
    return report


@dataclass(frozen=True)
class _Trust:
    certs_pem: tuple[str, ...]
    required: bool


def _trusted_certificate(report: Report, pem: str | None) -> str | None:
    if pem is None or not pem.strip():
        return None
    try:
        cert = x509.load_pem_x509_certificate(pem.strip().encode())
    except ValueError:
        report.add("trusted_certificate", "error", "the signing certificate given is not PEM")
        return None
    subject = cert.subject.rfc4514_string()
    report.add("trusted_certificate", "ok", f"metadata signature checked against {subject}")
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def _download_metadata(
    report: Report, context: ConnectorContext, url: str, timeout_seconds: float
) -> bytes | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        report.add("source", "error", f"{url!r} is not an absolute http(s) URL")
        return None
    async with context.http_client(timeout_seconds) as http:
        accept = "application/samlmetadata+xml, application/xml;q=0.9, */*;q=0.1"
        response = await _fetch(http, url, "metadata", accept, MAX_METADATA_BYTES, timeout_seconds)
    if isinstance(response, str):
        report.add("source", "error", response)
        return None
    report.add("source", "ok", f"metadata downloaded from {url} ({len(response.content)} bytes)")
    return response.content


def _saml_checks(
    data: bytes,
    trust: _Trust,
    url: str | None,
    entity_id: str | None,
    connection_id: str,
    now: dt.datetime,
) -> tuple[list[Check], IdpMetadata | None]:
    """Everything that reads the XML (blocking: pysaml2, xmlsec1): in a worker thread."""
    report = Report()
    try:
        root = parse_document(data)
    except UnsafeMessage as exc:
        report.add("xml", "error", f"the metadata is refused: {exc}{_hint(str(exc))}")
        return report.checks, None
    report.add("xml", "ok", "well-formed XML, no DTD, entities, comments or instructions")
    if root.tag not in (f"{{{MD}}}EntityDescriptor", f"{{{MD}}}EntitiesDescriptor"):
        report.add(
            "descriptor",
            "error",
            f"the root element is {_local(root.tag)!r}, not a SAML md:EntityDescriptor: "
            "is this the IdP's metadata (and not an HTML page or the SP's)?",
        )
        return report.checks, None
    if next(root.iter(f"{{{MD}}}IDPSSODescriptor"), None) is None:
        report.add(
            "descriptor",
            "error",
            "the metadata has no IDPSSODescriptor: it describes no identity provider",
        )
        return report.checks, None
    expired = not _valid_until_check(report, root, now)
    verified = _signature_check(report, data, root, trust, url)
    if expired:
        return report.checks, None
    try:
        idp = parse_idp_metadata(data, entity_id, now=now.timestamp())
        idp = replace(idp, signature_verified=verified)
    except ValueError as exc:
        report.add("descriptor", "error", str(exc))
        return report.checks, None
    report.add("entity_id", "ok", f"entityID {idp.entity_id}")
    _sso_checks(report, idp)
    _certificate_checks(report, idp, connection_id, now)
    return report.checks, idp


def _hint(problem: str) -> str:
    if "DTDForbidden" in problem:
        return " (a <!DOCTYPE> declaration: DTDs are never read; is this an HTML page?)"
    if "Entities" in problem or "External" in problem:
        return " (entity declarations or external references are never read)"
    return ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _valid_until_check(report: Report, root: Element, now: dt.datetime) -> bool:
    """False when the document's validUntil has passed (or is not a date)."""
    value = root.get("validUntil")
    if value is None:
        return True
    try:
        until = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        report.add("valid_until", "error", f"validUntil {value!r} is not a date")
        return False
    until = until if until.tzinfo else until.replace(tzinfo=dt.UTC)
    if until <= now:
        report.add("valid_until", "error", f"the metadata expired at {value} (validUntil)")
        return False
    report.add("valid_until", "ok", f"valid until {value}")
    return True


def _signature_check(
    report: Report, data: bytes, root: Element, trust: _Trust, url: str | None
) -> bool:
    """The document's signature, as the connector will judge it (same function, same
    certificates); True when it verifies."""
    found = verify_metadata_signature(data, trust.certs_pem, root=root)
    check = "metadata_signature"
    if found.verified:
        report.add(check, "ok", "the metadata signature verifies with the certificate given")
    elif found.reason == "unsigned":
        nested = next(root.iter(f"{{{DS}}}Signature"), None) is not None
        if trust.required:
            report.add(
                check,
                "error",
                f"{found.problem}, but signed metadata is required (a trusted signing "
                "certificate is configured): the connection would refuse it",
            )
        elif nested:
            report.add(
                check,
                "warning",
                "only an inner element is signed, not the whole document: not checked",
            )
        elif url is not None and urlsplit(url).scheme == "http":
            report.add(
                check,
                "warning",
                "the metadata is not signed and came over plain http: anyone on the path "
                "could have replaced the IdP's keys; fetch it over https or have it signed",
            )
        else:
            how = "over https" if url is not None else "uploaded by an admin"
            report.add(check, "ok", f"the metadata is not signed ({how})")
    elif found.reason == "untrusted":
        report.add(check, "warning", str(found.problem))
    elif found.reason == "no_xmlsec1":
        report.add(check, "error", "xmlsec1 is not installed here: unchecked")
    elif found.reason == "mismatch":
        report.add(
            check,
            "error",
            "the metadata signature does NOT verify with the certificate given: the document "
            "was changed after signing, or signed with another key",
        )
    else:
        report.add(check, "error", f"metadata: {found.problem}")
    return found.verified


def _sso_checks(report: Report, idp: IdpMetadata) -> None:
    bindings = ", ".join(f"{_local_binding(b)} {url}" for b, url in idp.sso.items())
    signed = " (it wants signed AuthnRequests)" if idp.want_authn_requests_signed else ""
    report.add("sso", "ok", f"single sign-on: {bindings}{signed}")
    if idp.slo:
        slo = ", ".join(f"{_local_binding(b)} {url}" for b, url in idp.slo.items())
        report.add("slo", "ok", f"single logout: {slo}")
    else:
        report.add(
            "slo",
            "warning",
            "no single logout endpoint: signing out of the hub leaves the IdP session open",
        )


def _local_binding(binding: str) -> str:
    return binding.rsplit(":", 1)[-1]


def _certificate_checks(
    report: Report, idp: IdpMetadata, connection_id: str, now: dt.datetime
) -> None:
    for text in idp.signing_certs:
        try:
            info = cert_info(connection_id, "IdP", der_from_base64(text))
        except ValueError:
            report.add("signing_certificate", "error", "a signing certificate is not readable")
            continue
        name = f"{info.subject} (SHA-256 {info.fingerprint_sha256[:23]}…)"
        until = info.not_after.strftime("%Y-%m-%d %H:%M UTC")
        if info.not_after <= now:
            report.add("signing_certificate", "error", f"{name} expired on {until}")
        elif info.expires_within(CERT_WARNING_DAYS, now):
            days = (info.not_after - now).days
            report.add(
                "signing_certificate",
                "warning",
                f"{name} expires on {until}, in {days} day(s): ask the partner for the next one",
            )
        else:
            report.add("signing_certificate", "ok", f"{name} valid until {until}")


# ================================================================== existing connections


async def test_connection(hub: Hub, partner_id: str, connection_id: str) -> Report:
    """The inspection of a connection the registry holds, its partner's readiness and the
    test login link. Raises NotFound when the partner has no such connection."""
    partner = hub.registry.partner(partner_id)
    connection = _connection_of(partner.settings.connections, connection_id) if partner else None
    if partner is None or connection is None:
        raise NotFound(f"partner {partner_id!r} has no connection {connection_id!r}")
    if isinstance(connection, KeycloakConnectionSettings):
        # A Keycloak realm is an OIDC issuer: the same checks, on the OIDC settings the
        # connector derives from it.
        connection = keycloak_oidc_settings(connection)
    if isinstance(connection, OidcConnectionSettings):
        report = await inspect_oidc(
            connection.issuer,
            hub.context,
            connection_id=connection.id,
            client_id=connection.client_id,
            client_secret=connection.client_secret,
            timeout_seconds=connection.timeout_seconds,
        )
        _configured_oidc_checks(report, connection)
    elif isinstance(connection, SamlConnectionSettings):
        report = await _test_saml(hub, connection)
    elif isinstance(connection, OtpConnectionSettings):
        report = Report()
        smtp = hub.settings.smtp
        report.add("otp", "ok", f"one-time codes by email through {smtp.host}:{smtp.port}")
    else:
        assert isinstance(connection, MockConnectionSettings)
        report = Report()
        report.add(
            "mock",
            "ok",
            f"mock connection served by the hub itself ({len(connection.users)} users)",
        )
    report.connection = None  # it exists: the inspection's suggestion is not the point here
    report.checks = [c for c in report.checks if c.name != "connection"]
    _partner_checks(report, hub, partner_id)
    report.test_login_url = f"{hub.issuer}/admin/test-login/{connection_id}"
    return report


def _connection_of(
    connections: Iterable[ConnectionSettings], connection_id: str
) -> ConnectionSettings | None:
    return next((c for c in connections if c.id == connection_id), None)


async def _test_saml(hub: Hub, connection: SamlConnectionSettings) -> Report:
    xml = connection.idp_metadata_xml
    if connection.idp_metadata_file is not None:
        try:
            xml = await asyncio.to_thread(Path(connection.idp_metadata_file).read_text, "utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            report = Report()
            report.add("source", "error", f"the metadata file is unreadable: {exc}")
            return report
    return await inspect_saml(
        hub.context,
        connection_id=connection.id,
        metadata_url=connection.idp_metadata_url,
        metadata_xml=xml if connection.idp_metadata_url is None else None,
        idp_entity_id=connection.idp_entity_id,
        metadata_signing_certs=connection.metadata_signing_certs,
        require_signed_metadata=connection.require_signed_metadata,
    )


def _configured_oidc_checks(report: Report, connection: OidcConnectionSettings) -> None:
    """What the IdP says now against what the connection holds: the connector wants the
    exact issuer, and ID tokens signed with an algorithm it allows."""
    suggested = report.connection
    if suggested is None:
        return
    if suggested["issuer"] != connection.issuer:
        report.add(
            "configured_issuer",
            "error",
            f"the connection's issuer is {connection.issuer!r}, the IdP's is exactly "
            f"{suggested['issuer']!r}: every login would fail the issuer check",
        )
    offered = set(suggested["algorithms"])
    common = _ordered(offered & set(connection.algorithms))
    if common:
        report.add("configured_algorithms", "ok", f"the connection accepts {', '.join(common)}")
    else:
        report.add(
            "configured_algorithms",
            "error",
            f"the connection accepts {', '.join(connection.algorithms)} but the IdP signs "
            f"with {', '.join(_ordered(offered))}: every login would fail",
        )


def _partner_checks(report: Report, hub: Hub, partner_id: str) -> None:
    partner = hub.registry.partner(partner_id)
    assert partner is not None
    now = dt.datetime.fromtimestamp(hub.clock(), dt.UTC)
    status = partner.settings.status.value
    if partner.may_sign_in(now):
        report.add("partner", "ok", f"partner {partner_id} is {status}: its people may sign in")
    else:
        report.add(
            "partner",
            "warning",
            f"partner {partner_id} is {status} (or outside its contract window): only test "
            "logins go through until it is active",
        )
    if partner.settings.domains:
        report.add("domains", "ok", f"verified domains: {', '.join(partner.settings.domains)}")
    else:
        report.add(
            "domains",
            "warning",
            "no verified domain yet: no login is routed to this partner and every email "
            "its IdP asserts is dropped (verify a domain by DNS TXT)",
        )


# ================================================================== who may test


def require_tester(actor: Actor, partner_id: str) -> None:
    """An admin, or the partner admin of ``partner_id``, may run a test login."""
    if actor.role is Role.admin:
        return
    if actor.role is Role.partner_admin:
        if actor.partner_id == partner_id:
            return
        # Another partner's connection: not even its existence is told.
        raise NotFound(f"{actor.name} may not test connections of partner {partner_id}")
    raise Forbidden(f"{actor.name} ({actor.role.value}) may not run test logins")

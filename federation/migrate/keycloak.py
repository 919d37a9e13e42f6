"""A Keycloak realm's Organizations and identity providers as Isthmus partners.

``isthmus keycloak import`` (:mod:`federation.migrate.cli`) runs three steps:

1. :func:`read_realm` reads the realm through the admin API with python-keycloak, signed
   in as a service-account client (client credentials grant; never a user's password):
   the realm (``organizationsEnabled``), every identity provider and its mappers, every
   organization (its attributes and domains) and the identity providers linked to it.
   Anything it cannot read is a :class:`KeycloakImportError` naming the step, and nothing
   is written.
2. :func:`build_import` — pure, no I/O — turns that :class:`RealmSnapshot` into partner
   documents, one per organization, with one connection per linked identity provider, and
   an :class:`ImportReport`: for each partner and connection what was carried over, what
   was not and why, and what the admin must do. Every document passes
   :func:`~federation.admin.catalog.validate_spec`; one that does not is left out (and
   said so) rather than written.
3. :func:`write_import` writes the documents with
   :func:`~federation.admin.bundle.write_bundle` and the report as ``IMPORT-REPORT.md``.

What is decided, for safety (docs/keycloak.md, "Migrating from Keycloak"):

* every partner is ``invited``: it routes no login until an admin activates it;
* a Keycloak domain marked *verified* is an admin's flag, not a proof: it becomes a
  pending domain with a fresh DNS TXT token, unless ``trust_verified_domains``;
* Keycloak never reveals a client secret: an OIDC connection is written with
  ``client_secret: null``, which ``isthmus apply`` refuses until the admin fills it in;
* the partner kind is the organization's ``isthmus.kind`` attribute, else the default
  (``supplier``).

Running the import again over its own output keeps what the admin or the first run put
there: pending-domain tokens (records already published stay valid) and client secrets
filled in since (for the same client id).
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509

from federation.admin.bundle import BundleError, read_bundle, write_bundle
from federation.admin.catalog import RESERVED_IDS, validate_spec
from federation.admin.documents import Spec
from federation.admin.domains import challenge_name, challenge_value
from federation.errors import IsthmusError
from federation.settings import PartnerKind

if TYPE_CHECKING:
    from keycloak import KeycloakAdmin

T = TypeVar("T")

KIND_ATTRIBUTE = "isthmus.kind"
REPORT_FILE = "IMPORT-REPORT.md"
OIDC_PROVIDERS = frozenset({"oidc", "keycloak-oidc"})
SAML_PROVIDERS = frozenset({"saml"})
# Keycloak's social providers: people's own accounts, not a company's IdP.
SOCIAL_PROVIDERS = frozenset(
    {
        "bitbucket",
        "facebook",
        "github",
        "gitlab",
        "google",
        "instagram",
        "linkedin-openid-connect",
        "microsoft",
        "openshift-v3",
        "openshift-v4",
        "paypal",
        "stackoverflow",
        "twitter",
    }
)
DEFAULT_FIRST_BROKER_FLOW = "first broker login"
SAML_PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
# Keycloak user attributes → the identity fields Isthmus reads from a claim/attribute.
IDENTITY_FIELDS = {
    "email": "email",
    "name": "name",
    "displayName": "name",
    "fullName": "name",
    "groups": "groups",
    "roles": "roles",
}
# Where Keycloak's authorization endpoint sits under the issuer, longest first: a guess
# that the onboarding test confirms (it fetches the issuer's discovery document).
_AUTHORIZE_SUFFIXES = (
    ("/protocol/openid-connect/auth", ""),  # Keycloak
    ("/oauth2/v2.0/authorize", "/v2.0"),  # Microsoft Entra ID
    ("/oauth2/v1/authorize", ""),  # Okta (org authorization server)
    ("/v1/authorize", ""),  # Okta (custom authorization server)
    ("/connect/authorize", ""),  # IdentityServer / Duende
    ("/oauth2/authorize", ""),
    ("/authorize", ""),
    ("/auth", ""),  # node oidc-provider
)
_DISCOVERY = "/.well-known/openid-configuration"


class KeycloakImportError(IsthmusError):
    """The realm could not be read (or the output directory used): nothing was written."""

    error = "keycloak_import_failed"
    status = 502
    public_message = "The Keycloak realm could not be imported."


# --- what was read --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mapper:
    name: str
    type: str
    config: Mapping[str, str]

    @classmethod
    def from_api(cls, rep: Mapping[str, Any]) -> Mapper:
        return cls(
            name=str(rep.get("name") or rep.get("id") or "?"),
            type=str(rep.get("identityProviderMapper") or "?"),
            config=_strings(rep.get("config")),
        )


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    alias: str
    provider_id: str
    enabled: bool
    display_name: str | None
    trust_email: bool
    first_broker_flow: str | None
    post_broker_flow: str | None
    organization_id: str | None
    config: Mapping[str, str]
    mappers: tuple[Mapper, ...] = ()

    @classmethod
    def from_api(
        cls, rep: Mapping[str, Any], mappers: Iterable[Mapping[str, Any]] = ()
    ) -> IdentityProvider:
        parsed = sorted((Mapper.from_api(m) for m in mappers), key=lambda m: (m.name, m.type))
        return cls(
            alias=str(rep["alias"]),
            provider_id=str(rep.get("providerId") or "?"),
            enabled=bool(rep.get("enabled", True)),
            display_name=_text(rep.get("displayName")),
            trust_email=bool(rep.get("trustEmail", False)),
            first_broker_flow=_text(rep.get("firstBrokerLoginFlowAlias")),
            post_broker_flow=_text(rep.get("postBrokerLoginFlowAlias")),
            organization_id=_text(rep.get("organizationId")),
            config=_strings(rep.get("config")),
            mappers=tuple(parsed),
        )

    def flag(self, key: str) -> bool:
        return self.config.get(key, "").strip().lower() == "true"

    def setting(self, key: str) -> str | None:
        return _text(self.config.get(key))


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    alias: str
    name: str
    enabled: bool
    description: str | None
    redirect_url: str | None
    attributes: Mapping[str, tuple[str, ...]]
    domains: tuple[tuple[str, bool], ...]  # (name, verified in Keycloak)
    identity_providers: tuple[str, ...]  # aliases of the linked IdPs

    @classmethod
    def from_api(cls, rep: Mapping[str, Any], linked: Iterable[Mapping[str, Any]]) -> Organization:
        attributes = rep.get("attributes") or {}
        domains = rep.get("domains") or []
        return cls(
            id=str(rep["id"]),
            alias=str(rep.get("alias") or rep.get("name") or rep["id"]),
            name=str(rep.get("name") or rep.get("alias") or rep["id"]),
            enabled=bool(rep.get("enabled", True)),
            description=_text(rep.get("description")),
            redirect_url=_text(rep.get("redirectUrl")),
            attributes={
                str(k): tuple(str(v) for v in (vs if isinstance(vs, list) else [vs]))
                for k, vs in sorted(attributes.items())
            },
            domains=tuple(
                sorted((str(d["name"]), bool(d.get("verified"))) for d in domains if d.get("name"))
            ),
            identity_providers=tuple(sorted(str(i["alias"]) for i in linked if i.get("alias"))),
        )


@dataclass(frozen=True, slots=True)
class RealmSnapshot:
    """Everything the import needs from one realm, read once."""

    server: str
    realm: str
    organizations: tuple[Organization, ...]
    identity_providers: tuple[IdentityProvider, ...]


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in sorted(value.items()) if v is not None}


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


# --- reading the realm ----------------------------------------------------------------------


def connect(
    server: str,
    realm: str,
    client_id: str,
    client_secret: str,
    *,
    auth_realm: str | None = None,
    timeout: int = 30,
) -> KeycloakAdmin:
    """An admin client for ``realm`` signed in as the service account of ``client_id``
    (client credentials grant; the client lives in ``auth_realm``, default ``realm``)."""
    from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

    connection = KeycloakOpenIDConnection(
        server_url=server.rstrip("/"),
        realm_name=realm,
        user_realm_name=auth_realm or realm,
        client_id=client_id,
        client_secret_key=client_secret,
        grant_type="client_credentials",
        timeout=timeout,
    )
    return KeycloakAdmin(connection=connection)


async def close(admin: KeycloakAdmin) -> None:
    """Close the HTTP clients python-keycloak opened (the admin API's and the token's)."""
    connection = admin.connection
    await connection.keycloak_openid.connection.aclose()
    await connection.aclose()


async def read_realm(admin: KeycloakAdmin, server: str, realm: str) -> RealmSnapshot:
    """The realm's organizations and identity providers, or :class:`KeycloakImportError`.

    Reads need the realm-management roles ``view-realm`` and ``view-identity-providers``;
    Keycloak 26.5 also requires ``manage-realm`` to *read* organizations (its
    OrganizationsResource checks it on every request)."""
    client = admin.connection.client_id
    where = f"realm {realm!r} at {server}"
    await _step(
        f"sign in as the service account of client {client!r} in {where}",
        admin.connection.a_get_token(),
        client,
    )
    rep = await _step(f"read {where} (role view-realm)", admin.a_get_realm(realm), client)
    if not rep.get("organizationsEnabled"):
        raise KeycloakImportError(
            f"Organizations are not enabled in {where}: Isthmus partners are imported from "
            "Keycloak Organizations. Enable them (Realm settings, Organizations), link each "
            "partner's identity provider to its organization, and import again."
        )
    idps = []
    listed = await _step(
        f"list the identity providers of {where} (role view-identity-providers)",
        admin.a_get_idps(),
        client,
    )
    for idp in sorted(listed, key=lambda i: str(i.get("alias"))):
        alias = str(idp["alias"])
        mappers = await _step(
            f"read the mappers of identity provider {alias!r}",
            admin.a_get_idp_mappers(alias),
            client,
        )
        idps.append(IdentityProvider.from_api(idp, mappers))
    organizations = []
    found = await _step(
        f"list the organizations of {where} (role manage-realm: Keycloak requires it to read "
        "organizations)",
        admin.a_get_organizations(),
        client,
    )
    for brief in sorted(found, key=lambda o: str(o.get("alias") or o.get("name"))):
        org_id = str(brief["id"])
        label = f"organization {brief.get('alias') or org_id!r}"
        full = await _step(f"read {label}", admin.a_get_organization(org_id), client)
        linked = await _step(
            f"list the identity providers of {label}",
            admin.a_get_organization_idps(org_id),
            client,
        )
        organizations.append(Organization.from_api(full, linked))
    return RealmSnapshot(server.rstrip("/"), realm, tuple(organizations), tuple(idps))


async def _step(what: str, pending: Awaitable[T], client_id: str | None) -> T:
    from keycloak.exceptions import (
        KeycloakAuthenticationError,
        KeycloakConnectionError,
        KeycloakError,
    )

    try:
        return await pending
    except KeycloakConnectionError as exc:
        reason = exc.__cause__ or exc
        raise KeycloakImportError(f"cannot {what}: Keycloak unreachable ({reason})") from None
    except KeycloakAuthenticationError as exc:
        raise KeycloakImportError(
            f"cannot {what}: Keycloak refused the credentials of client {client_id!r} "
            f"(HTTP {exc.response_code}: {_body(exc.response_body)})"
        ) from None
    except KeycloakError as exc:
        code = exc.response_code
        hint = ""
        if code == 403:
            hint = f": the service account of client {client_id!r} lacks the role"
        elif code == 404:
            hint = ": not found (check the server URL and the realm name)"
        raise KeycloakImportError(
            f"cannot {what}: HTTP {code}{hint} ({_body(exc.response_body)})"
        ) from None
    except (TypeError, KeyError) as exc:  # python-keycloak's check of the answer's shape
        raise KeycloakImportError(f"cannot {what}: unexpected answer ({exc})") from None


def _body(body: bytes | None) -> str:
    text = (body or b"").decode("utf-8", errors="replace").strip()
    return " ".join(text.split())[:200] or "no body"


# --- the report -----------------------------------------------------------------------------


@dataclass
class Notes:
    """What was carried over, what was not (and why), what the admin must do."""

    carried: list[str] = field(default_factory=list)
    not_carried: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"carried": self.carried, "not_carried": self.not_carried, "todo": self.todo}


@dataclass
class ConnectionReport:
    id: str
    type: str
    identity_provider: str
    provider_id: str
    notes: Notes = field(default_factory=Notes)
    secret_missing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "identity_provider": self.identity_provider,
            "provider_id": self.provider_id,
            "secret_missing": self.secret_missing,
            **self.notes.to_dict(),
        }


@dataclass
class PartnerReport:
    id: str
    name: str
    kind: str
    organization: str
    organization_id: str
    file: str
    domains: list[str] = field(default_factory=list)
    pending_domains: list[dict[str, str]] = field(default_factory=list)
    connections: list[ConnectionReport] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)
    written: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "organization": self.organization,
            "organization_id": self.organization_id,
            "file": self.file if self.written else None,
            "written": self.written,
            "domains": self.domains,
            "pending_domains": self.pending_domains,
            "connections": [c.to_dict() for c in self.connections],
            **self.notes.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """An identity provider (or organization) that produced no document, and why."""

    what: str  # "identity provider" | "organization"
    name: str
    provider_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "name": self.name,
            "provider_id": self.provider_id,
            "reason": self.reason,
        }


@dataclass
class ImportReport:
    server: str
    realm: str
    organizations: int
    identity_providers: int
    partners: list[PartnerReport] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "realm": self.realm,
            "read": {
                "organizations": self.organizations,
                "identity_providers": self.identity_providers,
            },
            "partners": [p.to_dict() for p in self.partners],
            "skipped": [s.to_dict() for s in self.skipped],
            "todo": self.todo,
        }

    def markdown(self) -> str:
        return "\n".join(_markdown(self)) + "\n"


@dataclass(frozen=True)
class ImportResult:
    documents: tuple[tuple[str, str, Spec], ...]
    report: ImportReport


# --- mapping --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportOptions:
    now: datetime
    new_token: Callable[[], str]
    trust_verified_domains: bool = False
    default_kind: PartnerKind = PartnerKind.supplier


@dataclass(frozen=True)
class PreviousImport:
    """What an earlier run of the import left in the output directory (and the admin
    added to it): pending-domain tokens by (partner, domain), client secrets by connection
    id with the client id they belong to."""

    pending: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def build_import(
    snapshot: RealmSnapshot, options: ImportOptions, previous: PreviousImport | None = None
) -> ImportResult:
    """The partner documents of ``snapshot`` and the report (deterministic: the same
    snapshot, options and previous import give the same documents)."""
    previous = previous or PreviousImport()
    report = ImportReport(
        snapshot.server,
        snapshot.realm,
        len(snapshot.organizations),
        len(snapshot.identity_providers),
    )
    idps = {idp.alias: idp for idp in snapshot.identity_providers}
    owner = _owners(snapshot)
    partner_ids: set[str] = set(RESERVED_IDS["partner"])
    connection_ids: set[str] = set()
    documents: list[tuple[str, str, Spec]] = []
    for org in snapshot.organizations:
        partner_id = _unique(slug(org.alias) or f"org-{slug(org.id)[:8]}", partner_ids)
        spec, partner = _partner(org, partner_id, options, previous)
        connections: list[Spec] = []
        for alias in org.identity_providers:
            idp = idps.get(alias)
            if idp is None:
                partner.notes.not_carried.append(
                    f"identity provider {alias!r} is linked but could not be read"
                )
                continue
            built = _connection(idp, partner_id, connection_ids, previous, report, partner)
            if built is not None:
                connections.append(built)
        if connections:
            spec["connections"] = connections
        else:
            partner.notes.todo.append(
                "add a connection: no identity provider of this organization could be "
                "carried over (docs/onboarding.md)"
            )
        _todo_partner(partner)
        model, problems = validate_spec("partner", partner_id, spec)
        if model is None:
            partner.written = False
            partner.notes.not_carried += [f"left out, invalid: {p}" for p in problems]
            report.skipped.append(
                Skipped("organization", org.alias, None, "its partner document is invalid")
            )
        else:
            documents.append(("partner", partner_id, spec))
        report.partners.append(partner)
    for idp in snapshot.identity_providers:
        if idp.alias not in owner:
            report.skipped.append(
                Skipped("identity provider", idp.alias, idp.provider_id, _unlinked(idp))
            )
    report.todo = _todo_global(report)
    return ImportResult(tuple(documents), report)


def _owners(snapshot: RealmSnapshot) -> dict[str, str]:
    """IdP alias → the organization it is linked to (the organization's list first, the
    IdP's own organizationId otherwise)."""
    owner = {alias: org.id for org in snapshot.organizations for alias in org.identity_providers}
    known = {org.id for org in snapshot.organizations}
    for idp in snapshot.identity_providers:
        if idp.organization_id in known and idp.alias not in owner:
            owner[idp.alias] = idp.organization_id
    return owner


def _unlinked(idp: IdentityProvider) -> str:
    if idp.provider_id in SOCIAL_PROVIDERS:
        return (
            f"social login ({idp.provider_id}), linked to no organization: Isthmus federates "
            "companies' identity providers, not personal accounts"
        )
    return (
        "linked to no organization: an Isthmus connection belongs to a partner. Link it to "
        "its organization in Keycloak and import again, or add it to a partner by hand"
    )


def _partner(
    org: Organization,
    partner_id: str,
    options: ImportOptions,
    previous: PreviousImport,
) -> tuple[Spec, PartnerReport]:
    kind, kind_note, kind_carried = _kind(org, options.default_kind)
    partner = PartnerReport(
        partner_id, org.name, kind.value, org.alias, org.id, f"partners/{partner_id}.yaml"
    )
    notes = partner.notes
    notes.carried.append(f"name {org.name!r} (organization {org.alias!r})")
    (notes.carried if kind_carried else notes.not_carried).append(kind_note)
    spec: Spec = {"id": partner_id, "name": org.name, "kind": kind.value, "status": "invited"}
    notes.carried.append("status invited: no login is routed to it until it is activated")
    if not org.enabled:
        notes.not_carried.append(
            "the organization is disabled in Keycloak: keep the partner invited, or offboard it"
        )
    domains, pending = [], []
    for name, verified in org.domains:
        domain = name.strip().lower().rstrip(".")
        if not _is_domain(domain):
            notes.not_carried.append(f"domain {name!r}: not a domain name Isthmus accepts")
            continue
        if verified and options.trust_verified_domains:
            domains.append(domain)
            notes.carried.append(
                f"domain {domain}: verified in Keycloak (an admin's flag, not a DNS proof), "
                "taken as verified because of --trust-verified-domains"
            )
            continue
        token, requested_at = previous.pending.get(
            (partner_id, domain), (options.new_token(), _iso(options.now))
        )
        pending.append({"name": domain, "token": token, "requested_at": requested_at})
        flag = "verified" if verified else "not verified"
        notes.carried.append(
            f"domain {domain}: pending its DNS TXT proof ({flag} in Keycloak: Keycloak's "
            "flag is an admin's say-so, not a proof)"
        )
        partner.pending_domains.append(
            {
                "domain": domain,
                "record": f'{challenge_name(domain)}.  IN  TXT  "{challenge_value(token)}"',
            }
        )
    if domains:
        spec["domains"] = domains
    if pending:
        spec["pending_domains"] = pending
    partner.domains = domains
    if org.description:
        notes.not_carried.append("description (Isthmus partners have none)")
    if org.redirect_url:
        notes.not_carried.append(f"redirect URL {org.redirect_url} (Isthmus has none per partner)")
    others = sorted(set(org.attributes) - {KIND_ATTRIBUTE})
    if others:
        notes.not_carried.append(f"attributes {', '.join(others)} (Isthmus keeps none)")
    notes.not_carried.append(
        "members: Isthmus keeps no accounts; people sign in through their company's "
        "identity provider"
    )
    return spec, partner


def _kind(org: Organization, default: PartnerKind) -> tuple[PartnerKind, str, bool]:
    """The partner kind, the note saying where it comes from, and whether it was carried."""
    values = org.attributes.get(KIND_ATTRIBUTE, ())
    if not values:
        return default, f"kind {default.value} (the default: no {KIND_ATTRIBUTE} attribute)", True
    value = values[0].strip().lower()
    try:
        kind = PartnerKind(value)
    except ValueError:
        allowed = ", ".join(k.value for k in PartnerKind)
        note = (
            f"{KIND_ATTRIBUTE} {values[0]!r} is not a partner kind ({allowed}): "
            f"kind {default.value} (the default) instead"
        )
        return default, note, False
    return kind, f"kind {kind.value} (attribute {KIND_ATTRIBUTE})", True


def _connection(
    idp: IdentityProvider,
    partner_id: str,
    taken: set[str],
    previous: PreviousImport,
    report: ImportReport,
    partner: PartnerReport,
) -> Spec | None:
    def skip(reason: str) -> None:
        partner.notes.not_carried.append(f"identity provider {idp.alias!r}: {reason}")
        report.skipped.append(Skipped("identity provider", idp.alias, idp.provider_id, reason))

    if not idp.enabled:
        skip("disabled in Keycloak: enable it and import again if it is still in use")
        return None
    if idp.provider_id in SOCIAL_PROVIDERS:
        skip(f"social login ({idp.provider_id}): Isthmus federates companies' IdPs")
        return None
    if idp.provider_id not in OIDC_PROVIDERS | SAML_PROVIDERS:
        skip(f"provider type {idp.provider_id!r} is not supported (only OIDC and SAML)")
        return None
    connection_id = _unique(slug(idp.alias) or f"{partner_id}-idp", taken)
    kind = "oidc" if idp.provider_id in OIDC_PROVIDERS else "saml"
    entry = ConnectionReport(connection_id, kind, idp.alias, idp.provider_id)
    build = _oidc if kind == "oidc" else _saml
    spec = build(idp, connection_id, entry.notes, previous)
    entry.secret_missing = (
        spec is not None and "client_secret" in spec and not spec["client_secret"]
    )
    if spec is None:
        taken.discard(connection_id)
        skip("; ".join(entry.notes.not_carried[-1:]) or "could not be carried over")
        return None
    _common(idp, spec, entry.notes)
    probe: Spec = {"id": partner_id, "name": "-", "kind": "supplier", "connections": [spec]}
    _, problems = validate_spec("partner", partner_id, probe)
    if problems:
        taken.discard(connection_id)
        skip("invalid: " + "; ".join(f"{p.field}: {p.message}" for p in problems))
        return None
    partner.connections.append(entry)
    return spec


def _common(idp: IdentityProvider, spec: Spec, notes: Notes) -> None:
    if idp.display_name:
        spec["display_name"] = idp.display_name
        notes.carried.append(f"display name {idp.display_name!r}")
    flows = [
        f
        for f in (idp.first_broker_flow, idp.post_broker_flow)
        if f and f != DEFAULT_FIRST_BROKER_FLOW
    ]
    if flows:
        notes.not_carried.append(
            f"Keycloak authentication flows {', '.join(repr(f) for f in flows)} ran after its "
            "logins: Isthmus runs none (policies can require MFA through acr/amr)"
        )
    if idp.flag("hideOnLogin") or idp.flag("hideOnLoginPage"):
        notes.not_carried.append("hidden on Keycloak's login page (Isthmus routes by domain)")
    routed = idp.setting("kc.org.domain")
    if routed:
        notes.carried.append(
            f"Keycloak sent users of {routed} here: Isthmus routes the partner's verified "
            "domains to its connections"
        )


def _oidc(
    idp: IdentityProvider, connection_id: str, notes: Notes, previous: PreviousImport
) -> Spec | None:
    issuer, how = _issuer(idp)
    if issuer is None:
        notes.not_carried.append(
            "no issuer: neither issuer, discovery URL nor authorization URL is configured"
        )
        return None
    client_id = idp.setting("clientId")
    if client_id is None:
        notes.not_carried.append("no client id configured")
        return None
    notes.carried.append(f"issuer {issuer} ({how})")
    if how != "issuer":
        notes.todo.append(
            f"confirm the issuer {issuer} (derived from Keycloak's {how}): the onboarding "
            "test fetches its discovery document"
        )
    notes.carried.append(f"client id {client_id!r}")
    spec: Spec = {"type": "oidc", "id": connection_id, "issuer": issuer, "client_id": client_id}
    method = idp.setting("clientAuthMethod") or "client_secret_post"
    if method == "client_secret_basic":
        spec["token_endpoint_auth_method"] = "client_secret_basic"
    elif method == "client_secret_post":
        spec["token_endpoint_auth_method"] = "client_secret_post"
    else:
        spec["token_endpoint_auth_method"] = "client_secret_basic"
        notes.not_carried.append(
            f"client authentication {method} (Isthmus sends a client secret, basic or post)"
        )
        notes.todo.append(
            f"ask the partner to let client {client_id!r} authenticate with a client secret "
            "(client_secret_basic), and set it here"
        )
    notes.carried.append(f"client authentication {spec['token_endpoint_auth_method']}")
    kept = previous.secrets.get(connection_id)
    if kept is not None and kept[0] == client_id:
        spec["client_secret"] = kept[1]
        notes.carried.append("client secret: kept from the previous import's file")
    else:
        spec["client_secret"] = None
        notes.not_carried.append("client secret: Keycloak never reveals it")
        notes.todo.append(
            f"set client_secret of connection {connection_id} (the secret of client "
            f"{client_id!r} at the partner's IdP): `isthmus apply` refuses it while it is null"
        )
    scopes = idp.setting("defaultScope")
    if scopes:
        wanted = ["openid", *[s for s in scopes.replace(",", " ").split() if s != "openid"]]
        spec["scopes"] = list(dict.fromkeys(wanted))
        notes.carried.append(f"scopes {' '.join(spec['scopes'])}")
    if idp.flag("disableUserInfo"):
        spec["use_userinfo"] = False
        notes.carried.append("userinfo not called (disableUserInfo)")
    if not idp.flag("validateSignature"):
        notes.not_carried.append(
            "Keycloak did not validate this IdP's token signatures: Isthmus always does "
            "(RS256 by default, see algorithms)"
        )
    if idp.trust_email:
        notes.not_carried.append(
            "Trust Email: Keycloak took every email of this IdP as verified; Isthmus keeps "
            "one only when the email_verified claim says so (claims.email_verified)"
        )
    claims, mapper_notes = _oidc_mappers(idp.mappers)
    if claims:
        spec["claims"] = claims
    _merge(notes, mapper_notes)
    _plain_http(issuer, "issuer", notes)
    notes.todo.append(
        f"register the hub's redirect URI {{issuer}}/callback/{connection_id} with client "
        f"{client_id!r} at the partner's IdP (Keycloak's broker endpoint is no longer used)"
    )
    return spec


def _issuer(idp: IdentityProvider) -> tuple[str | None, str]:
    issuer = idp.setting("issuer")
    if issuer:
        return issuer, "issuer"  # compared exactly with the ID token's iss: kept as it is
    discovery = idp.setting("metadataDescriptorUrl")
    if discovery and discovery.endswith(_DISCOVERY):
        return discovery[: -len(_DISCOVERY)], "discovery URL"
    authorize = idp.setting("authorizationUrl")
    if authorize:
        parts = urlsplit(authorize)
        path = parts.path.rstrip("/")
        for suffix, replacement in _AUTHORIZE_SUFFIXES:
            if path.endswith(suffix):
                base = f"{parts.scheme}://{parts.netloc}{path[: -len(suffix)]}{replacement}"
                return base, "authorization URL"
    return None, ""


def _saml(
    idp: IdentityProvider, connection_id: str, notes: Notes, previous: PreviousImport
) -> Spec | None:
    del previous  # SAML connections hold no secret
    spec: Spec = {"type": "saml", "id": connection_id}
    entity_id = idp.setting("idpEntityId")
    metadata_url = idp.setting("metadataDescriptorUrl")
    post = idp.flag("postBindingAuthnRequest")
    if metadata_url:
        spec["idp_metadata_url"] = metadata_url
        notes.carried.append(f"IdP metadata URL {metadata_url} (refreshed by the hub)")
        if entity_id:
            spec["idp_entity_id"] = entity_id
            notes.carried.append(f"IdP entity id {entity_id}")
        _plain_http(metadata_url, "metadata URL", notes)
    else:
        sso = idp.setting("singleSignOnServiceUrl")
        if not entity_id or not sso:
            notes.not_carried.append(
                "no metadata URL, and no IdP entity id or single sign-on URL to describe the "
                "IdP with: ask the partner for its metadata"
            )
            return None
        certs, bad = _certificates(idp.setting("signingCertificate") or "")
        for index in bad:
            notes.not_carried.append(f"signing certificate {index + 1}: not a readable X.509")
        if not certs:
            why = "" if idp.flag("validateSignature") else " (Keycloak did not check signatures)"
            notes.not_carried.append(
                f"no signing certificate{why}: Isthmus requires signed responses; ask the "
                "partner for its metadata"
            )
            return None
        spec["idp_metadata_xml"] = idp_metadata_xml(
            entity_id=entity_id,
            sso_url=sso,
            sso_binding=BINDING_POST if post else BINDING_REDIRECT,
            slo_url=idp.setting("singleLogoutServiceUrl"),
            slo_binding=BINDING_POST if idp.flag("postBindingLogout") else BINDING_REDIRECT,
            signing_certs=certs,
            want_authn_requests_signed=idp.flag("wantAuthnRequestsSigned"),
            name_id_format=idp.setting("nameIDPolicyFormat"),
        )
        notes.carried.append(
            f"IdP metadata built from Keycloak's settings: entity id {entity_id}, single "
            f"sign-on {sso}, {len(certs)} signing certificate(s)"
        )
        notes.todo.append(
            "prefer the partner's own metadata URL (idp_metadata_url) when it has one: key "
            "rollovers then need no change here"
        )
    if post:
        spec["authn_request_binding"] = "post"
    notes.carried.append(f"AuthnRequest binding {'post' if post else 'redirect'}")
    if idp.flag("wantAuthnRequestsSigned"):
        notes.carried.append("AuthnRequests signed (the IdP wants them signed)")
    signed = idp.flag("wantAssertionsSigned")
    spec["want_assertions_signed"] = signed
    notes.carried.append(
        "assertions must be signed" if signed else "a signed response is enough (assertions "
        "need not be signed, as in Keycloak)"
    )  # fmt: skip
    name_id = idp.setting("nameIDPolicyFormat")
    if name_id:
        spec["name_id_format"] = name_id
        notes.carried.append(f"NameID format {name_id}")
    skew = idp.setting("allowedClockSkew")
    if skew and skew.isdigit():
        spec["clock_skew_seconds"] = min(int(skew), 300)
        notes.carried.append(f"clock skew {spec['clock_skew_seconds']} s")
    if not idp.flag("validateSignature"):
        notes.not_carried.append(
            "Keycloak did not validate this IdP's signatures: Isthmus always does"
        )
    if idp.flag("wantAssertionsEncrypted"):
        notes.todo.append(
            "the IdP encrypted assertions for Keycloak's key: it must use the hub's "
            "encryption certificate (in the hub's SP metadata)"
        )
    if idp.setting("authnContextClassRefs"):
        notes.not_carried.append(
            "requested AuthnContext classes (Isthmus requests none; a policy can require an acr)"
        )
    if idp.flag("forceAuthn"):
        notes.not_carried.append("ForceAuthn (Isthmus does not force re-authentication)")
    attributes = _principal(idp, notes)
    mapped, mapper_notes = _saml_mappers(idp.mappers)
    attributes.update(mapped)
    if attributes:
        spec["attributes"] = attributes
    _merge(notes, mapper_notes)
    spec["email_verified"] = idp.trust_email
    if idp.trust_email:
        notes.carried.append("emails trusted as verified (Trust Email)")
    else:
        notes.carried.append(
            "emails not trusted (Trust Email was off): email_verified false, so the hub "
            "keeps no email from this IdP; set it true if the partner's IdP vouches for them"
        )
    notes.todo.append(
        f"give the partner the hub's SP metadata, {{issuer}}/saml/{connection_id}/metadata: "
        "the hub is a new service provider (entity id, ACS URL, certificates)"
    )
    return spec


def _principal(idp: IdentityProvider, notes: Notes) -> dict[str, Any]:
    kind = (idp.setting("principalType") or "SUBJECT").upper()
    attribute = idp.setting("principalAttribute")
    if kind in ("ATTRIBUTE", "FRIENDLY_ATTRIBUTE") and attribute:
        notes.carried.append(f"subject from the attribute {attribute!r} (principalType {kind})")
        return {"subject": [attribute]}
    if kind != "SUBJECT":
        notes.not_carried.append(f"principal type {kind}: the NameID is the subject")
    return {}


def _certificates(value: str) -> tuple[list[str], list[int]]:
    good, bad = [], []
    for index, text in enumerate(t for t in value.split(",") if t.strip()):
        compact = "".join(text.split())
        try:
            x509.load_der_x509_certificate(base64.b64decode(compact, validate=True))
        except ValueError:
            bad.append(index)
            continue
        good.append(compact)
    return good, bad


def idp_metadata_xml(
    *,
    entity_id: str,
    sso_url: str,
    sso_binding: str,
    slo_url: str | None,
    slo_binding: str,
    signing_certs: Sequence[str],
    want_authn_requests_signed: bool,
    name_id_format: str | None,
) -> str:
    """SAML 2.0 metadata (§2.4.3 IDPSSODescriptor) describing an IdP from the settings
    Keycloak kept: entity id, single sign-on (and logout) endpoint, signing keys."""
    want = "true" if want_authn_requests_signed else "false"
    lines = [
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"',
        '    xmlns:ds="http://www.w3.org/2000/09/xmldsig#"',
        f"    entityID={quoteattr(entity_id)}>",
        f'  <md:IDPSSODescriptor protocolSupportEnumeration="{SAML_PROTOCOL}"',
        f'      WantAuthnRequestsSigned="{want}">',
    ]
    for cert in signing_certs:
        lines += [
            '    <md:KeyDescriptor use="signing">',
            "      <ds:KeyInfo><ds:X509Data>",
            f"        <ds:X509Certificate>{escape(cert)}</ds:X509Certificate>",
            "      </ds:X509Data></ds:KeyInfo>",
            "    </md:KeyDescriptor>",
        ]
    if slo_url:
        lines.append(
            f"    <md:SingleLogoutService Binding={quoteattr(slo_binding)} "
            f"Location={quoteattr(slo_url)}/>"
        )
    if name_id_format:
        lines.append(f"    <md:NameIDFormat>{escape(name_id_format)}</md:NameIDFormat>")
    lines += [
        f"    <md:SingleSignOnService Binding={quoteattr(sso_binding)} "
        f"Location={quoteattr(sso_url)}/>",
        "  </md:IDPSSODescriptor>",
        "</md:EntityDescriptor>",
    ]
    return "\n".join(lines) + "\n"


# --- mappers --------------------------------------------------------------------------------

_ROLE_MAPPERS = frozenset(
    {
        "oidc-role-idp-mapper",
        "oidc-advanced-role-idp-mapper",
        "saml-role-idp-mapper",
        "saml-advanced-role-idp-mapper",
        "keycloak-oidc-role-to-role-idp-mapper",
    }
)
_GROUP_MAPPERS = frozenset({"oidc-advanced-group-idp-mapper", "saml-advanced-group-idp-mapper"})
_HARDCODED = frozenset(
    {
        "hardcoded-attribute-idp-mapper",
        "hardcoded-user-session-attribute-idp-mapper",
        "hardcoded-role-idp-mapper",
        "oidc-hardcoded-group-idp-mapper",
    }
)
_USERNAME_MAPPERS = frozenset({"oidc-username-idp-mapper", "saml-username-idp-mapper"})


def _oidc_mappers(mappers: Sequence[Mapper]) -> tuple[dict[str, str], Notes]:
    claims: dict[str, str] = {}
    notes = Notes()
    for mapper in mappers:
        label = f"mapper {mapper.name!r} ({mapper.type})"
        if mapper.type != "oidc-user-attribute-idp-mapper":
            notes.not_carried.append(f"{label}: {_unmapped(mapper)}")
            continue
        source = mapper.config.get("claim", "")
        target = IDENTITY_FIELDS.get(mapper.config.get("user.attribute", ""))
        path = _claim_path(source)
        if target is None:
            notes.not_carried.append(f"{label}: {_not_identity(mapper, 'claim', source)}")
        elif path is None:
            notes.not_carried.append(f"{label}: claim {source!r} cannot be named in Isthmus")
        elif target in claims:
            notes.not_carried.append(f"{label}: {target} already comes from {claims[target]!r}")
        else:
            claims[target] = path
            notes.carried.append(f"{label}: {target} from the claim {path!r}")
    return claims, notes


def _saml_mappers(mappers: Sequence[Mapper]) -> tuple[dict[str, list[str]], Notes]:
    attributes: dict[str, list[str]] = {}
    notes = Notes()
    for mapper in mappers:
        label = f"mapper {mapper.name!r} ({mapper.type})"
        if mapper.type != "saml-user-attribute-idp-mapper":
            notes.not_carried.append(f"{label}: {_unmapped(mapper)}")
            continue
        config = mapper.config
        names = [
            n for n in (config.get("attribute.name"), config.get("attribute.friendly.name")) if n
        ]
        target = IDENTITY_FIELDS.get(mapper.config.get("user.attribute", ""))
        if target is None:
            shown = names[0] if names else "?"
            notes.not_carried.append(f"{label}: {_not_identity(mapper, 'attribute', shown)}")
        elif not names:
            notes.not_carried.append(f"{label}: names no SAML attribute")
        elif target in attributes:
            notes.not_carried.append(f"{label}: {target} already comes from {attributes[target]}")
        else:
            attributes[target] = names
            notes.carried.append(f"{label}: {target} from the attribute {' or '.join(names)}")
    return attributes, notes


def _unmapped(mapper: Mapper) -> str:
    config = mapper.config
    if mapper.type in _ROLE_MAPPERS:
        return (
            f"gives the Keycloak role {config.get('role', '?')!r} on a condition: Isthmus "
            "assigns no roles; have the IdP send roles (claims.roles) or write a policy rule "
            "on the claim"
        )
    if mapper.type in _GROUP_MAPPERS:
        return (
            f"puts users in the Keycloak group {config.get('group', '?')!r} on a condition: "
            "write a policy rule on the claim instead"
        )
    if mapper.type in _HARDCODED:
        return (
            "sets a fixed value for every user of this IdP: in Isthmus a policy rule on the "
            "partner or the connection does the same"
        )
    if mapper.type in _USERNAME_MAPPERS:
        return "usernames: Isthmus keys identities on (issuer, subject), not on a username"
    return "this mapper type is not carried over"


def _not_identity(mapper: Mapper, what: str, source: str) -> str:
    attribute = mapper.config.get("user.attribute", "?")
    if attribute in ("firstName", "lastName"):
        return (
            f"user attribute {attribute}: Isthmus reads one full name (claims.name / "
            "attributes.name)"
        )
    if attribute in ("username", "email_verified", "emailVerified"):
        return f"user attribute {attribute}: not an identity field in Isthmus"
    return (
        f"user attribute {attribute!r}: Isthmus keeps email, name, groups and roles; the "
        f"raw {what} {source!r} stays available to policies (claim criterion)"
    )


def _claim_path(source: str) -> str | None:
    """Keycloak's claim name (``a.b`` nested, ``a\\.b`` a literal dot) as Isthmus's (exact
    name first, else a dotted path): a name mixing both cannot be expressed."""
    if not source:
        return None
    if "\\." not in source:
        return source
    literal = source.replace("\\.", ".")
    return None if "." in source.replace("\\.", "") else literal


def _merge(into: Notes, other: Notes) -> None:
    into.carried += other.carried
    into.not_carried += other.not_carried
    into.todo += other.todo


def _plain_http(url: str, what: str, notes: Notes) -> None:
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        notes.todo.append(
            f"the {what} {url} is plain http: `isthmus apply` refuses it unless the hub "
            "allows insecure http (local use only); ask the partner for https"
        )


# --- report text ----------------------------------------------------------------------------


def _todo_partner(partner: PartnerReport) -> None:
    for pending in partner.pending_domains:
        partner.notes.todo.append(
            f"have the partner publish {pending['record']}, then run "
            f"`isthmus partners domains verify {partner.id} {pending['domain']}`"
        )
    if partner.connections:
        partner.notes.todo.append(
            "test each connection (onboarding test login) before activating the partner"
        )
    partner.notes.todo.append(f"review the partner, then `isthmus partners activate {partner.id}`")


def _todo_global(report: ImportReport) -> list[str]:
    secrets = [
        f"{p.file}: {c.id}"
        for p in report.partners
        for c in p.connections
        if p.written and c.secret_missing
    ]
    steps = []
    if secrets:
        steps.append(
            "fill in the client secrets Keycloak could not give (`isthmus apply` refuses a "
            f"null client_secret): {', '.join(secrets)}"
        )
    steps += [
        "register the hub with each partner's IdP (the connection notes below say what)",
        "`isthmus apply -f <this directory> --dry-run`, then without --dry-run",
        "prove the pending domains (DNS TXT), test each connection, activate each partner",
        "switch the partners' users to the hub only then: Keycloak keeps working meanwhile",
    ]
    return steps


def _markdown(report: ImportReport) -> Iterable[str]:
    written = [p for p in report.partners if p.written]
    connections = sum(len(p.connections) for p in written)
    yield f"# Keycloak import: realm `{report.realm}` at {report.server}"
    yield ""
    yield (
        f"Read {_plural(report.organizations, 'organization')} and "
        f"{_plural(report.identity_providers, 'identity provider')}; wrote "
        f"{_plural(len(written), 'partner')} with {_plural(connections, 'connection')}. "
        "Every partner is `invited`: none routes a login until it is activated."
    )
    yield ""
    yield "## What to do"
    yield ""
    for index, step in enumerate(report.todo, start=1):
        yield f"{index}. {step}"
    for partner in report.partners:
        yield ""
        state = "" if partner.written else " — NOT WRITTEN"
        yield f"## Partner `{partner.id}`: {partner.name} ({partner.kind}){state}"
        yield ""
        yield f"From organization `{partner.organization}` ({partner.organization_id})."
        if partner.written:
            yield f"File: `{partner.file}`."
        yield from _notes(partner.notes)
        for connection in partner.connections:
            yield ""
            yield (
                f"### Connection `{connection.id}` ({connection.type}), from identity "
                f"provider `{connection.identity_provider}` ({connection.provider_id})"
            )
            yield from _notes(connection.notes)
    if report.skipped:
        yield ""
        yield "## Not imported"
        yield ""
        yield "| what | name | provider | why |"
        yield "|---|---|---|---|"
        for item in report.skipped:
            cells = (item.what, f"`{item.name}`", item.provider_id or "-", item.reason)
            yield "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _notes(notes: Notes) -> Iterable[str]:
    for title, items in (
        ("Carried over", notes.carried),
        ("Not carried over", notes.not_carried),
        ("To do", notes.todo),
    ):
        if items:
            yield ""
            yield f"{title}:"
            yield ""
            for item in items:
                yield f"- {item}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --- ids and small checks -------------------------------------------------------------------

_NOT_ID = re.compile(r"[^a-z0-9_-]+")


def slug(text: str) -> str:
    """An Isthmus id (``[a-z0-9][a-z0-9_-]{0,62}``) from a Keycloak alias or name."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = _NOT_ID.sub("-", ascii_text.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-_")
    return cleaned[:63].rstrip("-_")


def _unique(base: str, taken: set[str]) -> str:
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        suffix = f"-{n}"
        candidate = base[: 63 - len(suffix)].rstrip("-_") + suffix
    taken.add(candidate)
    return candidate


def _is_domain(value: str) -> bool:
    labels = value.split(".")
    return len(labels) >= 2 and all(
        0 < len(label) <= 63
        and label.isascii()
        and label.replace("-", "").isalnum()
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


# --- the output directory -------------------------------------------------------------------


def previous_import(directory: Path) -> PreviousImport:
    """What an earlier import left in ``directory`` (empty when there is none).

    :class:`KeycloakImportError` when ``directory`` holds anything but an earlier import's
    output: :func:`write_bundle` removes files it did not write, so pointing the import at
    a directory of other documents would delete them."""
    if not directory.exists():
        return PreviousImport()
    if not directory.is_dir():
        raise KeycloakImportError(f"{directory} is not a directory")
    if not any(directory.iterdir()):
        return PreviousImport()
    if not (directory / REPORT_FILE).is_file():
        raise KeycloakImportError(
            f"{directory} is not empty and holds no {REPORT_FILE}: it is not an earlier "
            "import's output, whose files would be replaced. Choose a new directory."
        )
    try:
        documents = read_bundle(directory)
    except BundleError:
        return PreviousImport()  # unreadable files: start afresh (they are rewritten)
    pending: dict[tuple[str, str], tuple[str, str]] = {}
    secrets: dict[str, tuple[str, str]] = {}
    for kind, doc_id, spec in documents:
        if kind != "partner":
            continue
        for item in spec.get("pending_domains") or []:
            if isinstance(item, dict) and all(
                item.get(k) for k in ("name", "token", "requested_at")
            ):
                moment = item["requested_at"]
                when = moment.isoformat() if isinstance(moment, datetime) else str(moment)
                pending[(doc_id, str(item["name"]))] = (str(item["token"]), when)
        for connection in spec.get("connections") or []:
            if isinstance(connection, dict) and connection.get("client_secret"):
                secrets[str(connection.get("id"))] = (
                    str(connection.get("client_id")),
                    str(connection["client_secret"]),
                )
    return PreviousImport(pending, secrets)


def write_import(directory: Path, result: ImportResult) -> list[Path]:
    """The partner files (0600: they may hold secrets) and ``IMPORT-REPORT.md``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = write_bundle(directory, result.documents)
    report = directory / REPORT_FILE
    report.write_text(result.report.markdown(), encoding="utf-8")
    return [*written, report]

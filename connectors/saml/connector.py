"""The SAML connector: one service provider per connection, on pysaml2 and xmlsec1.

Specs: SAML 2.0 Core (AuthnRequest §3.4.1, Response §3.3.3, LogoutRequest §3.7.1,
LogoutResponse §3.7.2), Bindings (HTTP-Redirect §3.4 with its query-string signature
§3.4.4.1, HTTP-POST §3.5), Profiles (Web Browser SSO §4.1, Single Logout §4.4), Metadata;
XML-DSig (through xmlsec1).

Like every connector it keeps no per-login state: :meth:`SamlConnector.login_url` returns
the AuthnRequest id as ``flow_state``; the hub stores it under its flow id (the RelayState)
and hands it back to :meth:`SamlConnector.handle_callback`. pysaml2 and xmlsec1 block, so
their work runs in a worker thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from connectors.base import CallbackRequest, LoginRedirect, LoginRequest, LogoutOutcome
from connectors.registry import ConnectorContext
from connectors.saml import guard, xmlenc
from connectors.saml._pysaml2 import (
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    quiet_pysaml2_logs,
    saml2,
)
from connectors.saml.consumer import Expected, check_response
from connectors.saml.keys import SpKeyPair, der_from_base64, generate_key_pair, private_directory
from connectors.saml.mapping import identity_from
from connectors.saml.metadata import (
    IdpMetadata,
    MetadataRefused,
    MetadataTrust,
    parse_idp_metadata,
)
from connectors.saml.sp import SpEndpoints, signs_authn_requests, sp_client, sp_config
from connectors.saml.sp import sp_metadata_xml as render_sp_metadata
from federation.errors import InvalidState, InvalidUpstreamResponse, UpstreamError
from federation.identity import FederatedIdentity
from federation.settings import ConnectionSettings, PartnerSettings, SamlConnectionSettings

log = logging.getLogger(__name__)

SIG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
# HTTP-Redirect query-string signatures we accept (SHA-1 is refused).
REDIRECT_SIG_ALGS: dict[str, tuple[type[Any], hashes.HashAlgorithm]] = {
    SIG_RSA_SHA256: (rsa.RSAPublicKey, hashes.SHA256()),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": (rsa.RSAPublicKey, hashes.SHA384()),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": (rsa.RSAPublicKey, hashes.SHA512()),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": (
        ec.EllipticCurvePublicKey,
        hashes.SHA256(),
    ),
}
MAX_LOGOUT_BYTES = 64 * 1024
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


@dataclass
class _Idp:
    metadata: IdpMetadata
    client: Any  # saml2.client.Saml2Client configured with this metadata
    fetched_at: float


class SamlConnector:
    """A partner's SAML IdP behind the callback, metadata and logout capabilities."""

    def __init__(
        self,
        partner_id: str,
        settings: SamlConnectionSettings,
        context: ConnectorContext,
    ) -> None:
        self.id = settings.id
        self.partner_id = partner_id
        self.settings = settings
        self._context = context
        self.endpoints = SpEndpoints.of(settings, context.hub_base_url)
        self._key_dir: Path | None = None
        self.keys = self._key_pair()
        self._idp: _Idp | None = None
        self._lock: asyncio.Lock | None = None
        # Why the last metadata document was refused (signature, validUntil); None once
        # one is accepted. For admin reports: the log has it too.
        self.metadata_refusal: str | None = None
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(
        cls, partner: PartnerSettings, connection: ConnectionSettings, context: ConnectorContext
    ) -> SamlConnector:
        if not isinstance(connection, SamlConnectionSettings):
            raise TypeError(f"connection {connection.id} is not a SAML connection")
        return cls(partner.id, connection, context)

    def _key_pair(self) -> SpKeyPair:
        if self.settings.sp_key_file is not None and self.settings.sp_cert_file is not None:
            return SpKeyPair(Path(self.settings.sp_key_file), Path(self.settings.sp_cert_file))
        self._key_dir = private_directory(f"isthmus-saml-{self.id}-")
        return generate_key_pair(f"isthmus SAML SP {self.id}", self._key_dir)

    # --- the IdP, from its metadata --------------------------------------------------------

    async def idp(self) -> IdpMetadata:
        return (await self._current()).metadata

    async def _current(self) -> _Idp:
        """The IdP's metadata and the pysaml2 client built on it; a URL source is refetched
        when older than ``metadata_refresh_seconds``, any source once its validUntil has
        passed. A failed refresh keeps the last good copy — unless that one has expired: a
        refused document (bad signature, expired) is logged at ERROR and
        :attr:`metadata_refusal` says why."""
        idp = self._idp
        if idp is not None and not self._stale(idp):
            return idp
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            idp = self._idp
            if idp is not None and not self._stale(idp):
                return idp
            try:
                metadata = await self._load_metadata()
                client = await asyncio.to_thread(self._build_client, metadata)
            except UpstreamError as exc:
                refused = isinstance(exc.__cause__, MetadataRefused)
                if refused:
                    self.metadata_refusal = exc.detail
                if idp is None or idp.metadata.expired(self._context.wall_clock()):
                    raise
                if refused:
                    log.error(
                        "%s (partner %s); the last good metadata stays in use",
                        exc.detail,
                        self.partner_id,
                    )
                else:
                    log.warning("keeping the last good metadata: %s", exc.detail)
                idp.fetched_at = self._context.clock()  # retry after the next interval
                return idp
            self.metadata_refusal = None
            self._idp = _Idp(metadata, client, self._context.clock())
            return self._idp

    def _stale(self, idp: _Idp) -> bool:
        if idp.metadata.expired(self._context.wall_clock()):
            return True
        if self.settings.idp_metadata_url is None:
            return False
        age = self._context.clock() - idp.fetched_at
        return age >= self.settings.metadata_refresh_seconds

    async def _load_metadata(self) -> IdpMetadata:
        settings = self.settings
        if settings.idp_metadata_url is not None:
            xml: str | bytes = await self._fetch(settings.idp_metadata_url)
        elif settings.idp_metadata_file is not None:
            try:
                xml = await asyncio.to_thread(Path(settings.idp_metadata_file).read_bytes)
            except OSError as exc:
                raise self._upstream(f"IdP metadata file unreadable: {exc}") from None
        elif settings.idp_metadata_xml is not None:
            xml = settings.idp_metadata_xml
        else:
            raise self._upstream("no IdP metadata source configured")
        trust = MetadataTrust(settings.metadata_signing_certs, settings.metadata_signature_required)
        try:
            metadata = await asyncio.to_thread(
                parse_idp_metadata,
                xml,
                settings.idp_entity_id,
                trust=trust,
                now=self._context.wall_clock(),
            )
        except MetadataRefused as exc:
            raise self._upstream(f"IdP metadata refused: {exc}") from exc
        except ValueError as exc:
            raise self._upstream(f"IdP metadata refused: {exc}") from None
        if not metadata.signature_verified:
            self._warn_unverified(settings.idp_metadata_url)
        return metadata

    def _warn_unverified(self, url: str | None) -> None:
        """Unsigned metadata over plain http (off the loopback): anyone on the path could
        swap the IdP's keys. Accepted as configured, but said at every load."""
        if self.settings.metadata_signing_certs:
            log.warning(
                "connection %s: IdP metadata is not signed (require_signed_metadata is "
                "false): accepted unchecked",
                self.id,
            )
        elif url is not None and _plain_http_off_loopback(url):
            log.warning(
                "connection %s: IdP metadata fetched over plain http from %s and not "
                "signature-checked: serve it over https or set metadata_signing_certs",
                self.id,
                url,
            )

    async def _fetch(self, url: str) -> bytes:
        try:
            if self._http is None:
                self._http = self._context.http_client()
            async with asyncio.timeout(10.0):
                response = await self._http.get(url)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self._upstream(f"IdP metadata at {url} unreachable: {exc!r}") from None
        if response.status_code != 200:
            raise self._upstream(f"IdP metadata at {url} answered HTTP {response.status_code}")
        return response.content

    def _build_client(self, metadata: IdpMetadata | None) -> Any:
        quiet_pysaml2_logs()  # loggers of pysaml2 modules imported since
        return sp_client(sp_config(self.settings, self.endpoints, self.keys, metadata))

    # --- MetadataConnector ------------------------------------------------------------------

    async def sp_metadata(self) -> str:
        """The SP's metadata (entityID, ACS, SLO, signing and encryption certificate)."""
        try:
            metadata: IdpMetadata | None = await self.idp()
        except UpstreamError:
            metadata = None  # the SP's own metadata does not wait for the IdP's
        config = await asyncio.to_thread(
            sp_config, self.settings, self.endpoints, self.keys, metadata
        )
        return render_sp_metadata(config)

    # --- CallbackConnector: login ---------------------------------------------------------

    async def login_url(self, request: LoginRequest) -> LoginRedirect:
        """An AuthnRequest (Core §3.4.1) over HTTP-Redirect or HTTP-POST; RelayState is the
        hub's flow id; ``flow_state`` keeps the request id for InResponseTo."""
        idp = await self._current()
        post = self.settings.authn_request_binding == "post"
        binding = BINDING_HTTP_POST if post else BINDING_HTTP_REDIRECT
        destination = idp.metadata.sso.get(binding)
        if destination is None:
            raise self._upstream(f"IdP has no SingleSignOnService for {binding}")
        sign = signs_authn_requests(self.settings, idp.metadata)
        request_id, message = await asyncio.to_thread(
            self._authn_request, idp.client, destination, sign and post
        )
        flow_state = {"request_id": request_id, "acs_url": self.endpoints.acs_url}
        if post:
            encoded = base64.b64encode(str(message).encode()).decode()
            form = {"SAMLRequest": encoded, "RelayState": request.state}
            return LoginRedirect(destination, flow_state, form=form)
        url = await asyncio.to_thread(
            self._redirect_url, idp.client, str(message), destination, request.state, sign, False
        )
        return LoginRedirect(url, flow_state)

    def _authn_request(self, client: Any, destination: str, sign_xml: bool) -> tuple[str, Any]:
        kwargs: dict[str, Any] = {
            "binding": BINDING_HTTP_POST,  # ProtocolBinding: answer to the ACS by POST
            "sign": sign_xml,
            "sign_alg": SIG_RSA_SHA256,
            "digest_alg": "http://www.w3.org/2001/04/xmlenc#sha256",
        }
        if self.settings.name_id_format:
            kwargs["nameid_format"] = self.settings.name_id_format
        request_id, message = client.create_authn_request(destination, **kwargs)
        return str(request_id), message

    @staticmethod
    def _redirect_url(
        client: Any,
        message: str,
        destination: str,
        relay_state: str,
        sign: bool,
        response: bool,
    ) -> str:
        info = client.apply_binding(
            BINDING_HTTP_REDIRECT,
            message,
            destination,
            relay_state,
            response=response,
            sign=sign,
            sigalg=SIG_RSA_SHA256,
        )
        return str(dict(info["headers"])["Location"])

    # --- CallbackConnector: the assertion consumer ---------------------------------------

    async def handle_callback(
        self, request: CallbackRequest, flow_state: Mapping[str, Any] | None
    ) -> FederatedIdentity:
        """Security invariant 3: cap, hardened pre-parse, pysaml2 signature verification
        and decryption, the consumer's own checks, the replay cache, then the mapping."""
        request_id = self._request_id(flow_state)
        encoded = request.params.get("SAMLResponse")
        if not isinstance(encoded, str) or not encoded:
            raise self._invalid("callback carries no SAMLResponse")
        if request.method.upper() != "POST":
            raise self._invalid("SAMLResponse must arrive by HTTP-POST")
        try:  # (a) size cap before decoding grows it, (b) DTD/entities/PI/comments/wrapping
            xml = guard.decode_post(encoded, self.settings.max_response_bytes)
            guard.inspect(xml, root="Response")
        except guard.UnsafeMessage as exc:
            raise self._invalid(f"SAMLResponse refused before parsing: {exc}") from None
        idp = await self._current()
        parsed = await asyncio.to_thread(self._parse_response, idp.client, xml, request_id)
        response, assertion, name_id = parsed
        expected = Expected(
            acs_url=self.endpoints.acs_url,
            sp_entity_id=self.endpoints.entity_id,
            idp_entity_id=idp.metadata.entity_id,
            request_id=request_id,
            skew=float(self.settings.clock_skew_seconds),
            now=self._context.wall_clock(),
            want_assertions_signed=self.settings.want_assertions_signed,
        )
        try:
            checked = check_response(response, assertion, expected)  # (d)
        except (InvalidUpstreamResponse, InvalidState) as exc:
            raise type(exc)(f"connection {self.id}: {exc.detail}") from None
        await self._first_use(assertion.id, checked.not_on_or_after, expected)  # (e)
        try:  # (f)
            return identity_from(
                assertion,
                name_id,
                partner_id=self.partner_id,
                settings=self.settings,
                idp_entity_id=idp.metadata.entity_id,
            )
        except InvalidUpstreamResponse as exc:
            raise self._invalid(exc.detail) from None

    def _request_id(self, flow_state: Mapping[str, Any] | None) -> str | None:
        if flow_state is None:
            if not self.settings.allow_idp_initiated:
                raise InvalidState(
                    f"connection {self.id}: unsolicited response (IdP-initiated SSO is off)"
                )
            return None
        request_id = flow_state.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidState(f"connection {self.id}: SAML flow state has no request id")
        return request_id

    def _parse_response(
        self, client: Any, xml: bytes, request_id: str | None
    ) -> tuple[Any, Any, Any]:
        """(c) pysaml2 + xmlsec1: signatures against the IdP metadata keys, decryption with
        the SP key. Runs in a worker thread."""
        outstanding = {request_id: self.endpoints.acs_url} if request_id else {}
        try:
            result = client.parse_authn_request_response(
                xml.decode("utf-8"), None, outstanding=outstanding
            )
        except saml2.response.StatusError as exc:
            raise self._upstream(f"IdP answered a non-Success status: {_short(exc)}") from None
        except saml2.response.UnsolicitedResponse:
            raise InvalidState(
                f"connection {self.id}: response InResponseTo is not our AuthnRequest"
            ) from None
        except xmlenc.DecryptionError as exc:  # connectors.saml.sp.XmlEncBackend
            raise self._invalid(f"encrypted element refused: {exc}") from None
        except Exception as exc:  # pysaml2 raises a zoo of types; every one is a refusal
            detail = f"pysaml2 refused the response: {_short(exc)}"
            raise self._invalid(detail) from None
        if result is None or getattr(result, "response", None) is None:
            raise self._invalid("pysaml2 found no usable response (wrong Destination?)")
        assertions = list(result.assertions or [])
        if result.assertion is not None and result.assertion not in assertions:
            assertions.append(result.assertion)
        if not assertions and result.response.encrypted_assertion:
            raise self._invalid(
                "encrypted element refused: cannot decrypt: the SP key unwraps none of its "
                "EncryptedKeys (encrypted for another certificate? the IdP must use the one "
                "in the hub's SP metadata)"
            )
        if len(assertions) != 1:
            raise self._invalid(f"response carries {len(assertions)} assertions, not one")
        return result.response, assertions[0], result.name_id

    async def _first_use(self, assertion_id: Any, not_after: float, expected: Expected) -> None:
        if not isinstance(assertion_id, str) or not assertion_id:
            raise self._invalid("assertion has no ID")
        replay = self._context.replay
        if replay is None:  # fail closed: without a cache, replays could not be refused
            raise self._upstream("no replay cache: SAML assertions cannot be accepted")
        ttl = max(1.0, not_after + expected.skew - expected.now)
        if not await replay.first_use(f"saml:{self.id}:{assertion_id}", ttl):
            raise self._invalid(f"assertion {assertion_id!r} was already used (replay)")

    # --- LogoutConnector -------------------------------------------------------------------

    async def logout_url(
        self,
        identity: FederatedIdentity,
        return_url: str,
        state: str,
        session_state: Mapping[str, Any] | None = None,
    ) -> LoginRedirect | None:
        """SP-initiated single logout (Profiles §4.4.3.1): a signed LogoutRequest with the
        NameID and SessionIndex of the login, to the IdP's SLO endpoint."""
        idp = await self._current()
        binding = next(
            (b for b in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST) if b in idp.metadata.slo), None
        )
        if binding is None:
            return None
        destination = idp.metadata.slo[binding]
        raw = identity.raw_claims
        name_id_text = raw.get("name_id")
        if not isinstance(name_id_text, str) or not name_id_text:
            return None
        post = binding == BINDING_HTTP_POST

        def build() -> tuple[str, str]:
            name_id = saml2.saml.NameID(
                text=name_id_text,
                format=raw.get("name_id_format"),
                name_qualifier=raw.get("name_id_name_qualifier"),
                sp_name_qualifier=raw.get("name_id_sp_name_qualifier"),
            )
            session_index = raw.get("session_index")
            request_id, message = idp.client.create_logout_request(
                destination,
                idp.metadata.entity_id,
                name_id=name_id,
                session_indexes=[session_index] if session_index else None,
                sign=post,
                sign_alg=SIG_RSA_SHA256,
                digest_alg="http://www.w3.org/2001/04/xmlenc#sha256",
            )
            if post:
                return str(request_id), base64.b64encode(str(message).encode()).decode()
            url = self._redirect_url(idp.client, str(message), destination, state, True, False)
            return str(request_id), url

        request_id, built = await asyncio.to_thread(build)
        flow_state = {"logout_request_id": request_id, "return_url": return_url}
        if post:
            return LoginRedirect(
                destination, flow_state, form={"SAMLRequest": built, "RelayState": state}
            )
        return LoginRedirect(built, flow_state)

    async def handle_logout(self, request: CallbackRequest) -> LogoutOutcome:
        """A LogoutRequest from the IdP (answered with a signed LogoutResponse) or the
        LogoutResponse to ours. Both must be signed by an IdP metadata key."""
        idp = await self._current()
        params = request.params
        redirect = request.method.upper() != "POST"
        if "SAMLRequest" in params:
            return await self._logout_request(idp, params, redirect)
        if "SAMLResponse" in params:
            await self._logout_response(idp, params, redirect)
            return LogoutOutcome()
        raise self._invalid("SLO endpoint called without SAMLRequest or SAMLResponse")

    def _decoded(self, value: str, redirect: bool, root: str) -> bytes:
        try:
            if redirect:
                xml = guard.decode_redirect(value, MAX_LOGOUT_BYTES)
            else:
                xml = guard.decode_post(value, MAX_LOGOUT_BYTES)
            guard.inspect(xml, root=root)
        except guard.UnsafeMessage as exc:
            raise self._invalid(f"{root} refused before parsing: {exc}") from None
        return xml

    async def _logout_request(
        self, idp: _Idp, params: Mapping[str, str], redirect: bool
    ) -> LogoutOutcome:
        xml = self._decoded(params["SAMLRequest"], redirect, "LogoutRequest")
        if redirect:
            self._verify_query_signature(idp.metadata, params, "SAMLRequest")

        def parse_and_answer() -> tuple[Any, str, str | None]:
            try:
                parsed = idp.client.parse_logout_request(xml.decode("utf-8"), None)
            except Exception as exc:
                raise self._invalid(f"LogoutRequest refused: {_short(exc)}") from None
            message = parsed.message if parsed is not None else None
            if message is None:
                raise self._invalid("LogoutRequest not usable")
            if not redirect and message.signature is None:
                raise self._invalid("LogoutRequest is not signed")
            self._check_logout_message(message, idp.metadata)
            if message.not_on_or_after and self._expired(message.not_on_or_after):
                raise self._invalid("LogoutRequest has expired")
            answer_binding = next(
                (b for b in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST) if b in idp.metadata.slo),
                None,
            )
            if answer_binding is None:
                raise self._upstream("IdP has no SingleLogoutService to answer to")
            destination = idp.metadata.slo[answer_binding]
            response = idp.client.create_logout_response(
                message,
                bindings=[answer_binding],
                sign=answer_binding == BINDING_HTTP_POST,
                sign_alg=SIG_RSA_SHA256,
                digest_alg="http://www.w3.org/2001/04/xmlenc#sha256",
            )
            relay = params.get("RelayState")
            if answer_binding == BINDING_HTTP_POST:
                encoded = base64.b64encode(str(response).encode()).decode()
                return message, destination, encoded
            url = self._redirect_url(
                idp.client, str(response), destination, relay or "", True, True
            )
            return message, url, None

        message, target, form_value = await asyncio.to_thread(parse_and_answer)
        name_id = (getattr(message.name_id, "text", None) or "").strip()
        if not name_id:
            raise self._invalid("LogoutRequest has no NameID (encrypted NameIDs unsupported)")
        indexes = [s.text for s in message.session_index or [] if s.text]
        if form_value is None:
            answer = LoginRedirect(target)
        else:
            form = {"SAMLResponse": form_value}
            if params.get("RelayState"):
                form["RelayState"] = params["RelayState"]
            answer = LoginRedirect(target, form=form)
        return LogoutOutcome(
            end_subject=name_id, session_index=indexes[0] if indexes else None, redirect=answer
        )

    async def _logout_response(self, idp: _Idp, params: Mapping[str, str], redirect: bool) -> None:
        xml = self._decoded(params["SAMLResponse"], redirect, "LogoutResponse")
        if redirect:
            self._verify_query_signature(idp.metadata, params, "SAMLResponse")

        def parse() -> Any:
            try:
                parsed = idp.client.parse_logout_request_response(xml.decode("utf-8"), None)
            except Exception as exc:
                raise self._invalid(
                    f"LogoutResponse refused: {type(exc).__name__}: {exc}"
                ) from None
            return parsed.response if parsed is not None else None

        message = await asyncio.to_thread(parse)
        if message is None:
            raise self._invalid("LogoutResponse not usable")
        if not redirect and message.signature is None:
            raise self._invalid("LogoutResponse is not signed")
        self._check_logout_message(message, idp.metadata)
        status = getattr(getattr(message.status, "status_code", None), "value", None)
        if status != SUCCESS:
            log.info("connection %s: IdP logout answered status %s", self.id, status)

    def _check_logout_message(self, message: Any, metadata: IdpMetadata) -> None:
        issuer = (getattr(message.issuer, "text", None) or "").strip()
        if issuer != metadata.entity_id:
            raise self._invalid(f"logout message Issuer {issuer!r} is not the IdP")
        if message.destination and message.destination != self.endpoints.slo_url:
            raise self._invalid(f"logout message Destination {message.destination!r} is not ours")

    def _expired(self, instant: str) -> bool:
        from connectors.saml.consumer import parse_instant

        return self._context.wall_clock() - self.settings.clock_skew_seconds >= parse_instant(
            instant, "NotOnOrAfter"
        )

    def _verify_query_signature(
        self, metadata: IdpMetadata, params: Mapping[str, str], kind: str
    ) -> None:
        """HTTP-Redirect binding §3.4.4.1: the signature covers the URL-encoded
        ``SAMLRequest|SAMLResponse=…&RelayState=…&SigAlg=…``, rebuilt here in that order."""
        sig_alg, signature = params.get("SigAlg"), params.get("Signature")
        if not sig_alg or not signature:
            raise self._invalid(f"{kind} by HTTP-Redirect is not signed")
        if sig_alg not in REDIRECT_SIG_ALGS:
            raise self._invalid(f"SigAlg {sig_alg!r} is not accepted")
        parts = [f"{kind}={quote_plus(params[kind])}"]
        if "RelayState" in params:
            parts.append(f"RelayState={quote_plus(params['RelayState'])}")
        parts.append(f"SigAlg={quote_plus(sig_alg)}")
        signed = "&".join(parts).encode()
        try:
            raw_signature = base64.b64decode(signature, validate=True)
        except ValueError:
            raise self._invalid("Signature is not base64") from None
        key_type, digest = REDIRECT_SIG_ALGS[sig_alg]
        for cert_text in metadata.signing_certs:
            key = x509.load_der_x509_certificate(der_from_base64(cert_text)).public_key()
            if not isinstance(key, key_type):
                continue
            try:
                if isinstance(key, rsa.RSAPublicKey):
                    key.verify(raw_signature, signed, padding.PKCS1v15(), digest)
                elif isinstance(key, ec.EllipticCurvePublicKey):
                    key.verify(raw_signature, signed, ec.ECDSA(digest))
                return
            except InvalidSignature:
                continue
        raise self._invalid(f"{kind} query-string signature does not verify")

    # --- resources and errors ---------------------------------------------------------------

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._key_dir is not None:
            shutil.rmtree(self._key_dir, ignore_errors=True)
            self._key_dir = None

    def _invalid(self, detail: str) -> InvalidUpstreamResponse:
        return InvalidUpstreamResponse(f"connection {self.id}: {detail}")

    def _upstream(self, detail: str) -> UpstreamError:
        return UpstreamError(f"connection {self.id}: {detail}")


def _plain_http_off_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _short(exc: BaseException, limit: int = 300) -> str:
    """pysaml2 puts whole documents in its messages: the log gets the gist."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."

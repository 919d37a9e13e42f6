"""Upstream OpenID Connect: the hub as relying party of a partner's IdP.

Specs: OpenID Connect Core 1.0 (authorization code flow §3.1, ID token validation
§3.1.3.7, UserInfo §5.3), OpenID Connect Discovery 1.0 (§4.3: the discovered issuer must
be the configured one), RFC 6749 (authorization code grant, client authentication
§2.3.1), RFC 7636 (PKCE, always S256), RFC 9207 (the ``iss`` authorization response
parameter) and OpenID Connect RP-Initiated Logout 1.0 (§2: ``id_token_hint``,
``client_id``, ``post_logout_redirect_uri``, ``state`` at the ``end_session_endpoint``).

The connector keeps no per-login state: :meth:`OidcConnector.login_url` returns the PKCE
verifier, the nonce, the state and the redirect URI as ``flow_state``; the hub stores it
under its flow id and hands it back to :meth:`OidcConnector.handle_callback`. Only the
provider metadata and its JWKS are cached, per connector instance. Every failure is an
:class:`~federation.errors.IsthmusError` whose ``detail`` (for the log) says what went
wrong; the email domain is *not* checked here: the broker binds identities to partners.

Logout: when the connection keeps ``upstream_logout`` and the IdP advertises an
``end_session_endpoint``, the callback leaves the ID token in
:attr:`~connectors.base.CallbackRequest.session_state` (the hub keeps it with the session,
server-side) and :meth:`OidcConnector.logout_url` sends it back as ``id_token_hint``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import authlib.deprecate
import httpx
from authlib.common.urls import add_params_to_uri
from authlib.integrations.base_client import OAuthError
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from connectors.base import CallbackRequest, LoginRedirect, LoginRequest, LogoutOutcome
from connectors.registry import ConnectorContext
from federation import jose
from federation.errors import (
    InvalidGrant,
    InvalidState,
    InvalidUpstreamResponse,
    UpstreamError,
)
from federation.identity import FederatedIdentity
from federation.settings import ConnectionSettings, OidcConnectionSettings, PartnerSettings

with warnings.catch_warnings():
    # authlib 1.9 warns that its httpx integration will move to the httpx2 package; the hub
    # runs on httpx (its transports are what tests mount), so the notice is silenced here.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

METADATA_TTL = 3600.0
JWKS_TTL = 3600.0
JWKS_REFRESH_INTERVAL = 30.0  # at most one forced JWKS refresh (unknown kid) per 30 s
MAX_PARAM_LENGTH = 4096
MAX_SUBJECT_LENGTH = 255  # OIDC Core §2: sub is at most 255 ASCII characters
# A longer ID token is not kept for id_token_hint (the session record stays small and the
# logout URL short); logout then names the client only (client_id), which the spec allows.
MAX_ID_TOKEN_HINT = 6144  # an 8 KB request line (nginx default) still fits


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the discovery document the relying party uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    iss_parameter_supported: bool
    end_session_endpoint: str | None = None  # RP-Initiated Logout 1.0 §2.1

    @classmethod
    def parse(cls, document: Mapping[str, Any], expected_issuer: str) -> ProviderMetadata:
        issuer = document.get("issuer")
        if issuer != expected_issuer:
            raise InvalidUpstreamResponse(
                f"discovery issuer {issuer!r} is not the configured issuer {expected_issuer!r}"
            )
        userinfo = document.get("userinfo_endpoint")
        end_session = document.get("end_session_endpoint")
        return cls(
            issuer=expected_issuer,
            authorization_endpoint=_endpoint(document, "authorization_endpoint"),
            token_endpoint=_endpoint(document, "token_endpoint"),
            jwks_uri=_endpoint(document, "jwks_uri"),
            userinfo_endpoint=_endpoint(document, "userinfo_endpoint") if userinfo else None,
            iss_parameter_supported=document.get("authorization_response_iss_parameter_supported")
            is True,
            end_session_endpoint=(
                _endpoint(document, "end_session_endpoint") if end_session else None
            ),
        )


def _endpoint(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise InvalidUpstreamResponse(f"discovery document: {name} is missing or not a URL")
    return value


@dataclass(frozen=True, slots=True)
class FlowState:
    """What one login needs back at the callback (RFC 7636 verifier, OIDC nonce, ...)."""

    state: str
    code_verifier: str
    nonce: str
    redirect_uri: str

    @classmethod
    def new(cls, request: LoginRequest) -> FlowState:
        # 64 characters from the RFC 7636 §4.1 unreserved set; 256 bits for the nonce.
        return cls(
            request.state,
            secrets.token_urlsafe(48),
            secrets.token_urlsafe(32),
            request.callback_url,
        )

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> FlowState:
        values = [data.get(f.name) for f in dataclasses.fields(cls)]
        strings = [v for v in values if isinstance(v, str) and v]
        if len(strings) != len(values):
            raise InvalidState("OIDC flow state is incomplete")
        return cls(*strings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class TokenResponse:
    id_token: str
    access_token: str

    @classmethod
    def parse(cls, token: Mapping[str, Any]) -> TokenResponse:
        id_token, access_token = token.get("id_token"), token.get("access_token")
        if not isinstance(id_token, str) or not id_token:
            raise InvalidUpstreamResponse("token response has no id_token")
        if not isinstance(access_token, str) or not access_token:
            raise InvalidUpstreamResponse("token response has no access_token")
        if str(token.get("token_type", "")).lower() != "bearer":
            raise InvalidUpstreamResponse(f"token_type {token.get('token_type')!r} is not Bearer")
        return cls(id_token, access_token)


@dataclass
class _Cached:
    value: Any
    fetched_at: float


class OidcConnector:
    """A partner's OIDC IdP behind the ``CallbackConnector`` and ``LogoutConnector``
    capabilities."""

    def __init__(
        self, partner_id: str, settings: OidcConnectionSettings, context: ConnectorContext
    ) -> None:
        self.id = settings.id
        self.partner_id = partner_id
        self.settings = settings
        self._context = context
        self._metadata: _Cached | None = None
        self._jwks: _Cached | None = None
        # Long-lived clients: keep-alive to the IdP instead of new TCP+TLS per call. Only
        # return values are used, so concurrent logins share them safely; aclose() ends them.
        self._http: httpx.AsyncClient | None = None
        self._oauth: AsyncOAuth2Client | None = None

    @classmethod
    def from_settings(
        cls, partner: PartnerSettings, connection: ConnectionSettings, context: ConnectorContext
    ) -> OidcConnector:
        if not isinstance(connection, OidcConnectionSettings):
            raise TypeError(f"connection {connection.id} is not an OIDC connection")
        return cls(partner.id, connection, context)

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    # --- the capability ------------------------------------------------------------------

    async def login_url(self, request: LoginRequest) -> LoginRedirect:
        """An OIDC Core §3.1.2.1 authentication request: code flow, S256 PKCE, nonce."""
        metadata = await self.metadata()
        flow = FlowState.new(request)
        extra = {
            "nonce": flow.nonce,
            "code_challenge": create_s256_code_challenge(flow.code_verifier),
            "code_challenge_method": "S256",
        }
        if request.login_hint:
            extra["login_hint"] = request.login_hint
        url = prepare_grant_uri(
            metadata.authorization_endpoint,
            self.settings.client_id,
            "code",
            redirect_uri=flow.redirect_uri,
            scope=" ".join(self.settings.scopes),
            state=flow.state,
            **extra,
        )
        return LoginRedirect(str(url), flow.to_dict())

    async def handle_callback(
        self, request: CallbackRequest, flow_state: Mapping[str, Any] | None
    ) -> FederatedIdentity:
        """Check the authorization response, redeem the code, validate, map claims."""
        if flow_state is None:  # OIDC has no unsolicited responses: always our flow
            raise InvalidState(f"connection {self.id}: callback without a login flow")
        flow = FlowState.load(flow_state)
        code = self._authorization_code(request.params, flow)
        metadata = await self.metadata()
        if metadata.iss_parameter_supported and "iss" not in request.params:
            raise self._invalid("authorization response lacks the RFC 9207 iss parameter")
        tokens = await self._redeem(metadata, code, flow)
        claims = await self._verify_id_token(tokens.id_token, flow.nonce)
        if self.settings.use_userinfo and metadata.userinfo_endpoint:
            userinfo = await self._userinfo(metadata.userinfo_endpoint, tokens.access_token)
            if userinfo.get("sub") != claims["sub"]:
                raise self._invalid("userinfo sub differs from the ID token sub")
            claims = {**userinfo, **claims}  # the signed ID token wins over userinfo
        identity = self._identity(claims)
        if self._logs_out_upstream(metadata) and len(tokens.id_token) <= MAX_ID_TOKEN_HINT:
            request.session_state["id_token"] = tokens.id_token
        return identity

    # --- RP-Initiated Logout 1.0 ---------------------------------------------------------

    async def logout_url(
        self,
        identity: FederatedIdentity,
        return_url: str,
        state: str,
        session_state: Mapping[str, Any] | None = None,
    ) -> LoginRedirect | None:
        """The IdP's end-session request (§2): the ID token it issued at sign-in as
        ``id_token_hint`` (when kept), our ``client_id``, ``post_logout_redirect_uri`` =
        ``return_url`` (registered at the IdP) and the hub's one-time ``state``. None when
        the connection opted out or the IdP has no ``end_session_endpoint``."""
        if not self.settings.upstream_logout:
            return None
        metadata = await self.metadata()
        if not self._logs_out_upstream(metadata):
            return None
        assert metadata.end_session_endpoint is not None
        params: list[tuple[str, str]] = []
        hint = (session_state or {}).get("id_token")
        if isinstance(hint, str) and hint:
            params.append(("id_token_hint", hint))
        params += [
            ("client_id", self.settings.client_id),
            ("post_logout_redirect_uri", return_url),
            ("state", state),
        ]
        url = add_params_to_uri(metadata.end_session_endpoint, params)
        return LoginRedirect(url, {"state": state, "post_logout_redirect_uri": return_url})

    async def handle_logout(self, request: CallbackRequest) -> LogoutOutcome:
        """The browser back at ``post_logout_redirect_uri`` (§3): the hub has matched its
        ``state`` to the logout it started; nothing is left to end (the hub session ended
        before the browser left) and no answer goes to the IdP."""
        params = request.params
        if any(not isinstance(v, str) or len(v) > MAX_PARAM_LENGTH for v in params.values()):
            raise self._invalid("malformed post-logout redirect parameters")
        if not params.get("state"):
            raise InvalidState(f"connection {self.id}: post-logout redirect without state")
        return LogoutOutcome()

    def _logs_out_upstream(self, metadata: ProviderMetadata) -> bool:
        return self.settings.upstream_logout and metadata.end_session_endpoint is not None

    async def aclose(self) -> None:
        """Close the pooled connections to the IdP (the hub calls this at shutdown)."""
        for client in (self._oauth, self._http):
            if client is not None:
                await client.aclose()
        self._oauth = self._http = None

    # --- authorization response (RFC 6749 §4.1.2, RFC 9207) ------------------------------

    def _authorization_code(self, params: Mapping[str, Any], flow: FlowState) -> str:
        if any(not isinstance(v, str) or len(v) > MAX_PARAM_LENGTH for v in params.values()):
            raise self._invalid("malformed authorization response parameters")
        state = params.get("state")
        if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise InvalidState(f"connection {self.id}: missing or foreign state in callback")
        if "iss" in params and params["iss"] != self.issuer:
            raise self._invalid(f"RFC 9207 iss {params['iss']!r} is not {self.issuer!r}")
        if "error" in params:
            raise UpstreamError(
                f"connection {self.id}: IdP returned error={params['error']!r} "
                f"description={params.get('error_description')!r}"
            )
        code = params.get("code")
        if not code:
            raise self._invalid("authorization response has no code")
        return str(code)

    # --- token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.5) ----------------------------------

    async def _redeem(
        self, metadata: ProviderMetadata, code: str, flow: FlowState
    ) -> TokenResponse:
        if self._oauth is None:
            self._oauth = AsyncOAuth2Client(
                client_id=self.settings.client_id,
                client_secret=self.settings.client_secret,
                token_endpoint_auth_method=self.settings.token_endpoint_auth_method,
                **self._context.http_options(self.settings.timeout_seconds),
            )
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                token = await self._oauth.fetch_token(
                    metadata.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    redirect_uri=flow.redirect_uri,
                    code_verifier=flow.code_verifier,
                )
        except OAuthError as exc:
            raise self._token_error(str(exc.error), exc.description) from None
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            raise self._upstream(f"token endpoint answered HTTP {status}") from None
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self._upstream(f"token endpoint unreachable: {exc!r}") from None
        except ValueError:
            raise self._upstream("token endpoint answer is not a JSON object") from None
        return TokenResponse.parse(dict(token))

    def _token_error(self, error: str, description: Any) -> UpstreamError | InvalidGrant:
        detail = f"connection {self.id}: token endpoint refused the code: {error} ({description!r})"
        if error == "invalid_grant":
            return InvalidGrant(
                detail, public_message="This sign-in could not be completed. Please start again."
            )
        return UpstreamError(detail)

    # --- ID token (OIDC Core §3.1.3.7) ---------------------------------------------------

    async def _verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            keys = await self._keys_for(jose.header(id_token))
            claims = jose.verify(
                id_token,
                keys,
                issuer=self.issuer,
                audience=self.settings.client_id,
                leeway=self.settings.leeway_seconds,
                require=("iss", "sub", "aud", "exp", "iat"),
            )
        except jose.JWTError as exc:
            raise self._invalid(f"ID token refused: {exc.detail}") from None
        self._check_azp(claims)
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise self._invalid("ID token nonce does not match this login")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LENGTH:
            raise self._invalid("ID token sub is empty, not a string or too long")
        return claims

    def _check_azp(self, claims: Mapping[str, Any]) -> None:
        aud = claims.get("aud")
        several = isinstance(aud, list) and len(aud) > 1
        azp = claims.get("azp")
        if (several or azp is not None) and azp != self.settings.client_id:
            raise self._invalid(f"ID token azp {azp!r} is not our client_id")

    async def _keys_for(self, header: Mapping[str, Any]) -> list[jose.VerificationKey]:
        """The cached keys; refetched once (rate-limited) when the kid is unknown."""
        keys = await self._jwks_keys()
        alg, kid = header.get("alg"), header.get("kid")
        wanted = alg in self.settings.algorithms
        if wanted and not _has_key(keys, alg, kid) and self._may_refresh_jwks():
            keys = await self._jwks_keys(force=True)
        if kid is None:
            usable = [k for k in keys if alg in k.algorithms]
            if len(usable) == 1:  # OIDC Core §10.1: kid may be left out with a single key
                return [dataclasses.replace(usable[0], kid=None)]
        return keys

    def _may_refresh_jwks(self) -> bool:
        return self._jwks is None or (
            self._context.clock() - self._jwks.fetched_at >= JWKS_REFRESH_INTERVAL
        )

    async def _jwks_keys(self, *, force: bool = False) -> list[jose.VerificationKey]:
        now = self._context.clock()
        if force or self._jwks is None or now - self._jwks.fetched_at >= JWKS_TTL:
            metadata = await self.metadata()
            jwks = await self._get_json(metadata.jwks_uri, "JWKS")
            self._jwks = _Cached(jose.keys_from_jwks(jwks, self.settings.algorithms), now)
        keys: list[jose.VerificationKey] = self._jwks.value
        return keys

    # --- discovery and userinfo ----------------------------------------------------------

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document (OIDC Discovery 1.0 §4), cached for an hour."""
        now = self._context.clock()
        if self._metadata is None or now - self._metadata.fetched_at >= METADATA_TTL:
            url = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
            document = await self._get_json(url, "discovery")
            try:
                parsed = ProviderMetadata.parse(document, self.issuer)
            except InvalidUpstreamResponse as exc:
                raise self._invalid(exc.detail) from None
            self._metadata = _Cached(parsed, now)
        metadata: ProviderMetadata = self._metadata.value
        return metadata

    async def _userinfo(self, endpoint: str, access_token: str) -> dict[str, Any]:
        """OIDC Core §5.3: plain JSON only (signed userinfo is not configured here)."""
        bearer = {"Authorization": f"Bearer {access_token}"}
        return await self._get_json(endpoint, "userinfo", bearer)

    async def _get_json(
        self, url: str, what: str, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        request_headers = {"Accept": "application/json", **(headers or {})}
        timeout = self.settings.timeout_seconds
        try:  # httpx's timeout is per socket operation; asyncio's bounds the whole answer
            if self._http is None:
                self._http = self._context.http_client(timeout)
            async with asyncio.timeout(timeout):
                response = await self._http.get(url, headers=request_headers)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self._upstream(f"{what} at {url} unreachable: {exc!r}") from None
        if response.status_code != 200:
            raise self._upstream(f"{what} at {url} answered HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise self._upstream(f"{what} at {url} is not a JSON object")
        return document

    # --- claims → identity ---------------------------------------------------------------

    def _identity(self, claims: dict[str, Any]) -> FederatedIdentity:
        mapping, trusted = self.settings.claims, self.settings.trust_acr
        subject = _string(claim(claims, mapping.subject))
        if not subject:
            raise self._invalid(f"no subject in claim {mapping.subject!r}")
        return FederatedIdentity(
            partner_id=self.partner_id,
            connection_id=self.id,
            issuer=self.issuer,
            subject=subject,
            email=_string(claim(claims, mapping.email)),
            email_verified=_boolean(claim(claims, mapping.email_verified)),
            name=_string(claim(claims, mapping.name)),
            groups=_strings(claim(claims, mapping.groups)),
            roles=_strings(claim(claims, mapping.roles)),
            acr=_string(claim(claims, mapping.acr)) if trusted else None,
            amr=_strings(claim(claims, mapping.amr)) if trusted else (),
            auth_time=_integer(claims.get("auth_time")),
            raw_claims=claims,
        )

    def _invalid(self, detail: str) -> InvalidUpstreamResponse:
        return InvalidUpstreamResponse(f"connection {self.id}: {detail}")

    def _upstream(self, detail: str) -> UpstreamError:
        return UpstreamError(f"connection {self.id}: {detail}")


def _has_key(keys: list[jose.VerificationKey], alg: Any, kid: Any) -> bool:
    return any(alg in k.algorithms and (kid is None or k.kid in (None, kid)) for k in keys)


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects (``realm_access.roles``)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list | tuple):
        return tuple(v for v in value if isinstance(v, str) and v)
    return ()


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)

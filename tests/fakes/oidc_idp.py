"""An in-process fake OpenID Provider (a Starlette app) with fresh keys per instance.

It speaks just enough OIDC Core 1.0 / RFC 6749 / RFC 7636 / RFC 9207 for the hub's
upstream connector: discovery, ``/authorize`` (no login page: it signs in the user named by
``login_hint``, else the first user), ``/token`` (client authentication, exact
``redirect_uri``, S256 PKCE, single-use codes), ``/userinfo`` and ``/jwks``. Every instance
generates an RS256 and an ES256 key; ``alg`` picks the one that signs ID tokens, the JWKS
publishes both.

Small API::

    idp = FakeOidcProvider("https://idp.acme.test", client_id="isthmus", client_secret="s3cret",
                           users=[FakeUser("alice", email="alice@acme.test", groups=("eng",))])
    context = ConnectorContext(hub_base_url="https://hub.test", transport=idp.transport)
    # several IdPs at once: ConnectorContext(..., mounts=idp_a.mounts() | idp_b.mounts())
    redirect = await connector.login_url(LoginRequest(callback_url, state="flow-1"))
    params = await idp.authorize(redirect.url)      # the redirect back, as query parameters
    # (idp.authorize_redirect(url) returns the whole Location URL instead)
    identity = await connector.handle_callback(CallbackRequest(callback_url, params), ...)

Settings for the connector: ``idp.connection_settings(id="acme-oidc")`` returns an
``OidcConnectionSettings`` pointing at this IdP with matching client credentials.

Hooks (each applies to the next ID token, or the next userinfo answer, only):
``tamper_next_id_token(claims={...}, drop=(...), header={...}, signing=...)`` with
``header`` values of ``None`` removing a parameter (``{"kid": None}``), and
``signing`` one of ``"normal"``, ``"foreign"`` (a key the JWKS does not hold, same kid),
``"none"`` (``alg: none``, empty signature) or ``"hs256-public-key"`` (HS256 keyed with the
public key's PEM); ``next_userinfo_sub(sub)``. Also: ``rotate_signing_key()``,
``metadata_overrides`` (patch the discovery document), ``network_error`` (an
``httpx.TransportError`` raised for every request while set), ``authorize_error`` (answer
the next authorization request with this OAuth error) and ``hits`` (request counts by
route name: ``"discovery"``, ``"authorize"``, ``"token"``, ``"userinfo"``, ``"jwks"``,
``"end_session"``).

RP-Initiated Logout 1.0 (opt-in: ``end_session=True`` advertises ``end_session_endpoint``):
``/end_session`` checks ``id_token_hint`` (signed by this IdP for this client; expiry
ignored, §2), ``client_id`` and ``post_logout_redirect_uri`` (exact match against
``post_logout_redirect_uris`` when given; with neither hint nor client_id it is refused),
ends the IdP session of the hinted user and redirects there with ``state``. ``signed_in``
holds the subjects with an IdP session (added at ``/authorize``), ``end_session_requests``
the parameters of each call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from federation.keys import SigningKey
from federation.settings import OidcConnectionSettings

Signing = Literal["normal", "foreign", "none", "hs256-public-key"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]


@dataclass(frozen=True)
class FakeUser:
    sub: str
    email: str | None = None
    email_verified: bool | str = True
    name: str | None = None
    groups: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)  # any other (nested) claims

    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {"sub": self.sub, **self.extra}
        if self.email is not None:
            claims["email"] = self.email
            claims["email_verified"] = self.email_verified
        if self.name is not None:
            claims["name"] = self.name
        if self.groups:
            claims["groups"] = list(self.groups)
        return claims


@dataclass
class _Tamper:
    claims: dict[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    header: dict[str, Any] = field(default_factory=dict)
    signing: Signing = "normal"


@dataclass(frozen=True)
class _Grant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    user: FakeUser


class _CountingTransport(httpx.AsyncBaseTransport):
    """ASGI transport that can play an unreachable IdP."""

    def __init__(self, idp: FakeOidcProvider) -> None:
        self._idp = idp
        self._inner = httpx.ASGITransport(app=idp.app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._idp.network_error is not None:
            raise self._idp.network_error
        return await self._inner.handle_async_request(request)


class FakeOidcProvider:
    def __init__(
        self,
        issuer: str = "https://idp.acme.test",
        *,
        client_id: str = "isthmus",
        client_secret: str | None = "s3cret",
        auth_method: AuthMethod = "client_secret_basic",
        users: Iterable[FakeUser] = (),
        alg: Literal["RS256", "ES256"] = "RS256",
        redirect_uris: Iterable[str] | None = None,
        profile_in_id_token: bool = True,
        userinfo: bool = True,
        iss_in_response: bool = True,
        end_session: bool = False,
        post_logout_redirect_uris: Iterable[str] | None = None,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.auth_method = auth_method
        self.users = list(users) or [
            FakeUser("user-1", email="user1@acme.test", name="User One", groups=("staff",))
        ]
        self.alg = alg
        self.redirect_uris = None if redirect_uris is None else set(redirect_uris)
        self.profile_in_id_token = profile_in_id_token
        self.userinfo_enabled = userinfo
        self.iss_in_response = iss_in_response
        self.end_session = end_session
        self.post_logout_redirect_uris = (
            None if post_logout_redirect_uris is None else set(post_logout_redirect_uris)
        )
        self.signed_in: set[str] = set()
        self.end_session_requests: list[dict[str, str]] = []
        self.keys: dict[str, SigningKey] = {a: SigningKey.generate(a) for a in ("RS256", "ES256")}
        self.metadata_overrides: dict[str, Any] = {}
        self.network_error: httpx.TransportError | None = None
        self.authorize_error: str | None = None
        self.hits: Counter[str] = Counter()
        self.last_authorize_params: dict[str, str] = {}
        self._codes: dict[str, _Grant] = {}
        self._access_tokens: dict[str, FakeUser] = {}
        self._tamper: _Tamper | None = None
        self._userinfo_sub: str | None = None
        self.app = Starlette(routes=self._routes())
        self.transport: httpx.AsyncBaseTransport = _CountingTransport(self)

    # --- public helpers ------------------------------------------------------------------

    def mounts(self) -> dict[str, httpx.AsyncBaseTransport]:
        parts = urlsplit(self.issuer)
        return {f"{parts.scheme}://{parts.netloc}": self.transport}

    def connection_settings(
        self, id: str = "acme-oidc", **overrides: Any
    ) -> OidcConnectionSettings:
        values: dict[str, Any] = {
            "type": "oidc",
            "id": id,
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "token_endpoint_auth_method": self.auth_method,
            "algorithms": (self.alg,),
        }
        return OidcConnectionSettings(**(values | overrides))

    async def authorize_redirect(self, url: str) -> str:
        """Follow the browser's trip to /authorize; return the redirect's Location."""
        async with httpx.AsyncClient(transport=self.transport) as client:
            response = await client.get(url)
        if response.status_code not in (302, 303):
            raise AssertionError(f"authorize answered {response.status_code}: {response.text}")
        return response.headers["location"]

    async def authorize(self, url: str) -> dict[str, str]:
        """The query parameters the browser would bring back to the callback."""
        return dict(parse_qsl(urlsplit(await self.authorize_redirect(url)).query))

    def tamper_next_id_token(
        self,
        *,
        claims: Mapping[str, Any] | None = None,
        drop: Iterable[str] = (),
        header: Mapping[str, Any] | None = None,
        signing: Signing = "normal",
    ) -> None:
        self._tamper = _Tamper(dict(claims or {}), tuple(drop), dict(header or {}), signing)

    def next_userinfo_sub(self, sub: str) -> None:
        self._userinfo_sub = sub

    def rotate_signing_key(self) -> SigningKey:
        """Replace the signing key of ``alg`` by a new one (new kid; the old one unpublished)."""
        self.keys[self.alg] = SigningKey.generate(self.alg)
        return self.keys[self.alg]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys.values()]}

    def discovery(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.alg],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [self.auth_method],
            "scopes_supported": ["openid", "email", "profile"],
            "authorization_response_iss_parameter_supported": self.iss_in_response,
        }
        if self.userinfo_enabled:
            doc["userinfo_endpoint"] = f"{self.issuer}/userinfo"
        if self.end_session:
            doc["end_session_endpoint"] = f"{self.issuer}/end_session"
        return doc | self.metadata_overrides

    # --- the app -------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        prefix = urlsplit(self.issuer).path.rstrip("/")
        return [
            Route(f"{prefix}/.well-known/openid-configuration", self._discovery, name="discovery"),
            Route(f"{prefix}/authorize", self._authorize, name="authorize"),
            Route(f"{prefix}/token", self._token, methods=["POST"], name="token"),
            Route(f"{prefix}/userinfo", self._userinfo, methods=["GET", "POST"], name="userinfo"),
            Route(f"{prefix}/jwks", self._jwks, name="jwks"),
            Route(f"{prefix}/end_session", self._end_session, name="end_session"),
        ]

    async def _discovery(self, request: Request) -> Response:
        self.hits["discovery"] += 1
        return JSONResponse(self.discovery())

    async def _jwks(self, request: Request) -> Response:
        self.hits["jwks"] += 1
        return JSONResponse(self.jwks())

    async def _authorize(self, request: Request) -> Response:
        self.hits["authorize"] += 1
        params = dict(request.query_params)
        self.last_authorize_params = params
        if params.get("client_id") != self.client_id:
            return JSONResponse({"error": "unknown client"}, status_code=400)
        redirect_uri = params.get("redirect_uri", "")
        if self.redirect_uris is not None and redirect_uri not in self.redirect_uris:
            return JSONResponse({"error": "unregistered redirect_uri"}, status_code=400)
        answer = self._authorize_answer(params)
        answer["state"] = params.get("state", "")
        if self.iss_in_response:
            answer["iss"] = self.issuer
        return RedirectResponse(f"{redirect_uri}?{urlencode(answer)}", status_code=302)

    def _authorize_answer(self, params: Mapping[str, str]) -> dict[str, str]:
        error, self.authorize_error = self.authorize_error, None
        if error:
            return {"error": error, "error_description": "refused by the fake IdP"}
        if params.get("response_type") != "code" or "openid" not in params.get("scope", "").split():
            return {"error": "invalid_request", "error_description": "code flow with openid only"}
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return {"error": "invalid_request", "error_description": "S256 PKCE required"}
        user = self._user(params.get("login_hint"))
        self.signed_in.add(user.sub)
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Grant(
            self.client_id,
            params["redirect_uri"],
            params["code_challenge"],
            params.get("nonce"),
            user,
        )
        return {"code": code}

    def _user(self, hint: str | None) -> FakeUser:
        # A hint only pre-fills a real IdP's form: whoever signs in there is who comes back.
        return next((u for u in self.users if hint in (u.sub, u.email)), self.users[0])

    async def _token(self, request: Request) -> Response:
        self.hits["token"] += 1
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not self._client_authenticated(request, form):
            return _oauth_error("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type")
        grant = self._codes.pop(form.get("code", ""), None)  # single use
        if grant is None or grant.redirect_uri != form.get("redirect_uri"):
            return _oauth_error("invalid_grant")
        if _s256(form.get("code_verifier", "")) != grant.code_challenge:
            return _oauth_error("invalid_grant")
        access_token = secrets.token_urlsafe(24)
        self._access_tokens[access_token] = grant.user
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self._id_token(grant),
                "scope": "openid email profile",
            },
            headers={"Cache-Control": "no-store"},
        )

    def _client_authenticated(self, request: Request, form: Mapping[str, str]) -> bool:
        if self.auth_method == "none":
            return form.get("client_id") == self.client_id and "client_secret" not in form
        client: tuple[str | None, str | None] | None
        if self.auth_method == "client_secret_post":
            client = (form.get("client_id"), form.get("client_secret"))
        else:
            client = _basic_credentials(request.headers.get("authorization", ""))
        return client == (self.client_id, self.client_secret)

    async def _userinfo(self, request: Request) -> Response:
        self.hits["userinfo"] += 1
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
        if user is None:
            return _oauth_error("invalid_token", 401)
        claims = user.claims()
        if self._userinfo_sub is not None:
            claims["sub"], self._userinfo_sub = self._userinfo_sub, None
        return JSONResponse(claims)

    async def _end_session(self, request: Request) -> Response:
        self.hits["end_session"] += 1
        params = dict(request.query_params)
        self.end_session_requests.append(params)
        if not self.end_session:
            return JSONResponse({"error": "not found"}, status_code=404)
        hint, client_id = params.get("id_token_hint"), params.get("client_id")
        sub: str | None = None
        if hint:
            try:
                claims = jwt.decode(
                    hint,
                    self.keys[self.alg].private_key.public_key(),
                    algorithms=[self.alg],
                    audience=self.client_id,
                    issuer=self.issuer,
                    options={"verify_exp": False},
                )
            except jwt.InvalidTokenError as exc:
                return JSONResponse({"error": "invalid id_token_hint: " + str(exc)}, 400)
            sub = str(claims["sub"])
        if client_id is not None and client_id != self.client_id:
            return JSONResponse({"error": "client_id mismatch"}, status_code=400)
        target = params.get("post_logout_redirect_uri")
        if target is not None:
            if hint is None and client_id is None:
                return JSONResponse({"error": "unidentified client"}, status_code=400)
            registered = self.post_logout_redirect_uris
            if registered is not None and target not in registered:
                return JSONResponse({"error": "unregistered post_logout_redirect_uri"}, 400)
        if sub is not None:
            self.signed_in.discard(sub)
        else:  # no hint: a real IdP asks the user; the fake ends every session
            self.signed_in.clear()
        if target is None:
            return Response("signed out", media_type="text/plain")
        back = {"state": params["state"]} if "state" in params else {}
        separator = "&" if "?" in target else "?"
        location = f"{target}{separator}{urlencode(back)}" if back else target
        return RedirectResponse(location, status_code=302)

    # --- ID tokens -----------------------------------------------------------------------

    def _id_token(self, grant: _Grant) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
        }
        claims |= grant.user.claims() if self.profile_in_id_token else {"sub": grant.user.sub}
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        tamper, self._tamper = self._tamper or _Tamper(), None
        claims |= tamper.claims
        for name in tamper.drop:
            claims.pop(name, None)
        return self._sign(claims, tamper)

    def _sign(self, claims: dict[str, Any], tamper: _Tamper) -> str:
        key = self.keys[self.alg]
        merged = {"kid": key.kid, "typ": "JWT"} | tamper.header
        header = {k: v for k, v in merged.items() if v is not None}  # None removes a param
        if tamper.signing == "none":
            return _compact({"alg": "none", **header}, claims, lambda _: b"")
        if tamper.signing == "hs256-public-key":
            pem = key.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return _compact(
                {"alg": "HS256", **header},
                claims,
                lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
            )
        signer = SigningKey.generate(self.alg) if tamper.signing == "foreign" else key
        return jwt.encode(claims, signer.private_key, algorithm=self.alg, headers=header)


def _compact(header: Mapping[str, Any], claims: Mapping[str, Any], mac: Any) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(mac(signing_input.encode()))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _s256(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode()).digest())


def _basic_credentials(value: str) -> tuple[str, str] | None:
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except ValueError:
        return None
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


def _oauth_error(error: str, status: int = 400) -> Response:
    body = {"error": error, "error_description": f"fake IdP: {error}"}
    return JSONResponse(body, status_code=status)

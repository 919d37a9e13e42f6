"""The demo relying party: a tiny app that signs its users in against the hub's OIDC provider.

It does what any application in front of Isthmus would do, with ordinary libraries:
discovery, authorization code + PKCE (S256) with state and nonce through authlib's async
client, the code exchanged at the token endpoint over HTTP, the ID token verified with
PyJWT against the hub's JWKS (algorithm allow-list, iss, aud, exp, nonce), userinfo read
with the access token, and RP-initiated logout at the hub's end-session endpoint.

Its own session is a small HMAC-signed, time-limited cookie (:class:`SignedCookie`, stdlib
only); nothing is stored server-side.
``isthmus demo`` mounts it at ``/demo-app`` next to the hub.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import authlib.deprecate
import httpx
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

with warnings.catch_warnings():
    # authlib 1.9 announces its httpx integration moving to the httpx2 package; the demo
    # uses httpx like the rest of the hub (same notice silenced in connectors/oidc.py).
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

# What the demo accepts for ID tokens; anything else (HS*, none) is refused.
ALLOWED_ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 30
DISCOVERY_TTL = 300.0
SHOWN_CLAIMS = (
    "sub",
    "name",
    "email",
    "email_verified",
    "partner_id",
    "partner_kind",
    "partner_name",
    "connection_id",
    "groups",
    "roles",
    "acr",
    "amr",
    "auth_time",
    "sid",
    "iss",
    "aud",
    "exp",
)


@dataclass(frozen=True)
class DemoAppConfig:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    post_logout_redirect_uri: str
    scopes: Sequence[str] = ("openid", "email", "profile", "groups")
    # Where the app reaches the hub over HTTP; the issuer unless set (tests pass a transport).
    backchannel_url: str | None = None
    transport: httpx.AsyncBaseTransport | None = None
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class DemoError(Exception):
    """Something the page should explain; the message is safe to show."""


class OidcClient:
    """Discovery, code exchange, ID token validation and userinfo, with a small cache."""

    def __init__(self, config: DemoAppConfig) -> None:
        self.config = config
        self._metadata: dict[str, Any] | None = None
        self._fetched = 0.0

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(**self._http_options())

    def oauth(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            token_endpoint_auth_method="client_secret_basic",
            scope=" ".join(self.config.scopes),
            redirect_uri=self.config.redirect_uri,
            code_challenge_method="S256",
            **self._http_options(),
        )

    def _http_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": 10.0, "follow_redirects": False}
        if self.config.transport is not None:
            options["transport"] = self.config.transport
        return options

    def backchannel(self, url: str) -> str:
        """The hub's endpoints as advertised, reached through the back-channel origin."""
        base = self.config.backchannel_url
        issuer = self.config.issuer.rstrip("/")
        if base and url.startswith(issuer):
            return base.rstrip("/") + url[len(issuer) :]
        return url

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is not None and time.monotonic() - self._fetched < DISCOVERY_TTL:
            return self._metadata
        url = self.backchannel(self.config.issuer.rstrip("/") + "/.well-known/openid-configuration")
        data = await self._get_json(url, "discovery document")
        if data.get("issuer") != self.config.issuer.rstrip("/"):
            raise DemoError(
                f"discovery names issuer {data.get('issuer')!r}, expected {self.config.issuer!r}"
            )
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(data.get(name), str):
                raise DemoError(f"discovery document has no {name}")
        self._metadata, self._fetched = data, time.monotonic()
        return data

    async def _get_json(self, url: str, what: str, token: str | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self.http() as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise DemoError(f"could not fetch the {what} from {url}: {exc}") from None
        if response.status_code != 200:
            raise DemoError(f"the {what} at {url} answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise DemoError(f"the {what} at {url} is not JSON") from None
        if not isinstance(data, dict):
            raise DemoError(f"the {what} at {url} is not a JSON object")
        return data

    async def authorization_url(self) -> tuple[str, dict[str, str]]:
        """The URL to send the browser to and what the callback needs to check."""
        meta = await self.metadata()
        state = secrets.token_urlsafe(24)
        nonce = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        async with self.oauth() as oauth:
            url, _ = oauth.create_authorization_url(
                meta["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier
            )
        return url, {"state": state, "nonce": nonce, "verifier": verifier}

    async def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        meta = await self.metadata()
        try:
            async with self.oauth() as oauth:
                token = await oauth.fetch_token(
                    self.backchannel(meta["token_endpoint"]),
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=verifier,
                )
        except httpx.HTTPError as exc:
            raise DemoError(f"token request failed: {exc}") from None
        except Exception as exc:  # authlib raises OAuthError subclasses with the error code
            error = getattr(exc, "error", None) or type(exc).__name__
            description = getattr(exc, "description", None) or str(exc)
            raise DemoError(
                f"the token endpoint refused the code: {error}: {description}"
            ) from None
        return dict(token)

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        meta = await self.metadata()
        advertised = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        allowed = [a for a in ALLOWED_ALGORITHMS if a in advertised]
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise DemoError(f"the ID token is malformed: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in allowed:
            raise DemoError(f"ID token algorithm {alg!r} is not one of {allowed}")
        jwks = await self._get_json(self.backchannel(meta["jwks_uri"]), "JWKS")
        key = _find_key(jwks, kid, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key=key,
                algorithms=[alg],
                audience=self.config.client_id,
                issuer=self.config.issuer.rstrip("/"),
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise DemoError(f"the ID token did not validate: {exc}") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise DemoError("the ID token's nonce does not match this sign-in")
        return claims

    async def userinfo(self, access_token: str) -> dict[str, Any] | None:
        meta = await self.metadata()
        endpoint = meta.get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            return None
        return await self._get_json(self.backchannel(endpoint), "userinfo", token=access_token)

    async def logout_url(self, id_token: str | None) -> str | None:
        meta = await self.metadata()
        endpoint = meta.get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        query = {
            "post_logout_redirect_uri": self.config.post_logout_redirect_uri,
            "client_id": self.config.client_id,
            "state": secrets.token_urlsafe(12),
        }
        if id_token:
            query["id_token_hint"] = id_token
        return f"{endpoint}?{urlencode(query)}"


class SignedCookie:
    """A JSON session in a cookie: ``base64url(payload).base64url(HMAC-SHA256)``, with expiry.

    Signed, not encrypted: the ID token and claims in it are the user's own, and the demo
    keeps no secret of the hub in it (the PKCE verifier is only useful with the code, for
    this client, within a minute).
    """

    def __init__(self, name: str, secret: str, path: str, max_age: int, secure: bool) -> None:
        self.name, self.path, self.max_age, self.secure = name, path, max_age, secure
        self._key = hashlib.sha256(b"isthmus-demo-app-session\x00" + secret.encode()).digest()

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    def load(self, request: Request) -> dict[str, Any]:
        raw = request.cookies.get(self.name, "")
        payload, _, signature = raw.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload.encode())):
            return {}
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int | float):
            return {}
        if data["exp"] < time.time():
            return {}
        session = data.get("data")
        return session if isinstance(session, dict) else {}

    def save(self, response: Response, session: Mapping[str, Any]) -> None:
        if not session:
            response.delete_cookie(
                self.name, path=self.path, secure=self.secure, httponly=True, samesite="lax"
            )
            return
        body = {"exp": int(time.time()) + self.max_age, "data": dict(session)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        response.set_cookie(
            self.name,
            f"{payload}.{self._sign(payload.encode())}",
            max_age=self.max_age,
            path=self.path,
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _find_key(jwks: Mapping[str, Any], kid: object, alg: str) -> jwt.PyJWK:
    for entry in jwks.get("keys", []):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if kid is not None and entry.get("kid") != kid:
            continue
        if entry.get("alg", alg) != alg:
            continue
        try:
            return jwt.PyJWK(entry, algorithm=alg)
        except jwt.PyJWTError:
            continue
    raise DemoError(f"the hub's JWKS has no {alg} key with kid {kid!r}")


# --- pages ---------------------------------------------------------------------------------


def create_demo_app(config: DemoAppConfig) -> Starlette:
    oidc = OidcClient(config)
    path = _path_of(config.redirect_uri).rsplit("/", 1)[0] or "/"
    cookie = SignedCookie(
        "demo_app_session",
        config.session_secret,
        path,
        max_age=3600,
        secure=config.redirect_uri.startswith("https:"),
    )

    async def home(request: Request) -> Response:
        user = cookie.load(request).get("user")
        if not user:
            # The hub's end-session endpoint comes back here with the state we sent.
            return _page("Demo app", _signed_out_body("state" in request.query_params))
        return _page("Demo app — signed in", _signed_in_body(user))

    async def login(request: Request) -> Response:
        try:
            url, pending = await oidc.authorization_url()
        except DemoError as exc:
            return _error_page(str(exc), status=502)
        response = RedirectResponse(url, status_code=303)
        cookie.save(response, {"pending": pending})
        return response

    async def callback(request: Request) -> Response:
        params = request.query_params
        pending = cookie.load(request).get("pending")
        response = await _complete(params, pending)
        # One use: the pending state is dropped whatever the outcome.
        if not isinstance(response, dict):
            cookie.save(response, {})
            return response
        redirect = RedirectResponse(path.rstrip("/") + "/", status_code=303)
        cookie.save(redirect, {"user": response})
        return redirect

    async def _complete(
        params: Mapping[str, str], pending: Mapping[str, str] | None
    ) -> Response | dict[str, Any]:
        if params.get("error"):
            description = params.get("error_description") or ""
            return _error_page(f"The hub answered {params['error']}: {description}", status=400)
        if not pending or not secrets.compare_digest(
            params.get("state", ""), str(pending.get("state", ""))
        ):
            return _error_page(
                "This sign-in was not started here, or was already completed. Start again.",
                status=400,
            )
        code = params.get("code")
        if not code:
            return _error_page("The hub returned no authorization code.", status=400)
        try:
            token = await oidc.exchange(code, str(pending["verifier"]))
            id_token = token.get("id_token")
            if not isinstance(id_token, str):
                raise DemoError("the token response has no id_token")
            claims = await oidc.verify_id_token(id_token, str(pending["nonce"]))
            access_token = token.get("access_token")
            userinfo = await oidc.userinfo(access_token) if isinstance(access_token, str) else None
        except DemoError as exc:
            return _error_page(str(exc), status=502)
        if userinfo is not None and userinfo.get("sub") != claims.get("sub"):
            return _error_page("userinfo is about another subject than the ID token", status=502)
        return {"claims": claims, "userinfo": userinfo, "id_token": id_token}

    async def logout(request: Request) -> Response:
        user = cookie.load(request).get("user")
        try:
            url = await oidc.logout_url(user.get("id_token") if isinstance(user, dict) else None)
        except DemoError:
            url = None
        response = RedirectResponse(url or config.post_logout_redirect_uri, status_code=303)
        cookie.save(response, {})
        return response

    app = Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/login", login, methods=["GET"]),
            Route("/callback", callback, methods=["GET"]),
            Route("/logout", logout, methods=["GET"]),
        ],
    )
    app.state.oidc = oidc  # tests reach the client (and its transport) here
    return app


def _path_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def _signed_out_body(just_signed_out: bool) -> str:
    note = (
        '<p class="muted" id="signed-out">You are signed out of the demo app and of the hub.</p>'
        if just_signed_out
        else ""
    )
    return f"""<h1>Demo app</h1>
{note}
<p>This small application trusts the Isthmus hub: it signs you in with OpenID Connect
(authorization code + PKCE) and shows what the hub says about you.</p>
<p class="muted">Try alice@acme.example, carol@globex.example (two ways to sign in),
erin@initech.example, or frank@umbrella.example (a suspended partner).</p>
<p><a class="button" id="sign-in" href="login">Sign in with Isthmus</a></p>"""


def _signed_in_body(user: Mapping[str, Any]) -> str:
    claims: Mapping[str, Any] = user.get("claims") or {}
    userinfo: Mapping[str, Any] | None = user.get("userinfo")
    rows = "".join(
        f'<dt>{html.escape(name)}</dt><dd id="claim-{html.escape(name)}">'
        f"{html.escape(_show(claims[name]))}</dd>"
        for name in SHOWN_CLAIMS
        if name in claims
    )
    others = {k: v for k, v in claims.items() if k not in SHOWN_CLAIMS}
    who = claims.get("name") or claims.get("email") or claims.get("sub")
    body = f"""<h1>Hello, {html.escape(str(who))}</h1>
<p>The hub signed you in. Your ID token was verified with the hub's published keys.</p>
<h2>ID token claims</h2>
<dl class="facts" id="claims">{rows}</dl>"""
    if others:
        body += f"<h3>Other claims</h3><pre>{html.escape(json.dumps(others, indent=2))}</pre>"
    if userinfo is not None:
        body += (
            '<h2>Userinfo</h2><pre id="userinfo">'
            f"{html.escape(json.dumps(userinfo, indent=2, sort_keys=True))}</pre>"
        )
    body += (
        '<p id="next">Next: the <a href="/orders/">orders app</a> behind the hub\'s proxy, '
        "guarded by a policy per partner.</p>"
        '<p><a class="button" id="sign-out" href="logout">Sign out</a></p>'
    )
    return body


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


def _error_page(message: str, status: int) -> Response:
    body = (
        f'<h1>Sign-in did not complete</h1><p class="error" role="alert" id="message">'
        f'{html.escape(message)}</p><p><a href="./">Back to the demo app</a></p>'
    )
    return _page("Demo app — error", body, status=status)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><link rel="stylesheet" href="/static/style.css"></head>
<body><header class="bar"><span class="brand">Demo app</span>
<span class="tag">a relying party of the Isthmus hub</span></header>
<main class="card" id="main">{body}</main></body></html>""",
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )

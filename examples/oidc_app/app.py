"""An app that does its own OpenID Connect login against the hub (code flow + PKCE, with
authlib's client), validates the tokens with the Isthmus SDK, and ends its local session
when the hub says so (OIDC Back-Channel Logout, with the SDK's receiver).

Sessions are server-side (in memory here: use a shared store with several replicas): the
cookie holds a random id; each session remembers the hub's ``sid`` so a logout token for
that ``sid`` finds it.

Run (register the client at the hub first; see README.md)::

    ISTHMUS_ISSUER=http://127.0.0.1:8080 APP_BASE_URL=http://127.0.0.1:9002 \\
    CLIENT_ID=example-app CLIENT_SECRET=... \\
        uvicorn --factory examples.oidc_app.app:create_app --port 9002
"""

from __future__ import annotations

import contextlib
import html
import os
import secrets
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import authlib.deprecate
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from federation.sdk import BackchannelLogoutReceiver, HubClaims, InvalidToken, TokenValidator

with warnings.catch_warnings():
    # authlib 1.9 announces its httpx integration moving to the httpx2 package; this app
    # uses httpx like the SDK, so the notice is silenced.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

SESSION_COOKIE = "example_session"
LOGIN_COOKIE = "example_login"
LOGIN_TTL = 600  # seconds a started login may take
SCOPE = "openid email profile groups"


@dataclass(frozen=True)
class Config:
    issuer: str  # the hub
    base_url: str  # this app's own origin, as registered at the hub
    client_id: str
    client_secret: str
    secure_cookies: bool = True

    @classmethod
    def from_env(cls) -> Config:
        base = os.environ.get("APP_BASE_URL", "http://127.0.0.1:9002").rstrip("/")
        return cls(
            issuer=os.environ.get("ISTHMUS_ISSUER", "http://127.0.0.1:8080").rstrip("/"),
            base_url=base,
            client_id=os.environ.get("CLIENT_ID", "example-app"),
            client_secret=os.environ["CLIENT_SECRET"],
            secure_cookies=base.startswith("https://"),
        )

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"


@dataclass
class LocalSession:
    id: str
    user: HubClaims  # from the validated ID token
    id_token: str
    created_at: float = field(default_factory=time.time)


class Sessions:
    """The app's own sessions, findable by the hub's ``sid`` and ``sub``."""

    def __init__(self) -> None:
        self._by_id: dict[str, LocalSession] = {}
        self._pending: dict[str, tuple[dict[str, str], float]] = {}

    def create(self, user: HubClaims, id_token: str) -> LocalSession:
        session = LocalSession(secrets.token_urlsafe(32), user, id_token)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> LocalSession | None:
        return self._by_id.get(session_id) if session_id else None

    def drop(self, session_id: str | None) -> LocalSession | None:
        return self._by_id.pop(session_id, None) if session_id else None

    def drop_hub_session(self, sid: str | None, sub: str | None) -> int:
        """A logout token: drop the sessions of that hub ``sid`` (else of that ``sub``)."""
        doomed = [
            s.id
            for s in self._by_id.values()
            if (s.user.sid == sid if sid is not None else s.user.subject == sub)
        ]
        for session_id in doomed:
            del self._by_id[session_id]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._by_id)

    # logins under way: state → (verifier, nonce), bound to the browser by a cookie
    def begin_login(self, values: dict[str, str]) -> str:
        handle = secrets.token_urlsafe(24)
        now = time.time()
        self._pending = {k: v for k, v in self._pending.items() if v[1] > now}
        self._pending[handle] = (values, now + LOGIN_TTL)
        return handle

    def finish_login(self, handle: str | None) -> dict[str, str] | None:
        found = self._pending.pop(handle, None) if handle else None
        return found[0] if found and found[1] > time.time() else None


def create_app(
    config: Config | None = None,
    *,
    validator: TokenValidator | None = None,
    http: httpx.AsyncClient | None = None,
) -> Starlette:
    config = config or Config.from_env()
    owned = http is None
    http = http or httpx.AsyncClient(timeout=10)
    # The SDK: one validator (the hub's keys cached) for ID tokens and logout tokens.
    validator = validator or TokenValidator(
        config.issuer, audience=config.client_id, async_http=http
    )
    receiver = BackchannelLogoutReceiver(validator, audience=config.client_id)
    sessions = Sessions()
    metadata: dict[str, Any] = {}

    async def discovery() -> dict[str, Any]:
        if not metadata:
            response = await http.get(f"{config.issuer}/.well-known/openid-configuration")
            response.raise_for_status()
            metadata.update(response.json())
        return metadata

    def oauth_client() -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=config.client_id,
            client_secret=config.client_secret,
            scope=SCOPE,
            redirect_uri=config.redirect_uri,
            code_challenge_method="S256",
            timeout=10,
        )

    def cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="lax",
            secure=config.secure_cookies,
        )

    async def home(request: Request) -> Response:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return HTMLResponse(
                '<!doctype html><title>Example app</title><p id="anonymous">Not signed in. '
                '<a href="/login">Sign in with your company account</a></p>'
            )
        user = session.user
        return HTMLResponse(
            f"""<!doctype html><title>Example app</title>
<p id="who">Signed in as <b>{html.escape(user.name or user.email or user.subject)}</b></p>
<p id="partner">Partner: {html.escape(user.partner_id or "?")}
({html.escape(user.partner_kind or "?")}), groups: {html.escape(", ".join(user.groups))}</p>
<p><a href="/logout">Sign out</a></p>"""
        )

    async def me(request: Request) -> Response:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return JSONResponse({"signed_in": False}, status_code=401)
        user = session.user
        return JSONResponse(
            {
                "signed_in": True,
                "subject": user.subject,
                "email": user.email,
                "partner_id": user.partner_id,
                "groups": list(user.groups),
                "sid": user.sid,
            }
        )

    async def login(request: Request) -> Response:
        meta = await discovery()
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        url, state = oauth_client().create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        handle = sessions.begin_login({"state": state, "verifier": verifier, "nonce": nonce})
        response = RedirectResponse(url, status_code=303)
        cookie(response, LOGIN_COOKIE, handle, LOGIN_TTL)
        return response

    async def callback(request: Request) -> Response:
        pending = sessions.finish_login(request.cookies.get(LOGIN_COOKIE))
        query = request.query_params
        if pending is None or query.get("state") != pending["state"]:
            return _failure("this sign-in was not started here, or took too long")
        if query.get("iss") != config.issuer:  # RFC 9207: the answer is from our hub
            return _failure("the answer does not come from the expected sign-in service")
        if "error" in query or not query.get("code"):
            return _failure(f"sign-in refused: {query.get('error', 'no code')}")
        meta = await discovery()
        async with oauth_client() as client:
            tokens = await client.fetch_token(
                meta["token_endpoint"], code=query["code"], code_verifier=pending["verifier"]
            )
        try:
            user = await validator.avalidate(tokens["id_token"])
        except InvalidToken as exc:
            return _failure(f"ID token refused: {exc.reason}")
        if user.raw.get("nonce") != pending["nonce"]:
            return _failure("ID token for another sign-in (nonce)")
        session = sessions.create(user, tokens["id_token"])
        response = RedirectResponse("/", status_code=303)
        cookie(response, SESSION_COOKIE, session.id, 8 * 3600)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    async def logout(request: Request) -> Response:
        """Drop the local session, then end the hub's (RP-initiated logout)."""
        session = sessions.drop(request.cookies.get(SESSION_COOKIE))
        meta = await discovery()
        params = {"post_logout_redirect_uri": f"{config.base_url}/"}
        if session is not None:
            params["id_token_hint"] = session.id_token
        else:
            params["client_id"] = config.client_id
        response = RedirectResponse(
            f"{meta['end_session_endpoint']}?{urlencode(params)}", status_code=303
        )
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def backchannel_logout(request: Request) -> Response:
        """The hub's POST when a hub session ends (OIDC Back-Channel Logout 1.0 §2.8)."""
        form = await request.form()
        token = form.get("logout_token")
        headers = {"Cache-Control": "no-store"}
        if not isinstance(token, str) or not token:
            return JSONResponse({"error": "invalid_request"}, status_code=400, headers=headers)
        try:
            event = await receiver.avalidate(token)
        except InvalidToken as exc:
            body = {"error": "invalid_request", "error_description": exc.reason}
            return JSONResponse(body, status_code=400, headers=headers)
        sessions.drop_hub_session(event.sid, event.sub)
        return Response(status_code=200, headers=headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if owned:
            await http.aclose()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/", home),
            Route("/me", me),
            Route("/login", login),
            Route("/callback", callback),
            Route("/logout", logout),
            Route("/backchannel-logout", backchannel_logout, methods=["POST"]),
            Route("/healthz", healthz),
        ],
    )
    app.state.sessions = sessions
    app.state.validator = validator
    app.state.receiver = receiver
    return app


def _failure(message: str) -> Response:
    page = f"<!doctype html><title>Sign-in failed</title><p id='error'>{html.escape(message)}</p>"
    return HTMLResponse(page, status_code=400)

"""Shared pieces of the OIDC provider tests: a hub with a mock partner and three clients,
and a browser that signs in through the mock IdP and runs the code flow."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt

from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import (
    ClientSettings,
    MockConnectionSettings,
    MockUser,
    PartnerKind,
    PartnerSettings,
    PartnerStatus,
    Settings,
)
from federation.web.app import create_app

ISSUER = "http://testserver"
APP_CB = "https://orders.app.test/callback"
APP_BYE = "https://orders.app.test/bye"
SPA_CB = "http://127.0.0.1:5173/cb"
SECRET = "orders-secret-0123456789"


def make_settings(status: PartnerStatus = PartnerStatus.active) -> Settings:
    return Settings(
        issuer=ISSUER,
        allow_insecure_http=True,
        allow_mock_connections=True,
        partners=(
            PartnerSettings(
                id="acme",
                name="Acme Supplies",
                kind=PartnerKind.supplier,
                status=status,
                domains=("acme.test",),
                connections=(
                    MockConnectionSettings(
                        type="mock",
                        id="acme-mock",
                        users=(
                            MockUser(
                                subject="alice",
                                email="alice@acme.test",
                                name="Alice",
                                groups=("buyers",),
                                roles=("approver",),
                            ),
                            MockUser(subject="bob", email="bob@acme.test", name="Bob"),
                        ),
                    ),
                ),
            ),
        ),
        clients=(
            ClientSettings(
                client_id="orders",
                client_secret=SECRET,
                redirect_uris=(APP_CB,),
                post_logout_redirect_uris=(APP_BYE,),
            ),
            ClientSettings(
                client_id="orders-post",
                client_secret=SECRET,
                token_endpoint_auth_method="client_secret_post",
                redirect_uris=(APP_CB,),
            ),
            ClientSettings(
                client_id="spa", token_endpoint_auth_method="none", redirect_uris=(SPA_CB,)
            ),
            ClientSettings(
                client_id="code-only",
                client_secret=SECRET,
                redirect_uris=(APP_CB,),
                grant_types=("authorization_code",),
            ),
        ),
    )


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def basic(client_id: str, secret: str = SECRET) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@dataclass
class Env:
    hub: Hub
    http: httpx.AsyncClient
    events: list[dict[str, Any]] = field(default_factory=list)

    def failures(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event and e["outcome"] == "failure"]


def make_env(settings: Settings | None = None) -> Env:
    events: list[dict[str, Any]] = []
    hub = build_hub(settings or make_settings(), audit=Audit([events.append]))
    transport = httpx.ASGITransport(app=create_app(hub=hub))
    http = httpx.AsyncClient(transport=transport, base_url=ISSUER, follow_redirects=False)
    return Env(hub, http, events)


@dataclass
class Browser:
    env: Env

    @property
    def http(self) -> httpx.AsyncClient:
        return self.env.http

    async def sign_in(
        self, user: str = "alice", email: str = "alice@acme.test", rd: str = "/"
    ) -> httpx.Response:
        """Home-realm discovery by login_hint → mock IdP → callback; returns the callback."""
        start = await self.http.get("/login", params={"rd": rd, "login_hint": email})
        assert start.status_code == 303, start.text
        state = query_of(start.headers["location"])["state"]
        done = await self.http.get("/callback/acme-mock", params={"state": state, "user": user})
        assert done.status_code == 303, done.text
        return done

    async def authorize(self, client_id: str, redirect_uri: str, **extra: str) -> httpx.Response:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid email profile groups",
            "state": "st-1",
            "nonce": "n-1",
            **extra,
        }
        present = {k: v for k, v in params.items() if v}
        return await self.http.get("/oauth2/authorize", params=present)

    async def code(
        self, client_id: str, redirect_uri: str, user: str = "alice", **extra: str
    ) -> str:
        """Run the browser part of the flow (signing in if needed); return the code."""
        first = await self.authorize(client_id, redirect_uri, **extra)
        location = first.headers["location"]
        if location.startswith("/login"):
            back = await self.sign_in(user, f"{user}@acme.test", rd=query_of(location)["rd"])
            assert back.headers["location"].startswith("/oauth2/authorize?")
            location = (await self.http.get(back.headers["location"])).headers["location"]
        assert location.startswith(redirect_uri), location
        query = query_of(location)
        assert query["state"] == extra.get("state", "st-1")
        assert query["iss"] == ISSUER
        return query["code"]


async def token_request(
    http: httpx.AsyncClient, form: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post("/oauth2/token", data=form, headers=headers or {})


async def confidential_tokens(
    browser: Browser, *, client_id: str = "orders", redirect_uri: str = APP_CB, **extra: str
) -> dict[str, Any]:
    """The code flow of a ``client_secret_basic`` client (``orders`` by default): its tokens."""
    code = await browser.code(client_id, redirect_uri, **extra)
    response = await token_request(
        browser.http,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
        basic(client_id),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def secret_post_token_response(browser: Browser) -> httpx.Response:
    """The code flow of ``orders-post`` (``client_secret_post``): the token response."""
    code = await browser.code("orders-post", APP_CB)
    return await token_request(
        browser.http,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": APP_CB,
            "client_id": "orders-post",
            "client_secret": SECRET,
        },
    )


async def public_tokens(browser: Browser) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    code = await browser.code("spa", SPA_CB, code_challenge=challenge, code_challenge_method="S256")
    response = await token_request(
        browser.http,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": SPA_CB,
            "client_id": "spa",
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def verify_hub_jwt(
    http: httpx.AsyncClient, token: str, audience: str, require: list[str]
) -> dict[str, Any]:
    """A hub-signed JWT checked as a relying party does: the key from the published JWKS,
    pyjwt, issuer and audience, the ``require``d claims present."""
    jwks = (await http.get("/oauth2/jwks")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=[jwk["alg"]],
        audience=audience,
        issuer=ISSUER,
        options={"require": require},
    )
    return claims


async def validate_id_token(http: httpx.AsyncClient, token: str, audience: str) -> dict[str, Any]:
    """What a relying party does: keys from the published JWKS, pyjwt, strict claims."""
    return await verify_hub_jwt(http, token, audience, ["exp", "iat", "sub", "aud", "iss"])


def form_encode(data: dict[str, str]) -> str:
    return urlencode(data)

"""Shared by the admin API, service and lifecycle tests: settings with partners whose mock
users carry admin roles, a hub, an app, signed-in clients and API tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette

from connectors.mock import MockConnector
from connectors.registry import ConnectorRegistry
from federation.admin.documents import Change, Document, DocumentStore, Write
from federation.admin.service import SYSTEM, AdminService
from federation.admin.tokens import Role
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import Settings
from federation.web import admin_api
from federation.web.app import create_app
from tests.broker.test_mock_partner_to_hub_session import sign_in
from tests.oidc.support import basic, pkce_pair, query_of

BASE = "http://127.0.0.1:8080"
API = "/admin/api/v1"
EDGE = ("10.0.0.5", 40000)  # a trusted proxy, for forward-auth
ORDERS_HOST = "127.0.0.1:8080"  # the orders app is served on the hub's host, under /orders
APP_CB = "https://orders.app.test/callback"
CLIENT_SECRET = "orders-secret-0123456789"

POLICY = """\
version: 1
rules:
  - name: partners
    effect: allow
    when:
      partner_kind: [supplier, customer]
"""


def _user(subject: str, domain: str, *roles: str) -> dict[str, Any]:
    return {"subject": subject, "email": f"{subject}@{domain}", "name": subject.title(),
            "roles": list(roles)}  # fmt: skip


def _partner(pid: str, kind: str, *users: dict[str, Any], **extra: Any) -> dict[str, Any]:
    domain = f"{pid}.example"
    return {
        "id": pid,
        "name": f"{pid.title()} Inc",
        "kind": kind,
        "status": "active",
        "domains": [domain],
        "connections": [{"type": "mock", "id": f"{pid}-mock", "users": list(users)}],
        **extra,
    }


def api_settings(**overrides: Any) -> Settings:
    """corp (internal: an admin, an auditor, a nobody), acme and globex (a partner admin
    each, and a plain user), the orders app (forward-auth) and its OIDC client."""
    data: dict[str, Any] = {
        "issuer": BASE,
        "allow_insecure_http": True,
        "allow_mock_connections": True,
        "trusted_proxies": ["10.0.0.0/8"],
        "partners": [
            _partner("corp", "internal", _user("root", "corp.example", "isthmus-admin"),
                     _user("audrey", "corp.example", "isthmus-auditor"),
                     _user("carl", "corp.example")),
            _partner("acme", "supplier", _user("alice", "acme.example", "partner-admin"),
                     _user("bob", "acme.example")),
            _partner("globex", "customer", _user("gina", "globex.example", "partner-admin")),
        ],
        "apps": [{"id": "orders", "path_prefix": "/orders", "upstreams": ["http://127.0.0.1:9"],
                  "policy": yaml.safe_load(POLICY)}],
        "clients": [{"client_id": "orders", "client_secret": CLIENT_SECRET,
                     "redirect_uris": [APP_CB]}],
    }  # fmt: skip
    data.update(overrides)
    return Settings(**data)


def make_hub(settings: Settings, events: list[dict[str, Any]]) -> Hub:
    mock_only = ConnectorRegistry({"mock": MockConnector.from_settings})
    return build_hub(settings, audit=Audit([events.append]), connector_types=mock_only)


async def mint_token(hub: Hub, role: Role = Role.admin, partner_id: str | None = None) -> str:
    token, _ = await AdminService(hub).create_token(
        SYSTEM, name=f"test-{role.value}", role=role, partner_id=partner_id
    )
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def etag(response: httpx.Response) -> dict[str, str]:
    return {"If-Match": response.headers["etag"]}


def fields(response: httpx.Response) -> set[str]:
    """The dotted fields of a 422's problems."""
    return {e["field"] for e in response.json()["errors"]}


SignIn = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


async def sign_in_as(http: httpx.AsyncClient, email: str) -> None:
    """Sign ``http`` (a browser) in through the hub as ``email``; send the CSRF header."""
    back = await sign_in(http, email, email.split("@")[0])
    assert back.status_code == 303, back.text
    me = await http.get(f"{API}/me")
    if me.status_code == 200:
        http.headers[admin_api.CSRF_HEADER] = me.json()["csrf_token"]


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def hub(events: list[dict[str, Any]]) -> Hub:
    return make_hub(api_settings(), events)


@pytest.fixture
def app(hub: Hub) -> Starlette:
    return create_app(hub=hub)


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


@pytest.fixture
async def admin(app: Starlette, hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """An API client with an admin token."""
    token = await mint_token(hub)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=bearer(token)) as c:
        yield c


@pytest.fixture
def as_user(app: Starlette) -> SignIn:
    @asynccontextmanager
    async def open_(email: str) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            await sign_in_as(http, email)
            yield http

    return open_


async def forward_auth(app: Starlette, cookie: str | None) -> httpx.Response:
    """The edge asks about GET /orders/x for the holder of ``cookie``."""
    headers = {"X-Original-URI": "/orders/x", "X-Original-Method": "GET",
               "X-Forwarded-Host": ORDERS_HOST, "X-Forwarded-Proto": "http"}  # fmt: skip
    if cookie:
        headers["Cookie"] = f"isthmus_session={cookie}"
    transport = httpx.ASGITransport(app=app, client=EDGE)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as edge:
        return await edge.get("/forward-auth", headers=headers)


async def oidc_tokens(browser: httpx.AsyncClient) -> dict[str, Any]:
    """The orders client's code flow for the signed-in ``browser``: its token response."""
    verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": "orders", "redirect_uri": APP_CB,
              "scope": "openid email offline_access", "state": "s", "nonce": "n",
              "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip
    authorized = await browser.get("/oauth2/authorize", params=params)
    assert authorized.status_code == 303, authorized.text
    code = query_of(authorized.headers["location"])["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB,
            "code_verifier": verifier}  # fmt: skip
    answer = await browser.post("/oauth2/token", data=form, headers=basic("orders", CLIENT_SECRET))
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


async def refresh(http: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await http.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers=basic("orders", CLIENT_SECRET),
    )


async def userinfo(http: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await http.get("/oauth2/userinfo", headers=bearer(access_token))


# ---------------------------------------------------------------------- authentication


class YieldingStore:
    """A document store that lets the event loop run other tasks inside every call, so
    that concurrent writers interleave as they would against a remote store."""

    def __init__(self, inner: DocumentStore) -> None:
        self.inner = inner

    async def get(self, kind: str, doc_id: str) -> Document | None:
        await asyncio.sleep(0)
        return await self.inner.get(kind, doc_id)

    async def documents(self, kind: str | None = None) -> list[Document]:
        await asyncio.sleep(0)
        return await self.inner.documents(kind)

    async def apply(
        self,
        writes: Sequence[Write],
        *,
        actor: str,
        reason: str = "",
        expected_revision: int | None = None,
        now: float | None = None,
    ) -> list[Change]:
        await asyncio.sleep(0)
        return await self.inner.apply(
            writes, actor=actor, reason=reason, expected_revision=expected_revision, now=now
        )

    async def revision(self) -> int:
        await asyncio.sleep(0)
        return await self.inner.revision()

    async def history(
        self, *, kind: str | None = None, doc_id: str | None = None, limit: int = 100
    ) -> list[Change]:
        return await self.inner.history(kind=kind, doc_id=doc_id, limit=limit)

    async def aclose(self) -> None:
        await self.inner.aclose()

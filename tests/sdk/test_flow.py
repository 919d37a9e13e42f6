"""The SDK against tokens obtained through the hub's real flows: code flow tokens (async
validator, keys fetched from the hub over ASGI), introspection of opaque refresh tokens,
the Starlette middleware, the proxy's assertion and back-channel logout tokens."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from federation.identity import FederatedIdentity
from federation.proxy.headers import AssertionIssuer
from federation.sdk import (
    BACKCHANNEL_LOGOUT_EVENT,
    BackchannelLogoutReceiver,
    IntrospectionConfig,
    InvalidToken,
    TokenValidator,
)
from federation.sdk.starlette import IsthmusAuthMiddleware
from federation.settings import AppSettings
from tests.oidc.support import ISSUER, SECRET, Browser, Env, basic, confidential_tokens
from tests.sdk.support import mint


def hub_validator(env: Env, **extra: Any) -> TokenValidator:
    return TokenValidator(ISSUER, audience="orders", async_http=env.http, **extra)


async def test_code_flow_tokens_validate(env: Env, browser: Browser) -> None:
    tokens = await confidential_tokens(browser)
    validator = hub_validator(env)
    access = await validator.avalidate(tokens["access_token"], typ="at+jwt")
    assert (access.partner_id, access.partner_kind, access.groups) == (
        "acme",
        "supplier",
        ("buyers",),
    )
    assert access.raw["client_id"] == "orders" and access.sid
    id_token = await validator.avalidate(tokens["id_token"], typ="JWT")
    assert id_token.subject == access.subject
    assert (id_token.email, id_token.name, id_token.roles) == (
        "alice@acme.test",
        "Alice",
        ("approver",),
    )
    assert validator.fetches == 1
    with pytest.raises(InvalidToken) as caught:
        await validator.avalidate(tokens["id_token"], typ="at+jwt")
    assert caught.value.reason == "wrong_type"


async def test_introspection_fallback_active_then_inactive(env: Env, browser: Browser) -> None:
    tokens = await confidential_tokens(browser, scope="openid offline_access groups")
    refresh = tokens["refresh_token"]
    assert refresh.count(".") != 2  # opaque
    validator = hub_validator(env, introspection=IntrospectionConfig("orders", SECRET))
    claims = await validator.avalidate(refresh)
    assert (claims.partner_id, claims.groups, claims.raw["active"]) == ("acme", ("buyers",), True)
    revoked = await env.http.post(
        "/oauth2/revoke", data={"token": refresh}, headers=basic("orders")
    )
    assert revoked.status_code == 200
    with pytest.raises(InvalidToken) as caught:
        await validator.avalidate(refresh)
    assert caught.value.reason == "inactive"
    wrong = hub_validator(env, introspection=IntrospectionConfig("orders", "wrong-secret"))
    with pytest.raises(InvalidToken) as caught:
        await wrong.avalidate("some-opaque-token")
    assert caught.value.reason == "introspection_unavailable"


def test_introspection_sync_with_post_auth() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        active = b"token=good" in request.content
        body = {"active": active, "sub": "s", "client_id": "orders", "iss": ISSUER}
        return httpx.Response(200, json=body if active else {"active": False})

    config = IntrospectionConfig(
        "orders", SECRET, endpoint=ISSUER + "/introspect", auth_method="client_secret_post"
    )
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        validator = TokenValidator(ISSUER, audience="orders", http=http, introspection=config)
        assert validator.validate("good").subject == "s"
        with pytest.raises(InvalidToken, match="not active"):
            validator.validate("bad")
        assert validator.validate("good", audience="orders").audience == ("orders",)
        with pytest.raises(InvalidToken) as caught:
            validator.validate("good", audience="billing")
        assert caught.value.reason == "wrong_audience"
    assert b"client_secret=" in seen[0]


def protected_app(validator: TokenValidator, **options: Any) -> httpx.AsyncClient:
    async def me(request: Request) -> JSONResponse:
        claims = request.state.isthmus
        return JSONResponse({"sub": claims.subject, "partner": claims.partner_id})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/me", me), Route("/health", health)])
    app.add_middleware(IsthmusAuthMiddleware, validator=validator, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def test_middleware(env: Env, browser: Browser) -> None:
    tokens = await confidential_tokens(browser)
    validator = hub_validator(env)
    async with protected_app(validator, skip_paths=("/health",), typ="at+jwt") as app:
        ok = await app.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert ok.status_code == 200
        assert ok.json()["partner"] == "acme"
        missing = await app.get("/me")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="isthmus"'
        bad = await app.get("/me", headers={"Authorization": "Bearer a.b.c"})
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        id_as_access = await app.get(
            "/me", headers={"Authorization": f"Bearer {tokens['id_token']}"}
        )
        assert id_as_access.status_code == 401
        assert (await app.get("/health")).status_code == 200


async def test_assertion_header(env: Env) -> None:
    """The proxy's own signer (AssertionIssuer) → the app's middleware, audience = app id."""
    hub = env.hub
    issuer = AssertionIssuer(hub.keys, hub.issuer)
    identity = FederatedIdentity(
        "acme", "acme-mock", "https://idp", "alice", email="alice@acme.test", groups=("buyers",)
    )
    partner = hub.registry.partner("acme")
    assert partner is not None
    orders = AppSettings(id="orders", upstreams=("http://127.0.0.1:9",))
    docs = AppSettings(id="docs", upstreams=("http://127.0.0.1:9",))
    validator = hub_validator(env)
    assertion = issuer.issue(orders, identity, partner, "sid-1")
    await validator.avalidate(assertion)  # warms the key cache (fetch over ASGI)
    claims = validator.validate_assertion(assertion)
    assert (claims.partner_id, claims.partner_kind, claims.email, claims.sid) == (
        "acme",
        "supplier",
        "alice@acme.test",
        "sid-1",
    )
    with pytest.raises(InvalidToken) as caught:
        validator.validate_assertion(issuer.issue(docs, identity, partner, "sid-1"))
    assert caught.value.reason == "wrong_audience"
    async with protected_app(validator, assertion_header="X-Isthmus-Assertion") as app:
        ok = await app.get("/me", headers={"X-Isthmus-Assertion": assertion})
        assert ok.status_code == 200 and ok.json()["partner"] == "acme"
        forged = await app.get("/me", headers={"X-Isthmus-Assertion": assertion[:-4] + "AAAA"})
        assert forged.status_code == 401


def logout_token(env: Env, **extra: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        "sid": "sid-1",
        "sub": "hub-subject-1",
        "partner_id": None,
        "partner_kind": None,
        "groups": None,
        "acr": None,
        "amr": None,
    }
    claims.update(extra)
    return mint(env.hub, typ="logout+jwt", **claims)


async def test_backchannel_logout_receiver(env: Env) -> None:
    receiver = BackchannelLogoutReceiver(hub_validator(env))
    token = logout_token(env)
    event = await receiver.avalidate(token)
    assert (event.sid, event.sub, event.issuer) == ("sid-1", "hub-subject-1", ISSUER)
    assert receiver.validate(logout_token(env, sub=None)).sub is None
    assert receiver.validate(logout_token(env, sid=None)).sid is None

    cases: list[tuple[str, str]] = [
        (token, "replayed"),
        (logout_token(env, events={"http://example.com/other": {}}), "not_logout_token"),
        (logout_token(env, events=None), "missing_claim"),
        (logout_token(env, nonce="n-1"), "nonce_present"),
        (logout_token(env, exp=int(time.time()) - 60), "expired"),
        (logout_token(env, jti=None), "missing_claim"),
        (logout_token(env, sid=None, sub=None), "missing_claim"),
        (logout_token(env, aud="billing"), "wrong_audience"),
        (mint(env.hub, typ="JWT", events={BACKCHANNEL_LOGOUT_EVENT: {}}, sid="s"), "wrong_type"),
    ]
    for bad, expected in cases:
        with pytest.raises(InvalidToken) as caught:
            receiver.validate(bad)
        assert caught.value.reason == expected, (expected, caught.value)

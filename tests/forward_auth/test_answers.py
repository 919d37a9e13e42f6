"""What the hub answers: 2xx with identity headers and the assertion, 401 with the login
location, 403 with the public reasons; JSON by Accept."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from federation import jose
from federation.errors import StoreUnavailable
from federation.hub import Hub
from tests.broker.conftest import BASE
from tests.forward_auth.conftest import ORDERS_HOST
from tests.forward_auth.support import envoy, nginx, traefik


async def test_allowed_carries_identity_and_a_verifiable_assertion(
    edge: httpx.AsyncClient, cookies: dict[str, str], hub: Hub
) -> None:
    answer = await nginx(edge, "/orders/7", cookies["acme"])
    assert answer.status_code == 200
    assert answer.content == b""
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-isthmus-email"] == "alice@acme.example"
    assert answer.headers["x-isthmus-partner"] == "acme"
    assert answer.headers["x-isthmus-groups"] == "buyers"
    subject = answer.headers["x-isthmus-user"]
    assert subject and "alice" not in subject  # the hub subject: opaque, never the email
    assert answer.headers["x-request-id"]
    jwks = (await edge.get("/oauth2/jwks")).json()
    claims = jose.verify(
        answer.headers["x-isthmus-assertion"],
        jose.keys_from_jwks(jwks, ["RS256"]),
        issuer=BASE,
        audience="orders",
    )
    assert claims["sub"] == subject
    assert claims["partner"] == "acme"
    assert claims["email"] == "alice@acme.example"
    assert claims["exp"] - claims["iat"] <= 60


async def test_no_session_nginx_gets_401_with_the_login_location(
    edge: httpx.AsyncClient,
) -> None:
    answer = await nginx(edge, "/orders/7?full=1")
    assert answer.status_code == 401
    location = answer.headers["location"]
    assert answer.headers["x-auth-redirect"] == location
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{BASE}/login"
    assert parse_qs(parts.query) == {"rd": [f"http://{ORDERS_HOST}/orders/7?full=1"]}
    # nginx only understands 401 here, even for a browser navigation.
    browser = await nginx(edge, "/orders/7", Accept="text/html")
    assert browser.status_code == 401


async def test_no_session_browser_behind_traefik_or_envoy_is_redirected(
    edge: httpx.AsyncClient,
) -> None:
    for ask in (traefik, envoy):
        answer = await ask(edge, "/orders/7", Accept="text/html,application/xhtml+xml")
        assert answer.status_code == 302, ask
        assert answer.headers["location"].startswith(f"{BASE}/login?rd=")
        api = await ask(edge, "/orders/7", Accept="application/json")
        assert api.status_code == 401
        assert api.json()["error"] == "login_required"
        assert api.json()["login_url"] == answer.headers["location"]
        assert api.json()["request_id"] == api.headers["x-request-id"]


async def test_login_location_never_returns_to_a_foreign_origin(
    edge: httpx.AsyncClient,
) -> None:
    # Same app (host with its port), but over https the edge says: not an app origin.
    answer = await nginx(edge, "/orders/7", **{"X-Forwarded-Proto": "https"})
    assert answer.status_code == 401
    assert answer.headers["location"] == f"{BASE}/login"


async def test_denied_states_the_public_reasons(
    edge: httpx.AsyncClient, cookies: dict[str, str]
) -> None:
    answer = await nginx(edge, "/admin/x", cookies["acme"], Accept="application/json")
    assert answer.status_code == 403
    body = answer.json()
    assert body["error"] == "access_denied"
    assert "The admin area is for staff only." in body["reasons"]
    assert body["request_id"] == answer.headers["x-request-id"]
    assert not [h for h in answer.headers if h.startswith("x-isthmus-")]
    page = await nginx(edge, "/admin/x", cookies["acme"], Accept="text/html")
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "The admin area is for staff only." in page.text
    assert answer.headers["x-request-id"] != page.headers["x-request-id"]


async def test_private_reasons_stay_in_the_audit(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    answer = await nginx(edge, "/orders/7", cookies["soylent"], Accept="application/json")
    assert answer.status_code == 403
    assert "soylent-reports" not in answer.text
    assert audit_log[-1]["event"] == "proxy.decision"
    assert audit_log[-1]["request_id"] == answer.headers["x-request-id"]


async def test_expired_or_unknown_session_is_a_login(
    edge: httpx.AsyncClient, cookies: dict[str, str], hub: Hub
) -> None:
    assert (await nginx(edge, "/orders/7", "forged-session-id")).status_code == 401
    await hub.sessions.end(cookies["acme"])
    assert (await nginx(edge, "/orders/7", cookies["acme"])).status_code == 401


async def test_edge_that_forgot_its_headers_is_told(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    bare = await edge.get(
        "/forward-auth",
        headers={"Cookie": f"isthmus_session={cookies['acme']}", "Accept": "application/json"},
    )
    assert bare.status_code == 400
    assert bare.json()["error"] == "bad_edge_request"
    assert audit_log[-1]["reason"] == "bad_edge_request"
    for bad in ("http://orders.localhost:8080/x", "orders/7", "//evil.example/x", "/a\tb"):
        answer = await nginx(edge, bad, cookies["acme"])
        assert answer.status_code == 400, bad
    odd_method = await nginx(edge, "/orders/7", cookies["acme"], "GET /x")
    assert odd_method.status_code == 400


async def test_store_down_is_a_clear_503_not_a_decision(
    edge: httpx.AsyncClient, cookies: dict[str, str], hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed (invariant 7) on the edge's fast path too: mapped like every error."""

    async def unreachable(key: str) -> None:
        raise StoreUnavailable("redis GET failed: ConnectionError")

    monkeypatch.setattr(hub.store, "get", unreachable)
    answer = await nginx(edge, "/orders/1", cookies["acme"])
    assert answer.status_code == 503
    assert answer.headers["x-request-id"] in answer.text
    assert "temporarily_unavailable" in answer.text and "ConnectionError" not in answer.text

"""Invariant 6 at the proxy: client-supplied identity and forwarding headers never reach
the app; hop-by-hop headers are dropped; X-Forwarded-* are the hub's own."""

from __future__ import annotations

import httpx

from federation.proxy.headers import Forwarded, TrustedProxies, upstream_request_headers
from federation.settings import AppSettings
from tests.proxy.conftest import Env
from tests.proxy.support import session_cookie


def _seen(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {k.lower(): v for k, v in response.json()["headers"]}


async def test_forged_identity_headers_are_replaced(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    forged = {
        "Host": env.orders_host,
        "Cookie": f"isthmus_session={cookie}",
        "X-Isthmus-User": "admin",
        "x-isthmus-email": "boss@corp.example",
        "X-Isthmus-Anything": "1",
        "X-Isthmus-Assertion": "forged.jwt.token",
        "X-Forwarded-For": "10.9.9.9",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "Forwarded": "for=10.9.9.9",
        "X-Real-IP": "10.9.9.9",
    }
    seen = _seen(await http.get("/orders/1", headers=forged))
    assert seen["x-isthmus-email"] == "alice@acme.example"
    assert seen["x-isthmus-user"] != "admin"
    assert "x-isthmus-anything" not in seen
    assert seen["x-isthmus-assertion"] != "forged.jwt.token"
    # The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-* are not believed.
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-host"] == env.orders_host
    assert seen["x-forwarded-proto"] == "http"
    assert "forwarded" not in seen and "x-real-ip" not in seen
    decision = env.decisions()[-1]
    assert decision["source_ip"] == "127.0.0.1"


async def test_custom_identity_header_names_are_stripped_too(
    env: Env, http: httpx.AsyncClient
) -> None:
    await session_cookie(http, "alice@acme.example", "alice")
    seen = _seen(
        await http.get(
            "/docs/a",
            headers={
                "X-Remote-User": "root",
                "X-Docs-Assertion": "forged",
                "X-Isthmus-User": "root",
            },
        )
    )
    assert seen["x-remote-user"] == "alice@acme.example"
    assert seen["x-docs-assertion"] != "forged"
    assert "x-isthmus-user" not in seen


async def test_hop_by_hop_headers_are_dropped(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    seen = _seen(
        await http.get(
            "/orders/1",
            headers={
                "Host": env.orders_host,
                "Cookie": f"isthmus_session={cookie}",
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                "Upgrade": "h2c",
                "X-Kept": "yes",
            },
        )
    )
    for name in ("x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert name not in seen, name
    assert seen["x-kept"] == "yes"
    assert seen["host"].startswith("127.0.0.1:")  # preserve_host is off


def test_trusted_proxy_chain_is_believed_only_from_trusted_peers() -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    headers = [("X-Forwarded-For", "203.0.113.7, 10.1.1.1"), ("X-Forwarded-Proto", "https")]
    via_proxy = Forwarded.of(headers, "10.2.2.2", "http", "orders.example", trusted)
    assert via_proxy.client_ip == "203.0.113.7"
    assert via_proxy.proto == "https"
    assert via_proxy.chain == "203.0.113.7, 10.1.1.1, 10.2.2.2"
    direct = Forwarded.of(headers, "198.51.100.1", "http", "orders.example", trusted)
    assert direct.client_ip == "198.51.100.1" and direct.proto == "http"
    assert direct.chain == "198.51.100.1"
    assert "not-an-ip" not in trusted


def test_only_the_session_cookie_is_taken_out() -> None:
    app = AppSettings(id="a", upstreams=("http://127.0.0.1:1",))
    fwd = Forwarded("127.0.0.1", "http", "a.example", "127.0.0.1")
    kept = upstream_request_headers(
        [("Cookie", "a=1; isthmus_session=s; b=2"), ("Cookie", "isthmus_session=t")],
        app,
        fwd,
        session_cookie="isthmus_session",
    )
    assert [v for k, v in kept if k == "Cookie"] == ["a=1; b=2"]

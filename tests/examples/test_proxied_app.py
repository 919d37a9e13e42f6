"""examples/proxied_app runs behind the hub's proxy (real ports): a partner user signs in
at the hub, the proxy forwards to the example with its signed assertion, and the example
(the SDK's validate_assertion) shows who is calling. Reached directly, it refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from examples.proxied_app.app import Config, create_app
from federation.web.app import create_app as create_hub_app
from tests.peers.asgi import ServeApp
from tests.peers.common import free_port
from tests.proxy.support import make_hub, proxy_settings, serve_hub, session_cookie


@dataclass
class Running:
    hub_base: str
    hub_port: int
    example: str  # the example's own URL (what only the proxy should call)
    audit: list[dict[str, Any]]

    @property
    def orders_host(self) -> str:
        return f"orders.localhost:{self.hub_port}"


@pytest.fixture
def running(asgi_server: ServeApp) -> Iterator[Running]:
    hub_port = free_port()
    hub_base = f"http://127.0.0.1:{hub_port}"
    # The example as the "orders" app's upstream: audience "orders", the hub's issuer.
    example = asgi_server(create_app(Config(issuer=hub_base, app_id="orders")))
    audit: list[dict[str, Any]] = []
    hub = make_hub(proxy_settings(hub_port, example), audit)
    with serve_hub(create_hub_app(hub=hub), hub_port):
        yield Running(hub_base, hub_port, example, audit)


@pytest.fixture
async def http(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.hub_base, timeout=30) as client:
        yield client


async def test_the_example_shows_who_calls_through_the_proxy(
    running: Running, http: httpx.AsyncClient
) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    headers = {"Host": running.orders_host, "Cookie": f"isthmus_session={cookie}"}

    page = await http.get("/orders", headers=headers)
    assert page.status_code == 200, page.text
    assert "Alice" in page.text and "alice@acme.example" in page.text
    assert "<b>acme</b>" in page.text and "(supplier)" in page.text
    assert "Groups: buyers" in page.text

    me = (await http.get("/api/whoami", headers=headers)).json()
    assert me["partner_id"] == "acme" and me["partner_kind"] == "supplier"
    assert me["groups"] == ["buyers"] and me["email"] == "alice@acme.example"
    decision = [e for e in running.audit if e["event"] == "proxy.decision"][-1]
    assert decision["decision"] == "allow" and decision["app"] == "orders"


async def test_another_partner_is_stopped_by_the_proxy(
    running: Running, http: httpx.AsyncClient
) -> None:
    cookie = await session_cookie(http, "alice@globex.example", "alice")
    page = await http.get(
        "/orders", headers={"Host": running.orders_host, "Cookie": f"isthmus_session={cookie}"}
    )
    assert page.status_code == 403  # the policy: the example is never called


async def test_the_example_refuses_requests_that_bypass_the_proxy(
    running: Running, http: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=running.example, timeout=10) as direct:
        assert (await direct.get("/healthz")).status_code == 200
        bare = await direct.get("/orders")
        assert bare.status_code == 401 and bare.json()["error"] == "not_from_the_hub"
        # identity headers alone are believed by nobody
        spoofed = await direct.get(
            "/orders", headers={"X-Isthmus-User": "admin", "X-Isthmus-Partner": "acme"}
        )
        assert spoofed.status_code == 401
        forged = await direct.get("/orders", headers={"X-Isthmus-Assertion": "a.b.c"})
        assert forged.status_code == 401
        # the hub's "docs" app forwards to the same process with its own assertion
        # (X-Docs-Assertion, audience "docs"): not what this app reads, so refused
        cookie = await session_cookie(http, "alice@acme.example", "alice")
        docs = await http.get(
            "/docs/x",
            headers={
                "Host": f"127.0.0.1:{running.hub_port}",
                "Cookie": f"isthmus_session={cookie}",
            },
        )
        assert docs.status_code == 401, docs.text

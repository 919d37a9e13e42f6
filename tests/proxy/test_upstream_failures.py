"""Upstream failures: refused → 502, too slow → 504, both through the error mapper with a
request id (HTML or JSON by Accept); the details stay in the log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from federation.web.app import create_app
from tests.peers.common import free_port
from tests.proxy.conftest import Env
from tests.proxy.support import make_hub, proxy_settings, serve_hub, session_cookie


@pytest.fixture
def dead_upstream_hub() -> Iterator[tuple[str, int]]:
    port = free_port()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    hub = make_hub(proxy_settings(port, closed), [])
    with serve_hub(create_app(hub=hub), port) as base:
        yield base, port


async def test_refused_connection_is_a_502(dead_upstream_hub: tuple[str, int]) -> None:
    base, port = dead_upstream_hub
    async with httpx.AsyncClient(base_url=base) as http:
        cookie = await session_cookie(http, "alice@acme.example", "alice")
        headers: dict[str, Any] = {
            "Host": f"orders.localhost:{port}",
            "Cookie": f"isthmus_session={cookie}",
        }
        page = await http.get("/orders/1", headers=headers)
        assert page.status_code == 502
        assert page.headers["x-request-id"] in page.text
        assert "could not be reached" in page.text
        as_json = await http.get("/orders/1", headers={**headers, "Accept": "application/json"})
        assert as_json.status_code == 502
        body = as_json.json()
        assert body["error"] == "bad_gateway"
        assert body["request_id"] == as_json.headers["x-request-id"]
        assert "127.0.0.1" not in body["error_description"]


async def test_slow_upstream_is_a_504(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    response = await http.get(
        "/slow?s=3",  # the app's read timeout is 1 s
        headers={
            "Host": env.orders_host,
            "Cookie": f"isthmus_session={cookie}",
            "Accept": "application/json",
        },
    )
    assert response.status_code == 504
    assert response.json()["error"] == "gateway_timeout"
    assert response.json()["request_id"] == response.headers["x-request-id"]

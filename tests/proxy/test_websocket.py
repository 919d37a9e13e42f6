"""WebSockets through the proxy: decided like any request, then relayed both ways."""

from __future__ import annotations

import aiohttp
import httpx
import pytest

from tests.proxy.conftest import Env
from tests.proxy.support import session_cookie


async def test_websocket_echo(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(
            f"{env.base}/ws",
            headers={
                "Host": env.orders_host,
                "Cookie": f"isthmus_session={cookie}",
                "X-Isthmus-User": "forged",
            },
            protocols=("echo.v1",),
        ) as ws,
    ):
        assert ws.protocol == "echo.v1"
        hello = await ws.receive_json()
        assert hello["hello"] not in ("", "forged")
        seen = {k.lower(): v for k, v in hello["headers"]}
        assert seen["x-isthmus-email"] == "alice@acme.example"
        await ws.send_str("ping")
        assert await ws.receive_str() == "echo:ping"
        await ws.send_bytes(b"abc")
        assert await ws.receive_bytes() == b"cba"
    assert env.decisions()[-1]["decision"] == "allow"
    assert env.decisions()[-1]["path"] == "/ws"


async def test_websocket_without_session_is_refused(env: Env) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(f"{env.base}/ws", headers={"Host": env.orders_host})
    assert refused.value.status == 403
    assert env.upstream.seen == []


async def test_websocket_of_a_denied_partner_is_refused(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@globex.example", "alice")
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect(
                f"{env.base}/ws",
                headers={"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}"},
            )
    assert env.upstream.seen == []

"""Proxy test kit: a real upstream (aiohttp, on a real port) that echoes and records what it
receives, the hub served by uvicorn on a real port (WebSockets on), and a test policy."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from aiohttp import WSMsgType, web

from connectors.mock import MockConnector
from connectors.registry import ConnectorRegistry
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import Settings
from tests.broker.conftest import mock_partner
from tests.peers.common import free_port

CHUNK = b"x" * (64 * 1024)

# Alice of acme may use the orders app except its admin area; globex may not use it.
ORDERS_POLICY = """\
version: 1
rules:
  - name: acme-people
    effect: allow
    when:
      partner: acme
    reason: Acme's people may use the orders app.
  - name: no-admin
    effect: deny
    when:
      path:
        prefix: /orders/admin
    reason: The admin area is for staff only.
    public: true
"""


@dataclass
class Upstream:
    """What the upstream saw: every request's method, raw path, query and headers."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    received_bytes: int = 0

    def paths(self) -> list[str]:
        return [s["raw_path"] for s in self.seen]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/big/{size}", self.big)
        app.router.add_route("*", "/slow", self.slow)
        app.router.add_route("*", "/upload", self.upload)
        app.router.add_route("GET", "/ws", self.websocket)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    def _record(self, request: web.Request) -> dict[str, Any]:
        entry = {
            "method": request.method,
            "raw_path": request.raw_path.split("?", 1)[0],
            "query": request.raw_path.partition("?")[2],
            "headers": [[k, v] for k, v in request.headers.items()],
        }
        self.seen.append(entry)
        return entry

    async def echo(self, request: web.Request) -> web.StreamResponse:
        entry = self._record(request)
        entry["body"] = (await request.read()).decode("latin-1")
        response = web.json_response(entry)
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["X-Upstream"] = "echo"
        response.headers["Set-Cookie"] = "app_cookie=1; Path=/"
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        size = int(request.match_info["size"])
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        response.content_length = size
        await response.prepare(request)
        sent = 0
        while sent < size:
            piece = CHUNK[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def slow(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late")

    async def upload(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        self.received_bytes = total
        return web.json_response({"received": total})

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        entry = self._record(request)
        ws = web.WebSocketResponse(protocols=("echo.v1",))
        await ws.prepare(request)
        user = request.headers.get("X-Isthmus-User", "")
        await ws.send_json({"hello": user, "headers": entry["headers"]})
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(f"echo:{message.data}")
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        return ws


@contextmanager
def serve_upstream(upstream: Upstream) -> Iterator[str]:
    """The upstream on its own event loop in a thread (independent of the test's loop)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(upstream.app(), access_log=None)
    port = free_port()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    thread = threading.Thread(target=run, name=f"upstream-{port}", daemon=True)
    thread.start()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream.url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def serve_hub(app: Any, port: int) -> Iterator[str]:
    """The hub under uvicorn (with WebSockets, unlike tests.peers.asgi) in a thread."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"hub-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"hub on port {port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def proxy_settings(port: int, upstream: str, **overrides: Any) -> Settings:
    base = f"http://127.0.0.1:{port}"
    data: dict[str, Any] = {
        "issuer": base,
        "allow_insecure_http": True,
        "allow_mock_connections": True,
        "partners": [
            mock_partner("acme", "supplier", "acme.example"),
            mock_partner("globex", "customer", "globex.example"),
        ],
        "apps": [
            {
                "id": "orders",
                "hosts": ["orders.localhost"],
                "path_prefix": "/",
                "upstreams": [upstream],
                "policy": _yaml(ORDERS_POLICY),
                "read_timeout_seconds": 1.0,
                "connect_timeout_seconds": 1.0,
            },
            {
                "id": "docs",
                "path_prefix": "/docs",
                "hosts": ["127.0.0.1"],
                "upstreams": [upstream],
                "policy": _yaml(ORDERS_POLICY),
                "identity_headers": {"X-Remote-User": "email", "X-Remote-Partner": "partner_id"},
                "assertion_header": "X-Docs-Assertion",
                "case_insensitive_paths": True,
            },
        ],
    }
    data.update(overrides)
    return Settings(**data)


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def make_hub(settings: Settings, audit_log: list[dict[str, Any]]) -> Hub:
    mock_only = ConnectorRegistry({"mock": MockConnector.from_settings})
    return build_hub(settings, audit=Audit([audit_log.append]), connector_types=mock_only)


async def sign_in(http: httpx.AsyncClient, email: str, user: str, rd: str = "/") -> httpx.Response:
    """Through the hub's login and the mock IdP; returns the callback's 303."""
    from tests.broker.test_mock_partner_to_hub_session import sign_in as broker_sign_in

    return await broker_sign_in(http, email, user, rd)


async def session_cookie(http: httpx.AsyncClient, email: str, user: str) -> str:
    back = await sign_in(http, email, user)
    assert back.status_code == 303, back.text
    value = http.cookies.get("isthmus_session")
    assert value
    return value


async def raw_request(port: int, request_line_target: str, headers: dict[str, str]) -> int:
    """Send a request line byte for byte (no client-side URL clean-up); the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {request_line_target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Connection: close", "", ""]
    writer.write("\r\n".join(lines).encode("latin-1"))
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])

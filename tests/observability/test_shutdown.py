"""Graceful shutdown: SIGTERM to ``isthmus serve`` turns /readyz to 503 at once while the
hub still serves (the drain), then the listener closes, the request in flight finishes,
the audit trail is complete, and every log line was JSON. A login flow begun on a hub that
stops completes on another hub on the same Redis."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from aiohttp import web

from federation.admin.auditlogs import SqliteAuditLog
from federation.audit import AuditQuery
from federation.web.app import create_app
from tests.broker.conftest import mock_partner
from tests.observability.support import POLICY, make_hub, settings
from tests.peers.asgi import serving
from tests.peers.common import free_port
from tests.peers.redis import RedisServer
from tests.proxy.support import sign_in

DRAIN_SECONDS = 3.0  # long enough to see the 503 while the hub still serves
START_TIMEOUT = 20.0


class GatedUpstream:
    """An app whose /slow answers only once the test releases it."""

    def __init__(self) -> None:
        self.arrived: queue.Queue[str] = queue.Queue()
        self.release = threading.Event()

    async def slow(self, request: web.Request) -> web.Response:
        self.arrived.put(request.path)
        loop = asyncio.get_running_loop()
        released = await loop.run_in_executor(None, self.release.wait, 30)
        return web.Response(text="late" if released else "never released")


@contextmanager
def serve_gated(upstream: GatedUpstream) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/slow", upstream.slow)
    runner = web.AppRunner(app, access_log=None)
    port = free_port()
    thread = threading.Thread(target=loop.run_forever, name=f"gated-{port}", daemon=True)
    thread.start()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        upstream.release.set()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def poll(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)  # poll interval
    return condition()


@pytest.fixture
def gated() -> Iterator[tuple[GatedUpstream, str]]:
    upstream = GatedUpstream()
    with serve_gated(upstream) as url:
        yield upstream, url


def write_config(tmp_path: Path, port: int, upstream: str) -> Path:
    config = {
        "issuer": f"http://127.0.0.1:{port}",
        "listen": {"host": "127.0.0.1", "port": port},
        "allow_insecure_http": True,
        "allow_mock_connections": True,
        "registry": {"backend": "sqlite", "path": str(tmp_path / "registry.db")},
        "partners": [mock_partner("acme", "supplier", "acme.example")],
        "apps": [
            {
                "id": "orders",
                "path_prefix": "/orders",
                "strip_prefix": True,
                "upstreams": [upstream],
            }
        ],
        "observability": {
            "log_format": "json",
            "access_log": True,
            "drain_seconds": DRAIN_SECONDS,
            "graceful_timeout_seconds": 15,
        },
    }
    config["apps"][0]["policy"] = POLICY
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def isthmus_serve(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "federation.cli", "serve", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    try:
        if not poll(lambda: listening(port) or process.poll() is not None, START_TIMEOUT):
            raise TimeoutError(f"isthmus serve not listening on {port}: {log.read_text()}")
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def session_cookie(base: str) -> str:
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await sign_in(http, "alice@acme.example", "alice")).status_code == 303
        return http.cookies["isthmus_session"]


async def audited_request_ids(registry: Path) -> set[str]:
    audit_log = SqliteAuditLog(str(registry))
    try:
        decisions = await audit_log.query(AuditQuery(event="proxy.decision"))
    finally:
        await audit_log.aclose()
    return {str(d.get("request_id")) for d in decisions}


@dataclass(frozen=True)
class Drained:
    """What a served hub did when SIGTERM came with a request in flight."""

    answer: httpx.Response  # the request in flight, finished during the stop
    exit_status: int
    entries: list[dict[str, Any]]  # the log lines (every one JSON)

    @property
    def messages(self) -> list[str]:
        return [str(e.get("message", "")) for e in self.entries]


def drain_with_a_request_in_flight(
    config: Path, port: int, log: Path, upstream: GatedUpstream, *, exit_within: float = 20
) -> Drained:
    """SIGTERM while a proxied request waits at the upstream: not ready at once, still
    serving during the drain, then the listener closes while the request goes on; the
    request finishes once released, then the process exits. Whatever the HTTP server."""
    base = f"http://127.0.0.1:{port}"
    with isthmus_serve(config, port, log) as process:
        cookie = asyncio.run(session_cookie(base))
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200

        def slow() -> httpx.Response:
            headers = {"Cookie": f"isthmus_session={cookie}"}
            return httpx.get(f"{base}/orders/slow", headers=headers, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(slow)
            assert upstream.arrived.get(timeout=10) == "/slow"
            process.send_signal(signal.SIGTERM)

            # draining: not ready at once, still serving
            def not_ready() -> bool:
                return httpx.get(f"{base}/readyz", timeout=5).status_code == 503

            assert poll(not_ready, DRAIN_SECONDS / 2), log.read_text()
            body = httpx.get(f"{base}/readyz", timeout=5).json()
            assert body == {
                "status": "unavailable",
                "down": ["shutdown"],
                "checks": {"shutdown": "in progress"},
            }
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            # then the listener closes; the request in flight goes on
            assert poll(lambda: not listening(port), DRAIN_SECONDS + 10), log.read_text()
            assert process.poll() is None and not pending.done()
            upstream.release.set()
            answer = pending.result(timeout=20)
        assert answer.status_code == 200 and answer.text == "late"
        exit_status = process.wait(exit_within)
    entries = [json.loads(line) for line in log.read_text().splitlines()]  # all JSON
    drained = Drained(answer, exit_status, entries)
    assert any(m.startswith("SIGTERM: not ready") for m in drained.messages)
    return drained


@pytest.mark.integration
def test_sigterm_drains_then_lets_the_request_in_flight_finish(
    tmp_path: Path, gated: tuple[GatedUpstream, str]
) -> None:
    upstream, upstream_url = gated
    port = free_port()
    log = tmp_path / "stderr.log"
    drained = drain_with_a_request_in_flight(
        write_config(tmp_path, port, upstream_url), port, log, upstream
    )
    # uvicorn ends a graceful stop by raising the signal it caught again
    assert drained.exit_status in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete." in drained.messages
    access = [e for e in drained.entries if e["logger"] == "uvicorn.access"]
    assert any(e["path"] == "/orders/slow" and e["status"] == 200 for e in access)
    slow_id = drained.answer.headers["x-request-id"]
    assert any(e.get("request_id") == slow_id for e in access)
    # the audit trail holds the decision on the request that finished during the stop
    assert slow_id in asyncio.run(audited_request_ids(tmp_path / "registry.db"))


@pytest.mark.integration
async def test_a_flow_begun_before_a_shutdown_completes_on_another_hub(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    redis = redis_server_factory()
    shared: dict[str, Any] = {
        "store": {"backend": "redis", "url": redis.url, "prefix": "flows:"},
        "registry": {"backend": "redis"},
    }
    first_port, second_port = free_port(), free_port()
    browser = httpx.AsyncClient()
    try:
        with serving(create_app(hub=make_hub(settings(**shared))), port=first_port) as first:
            page = await browser.get(f"{first}/login")
            csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            to_idp = await browser.post(
                f"{first}/login", data={"csrf": csrf, "rd": "/", "email": "alice@acme.example"}
            )
            assert to_idp.status_code == 303, to_idp.text
            state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
        assert not listening(first_port)  # the first hub has stopped (lifespan and all)

        with serving(create_app(hub=make_hub(settings(**shared))), port=second_port) as second:
            back = await browser.get(
                f"{second}/callback/acme-mock", params={"state": state, "user": "alice"}
            )
            assert back.status_code == 303, back.text
            assert back.headers["location"] == "/"
            home = await browser.get(f"{second}/")
            assert "alice@acme.example" in home.text
    finally:
        await browser.aclose()

"""The hub in its own process for ``python -m bench.login --served``: uvicorn + the fake IdP.

Started by the driver (``bench/served.py``), never by hand in normal use::

    .venv/bin/python -m bench.served_hub --port 8765 [--redis URL --prefix bench:abcd:]

What it serves on ``127.0.0.1:PORT`` (uvicorn: loop uvloop, http httptools, one worker,
access log off; audit lines formatted and written to /dev/null):

- the hub, ``create_app(hub=build_hub(...))``, as ``isthmus serve`` would run it, with the
  fake partner IdP (``tests.fakes.oidc_idp``) mounted in process through
  ``ConnectorContext(mounts=...)`` for the hub's own calls (``/token``, ``/userinfo``);
- the fake IdP's pages for the *browser* (its ``/authorize``) on the same port, chosen by
  the ``Host: idp.acme.test`` header: the IdP's state (codes) lives in this process;
- ``/__bench/meter`` (bench only): the time spent inside the fake IdP so far — CPU time
  of the thread (``time.thread_time_ns``) and wall time — and how many of those calls
  suspended (let other requests run; then their thread CPU time is not the IdP's alone);
- ``/__bench/noop`` (bench only): an empty answer from below the hub, to price uvicorn's
  own per-request work.

The IdP's work runs in this process, so the driver subtracts the meter's IdP time from
this process's CPU time. The process exits on SIGTERM/SIGINT, when its parent goes away,
or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.login import CONNECTION, EMAIL, IDP, configure_audit, settings_for
from connectors.registry import ConnectorContext
from federation.hub import build_hub
from federation.stores.base import Store
from federation.stores.memory import MemoryStore
from federation.stores.redis import RedisStore
from federation.web.app import create_app
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser

IDP_HOST = IDP.split("://", 1)[1].encode()
METER = "/__bench/meter"
NOOP = "/__bench/noop"


class IdpMeter:
    """Time spent inside the fake IdP: thread CPU ns, wall ns, calls, calls that suspended."""

    def __init__(self) -> None:
        self.cpu_ns = 0
        self.wall_ns = 0
        self.calls = 0
        self.suspended = 0

    @contextlib.asynccontextmanager
    async def measure(self) -> Any:
        loop = asyncio.get_running_loop()
        ran = [False]
        loop.call_soon(ran.__setitem__, 0, True)  # runs only if the call lets the loop run
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        try:
            yield
        finally:
            self.cpu_ns += time.thread_time_ns() - cpu
            self.wall_ns += time.perf_counter_ns() - wall
            self.calls += 1
            self.suspended += ran[0]

    def snapshot(self) -> dict[str, Any]:
        return {
            "idp_cpu_ns": self.cpu_ns,
            "idp_wall_ns": self.wall_ns,
            "idp_calls": self.calls,
            "idp_suspended": self.suspended,
            "process_time_ns": time.process_time_ns(),
            "pid": os.getpid(),
        }


class MeteredTransport(httpx.AsyncBaseTransport):
    """The fake IdP's transport (the hub's /token and /userinfo calls), metered."""

    def __init__(self, inner: httpx.AsyncBaseTransport, meter: IdpMeter) -> None:
        self.inner = inner
        self.meter = meter

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self.meter.measure():
            response = await self.inner.handle_async_request(request)
            await response.aread()  # the body is produced inside the IdP: count it there
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class BenchApp:
    """Routes the browser's IdP requests to the IdP (metered), bench routes, else the hub."""

    def __init__(self, hub_app: ASGIApp, idp_app: ASGIApp, meter: IdpMeter) -> None:
        self.hub_app = hub_app
        self.idp_app = idp_app
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == METER:
                await _answer(send, json.dumps(self.meter.snapshot()).encode())
                return
            if path == NOOP:
                await _answer(send, b"")
                return
            host = next((v for k, v in scope["headers"] if k == b"host"), b"")
            if host == IDP_HOST:
                async with self.meter.measure():
                    await self.idp_app(scope, receive, send)
                return
        await self.hub_app(scope, receive, send)  # http, and the lifespan (hub.aclose)


async def _answer(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build(port: int, store: Store) -> BenchApp:
    idp = FakeOidcProvider(
        IDP,
        users=[FakeUser("alice-123", email=EMAIL, name="Alice Martin", groups=("buyers",))],
    )
    meter = IdpMeter()
    issuer = f"http://127.0.0.1:{port}"
    hub = build_hub(
        settings_for(idp, issuer=issuer),
        store=store,
        context=ConnectorContext(
            hub_base_url=issuer, mounts={IDP: MeteredTransport(idp.transport, meter)}
        ),
    )
    if hub.connector(CONNECTION) is None:
        raise SystemExit(f"no connection {CONNECTION!r} in the bench settings")
    return BenchApp(create_app(hub=hub), idp.app, meter)


async def _watchdog(server: uvicorn.Server, parent: int, max_seconds: float) -> None:
    """Stop when the driver is gone or the time is up (no orphan hub left behind)."""
    deadline = time.monotonic() + max_seconds
    while not server.should_exit:
        if os.getppid() != parent or time.monotonic() > deadline:
            server.should_exit = True
            return
        await asyncio.sleep(0.5)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, parent: int, max_seconds: float) -> None:
        super().__init__(config)
        self.parent = parent
        self.max_seconds = max_seconds

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        self._watch = asyncio.create_task(_watchdog(self, self.parent, self.max_seconds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.served_hub", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", metavar="URL", help="a 127.0.0.1 Redis (else memory store)")
    parser.add_argument("--prefix", default="bench:served:", help="Redis key prefix")
    parser.add_argument("--audit", choices=("devnull", "off"), default="devnull")
    parser.add_argument("--parent", type=int, default=os.getppid(), help="exit when it is gone")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="exit after this long")
    args = parser.parse_args(argv)
    configure_audit(args.audit)
    store: Store = (
        RedisStore.from_url(args.redis, prefix=args.prefix) if args.redis else MemoryStore()
    )
    config = uvicorn.Config(
        build(args.port, store),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,
    )
    _Server(config, args.parent, args.max_seconds).run()


if __name__ == "__main__":
    main()

"""/readyz: 200 only while the store and the registry answer and the hub is not stopping;
503 naming what is down; one check per second at most, shared by concurrent probes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from federation.errors import StoreUnavailable
from federation.observability.health import Readiness
from tests.observability.support import ORDERS_HOST, in_process, make_hub, settings
from tests.peers.redis import RedisServer


class Backend:
    """A store and a registry in one: counts the calls, fails or hangs on demand."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def ping(self) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing is not None:
            raise self.failing

    async def revision(self) -> int:
        await self.ping()
        return 7


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def readiness(backend: Backend, clock: Clock, timeout: float = 1.0) -> Readiness:
    return Readiness(backend, backend, timeout=timeout, clock=clock)  # type: ignore[arg-type]


async def test_ready_when_both_answer_and_the_answer_is_reused_for_a_second() -> None:
    backend, clock = Backend(), Clock()
    probe = readiness(backend, clock)
    report = await probe.report()
    assert report.ready and report.body() == {
        "status": "ready",
        "checks": {"store": "ok", "registry": "ok"},
    }
    assert backend.calls == 2  # one PING, one revision
    clock.now += 0.9
    await probe.report()
    assert backend.calls == 2
    clock.now += 0.2
    await probe.report()
    assert backend.calls == 4


async def test_concurrent_probes_share_one_check() -> None:
    backend, clock = Backend(), Clock()
    backend.gate = asyncio.Event()
    probe = readiness(backend, clock)
    waiting = [asyncio.ensure_future(probe.report()) for _ in range(20)]
    await asyncio.sleep(0)  # let them all ask
    backend.gate.set()
    reports = await asyncio.gather(*waiting)
    assert all(r.ready for r in reports)
    assert backend.calls == 2


async def test_not_ready_names_what_is_down_and_how() -> None:
    backend, clock = Backend(), Clock()
    backend.failing = StoreUnavailable("redis PING failed: ConnectionError: 127.0.0.1:6379")
    report = await readiness(backend, clock).report()
    assert not report.ready
    assert report.body() == {
        "status": "unavailable",
        "down": ["store", "registry"],
        "checks": {"store": "unreachable", "registry": "unreachable"},
    }
    assert "6379" not in str(report.body())  # the cause goes to the log only


async def test_a_check_that_hangs_is_a_timeout() -> None:
    backend, clock = Backend(), Clock()
    backend.gate = asyncio.Event()  # never set: no answer
    report = await readiness(backend, clock, timeout=0.05).report()
    assert report.checks == {"store": "timeout", "registry": "timeout"}


async def test_draining_is_not_ready_at_once_and_asks_nothing() -> None:
    backend, clock = Backend(), Clock()
    probe = readiness(backend, clock)
    assert (await probe.report()).ready
    probe.drain()
    report = await probe.report()  # within the cached second, all the same
    assert report.body() == {
        "status": "unavailable",
        "down": ["shutdown"],
        "checks": {"shutdown": "in progress"},
    }
    assert backend.calls == 2


@pytest.mark.integration
async def test_redis_stopped_then_back(redis_server_factory: Callable[[], RedisServer]) -> None:
    server = redis_server_factory()
    config = settings(
        store={"backend": "redis", "url": server.url, "prefix": "ready:"},
        registry={"backend": "redis"},  # the store's Redis
    )
    async with in_process(make_hub(config)) as served:
        served.observability.readiness.cache_seconds = 0  # every probe checks, here
        http = served.http
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.headers["cache-control"] == "no-store"

        server.stop()
        down = await http.get("/readyz")
        assert down.status_code == 503
        assert down.json()["down"] == ["store", "registry"]
        assert str(server.port) not in down.text
        assert (await http.get("/healthz")).status_code == 200  # alive all the same
        assert served.metrics.value("isthmus_store_errors_total", {"operation": "PING"}) == 1

        server.start()  # same port: the clients reconnect by themselves
        back = await http.get("/readyz")
        assert back.status_code == 200, back.text


async def test_probes_are_the_hubs_except_on_an_apps_own_host() -> None:
    async with in_process(make_hub(settings())) as served:
        http = served.http
        for host in ("127.0.0.1:8080", "10.1.2.3:8080", "localhost"):  # hub, pod address
            assert (await http.get("/readyz", headers={"Host": host})).status_code == 200
            assert (await http.get("/metrics", headers={"Host": host})).status_code == 200
        # on the orders app's host, /readyz is the app's path: the proxy wants a sign-in
        on_app = await http.get("/readyz", headers={"Host": ORDERS_HOST})
        assert on_app.status_code == 303
        assert on_app.headers["location"].startswith("http://127.0.0.1:8080/login?rd=")
        # other methods are never the probe's
        assert (await http.post("/readyz")).status_code in (404, 405)

"""The AuditLog contract (memory, SQLite, Redis: one server, Sentinel, Cluster) and the
BufferedAuditSink in front of it."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from federation.admin.auditlogs import BufferedAuditSink, RedisAuditLog, SqliteAuditLog
from federation.admin.documents import SqliteDocumentStore, Write
from federation.audit import Audit, AuditLog, AuditQuery, MemoryAuditLog
from federation.errors import StoreUnavailable
from tests.peers.redis import TOPOLOGY_PARAMS, topology_of

T0 = 1_700_000_000.0  # epoch seconds; events in tests are spaced a second apart


@dataclass
class Harness:
    kind: str
    make: Callable[[int], AuditLog]  # max_events -> a fresh, empty log
    exact_trim: bool  # False: Redis trims whole stream nodes (keeps a few more)
    logs: list[AuditLog]

    def log(self, max_events: int = 10_000) -> AuditLog:
        log = self.make(max_events)
        self.logs.append(log)
        return log


@pytest.fixture(
    params=[
        "memory",
        "sqlite-memory",
        "sqlite-file",
        *TOPOLOGY_PARAMS,
    ]
)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind: str = request.param
    if kind == "memory":
        h = Harness(kind, lambda n: MemoryAuditLog(max_events=n), True, [])
    elif kind == "sqlite-memory":
        h = Harness(kind, lambda n: SqliteAuditLog(":memory:", max_events=n), True, [])
    elif kind == "sqlite-file":
        counter = iter(range(1000))
        h = Harness(
            kind,
            lambda n: SqliteAuditLog(str(tmp_path / f"audit{next(counter)}.db"), max_events=n),
            True,
            [],
        )
    else:
        topology = topology_of(request, kind)
        h = Harness(
            kind,
            lambda n: RedisAuditLog.from_topology(
                topology, prefix=f"test:audit:{secrets.token_hex(6)}:", max_events=n
            ),
            False,
            [],
        )
    try:
        yield h
    finally:
        for log in h.logs:
            await log.aclose()


def event(n: int, event: str = "login", **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"ts": T0 + n, "event": event, "outcome": "success", "n": n}
    record.update(fields)
    return record


EVENTS = [
    event(0, "login", partner="acme", subject="U-1", email="Alice@Acme.example", app="wiki"),
    event(1, "login", partner="acme", subject="u-2", outcome="failure", app="crm"),
    event(2, "admin.change", partner="globex", hub_subject="hub-7", kind="partner"),
    event(3, "admin.token.issue", partner="acme", email="bob@acme.example"),
    event(4, "administer", partner="globex", app="wiki"),  # not under "admin."
    event(5, "forward_auth.deny", partner="acme", app="wiki", outcome="denied",
          subject="U-1"),
    event(6, "login", partner="initech", email="carol@initech.example", app="wiki",
          subject=None),
    event(7, "logout", partner=3, subject=42),  # odd types: only matched as matches() would
]  # fmt: skip


def ns(records: Sequence[dict[str, Any]]) -> list[int]:
    return [int(r["n"]) for r in records]


async def loaded(harness: Harness) -> AuditLog:
    log = harness.log()
    await log.append(EVENTS[:3])
    await log.append([])
    await log.append(EVENTS[3:])
    return log


async def test_everything_newest_first(harness: Harness) -> None:
    log = await loaded(harness)
    found = await log.query(AuditQuery())
    assert ns(found) == [7, 6, 5, 4, 3, 2, 1, 0]
    assert found[-1] == EVENTS[0]  # round trip, every field


async def test_limit(harness: Harness) -> None:
    log = await loaded(harness)
    assert ns(await log.query(AuditQuery(limit=3))) == [7, 6, 5]
    assert ns(await log.query(AuditQuery(partner="acme", limit=2))) == [5, 3]


async def test_filter_partner_app_outcome(harness: Harness) -> None:
    log = await loaded(harness)
    assert ns(await log.query(AuditQuery(partner="acme"))) == [5, 3, 1, 0]
    assert ns(await log.query(AuditQuery(partner="3"))) == []
    assert ns(await log.query(AuditQuery(app="wiki"))) == [6, 5, 4, 0]
    assert ns(await log.query(AuditQuery(outcome="failure"))) == [1]
    assert ns(await log.query(AuditQuery(outcome="success", partner="globex"))) == [4, 2]
    assert ns(await log.query(AuditQuery(partner="acme", app="wiki", outcome="denied"))) == [5]
    assert await log.query(AuditQuery(partner="nobody")) == []


async def test_filter_user(harness: Harness) -> None:
    log = await loaded(harness)
    assert ns(await log.query(AuditQuery(user="U-1"))) == [5, 0]
    assert ns(await log.query(AuditQuery(user="u-1"))) == [5, 0]  # any case
    assert ns(await log.query(AuditQuery(user="U-2"))) == [1]
    assert ns(await log.query(AuditQuery(user="hub-7"))) == [2]
    assert ns(await log.query(AuditQuery(user="alice@acme.example"))) == [0]
    assert ns(await log.query(AuditQuery(user="ALICE@ACME.EXAMPLE"))) == [0]
    assert ns(await log.query(AuditQuery(user="carol@initech.example"))) == [6]
    assert ns(await log.query(AuditQuery(user="42"))) == [7]
    assert ns(await log.query(AuditQuery(user="alice"))) == []  # whole values only
    assert ns(await log.query(AuditQuery(user="U-1", partner="acme", app="wiki"))) == [5, 0]


async def test_filter_event_exact_and_prefix(harness: Harness) -> None:
    log = await loaded(harness)
    assert ns(await log.query(AuditQuery(event="login"))) == [6, 1, 0]
    assert ns(await log.query(AuditQuery(event="admin.change"))) == [2]
    assert ns(await log.query(AuditQuery(event="admin."))) == [3, 2]
    assert ns(await log.query(AuditQuery(event="admin.token."))) == [3]
    assert ns(await log.query(AuditQuery(event="admin"))) == []
    assert ns(await log.query(AuditQuery(event="forward_auth."))) == [5]


async def test_time_window(harness: Harness) -> None:
    log = await loaded(harness)
    assert ns(await log.query(AuditQuery(since=T0 + 2, until=T0 + 5))) == [4, 3, 2]
    assert ns(await log.query(AuditQuery(since=T0 + 2.5))) == [7, 6, 5, 4, 3]
    assert ns(await log.query(AuditQuery(until=T0 + 2))) == [1, 0]
    assert ns(await log.query(AuditQuery(since=T0 + 1, until=T0 + 6, partner="acme"))) == [5, 3, 1]
    assert ns(await log.query(AuditQuery(since=T0 + 1, until=T0 + 6, limit=2))) == [5, 4]
    assert await log.query(AuditQuery(since=T0 + 100)) == []
    assert await log.query(AuditQuery(until=T0 - 100)) == []
    assert await log.query(AuditQuery(since=T0 + 3, until=T0 + 3)) == []


async def test_millisecond_events(harness: Harness) -> None:
    log = harness.log()
    records = [{**event(i), "ts": T0 + i / 1000} for i in range(10)]
    await log.append(records)
    await log.append([{**event(10), "ts": T0 + 0.009}])  # the same millisecond again
    found = await log.query(AuditQuery(since=T0 + 0.003, until=T0 + 0.007))
    assert ns(found) == [6, 5, 4, 3]
    assert ns(await log.query(AuditQuery(since=T0 + 0.009))) == [10, 9]


async def test_late_event_still_found(harness: Harness) -> None:
    # An older event appended after newer ones (another replica's batch, a retry).
    log = harness.log()
    await log.append([event(0), event(10)])
    await log.append([event(5)])
    assert ns(await log.query(AuditQuery())) == [5, 10, 0]
    assert ns(await log.query(AuditQuery(since=T0 + 4, until=T0 + 6))) == [5]
    assert ns(await log.query(AuditQuery(until=T0 + 6))) == [5, 0]


async def test_many_events_paged(harness: Harness) -> None:
    log = harness.log()
    await log.append([event(i, partner="rare" if i % 400 == 7 else "common") for i in range(1500)])
    assert ns(await log.query(AuditQuery(partner="rare"))) == [1207, 807, 407, 7]
    assert ns(await log.query(AuditQuery(partner="rare", limit=2))) == [1207, 807]
    assert len(await log.query(AuditQuery(limit=1200))) == 1200
    assert ns(await log.query(AuditQuery(since=T0 + 10, until=T0 + 12))) == [11, 10]


async def test_max_events_trims_oldest(harness: Harness) -> None:
    log = harness.log(max_events=10)
    for i in range(0, 300, 30):
        await log.append([event(n) for n in range(i, i + 30)])
    found = ns(await log.query(AuditQuery(limit=1000)))
    assert found[:10] == list(range(299, 289, -1))  # the newest are all kept
    assert found == list(range(299, 299 - len(found), -1))  # no hole: the oldest went
    if harness.exact_trim:
        assert len(found) == 10
    else:
        assert len(found) < 300


# --- BufferedAuditSink -----------------------------------------------------------------


class FlakyLog:
    """A MemoryAuditLog that can be taken down; counts append calls and batch sizes."""

    def __init__(self) -> None:
        self.inner = MemoryAuditLog()
        self.down = False
        self.batches: list[int] = []
        self.appended = asyncio.Event()

    async def append(self, records: Sequence[dict[str, Any]]) -> None:
        if self.down:
            raise StoreUnavailable("redis XADD failed: ConnectionError: refused")
        self.batches.append(len(records))
        await self.inner.append(records)
        self.appended.set()

    async def query(self, query: AuditQuery) -> list[dict[str, Any]]:
        return await self.inner.query(query)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_sink_buffers_and_flushes_in_batches() -> None:
    log = FlakyLog()
    sink = BufferedAuditSink(log, batch_size=4, max_buffer=100)
    audit = Audit(sinks=[sink])
    try:
        for i in range(10):
            audit.emit("login", partner="acme", n=i)
        assert sink.pending <= 10
        assert await sink.flush() is True
        assert sink.pending == 0
        assert sum(log.batches) == 10 and max(log.batches) <= 4
        assert ns(await log.query(AuditQuery())) == list(range(9, -1, -1))
        assert sink.written == 10 and sink.dropped == 0
        assert await sink.flush() is True  # nothing left: no write
        assert sum(log.batches) == 10
    finally:
        await sink.aclose()


async def test_sink_close_flushes_then_drops_later_events() -> None:
    log = FlakyLog()
    sink = BufferedAuditSink(log)
    sink({"ts": T0, "event": "x", "n": 0})  # a running loop: the writer starts
    await sink.aclose()  # flushes
    assert ns(await log.query(AuditQuery())) == [0]
    sink({"ts": T0, "event": "x", "n": 1})  # closed: dropped, never raised
    assert sink.dropped == 1


def test_sink_called_outside_a_loop() -> None:
    log = FlakyLog()
    sink = BufferedAuditSink(log)
    sink({"ts": T0, "event": "x", "n": 0})  # no loop: buffered, no task, no error
    assert sink.pending == 1


async def test_sink_backend_down_then_back(caplog: pytest.LogCaptureFixture) -> None:
    log = FlakyLog()
    sink = BufferedAuditSink(log, batch_size=3, max_buffer=5)
    caplog.set_level(logging.WARNING, logger="isthmus.auditlog")
    try:
        for i in range(2):
            sink(event(i))
        assert await sink.flush() is True
        log.down = True
        for i in range(2, 6):
            sink(event(i))
        assert await sink.flush() is False  # kept, not raised
        assert sink.backend_down and sink.pending == 4 and sink.dropped == 0
        for i in range(6, 10):
            sink(event(i))  # the hot path never raises, and keeps the newest 5
        assert await sink.flush() is False
        assert sink.pending == 5 and sink.dropped == 3
        outage = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(outage) == 1  # one warning per outage, however many failures
        assert "ConnectionError" in outage[0].getMessage()

        log.down = False
        assert await sink.flush() is True
        assert not sink.backend_down and sink.pending == 0
        assert ns(await log.query(AuditQuery())) == [9, 8, 7, 6, 5, 1, 0]
        assert sink.written == 7
        assert any("3 events were dropped" in r.getMessage() for r in caplog.records)

        log.down = True  # a second outage warns again
        sink(event(10))
        assert await sink.flush() is False
        outage = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(outage) == 2
        log.down = False
    finally:
        await sink.aclose()
    assert ns(await log.query(AuditQuery(limit=1))) == [10]


async def test_sink_full_while_up_drops_oldest() -> None:
    log = FlakyLog()
    sink = BufferedAuditSink(log, batch_size=100, max_buffer=3)
    try:
        for i in range(5):
            sink(event(i))
        assert sink.dropped == 2
        assert await sink.flush() is True
        assert ns(await log.query(AuditQuery())) == [4, 3, 2]
    finally:
        await sink.aclose()


async def test_sink_close_with_backend_down_counts_the_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = FlakyLog()
    log.down = True
    sink = BufferedAuditSink(log)
    for i in range(3):
        sink(event(i))
    await sink.aclose()
    assert sink.dropped == 3 and sink.pending == 0
    assert any("3 events not written" in r.getMessage() for r in caplog.records)


async def test_sink_never_raises_into_the_caller(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sink = BufferedAuditSink(FlakyLog())

    def boom() -> None:
        raise RuntimeError("anything going wrong inside")

    monkeypatch.setattr(sink, "_trim", boom)
    Audit(sinks=[sink]).emit("login")  # logged, not raised
    assert any("could not buffer" in r.getMessage() for r in caplog.records)
    await sink.aclose()


async def test_sink_writes_in_the_background() -> None:
    # No flush: the writer task wakes at a full batch, then at its interval.
    log = FlakyLog()
    sink = BufferedAuditSink(log, batch_size=3, interval=0.01)
    try:
        for i in range(3):
            sink(event(i))
        await asyncio.wait_for(log.appended.wait(), timeout=5)
        assert log.batches[0] == 3
        log.appended.clear()
        sink(event(3))
        await asyncio.wait_for(log.appended.wait(), timeout=5)
        assert ns(await log.query(AuditQuery())) == [3, 2, 1, 0]
    finally:
        await sink.aclose()


async def test_sink_into_every_log(harness: Harness) -> None:
    log = harness.log()
    sink = BufferedAuditSink(log, batch_size=7)
    audit = Audit(sinks=[sink])
    try:
        for i in range(30):
            audit.emit("admin.change" if i % 3 == 0 else "login", partner="acme", n=i)
        await sink.flush()
    finally:
        await sink.aclose()
    found = await log.query(AuditQuery(event="admin.", limit=100))
    assert ns(found) == list(range(27, -1, -3))


@pytest.mark.integration
async def test_redis_down_then_back_through_the_sink(
    redis_server_factory: Callable[[], Any],
) -> None:
    server = redis_server_factory()
    log = RedisAuditLog.from_url(server.url, prefix="sink:", max_events=1000)
    sink = BufferedAuditSink(log, max_buffer=4)
    try:
        sink(event(0))
        assert await sink.flush()
        server.stop()
        with pytest.raises(StoreUnavailable):
            await log.query(AuditQuery())
        for i in range(1, 7):
            sink(event(i))
        assert await sink.flush() is False
        assert sink.pending == 4 and sink.dropped == 2
        server.start()  # empty again (no persistence in tests)
        assert await sink.flush() is True
        assert ns(await log.query(AuditQuery())) == [6, 5, 4, 3]
    finally:
        await sink.aclose()
        await log.aclose()


async def test_sqlite_log_shares_the_registry_file(tmp_path: Path) -> None:
    # The hub keeps documents and the audit trail in one SQLite file (registry.path).
    path = str(tmp_path / "registry.db")
    documents = SqliteDocumentStore(path)
    log = SqliteAuditLog(path, max_events=5)
    try:
        await documents.apply([Write("partner", "acme", {"v": 1}, 0)], actor="alice")
        await log.append([event(i) for i in range(8)])
        await documents.apply([Write("partner", "acme", {"v": 2}, 1)], actor="alice")
    finally:
        await log.aclose()
        await documents.aclose()
    log, documents = SqliteAuditLog(path, max_events=5), SqliteDocumentStore(path)
    try:
        await log.append([event(8)])
        assert ns(await log.query(AuditQuery())) == [8, 7, 6, 5, 4]
        assert await documents.revision() == 2
    finally:
        await log.aclose()
        await documents.aclose()

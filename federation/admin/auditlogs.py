"""Searchable audit trails that outlive the process, and the sink that feeds them.

* :class:`SqliteAuditLog`: a table in a file (one replica) or ``:memory:``.
* :class:`RedisAuditLog`: a Redis Stream shared by every replica.
* :class:`BufferedAuditSink`: appended to :attr:`federation.audit.Audit.sinks`, it takes
  each event on the hot path without waiting or failing, and writes them to an
  :class:`~federation.audit.AuditLog` in batches from a background task.

Both logs keep at most ``max_events`` events (the oldest go first) and answer an
:class:`~federation.audit.AuditQuery` newest first — newest meaning last appended, as
:class:`~federation.audit.MemoryAuditLog` does. Contract suite:
``tests/admin/test_auditlog_contract.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from federation.audit import AuditLog, AuditQuery
from federation.errors import StoreUnavailable
from federation.stores.redis import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    Client,
    RedisTopology,
    call,
    close_client,
    connect,
    redis_client,
)

_log = logging.getLogger("isthmus.auditlog")
_encode = json.JSONEncoder(default=str, sort_keys=True, separators=(",", ":")).encode

DEFAULT_MAX_EVENTS = 200_000


# --- SQLite ----------------------------------------------------------------------------


class SqliteAuditLog:
    """Events in a SQLite table: one row each, the filtered fields in indexed columns.

    The columns hold exactly what :meth:`AuditQuery.matches` compares (``partner``, ``app``,
    ``outcome`` only when they are strings; the user fields lower-cased), so the SQL
    filter and ``matches`` agree. Calls run in a worker thread under a lock: a file's
    commit must not stall the event loop.
    """

    def __init__(self, path: str = ":memory:", *, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._max_events = max_events
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)

    async def append(self, records: Sequence[dict[str, Any]]) -> None:
        if records:
            rows = [_row(record) for record in records]
            await asyncio.to_thread(self._append, rows)

    def _append(self, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (ts, partner, app, event, outcome, subject, "
                    "hub_subject, email, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # Rows are numbered in append order and only the oldest are ever deleted.
                self._db.execute(
                    "DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - ?",
                    (self._max_events,),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    async def query(self, query: AuditQuery) -> list[dict[str, Any]]:
        if query.limit <= 0:
            return []
        where, args = _where(query)
        sql = f"SELECT record FROM events{where} ORDER BY seq DESC LIMIT ?"  # noqa: S608
        return await asyncio.to_thread(self._select, sql, (*args, query.limit))

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [json.loads(row[0]) for row in rows]

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, partner TEXT, app TEXT, event TEXT NOT NULL,
    outcome TEXT, subject TEXT, hub_subject TEXT, email TEXT, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_partner ON events (partner);
CREATE INDEX IF NOT EXISTS events_app ON events (app);
CREATE INDEX IF NOT EXISTS events_event ON events (event);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject);
CREATE INDEX IF NOT EXISTS events_hub_subject ON events (hub_subject);
CREATE INDEX IF NOT EXISTS events_email ON events (email);
"""


def _row(record: dict[str, Any]) -> tuple[Any, ...]:
    def text(name: str) -> str | None:
        value = record.get(name)
        return value if isinstance(value, str) else None

    def user(name: str) -> str | None:
        value = record.get(name)
        return str(value).lower() if value else None

    return (
        float(record.get("ts", 0)),
        text("partner"),
        text("app"),
        str(record.get("event", "")),
        text("outcome"),
        user("subject"),
        user("hub_subject"),
        user("email"),
        _encode(record),
    )


def _where(query: AuditQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if query.since is not None:
        clauses.append("ts >= ?")
        args.append(query.since)
    if query.until is not None:
        clauses.append("ts < ?")
        args.append(query.until)
    for column in ("partner", "app", "outcome"):
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if query.event is not None:
        if query.event.endswith("."):
            # A prefix as a range the index answers: "admin." ≤ event < "admin/".
            clauses.append("event >= ? AND event < ?")
            args += [query.event, query.event[:-1] + chr(ord(".") + 1)]
        else:
            clauses.append("event = ?")
            args.append(query.event)
    if query.user is not None:
        clauses.append("(subject = ? OR hub_subject = ? OR email = ?)")
        args += [query.user.lower()] * 3
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


# --- Redis -----------------------------------------------------------------------------

# Appends ARGV[2], ARGV[3], … (pairs: millisecond timestamp, record JSON) to the stream
# KEYS[1], trimmed to about ARGV[1] entries. Each entry's id is its event's timestamp, or
# the stream's last id when the event is older (another replica's batch, a retried one):
# ids only grow, and an entry's id is never below its event's time.
_APPEND = """#!lua
local last = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last = tonumber(string.match(info[i + 1], '^(%d+)'))
    end
  end
end
for i = 2, #ARGV, 2 do
  local ms = math.max(tonumber(ARGV[i]), last)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], string.format('%.0f', ms) .. '-*',
             'r', ARGV[i + 1])
  last = ms
end
return 1
"""


class RedisAuditLog:
    """Events on a Redis Stream (``prefix + "events"``), shared by every replica.

    An entry's id is its event's time in milliseconds (see ``_APPEND``), so a time window
    is a range of ids: :meth:`query` walks ``XREVRANGE`` from ``until`` down to ``since``
    a page at a time, filtering with :meth:`AuditQuery.matches`, until ``limit`` events
    match. An event appended late (a buffer that waited out an outage) carries a later
    id than its time: the walk starts ``late_seconds`` above ``until`` to still find it.
    ``XADD … MAXLEN ~`` trims the oldest in whole stream nodes: the stream keeps at least
    ``max_events`` and at most a node (100 by default) more.

    The stream is one key, and the script touches only it: under Redis Cluster the whole
    trail lives on the node that holds its slot (see docs/operations-redis.md, sizing).
    """

    def __init__(
        self,
        client: Client,
        prefix: str = "isthmus:audit:",
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        page: int = 500,
        late_seconds: float = 60.0,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._redis = client
        self._key = prefix + "events"
        self._max_events = max_events
        self._page = page
        self._late_ms = math.ceil(late_seconds * 1000)
        self._append = client.register_script(_APPEND)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "isthmus:audit:",
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = READ_TIMEOUT,
    ) -> RedisAuditLog:
        client = redis_client(url, connect_timeout=connect_timeout, timeout=timeout)
        return cls(client, prefix, max_events=max_events)

    @classmethod
    def from_topology(
        cls,
        topology: RedisTopology,
        prefix: str = "isthmus:audit:",
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = READ_TIMEOUT,
    ) -> RedisAuditLog:
        """A log on any topology (:func:`federation.stores.redis.connect`)."""
        client = connect(topology, connect_timeout=connect_timeout, timeout=timeout)
        return cls(client, prefix, max_events=max_events)

    async def append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        args: list[str | int] = [self._max_events]
        for record in records:
            args += [_millis(record.get("ts", 0)), _encode(record)]
        await self._call("XADD script", self._append(keys=[self._key], args=args))

    async def query(self, query: AuditQuery) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if query.limit <= 0:
            return found
        high = "+" if query.until is None else str(_millis(query.until) + self._late_ms)
        low = "-" if query.since is None else str(_millis(query.since))
        while True:
            entries = await self._call(
                "XREVRANGE", self._redis.xrevrange(self._key, high, low, count=self._page)
            )
            for _id, fields in entries:
                record = _decode(fields.get("r"))
                if record is not None and query.matches(record):
                    found.append(record)
                    if len(found) >= query.limit:
                        return found
            if len(entries) < self._page:
                return found
            high = "(" + str(entries[-1][0])

    async def aclose(self) -> None:
        await close_client(self._redis)

    async def _call(self, what: str, pending: object) -> Any:
        return await call(self._redis, what, pending)


def _millis(ts: object) -> int:
    try:
        value = float(cast("Any", ts))
    except (TypeError, ValueError):
        return 0
    return max(0, math.floor(value * 1000)) if math.isfinite(value) else 0


def _decode(encoded: object) -> dict[str, Any] | None:
    if not isinstance(encoded, str):
        return None
    try:
        record = json.loads(encoded)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


# --- the sink --------------------------------------------------------------------------


class BufferedAuditSink:
    """An :data:`~federation.audit.AuditSink` that writes to an AuditLog in batches.

    Calling it only appends to an in-memory buffer: it never waits and never raises. A
    background task (started on the first call made inside a running event loop, or by
    :meth:`start`) writes the buffer in batches of ``batch_size`` when that many are
    waiting or every ``interval`` seconds. While the log is down the buffer keeps the
    newest ``max_buffer`` events (the oldest are dropped and counted in :attr:`dropped`),
    one warning is logged per outage, and writes are retried with a growing delay (up to
    ``max_retry_delay``). A batch that failed half-way is written again: an event may be
    stored twice, never silently lost while it fits in the buffer.

    The sink does not own the log: :meth:`aclose` the sink (which flushes), then the log.
    """

    def __init__(
        self,
        log: AuditLog,
        *,
        batch_size: int = 256,
        interval: float = 0.2,
        max_buffer: int = 100_000,
        max_retry_delay: float = 5.0,
    ) -> None:
        if batch_size < 1 or max_buffer < 1:
            raise ValueError("batch_size and max_buffer must be at least 1")
        self._log = log
        self._batch_size = batch_size
        self._interval = interval
        self._max_buffer = max_buffer
        self._max_retry_delay = max_retry_delay
        self._buffer: deque[dict[str, Any]] = deque()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._down = False
        self._dropped_in_outage = 0
        self.dropped = 0  # events dropped since the start (buffer full, or sink closed)
        self.written = 0  # events written to the log

    @property
    def pending(self) -> int:
        """Events waiting in the buffer (not counting a batch being written)."""
        return len(self._buffer)

    @property
    def backend_down(self) -> bool:
        return self._down

    def __call__(self, record: dict[str, Any]) -> None:
        try:
            if self._closed:
                self.dropped += 1
                return
            self._buffer.append(record)
            self._trim()
            if self._task is None:
                self._start_if_running()
            if len(self._buffer) >= self._batch_size and not self._down:
                self._wake.set()
        except Exception:  # the hot path never fails because of the audit trail
            _log.exception("audit sink: could not buffer an event")

    def start(self) -> None:
        """Start the background writer in the running event loop (idempotent)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="isthmus-audit-sink"
            )

    async def flush(self) -> bool:
        """Write every buffered event now; False (events kept) if the log is down."""
        return await self._drain()

    async def aclose(self) -> None:
        """Stop the background writer and flush; events the log refuses are lost."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            # Let the writer finish the batch it may be writing (a cancelled write could
            # land and then be written again), then stop it.
            self._wake.set()
            await task
        if not await self._drain():
            _log.error(
                "audit sink closed with %d events not written: the audit log is unavailable",
                len(self._buffer),
            )
            self.dropped += len(self._buffer)
            self._buffer.clear()

    def _start_if_running(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop here: the events wait for a flush (or a later call)
        self.start()

    async def _run(self) -> None:
        delay = self._interval
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            if self._closed:
                return
            if await self._drain():
                delay = self._interval
            else:
                delay = min(max(delay, self._interval) * 2, self._max_retry_delay)

    async def _drain(self) -> bool:
        async with self._lock:
            while self._buffer:
                count = min(self._batch_size, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(count)]
                try:
                    await self._log.append(batch)
                except asyncio.CancelledError:
                    self._requeue(batch)
                    raise
                except Exception as exc:
                    self._requeue(batch)
                    self._outage(exc)
                    return False
                self.written += count
            self._recovered()
            return True

    def _requeue(self, batch: list[dict[str, Any]]) -> None:
        self._buffer.extendleft(reversed(batch))
        self._trim()

    def _trim(self) -> None:
        while len(self._buffer) > self._max_buffer:
            self._buffer.popleft()
            self.dropped += 1
            self._dropped_in_outage += 1
            if self._dropped_in_outage == 1 and not self._down:
                # Full with the log up: it is slower than the events come (once a spell).
                _log.warning(
                    "audit sink buffer full (%d events): dropping the oldest", self._max_buffer
                )

    def _outage(self, exc: Exception) -> None:
        if self._down:
            return
        self._down = True
        detail = exc.detail if isinstance(exc, StoreUnavailable) else ""
        _log.warning(
            "audit log unavailable (%s): buffering up to %d events, dropping the oldest "
            "beyond, retrying",
            detail or type(exc).__name__,
            self._max_buffer,
        )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            _log.warning(
                "audit log available again; %d events were dropped during the outage",
                self._dropped_in_outage,
            )
        self._dropped_in_outage = 0

"""Audit events: who, partner, what, outcome, reasons, request id.

Every event is a flat JSON-able dict written to the ``isthmus.audit`` logger as one JSON
line and to any extra sinks (tests attach a list; later: Redis Streams).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

AuditSink = Callable[[dict[str, Any]], None]
_log = logging.getLogger("isthmus.audit")
_encode = json.JSONEncoder(default=str, sort_keys=True).encode


class Audit:
    def __init__(self, sinks: list[AuditSink] | None = None) -> None:
        self.sinks: list[AuditSink] = list(sinks or [])

    def emit(self, event: str, *, outcome: str = "success", **fields: Any) -> dict[str, Any]:
        record = {"ts": round(time.time(), 3), "event": event, "outcome": outcome}
        for key, value in fields.items():
            if value is not None:
                record[key] = value
        # The JSON line is built once, and only when the logger would write it (the event
        # still reaches every sink and the caller either way).
        if _log.isEnabledFor(logging.INFO):
            _log.info(_encode(record))
        for sink in self.sinks:
            sink(record)
        return record

    async def flush(self) -> None:
        """Wait until buffered sinks (the searchable audit log) hold every event so far."""
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None:
                await flush()


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """A filter over the audit trail; every field given must match (``None``: any).

    ``user`` matches the event's subject, hub subject or email; ``event`` matches the
    event name or, ending in ``.``, a prefix (``admin.``). Times are epoch seconds,
    ``since`` inclusive, ``until`` exclusive. Results are newest first.
    """

    partner: str | None = None
    user: str | None = None
    app: str | None = None
    event: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100

    def matches(self, record: dict[str, Any]) -> bool:
        ts = float(record.get("ts", 0))
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts >= self.until:
            return False
        if self.partner is not None and record.get("partner") != self.partner:
            return False
        if self.app is not None and record.get("app") != self.app:
            return False
        if self.outcome is not None and record.get("outcome") != self.outcome:
            return False
        if self.event is not None:
            name = str(record.get("event", ""))
            wanted = self.event
            if not (name.startswith(wanted) if wanted.endswith(".") else name == wanted):
                return False
        if self.user is not None:
            users = (record.get("subject"), record.get("hub_subject"), record.get("email"))
            if self.user.lower() not in {str(u).lower() for u in users if u}:
                return False
        return True


_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _pack(record: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]] | str:
    """A record as (keys, values) with lists of atoms as tuples; JSON text if deeper."""
    values: list[Any] = []
    for value in record.values():
        kind = value.__class__
        if kind in _ATOMIC:
            values.append(value)
        elif kind is list and all(item.__class__ in _ATOMIC for item in value):
            values.append(tuple(value))
        else:
            return _encode(record)
    return tuple(record), tuple(values)


def _unpack(entry: tuple[tuple[str, ...], tuple[Any, ...]] | str) -> dict[str, Any]:
    if isinstance(entry, str):
        loaded: dict[str, Any] = json.loads(entry)
        return loaded
    keys, values = entry
    return {k: list(v) if v.__class__ is tuple else v for k, v in zip(keys, values, strict=True)}


class AuditLog(Protocol):
    """The searchable audit trail (memory ring, SQLite table or Redis stream).

    ``append`` takes events as :meth:`Audit.emit` built them; ``query`` returns them
    newest first. Contract suite: ``tests/admin/test_auditlog_contract.py``.
    """

    async def append(self, records: Sequence[dict[str, Any]]) -> None: ...

    async def query(self, query: AuditQuery) -> list[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class MemoryAuditLog:
    """The last ``max_events`` events of this process (the single-process default).

    Events are kept in a form the garbage collector does not track — tuples of strings
    and numbers, or the JSON text of an event with nested values — so a full ring of
    200,000 events costs a full collection nothing (as dicts they made one last ~100 ms,
    a pause every request in flight waited out).
    """

    def __init__(self, max_events: int = 200_000) -> None:
        self._events: deque[tuple[tuple[str, ...], tuple[Any, ...]] | str] = deque(
            maxlen=max_events
        )

    async def append(self, records: Sequence[dict[str, Any]]) -> None:
        self._events.extend(_pack(record) for record in records)

    async def query(self, query: AuditQuery) -> list[dict[str, Any]]:
        found = []
        for entry in reversed(self._events):
            record = _unpack(entry)
            if query.matches(record):
                found.append(record)
                if len(found) >= query.limit:
                    break
        return found

    async def aclose(self) -> None:
        self._events.clear()

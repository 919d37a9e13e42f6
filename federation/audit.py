"""Audit events: who, partner, what, outcome, reasons, request id.

Every event is a flat JSON-able dict written to the ``isthmus.audit`` logger as one JSON
line and to any extra sinks (tests attach a list; later: Redis Streams).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

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

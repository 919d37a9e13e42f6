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


class Audit:
    def __init__(self, sinks: list[AuditSink] | None = None) -> None:
        self.sinks: list[AuditSink] = list(sinks or [])

    def emit(self, event: str, *, outcome: str = "success", **fields: Any) -> dict[str, Any]:
        record = {"ts": round(time.time(), 3), "event": event, "outcome": outcome}
        record.update({k: v for k, v in fields.items() if v is not None})
        _log.info(json.dumps(record, default=str, sort_keys=True))
        for sink in self.sinks:
            sink(record)
        return record

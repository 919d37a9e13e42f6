"""Log lines: one JSON object per line (or text for a terminal), with the request id.

:data:`request_id` holds the id of the request being served (set by the app's
``RequestIdMiddleware``); every line logged while serving it carries it. A JSON line has
``ts`` (epoch seconds, as the audit events), ``level``, ``logger``, ``message``,
``request_id`` when there is one, the ``extra`` fields of the call, and ``exc`` (the
traceback) after :meth:`logging.Logger.exception`.

An audit event is already a JSON object: its line stays that object, with ``level`` and
``logger`` added in front (never a JSON string inside a JSON line). uvicorn's access lines
get ``client``, ``method``, ``path``, ``status`` fields, and lose their query strings
(authorization codes, login states and email addresses travel there).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any, Literal, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "request_id"]

request_id: ContextVar[str | None] = ContextVar("isthmus_request_id", default=None)

AUDIT_LOGGER = "isthmus.audit"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR
# What every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's message with terminal colours
}
_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == AUDIT_LOGGER and message.startswith("{") and message.endswith("}"):
            return _audit_line(record, message)
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        current = getattr(record, "request_id", None) or request_id.get()
        if current:
            entry["request_id"] = current
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            entry.update(_access_fields(record.args))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _encode(entry)


def _audit_line(record: logging.LogRecord, message: str) -> str:
    head = _encode({"level": record.levelname.lower(), "logger": record.name})
    rest = message[1:].strip()
    return head[:-1] + ("," + rest if rest != "}" else "}")


def _access_fields(args: tuple[Any, ...]) -> dict[str, Any]:
    # uvicorn: '%s - "%s %s HTTP/%s" %d' % (client, method, path, http_version, status)
    if len(args) != 5:
        return {}
    client, method, path, _, status = args
    return {"client": client, "method": method, "path": path, "status": status}


class _WithoutQuery(logging.Filter):
    """Access lines without query strings: they carry authorization codes, login states
    and email addresses."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


_WITHOUT_QUERY = _WithoutQuery()


class TextFormatter(logging.Formatter):
    """``time level logger: message [request_id=…]`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        current = getattr(record, "request_id", None) or request_id.get()
        return f"{line} [request_id={current}]" if current else line


class _Handler(logging.StreamHandler[TextIO]):
    """The hub's own handler (replaced, never stacked, when configured again)."""


def configure_logging(
    log_format: Literal["json", "text"],
    level: str = "info",
    *,
    audit_lines: bool = True,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every logger (uvicorn's too) through one handler on the root logger."""
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(logging.NOTSET)
    access = logging.getLogger("uvicorn.access")
    if _WITHOUT_QUERY not in access.filters:
        access.addFilter(_WITHOUT_QUERY)
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.NOTSET if audit_lines else logging.WARNING)
    return handler

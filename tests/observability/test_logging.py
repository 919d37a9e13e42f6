"""Log lines: one JSON object each, with the request id of the request being served; an
audit event stays one object; text lines for a terminal."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from federation.observability.logging import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    request_id,
)
from tests.observability.support import forward_auth, in_process, make_hub, settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide loggers: put them back after the test."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "isthmus.audit"]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), list(logger.filters), logger.level, logger.propagate)
    try:
        yield
    finally:
        for name, (handlers, filters, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.filters[:] = filters
            logger.setLevel(level)
            logger.propagate = propagate


def record(name: str, message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.getLogger(name).makeRecord(
        name, logging.WARNING, __file__, 1, message, args, None, extra=extra
    )
    return made


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_the_fields_the_extras_and_the_request_id() -> None:
    token = request_id.set("req-1234abcd")
    try:
        line = JsonFormatter().format(
            record("isthmus.proxy", "upstream %s slow", "orders", app="x")
        )
    finally:
        request_id.reset(token)
    entry = json.loads(line)
    assert entry == {
        "ts": entry["ts"],
        "level": "warning",
        "logger": "isthmus.proxy",
        "message": "upstream orders slow",
        "request_id": "req-1234abcd",
        "app": "x",
    }
    assert isinstance(entry["ts"], float)
    assert "\n" not in line


def test_an_exception_is_one_line_too() -> None:
    logger = logging.getLogger("isthmus.test")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        made = logger.makeRecord(
            "isthmus.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = JsonFormatter().format(made)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and "request_id" not in entry
    assert "ValueError: bad\nvalue" in entry["exc"]


def test_an_audit_event_stays_one_object() -> None:
    event = json.dumps({"event": "proxy.decision", "outcome": "success", "ts": 1.5}, sort_keys=True)
    made = logging.getLogger("isthmus.audit").makeRecord(
        "isthmus.audit", logging.INFO, __file__, 1, event, (), None
    )
    entry = json.loads(JsonFormatter().format(made))
    assert entry == {
        "level": "info",
        "logger": "isthmus.audit",
        "event": "proxy.decision",
        "outcome": "success",
        "ts": 1.5,
    }


def test_uvicorns_access_line_gets_fields() -> None:
    made = record(
        "uvicorn.access", '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/readyz", "1.1", 200
    )
    entry = json.loads(JsonFormatter().format(made))
    assert entry["message"] == '10.0.0.1:5000 - "GET /readyz HTTP/1.1" 200'
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/readyz", 200)


@pytest.mark.usefixtures("restore_logging")
def test_access_lines_keep_no_query_string() -> None:
    stream = io.StringIO()
    configure_logging("text", "info", stream=stream)
    access = logging.getLogger("uvicorn.access")
    fmt = '%s - "%s %s HTTP/%s" %d'
    access.info(fmt, "10.0.0.1:5000", "GET", "/callback/acme?code=secret&state=s", "1.1", 303)
    assert '"GET /callback/acme HTTP/1.1" 303' in stream.getvalue()
    assert "secret" not in stream.getvalue()


def test_a_text_line_ends_with_the_request_id() -> None:
    token = request_id.set("req-5678efgh")
    try:
        line = TextFormatter().format(record("isthmus.proxy", "hello"))
    finally:
        request_id.reset(token)
    assert line.endswith("WARNING isthmus.proxy: hello [request_id=req-5678efgh]")


@pytest.mark.usefixtures("restore_logging")
async def test_every_line_of_a_request_carries_its_id() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    # forward-auth from a peer that is no trusted edge: a warning and an audit event
    async with in_process(make_hub(settings(trusted_proxies=[]))) as served:
        refused = await forward_auth(served.http, None)
        assert refused.status_code == 403
        logging.getLogger("isthmus.test").warning("between requests")
    wanted = refused.headers["x-request-id"]
    entries = lines(stream)  # every line parses
    warning = next(e for e in entries if e["logger"] == "isthmus.forward_auth")
    assert warning["level"] == "warning" and warning["request_id"] == wanted
    audit = next(e for e in entries if e.get("event") == "forward_auth.refused")
    assert audit["logger"] == "isthmus.audit" and audit["request_id"] == wanted
    between = next(e for e in entries if e.get("message") == "between requests")
    assert "request_id" not in between  # the id ends with its request


@pytest.mark.usefixtures("restore_logging")
def test_audit_lines_can_be_left_to_the_audit_log() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", audit_lines=False, stream=stream)
    logging.getLogger("isthmus.audit").info('{"event": "x"}')
    logging.getLogger("isthmus.other").info("kept")
    assert [e["message"] for e in lines(stream)] == ["kept"]

"""A real SMTP server for the tests: ``aiosmtpd`` on 127.0.0.1, keeping every message.

Fixtures:

* ``smtp_server`` (session): an :class:`SmtpSink` listening on a free port in its own
  thread (aiosmtpd's ``Controller``), started once for the run and stopped after it.
* ``smtp_sink`` (function): the same server with its mailbox emptied for the test.

Messages arrive through a real SMTP conversation (smtplib → aiosmtpd) and are kept as
parsed :class:`email.message.EmailMessage` objects. A missing ``aiosmtpd`` (the ``test``
extra) fails in CI and skips elsewhere.
"""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest

from tests.peers.common import free_port, missing


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if m["To"] == address]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpSink]:
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        missing("aiosmtpd", "pip install -e '.[test]'")
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_sink(smtp_server: SmtpSink) -> Iterator[SmtpSink]:
    smtp_server.clear()
    yield smtp_server
    smtp_server.clear()

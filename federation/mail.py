"""Mail the hub sends: one-time codes and links, sign-up confirmations, sponsor notices,
access-review invitations — all through the one configured SMTP server (``smtp:``).

``smtplib`` runs in a worker thread so a slow server never blocks the event loop; a
failure is an :class:`~federation.errors.UpstreamError` naming the server.
"""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from federation.errors import UpstreamError
from federation.settings import SmtpSettings


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


@dataclass(frozen=True)
class SmtpMailer:
    """Sends through the configured SMTP server."""

    settings: SmtpSettings

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.settings.from_address
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise UpstreamError(f"SMTP {self.settings.host}:{self.settings.port}: {exc}") from exc

    def _send(self, message: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as smtp:
            if s.starttls:
                smtp.starttls()
            if s.username:
                smtp.login(s.username, s.password or "")
            smtp.send_message(message)

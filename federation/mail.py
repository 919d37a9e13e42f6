"""Mail the hub sends: one-time codes and links, sign-up confirmations, sponsor notices,
access-review invitations — all through the one configured SMTP server (``smtp:``).

``smtplib`` runs in a worker thread so a slow server never blocks the event loop; a
failure is an :class:`~federation.errors.UpstreamError` naming the server.

Subjects carry what people typed (a company's name, a partner's): every control or
line-separator character in them becomes a space, so no header can be injected and no
mail fails on it. A recipient that is not one plain address is refused (an
``UpstreamError`` too: callers already handle a mail that could not go out).
"""

from __future__ import annotations

import asyncio
import re
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from federation.errors import UpstreamError
from federation.settings import SmtpSettings

# Controls (C0, DEL, C1) and the Unicode line and paragraph separators.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# One address: no display name, no list, no spaces or controls.
_ONE_ADDRESS = re.compile(r"^[^@\s,;<>\"()\x00-\x1f\x7f]+@[^@\s,;<>\"()\x00-\x1f\x7f]+$")


def one_line(text: str, limit: int = 200) -> str:
    """``text`` as one header line: breaks and controls become spaces, at most ``limit``
    characters."""
    flat = " ".join(_BREAKS.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


@dataclass(frozen=True)
class SmtpMailer:
    """Sends through the configured SMTP server."""

    settings: SmtpSettings

    async def send(self, to: str, subject: str, body: str) -> None:
        if not _ONE_ADDRESS.match(to):
            raise UpstreamError(f"refusing to mail {to!r}: not one plain address")
        message = EmailMessage()
        message["From"] = self.settings.from_address
        message["To"] = to
        message["Subject"] = one_line(subject)
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

"""A one-time code sent by email, for partners without an identity provider.

The "IdP" is two pages served by the hub (``federation/web/otp.py``): the person types an
address in one of the partner's verified domains, receives a code through the hub's SMTP
server, and types it back. The connector stays stateless: the hub lends it its store for
the code and the rate-limit counters, and the page records the proven address in the
login flow's connector state before sending the browser to the normal callback, where
:meth:`OtpConnector.handle_callback` turns it into an identity.

Codes: ``code_digits`` digits, valid ``code_ttl_seconds``, stored as a salted HMAC under
the login flow's id (a code is worth nothing in another flow), compared in constant time,
taken from the store when used (single use) and burnt after ``max_wrong_codes`` wrong
guesses. Sends are limited per address and sends plus guesses per source IP, in a window.

Magic links (``magic_link``, on by default): the same mail carries
``{issuer}/otp/{connection}/link?state=FLOW&t=TOKEN``, a 32-byte random token stored as a
salted HMAC in the *same* per-flow record as the code. Using either one takes the record,
so both are spent; a wrong token counts towards burning like a wrong code; same TTL, same
per-IP limit. :meth:`OtpConnector.check_link` (the page a GET shows) never uses the link
up — mail scanners prefetch links — only :meth:`OtpConnector.verify_link` (the POST) does.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from connectors.base import CallbackRequest, LoginRedirect, LoginRequest
from connectors.registry import ConnectorContext
from federation import ratelimit
from federation.errors import InvalidState, IsthmusError
from federation.identity import FederatedIdentity
from federation.mail import Mailer
from federation.settings import (
    ConnectionSettings,
    OtpConnectionSettings,
    PartnerSettings,
)
from federation.stores.base import Store

VERIFIED_EMAIL = "verified_email"  # the key the page sets in the flow's connector state


class RateLimited(IsthmusError):
    error = "rate_limited"
    status = 429


class CodeRefused(IsthmusError):
    """The code or link is wrong, expired, already used, burnt, or belongs to another
    flow. ``reason`` is what the audit trail records: ``expired_or_used``, ``wrong`` or
    ``burnt``."""

    error = "invalid_code"
    status = 400

    def __init__(self, detail: str, *, reason: str, email: str | None = None) -> None:
        super().__init__(detail, public_message=detail)
        self.reason = reason
        self.email = email  # whom the code or link was for, when the record was found


CODE = "code"
LINK = "link"
_SECRET_FIELD = {CODE: "hash", LINK: "link_hash"}
_WORDS = {
    CODE: {
        "spent": "the code has expired or was already used; ask for a new one",
        "burnt": "too many wrong codes: this one is burnt; ask for a new one",
        "wrong": "wrong code",
    },
    LINK: {
        "spent": "this sign-in link has expired or was already used; ask for a new code",
        "burnt": "too many wrong attempts: this sign-in link is burnt; ask for a new code",
        "wrong": "this sign-in link is not valid; ask for a new code",
    },
}


@dataclass(frozen=True, slots=True)
class Sent:
    """What :meth:`OtpConnector.send_code` did; the page shows the same thing either way."""

    email: str
    sent: bool  # False: the address is outside the partner's verified domains
    expires_in: int


@dataclass(frozen=True)
class OtpConnector:
    id: str
    partner_id: str
    hub_base_url: str
    domains: frozenset[str]
    settings: OtpConnectionSettings
    wall_clock: Callable[[], float]

    @classmethod
    def from_settings(
        cls, partner: PartnerSettings, connection: ConnectionSettings, context: ConnectorContext
    ) -> OtpConnector:
        assert isinstance(connection, OtpConnectionSettings)
        return cls(
            connection.id,
            partner.id,
            context.hub_base_url.rstrip("/"),
            frozenset(d.lower() for d in partner.domains),
            connection,
            context.wall_clock,
        )

    @property
    def issuer(self) -> str:
        return f"otp:{self.id}"

    async def login_url(self, request: LoginRequest) -> LoginRedirect:
        query = {"state": request.state}
        if request.login_hint:
            query["email"] = request.login_hint
        return LoginRedirect(f"{self.hub_base_url}/otp/{self.id}?{urlencode(query)}", {})

    async def handle_callback(
        self, request: CallbackRequest, flow_state: Mapping[str, Any] | None
    ) -> FederatedIdentity:
        if flow_state is None:
            raise InvalidState(f"otp connection {self.id}: callback without a login flow")
        email = flow_state.get(VERIFIED_EMAIL)
        if not isinstance(email, str) or not self.allowed(email):
            raise InvalidState(f"otp connection {self.id}: no code was verified in this flow")
        return FederatedIdentity(
            partner_id=self.partner_id,
            connection_id=self.id,
            issuer=self.issuer,
            subject=self.subject_of(email),
            email=email,
            email_verified=True,  # they proved they read the inbox
            amr=("otp",),
            raw_claims={"email": email},
        )

    def subject_of(self, email: str) -> str:
        """Stable and opaque: an HMAC of the lower-cased address, keyed on the connection."""
        key = f"isthmus-otp:{self.partner_id}:{self.id}".encode()
        return hmac.new(key, normalize(email).encode(), hashlib.sha256).hexdigest()

    def allowed(self, email: str) -> bool:
        """One plain address in one of the partner's domains. Anything a mail header reads
        as more than one recipient (``evil@x.com,bob@acme.test``) is refused: the code
        would go to every one of them, the first of which proves nothing."""
        address = normalize(email)
        if not _ADDRESS.fullmatch(address):
            return False
        local, at, domain = address.rpartition("@")
        return bool(at and local and domain in self.domains)

    async def send_code(
        self, store: Store, mailer: Mailer, flow_id: str, email: str, source_ip: str
    ) -> Sent:
        """Send a code for this flow to ``email`` unless it is outside the partner's
        domains (nothing is sent then; the caller audits it and shows the same page)."""
        email = normalize(email)
        s = self.settings
        if not await self._consume(store, f"ip:{source_ip}", s.attempts_per_ip):
            raise RateLimited("too many attempts from this network; try again later")
        if not await self._consume(store, f"addr:{_digest(email)}", s.sends_per_address):
            raise RateLimited("too many codes sent to this address; try again later")
        if not self.allowed(email):
            return Sent(email, False, s.code_ttl_seconds)
        code = f"{secrets.randbelow(10**s.code_digits):0{s.code_digits}d}"
        salt = secrets.token_hex(16)
        record: dict[str, Any] = {
            "email": email,
            "salt": salt,
            "hash": _hash(salt, flow_id, code),
            "wrong": 0,
            "expires_at": self.wall_clock() + s.code_ttl_seconds,
        }
        minutes = max(1, s.code_ttl_seconds // 60)
        body = (
            f"Your one-time sign-in code is {code}.\n\nIt is valid for {minutes} minutes and "
            "can be used once. If you did not ask for it, ignore this message.\n"
        )
        if s.magic_link:
            token = secrets.token_urlsafe(32)
            record["link_hash"] = _hash(salt, flow_id, f"{LINK}:{token}")
            body += (
                "\nOr sign in with this link, in the browser where you asked for the code "
                f"(it can be used once, instead of the code):\n{self.link_url(flow_id, token)}\n"
            )
        await store.put(self._code_key(flow_id), record, s.code_ttl_seconds)
        await mailer.send(email, f"Your sign-in code: {code}", body)
        return Sent(email, True, s.code_ttl_seconds)

    def link_url(self, flow_id: str, token: str) -> str:
        query = urlencode({"state": flow_id, "t": token})
        return f"{self.hub_base_url}/otp/{self.id}/link?{query}"

    async def verify_code(self, store: Store, flow_id: str, code: str, source_ip: str) -> str:
        """The address the code was sent to, or :class:`CodeRefused`; a right code is
        used up (and the link with it), a wrong one counts towards burning both."""
        return await self._prove(store, flow_id, CODE, code.strip(), source_ip, use=True)

    async def check_link(self, store: Store, flow_id: str, token: str, source_ip: str) -> str:
        """The address a link was mailed to, without using the link up (a GET: mail
        scanners open links); a wrong token still counts towards burning."""
        return await self._prove(store, flow_id, LINK, token, source_ip, use=False)

    async def verify_link(self, store: Store, flow_id: str, token: str, source_ip: str) -> str:
        """Like :meth:`verify_code` for the link's token: used up (and the code with it)."""
        return await self._prove(store, flow_id, LINK, token, source_ip, use=True)

    async def _prove(
        self, store: Store, flow_id: str, method: str, secret: str, source_ip: str, *, use: bool
    ) -> str:
        if not await self._consume(store, f"ip:{source_ip}", self.settings.attempts_per_ip):
            raise RateLimited("too many attempts from this network; try again later")
        key = self._code_key(flow_id)
        record = await store.get(key)
        now = self.wall_clock()
        words = _WORDS[method]
        if record is None or float(record["expires_at"]) <= now:
            raise CodeRefused(words["spent"], reason="expired_or_used")
        expected = str(record.get(_SECRET_FIELD[method], ""))
        given = _hash(
            str(record["salt"]), flow_id, secret if method == CODE else f"{LINK}:{secret}"
        )
        if not (expected and hmac.compare_digest(expected, given)):
            wrong = int(record["wrong"]) + 1
            if wrong >= self.settings.max_wrong_codes:
                await store.delete(key)
                raise CodeRefused(words["burnt"], reason="burnt", email=str(record["email"]))
            remaining = float(record["expires_at"]) - now
            await store.put(key, {**record, "wrong": wrong}, remaining)
            raise CodeRefused(words["wrong"], reason="wrong", email=str(record["email"]))
        if use and await store.take(key) is None:  # a concurrent request used it first
            raise CodeRefused(words["spent"], reason="expired_or_used")
        return str(record["email"])

    def _code_key(self, flow_id: str) -> str:
        return f"otp:code:{self.id}:{flow_id}"

    async def _consume(self, store: Store, what: str, limit: int) -> bool:
        """Claim one of ``limit`` slots in the window; False when all are taken."""
        window = self.settings.rate_window_seconds
        return await ratelimit.consume(store, f"otp:rate:{self.id}:{what}", limit, window)


# One address, nothing a mail header could split, quote or continue.
_ADDRESS = re.compile(r"[^@\s,;:<>\"()\[\]\\\x00-\x1f\x7f]+@[^@\s,;:<>\"()\[\]\\\x00-\x1f\x7f]+")


def normalize(email: str) -> str:
    return email.strip().lower()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _hash(salt: str, flow_id: str, code: str) -> str:
    return hmac.new(salt.encode(), f"{flow_id}:{code}".encode(), hashlib.sha256).hexdigest()

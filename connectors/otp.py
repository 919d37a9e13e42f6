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
"""

from __future__ import annotations

import hashlib
import hmac
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
    """The code is wrong, expired, already used, burnt, or belongs to another flow."""

    error = "invalid_code"
    status = 400


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
        local, at, domain = normalize(email).rpartition("@")
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
        record = {
            "email": email,
            "salt": salt,
            "hash": _hash(salt, flow_id, code),
            "wrong": 0,
            "expires_at": self.wall_clock() + s.code_ttl_seconds,
        }
        await store.put(self._code_key(flow_id), record, s.code_ttl_seconds)
        minutes = max(1, s.code_ttl_seconds // 60)
        await mailer.send(
            email,
            f"Your sign-in code: {code}",
            f"Your one-time sign-in code is {code}.\n\nIt is valid for {minutes} minutes and "
            "can be used once. If you did not ask for it, ignore this message.\n",
        )
        return Sent(email, True, s.code_ttl_seconds)

    async def verify_code(self, store: Store, flow_id: str, code: str, source_ip: str) -> str:
        """The address the code was sent to, or :class:`CodeRefused`; a right code is
        used up, a wrong one counts towards burning it."""
        if not await self._consume(store, f"ip:{source_ip}", self.settings.attempts_per_ip):
            raise RateLimited("too many attempts from this network; try again later")
        key = self._code_key(flow_id)
        record = await store.get(key)
        now = self.wall_clock()
        if record is None or float(record["expires_at"]) <= now:
            raise CodeRefused("the code has expired or was already used; ask for a new one")
        expected = str(record["hash"])
        given = _hash(str(record["salt"]), flow_id, code.strip())
        if not hmac.compare_digest(expected, given):
            wrong = int(record["wrong"]) + 1
            if wrong >= self.settings.max_wrong_codes:
                await store.delete(key)
                raise CodeRefused("too many wrong codes: this one is burnt; ask for a new one")
            remaining = float(record["expires_at"]) - now
            await store.put(key, {**record, "wrong": wrong}, remaining)
            raise CodeRefused("wrong code")
        if await store.take(key) is None:  # a concurrent request used it first
            raise CodeRefused("the code has expired or was already used; ask for a new one")
        return str(record["email"])

    def _code_key(self, flow_id: str) -> str:
        return f"otp:code:{self.id}:{flow_id}"

    async def _consume(self, store: Store, what: str, limit: int) -> bool:
        """Claim one of ``limit`` slots in the window; False when all are taken."""
        window = self.settings.rate_window_seconds
        return await ratelimit.consume(store, f"otp:rate:{self.id}:{what}", limit, window)


def normalize(email: str) -> str:
    return email.strip().lower()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _hash(salt: str, flow_id: str, code: str) -> str:
    return hmac.new(salt.encode(), f"{flow_id}:{code}".encode(), hashlib.sha256).hexdigest()

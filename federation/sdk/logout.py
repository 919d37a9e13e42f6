"""OpenID Connect Back-Channel Logout 1.0, the relying party's side.

The hub POSTs ``logout_token=<JWT>`` to the back-channel URI a client registered when a
hub session ends. :class:`BackchannelLogoutReceiver` validates it (§2.6): signed by the
hub (same keys, same algorithm rules as every other token), ``typ: logout+jwt``, ``iss``,
``aud`` (the client), ``iat`` and ``exp``, a ``jti``, an ``events`` claim holding
``http://schemas.openid.net/event/backchannel-logout``, a ``sid`` and/or a ``sub``, no
``nonce``; and a ``jti`` already seen is refused (replay). The app then drops its local
sessions for that ``sid`` (or every session of that ``sub``) and answers 200.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from federation.sdk.validator import InvalidToken, TokenValidator

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "BackchannelLogoutReceiver",
    "LogoutEvent",
    "MemoryReplayCache",
    "ReplayCache",
]

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
TYP = "logout+jwt"
_REQUIRED = ("iss", "aud", "iat", "exp", "jti", "events")


@dataclass(frozen=True, slots=True)
class LogoutEvent:
    """End the app's sessions of ``sid`` (when given), else every session of ``sub``."""

    sid: str | None
    sub: str | None
    issuer: str
    jti: str


class ReplayCache(Protocol):
    def add(self, key: str, expires_at: float) -> bool:
        """Remember ``key`` until ``expires_at``; False when it was already there."""
        ...


class MemoryReplayCache:
    """In-process replay cache with per-entry expiry, bounded (oldest entries go first).

    Several app replicas need a shared one (Redis SET NX EX...): implement ReplayCache.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time):
        self._entries: dict[str, float] = {}
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def add(self, key: str, expires_at: float) -> bool:
        now = self._clock()
        with self._lock:
            seen = self._entries.get(key)
            if seen is not None and seen > now:
                return False
            if len(self._entries) >= self._max:
                self._prune(now)
            self._entries[key] = expires_at
            return True

    def _prune(self, now: float) -> None:
        for key in [k for k, exp in self._entries.items() if exp <= now]:
            del self._entries[key]
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)


class BackchannelLogoutReceiver:
    """Validates logout tokens with the app's :class:`TokenValidator` (same issuer, keys,
    leeway; its audience is the app's client id)."""

    def __init__(
        self,
        validator: TokenValidator,
        *,
        audience: str | None = None,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        self.validator = validator
        self.audience = audience
        self.replay_cache: ReplayCache = replay_cache or MemoryReplayCache()

    def validate(self, logout_token: str) -> LogoutEvent:
        claims = self.validator._claims(logout_token, self.audience, TYP, _REQUIRED)
        return self._event(claims)

    async def avalidate(self, logout_token: str) -> LogoutEvent:
        claims = await self.validator._aclaims(logout_token, self.audience, TYP, _REQUIRED)
        return self._event(claims)

    def _event(self, claims: dict[str, Any]) -> LogoutEvent:
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(
            events.get(BACKCHANNEL_LOGOUT_EVENT), dict
        ):
            raise InvalidToken("not_logout_token", "no back-channel logout event")
        if "nonce" in claims:
            # §2.4: a logout token must not carry a nonce (it is not an ID token).
            raise InvalidToken("nonce_present", "a logout token must not contain a nonce")
        sid, sub, jti = claims.get("sid"), claims.get("sub"), claims.get("jti")
        if sid is not None and not isinstance(sid, str):
            raise InvalidToken("invalid_claim", "sid is not a string")
        if sid is None and sub is None:
            raise InvalidToken("missing_claim", "a logout token needs a sid or a sub")
        if not isinstance(jti, str) or not jti:
            raise InvalidToken("invalid_claim", "jti is not a string")
        issuer = str(claims["iss"])
        expires_at = float(claims["exp"]) + self.validator.leeway
        if not self.replay_cache.add(f"{issuer} {jti}", expires_at):
            raise InvalidToken("replayed", f"logout token {jti} was already used")
        return LogoutEvent(sid, sub, issuer, jti)

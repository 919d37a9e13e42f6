"""Server-side sessions: an opaque id in the cookie, the identity in the store.

The store key is a hash of the id, so a store dump holds no usable cookie. Each session
is indexed under its partner so that suspending a partner can end all of them at once.
Ending a session deletes it from the shared store: every replica refuses it at once.
Whoever must hear of it (OIDC back-channel logout) is told through ``on_end``, a plain
callback that schedules its own work: ending a session never waits for it.

What a connector asked to keep for logout at the partner IdP (the OIDC ID token, for
``id_token_hint``) is stored beside the session under its own key, not in the session
record: every request reads the record, only the session's end reads (takes) the
upstream part, and nothing of it ever reaches a cookie.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from federation.identity import FederatedIdentity
from federation.stores.base import Put, SetAdd, Store


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    identity: FederatedIdentity
    created_at: int
    expires_at: int
    # What the connector keeps for logout upstream; filled only by :meth:`SessionManager.end`.
    upstream: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sid(self) -> str:
        """The public session identifier put in tokens (``sid``); not the cookie value."""
        return _sid_of(digest(self.id))


@dataclass(frozen=True, slots=True)
class EndedSession:
    """What is known of a session once it has ended: its public ``sid`` and identity."""

    sid: str
    identity: FederatedIdentity


SessionEndHook = Callable[[Sequence[EndedSession]], None]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SessionManager:
    def __init__(
        self,
        store: Store,
        ttl: int,
        clock: Callable[[], float] = time.time,
        on_end: SessionEndHook | None = None,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._on_end = on_end

    async def create(
        self,
        identity: FederatedIdentity,
        *,
        puts: Sequence[Put] = (),
        adds: Sequence[SetAdd] = (),
        upstream: Mapping[str, Any] | None = None,
    ) -> Session:
        """Open a session. ``puts`` and ``adds`` are other writes that belong to the sign-in
        (the person's account, federation/admin/accounts.py): same round trip. ``upstream``
        is the connector's ``session_state`` (kept beside the session, read at its end)."""
        now = int(self._clock())
        session = Session(secrets.token_urlsafe(32), identity, now, now + self._ttl)
        record = {
            "identity": identity.to_dict(),
            "created_at": now,
            "expires_at": session.expires_at,
        }
        hashed = digest(session.id)
        kept: list[Put] = [(_upstream_key(hashed), dict(upstream), self._ttl)] if upstream else []
        # The sid record repeats the identity so that token checks need one read, not two;
        # ending the session deletes both.
        await self._store.write_many(
            puts=[
                (_key(session.id), record, self._ttl),
                (_sid_key(session.sid), record, self._ttl),
                *kept,
                *puts,
            ],
            adds=[
                (_partner_index(identity.partner_id), hashed, self._ttl),
                (_subject_index(identity.connection_id, identity.subject), hashed, self._ttl),
                *adds,
            ],
        )
        return session

    async def get(self, session_id: str) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        data = await self._store.get(_key(session_id))
        if data is None or data["expires_at"] <= self._clock():
            return None
        return Session(
            session_id,
            FederatedIdentity.from_dict(data["identity"]),
            int(data["created_at"]),
            int(data["expires_at"]),
        )

    async def identity_for_sid(self, sid: str) -> FederatedIdentity | None:
        """The identity behind a public ``sid`` (as put in tokens) while its session lives."""
        return await identity_for_sid(self._store, sid, self._clock())

    async def end(self, session_id: str) -> Session | None:
        """End the session; the one returned carries its ``upstream`` part (for logout at
        the partner IdP), taken from the store with it."""
        session = await self.get(session_id)
        await self._store.delete(_key(session_id))
        if session is not None:
            hashed = digest(session_id)
            upstream = await self._store.take(_upstream_key(hashed))
            await self._store.delete(_sid_key(session.sid))
            await self._store.set_remove(_partner_index(session.identity.partner_id), hashed)
            self._ended([EndedSession(session.sid, session.identity)])
            if upstream:
                session = replace(session, upstream=dict(upstream))
        return session

    async def end_partner(self, partner_id: str) -> int:
        """End every session of a partner (suspension, offboarding): on every replica."""
        return await self._end_indexed(_partner_index(partner_id))

    async def end_sid(self, partner_id: str, sid: str) -> bool:
        """End the session of ``partner_id`` known by its public ``sid`` (admins do)."""
        index = _partner_index(partner_id)
        for hashed in await self._store.set_members(index):
            if _sid_of(hashed) == sid:
                record = await self._store.take(f"session:{hashed}")
                await self._store.delete(_sid_key(sid))
                await self._store.delete(_upstream_key(hashed))
                await self._store.set_remove(index, hashed)
                if record is not None:
                    identity = FederatedIdentity.from_dict(record["identity"])
                    self._ended([EndedSession(sid, identity)])
                return record is not None
        return False

    async def end_subject(self, connection_id: str, subject: str) -> int:
        """End every session of one upstream identity (its IdP asked: SAML single logout)."""
        return await self._end_indexed(_subject_index(connection_id, subject))

    async def _end_indexed(self, index: str) -> int:
        ended: list[EndedSession] = []
        for hashed in await self._store.set_members(index):
            # take, not delete: the record names who is signed out (for logout tokens).
            record = await self._store.take(f"session:{hashed}")
            await self._store.delete(_sid_key(_sid_of(hashed)))
            await self._store.delete(_upstream_key(hashed))
            if record is not None:
                identity = FederatedIdentity.from_dict(record["identity"])
                ended.append(EndedSession(_sid_of(hashed), identity))
        await self._store.delete(index)
        self._ended(ended)
        return len(ended)

    def _ended(self, ended: Sequence[EndedSession]) -> None:
        if ended and self._on_end is not None:
            self._on_end(ended)


async def identity_for_sid(store: Store, sid: str, now: float) -> FederatedIdentity | None:
    if not sid or len(sid) > 64:
        return None
    data = await store.get(_sid_key(sid))
    if data is None or data["expires_at"] <= now:
        return None
    return FederatedIdentity.from_dict(data["identity"])


def _sid_of(hashed: str) -> str:
    return hashed[:32]


def _sid_key(sid: str) -> str:
    return f"session-sid:{sid}"


def _key(session_id: str) -> str:
    return f"session:{digest(session_id)}"


def _upstream_key(hashed: str) -> str:
    return f"session-upstream:{hashed}"


def _partner_index(partner_id: str) -> str:
    return f"partner-sessions:{partner_id}"


def _subject_index(connection_id: str, subject: str) -> str:
    return f"subject-sessions:{connection_id}:{digest(subject)}"


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A live session as admins see it: its public ``sid``, never its cookie value."""

    sid: str
    identity: FederatedIdentity
    created_at: int
    expires_at: int


async def partner_sessions(store: Store, partner_id: str, now: float) -> list[SessionSummary]:
    """The live sessions of one partner, newest first."""
    found = []
    for hashed in await store.set_members(_partner_index(partner_id)):
        record = await store.get(f"session:{hashed}")
        if record is None or record["expires_at"] <= now:
            continue
        found.append(
            SessionSummary(
                _sid_of(hashed),
                FederatedIdentity.from_dict(record["identity"]),
                int(record["created_at"]),
                int(record["expires_at"]),
            )
        )
    return sorted(found, key=lambda s: s.created_at, reverse=True)

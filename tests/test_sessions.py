"""Server-side sessions: opaque ids, hashed store keys, sid lookups, ending one or a partner's."""

from __future__ import annotations

from federation.identity import FederatedIdentity
from federation.sessions import SessionManager, digest
from federation.stores.memory import MemoryStore
from tests.fakes.clock import FakeClock


def person(partner: str, subject: str) -> FederatedIdentity:
    return FederatedIdentity(partner, f"{partner}-oidc", f"https://idp.{partner}.test", subject)


async def test_the_store_never_holds_the_cookie_value() -> None:
    store = MemoryStore()
    session = await SessionManager(store, 3600).create(person("acme", "alice"))
    dumped = repr(store._entries)
    assert session.id not in dumped and digest(session.id) in dumped
    assert session.sid not in session.id


async def test_get_and_sid_lookup_until_the_ttl_ends() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    sessions = SessionManager(store, 60, clock=clock)
    session = await sessions.create(person("acme", "alice"))
    assert (await sessions.get(session.id)) == session
    assert await sessions.identity_for_sid(session.sid) == session.identity
    clock.advance(61)
    assert await sessions.get(session.id) is None
    assert await sessions.identity_for_sid(session.sid) is None


async def test_end_removes_the_session_and_its_sid() -> None:
    sessions = SessionManager(MemoryStore(), 3600)
    session = await sessions.create(person("acme", "alice"))
    assert (await sessions.end(session.id)) == session
    assert await sessions.get(session.id) is None
    assert await sessions.identity_for_sid(session.sid) is None
    assert await sessions.end(session.id) is None  # twice is harmless


async def test_end_partner_ends_only_that_partners_sessions() -> None:
    sessions = SessionManager(MemoryStore(), 3600)
    acme = [await sessions.create(person("acme", s)) for s in ("alice", "bob")]
    globex = await sessions.create(person("globex", "carol"))
    assert await sessions.end_partner("acme") == 2
    for ended in acme:
        assert await sessions.get(ended.id) is None
        assert await sessions.identity_for_sid(ended.sid) is None
    assert await sessions.get(globex.id) == globex
    assert await sessions.end_partner("acme") == 0


async def test_malformed_ids_find_nothing() -> None:
    sessions = SessionManager(MemoryStore(), 3600)
    assert await sessions.get("") is None
    assert await sessions.get("x" * 500) is None
    assert await sessions.identity_for_sid("") is None
    assert await sessions.identity_for_sid("y" * 100) is None


async def test_end_subject_ends_that_upstream_identitys_sessions() -> None:
    sessions = SessionManager(MemoryStore(), 3600)
    alice = [await sessions.create(person("acme", "alice")) for _ in range(2)]
    bob = await sessions.create(person("acme", "bob"))
    assert await sessions.end_subject("acme-oidc", "alice") == 2
    assert all([await sessions.get(s.id) is None for s in alice])
    assert await sessions.get(bob.id) == bob
    assert await sessions.end_subject("globex-oidc", "bob") == 0  # another connection's bob
    assert await sessions.get(bob.id) == bob

"""Just-in-time accounts (federation/admin/accounts.py): who signed in when, kept in the
shared store — against the memory store and a real Redis — and written by the login in
the session's own round trip."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from federation.admin import accounts
from federation.admin.accounts import DAY, Writes
from federation.hub import Hub
from federation.identity import FederatedIdentity
from federation.settings import LifecycleSettings
from federation.stores.base import Store
from federation.stores.memory import MemoryStore
from federation.stores.redis import RedisStore
from federation.web.app import create_app
from tests.admin.support import BASE, api_settings, make_hub, sign_in_as
from tests.fakes.clock import FakeClock
from tests.peers.redis import TOPOLOGY_PARAMS, topology_of

T0 = 1_780_000_000.0  # 2026-05-28
TTL = 400 * DAY


def person(
    subject: str, email: str | None = None, verified: bool = True, **kw: Any
) -> FederatedIdentity:
    return FederatedIdentity(
        kw.get("partner", "acme"),
        kw.get("connection", "acme-mock"),
        "https://idp.acme.example",
        subject,
        email if email is not None else f"{subject}@acme.example",
        verified,
        name=kw.get("name", subject.title()),
    )


@dataclass
class Backend:
    store: Store
    clock: FakeClock | None  # the memory store's clock (Redis keeps its own)


@pytest.fixture(params=["memory", TOPOLOGY_PARAMS[0]])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        yield Backend(MemoryStore(clock=clock), clock)
        return
    topology = topology_of(request, request.param)
    store = RedisStore.from_topology(topology, prefix=f"accounts:{secrets.token_hex(6)}:")
    try:
        yield Backend(store, None)
    finally:
        await store.aclose()


# ---------------------------------------------------------------------- the records


async def test_a_first_sign_in_makes_the_account(backend: Backend) -> None:
    store = backend.store
    assert await accounts.account(store, "acme", "acme-mock", "bob") is None
    await accounts.record_sign_in(store, person("bob"), T0, TTL)

    bob = await accounts.account(store, "acme", "acme-mock", "bob")
    assert bob == accounts.Account("acme", "acme-mock", "bob", "bob@acme.example", "Bob", T0, T0)
    assert await accounts.last_sign_in(store, "acme", "acme-mock", "bob") == T0
    # The key is the person, never the email: another connection is another account.
    assert await accounts.last_sign_in(store, "acme", "acme-oidc", "bob") is None
    assert await accounts.last_sign_in(store, "globex", "acme-mock", "bob") is None


async def test_later_sign_ins_move_the_last_and_keep_the_first(backend: Backend) -> None:
    store = backend.store
    await accounts.record_sign_in(store, person("bob"), T0, TTL)
    await accounts.record_sign_in(store, person("bob"), T0 + 3 * DAY, TTL)
    await accounts.record_sign_in(store, person("bob", name="x"), T0 + 9 * DAY + 0.25, TTL)

    bob = await accounts.account(store, "acme", "acme-mock", "bob")
    assert bob is not None
    assert (bob.first_seen, bob.last_sign_in) == (T0, T0 + 9 * DAY + 0.25)
    assert bob.name == "x"

    # The daily tidy keeps the first sign-in only; nothing a reader sees changes.
    assert await accounts.tidy(store, "acme") == 1
    assert await accounts.account(store, "acme", "acme-mock", "bob") == bob


async def test_by_email_follows_the_verified_address_of_the_latest_sign_in(
    backend: Backend,
) -> None:
    store = backend.store
    await accounts.record_sign_in(store, person("bob", "Bob@ACME.example"), T0, TTL)
    await accounts.record_sign_in(
        store, person("bob2", "bob@acme.example", connection="acme-otp"), T0 + DAY, TTL
    )
    found = await accounts.accounts_by_email(store, "acme", "BOB@acme.example")
    assert {(a.connection_id, a.subject) for a in found} == {
        ("acme-mock", "bob"),
        ("acme-otp", "bob2"),
    }
    assert await accounts.last_sign_in_by_email(store, "acme", "bob@acme.example") == T0 + DAY
    assert await accounts.last_sign_in_by_email(store, "globex", "bob@acme.example") is None

    # bob's IdP now says another address: the old one no longer names him.
    await accounts.record_sign_in(store, person("bob", "robert@acme.example"), T0 + 2 * DAY, TTL)
    found = await accounts.accounts_by_email(store, "acme", "bob@acme.example")
    assert [(a.connection_id, a.subject) for a in found] == [("acme-otp", "bob2")]
    assert await accounts.last_sign_in_by_email(store, "acme", "robert@acme.example") == (
        T0 + 2 * DAY
    )


async def test_an_unverified_email_names_nobody(backend: Backend) -> None:
    store = backend.store
    await accounts.record_sign_in(store, person("eve", "eve@acme.example", verified=False), T0, TTL)
    assert await accounts.last_sign_in(store, "acme", "acme-mock", "eve") == T0
    assert await accounts.accounts_by_email(store, "acme", "eve@acme.example") == []


async def test_a_partner_lists_its_accounts_latest_first(backend: Backend) -> None:
    store = backend.store
    await accounts.record_sign_in(store, person("bob"), T0, TTL)
    await accounts.record_sign_in(store, person("alice"), T0 + DAY, TTL)
    await accounts.record_sign_in(store, person("gina", partner="globex"), T0 + DAY, TTL)
    listed = await accounts.accounts_of(store, "acme")
    assert [a.subject for a in listed] == ["alice", "bob"]
    assert [a.subject for a in await accounts.accounts_of(store, "globex")] == ["gina"]
    assert await accounts.accounts_of(store, "initech") == []


async def test_an_account_unused_past_its_ttl_is_forgotten_and_tidied_away() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await accounts.record_sign_in(store, person("bob"), T0, 10.0)
    await accounts.record_sign_in(store, person("alice"), T0, 30.0)
    clock.advance(20.0)
    assert await accounts.account(store, "acme", "acme-mock", "bob") is None
    assert [a.subject for a in await accounts.accounts_of(store, "acme")] == ["alice"]
    # alice's sign-in kept the index alive; the tidy drops bob from it.
    assert len(await store.set_members("partner-accounts:acme")) == 2
    assert await accounts.tidy(store, "acme") == 1
    assert len(await store.set_members("partner-accounts:acme")) == 1


def test_the_ttl_outlives_any_threshold() -> None:
    settings = api_settings()
    acme = settings.partners[1]
    assert accounts.account_ttl(acme, LifecycleSettings()) == 400 * DAY
    assert accounts.account_ttl(acme, LifecycleSettings(inactive_after_days=None)) == 400 * DAY
    assert accounts.account_ttl(acme, LifecycleSettings(inactive_after_days=1000)) == 2000 * DAY
    longer = acme.model_copy(update={"inactive_after_days": 365})
    assert accounts.account_ttl(longer, LifecycleSettings(inactive_after_days=30)) == 730 * DAY
    assert accounts.inactive_after_days(longer, LifecycleSettings(inactive_after_days=30)) == 365
    assert accounts.inactive_after_days(acme, LifecycleSettings(inactive_after_days=30)) == 30


# ---------------------------------------------------------------------- the login hook


class CountingStore:
    """The hub's store, with every call counted by name."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await method(*args, **kwargs)

        return counted


async def _sign_in_calls(hub: Hub, store: CountingStore) -> list[str]:
    app = create_app(hub=hub)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        await sign_in_as(http, "bob@acme.example")
    return store.calls


async def test_the_login_records_the_account_in_the_sessions_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[dict[str, Any]] = []
    hub = make_hub(api_settings(), events)
    clock = FakeClock(T0)
    hub.clock = clock
    counting = CountingStore(hub.store)
    hub.store = counting  # type: ignore[assignment]
    await hub.ready()
    with_accounts = await _sign_in_calls(hub, counting)

    bob = await accounts.account(counting.inner, "acme", "acme-mock", "bob")
    assert bob is not None and bob.last_sign_in == T0 and bob.email == "bob@acme.example"
    assert [a.subject for a in await accounts.accounts_of(counting.inner, "acme")] == ["bob"]

    # The same sign-in with nothing to record makes exactly the same store calls.
    monkeypatch.setattr(accounts, "sign_in_writes", lambda *_: Writes())
    counting.calls = []
    without = await _sign_in_calls(hub, counting)
    assert with_accounts == without
    assert with_accounts.count("write_many") == 1
    await hub.aclose()

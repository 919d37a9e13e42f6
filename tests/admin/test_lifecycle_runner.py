"""The lifecycle runner (federation/admin/lifecycle.py): every replica wakes at each
interval, one of them runs the jobs; ``isthmus lifecycle run`` runs them once.

No sleeps: ``run_forever`` takes its sleep as an argument, and the tests' sleep moves the
hubs' fake clock instead of waiting.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from federation import hub as hub_module
from federation.admin import accounts, lifecycle
from federation.admin.lifecycle import Job
from federation.admin.service import SYSTEM, AdminService
from federation.errors import StoreUnavailable
from federation.hub import Hub
from federation.identity import FederatedIdentity
from federation.stores.base import Store
from federation.stores.memory import MemoryStore
from federation.stores.redis import RedisStore
from tests.admin.support import api_settings, make_hub
from tests.fakes.clock import FakeClock
from tests.peers.redis import TOPOLOGY_PARAMS, topology_of
from tests.test_cli_admin import CONFIG, as_json, isthmus, ok, with_hub, write_config

INTERVAL = 300.0


class Ran:
    """A job that notes which hub ran it and when."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, datetime]] = []

    def job(self, name: str) -> tuple[str, Job]:
        async def run(service: AdminService, now: datetime) -> list[str]:
            self.runs.append((name, now))
            return [f"ran on {name}"]

        return ("probe", run)


class Stop(Exception):
    """Ends a run_forever loop from its sleep."""


def sleeper(clock: FakeClock, wakes: int) -> Any:
    """A sleep that moves ``clock`` instead of waiting, and stops after ``wakes`` wakes."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        if len(slept) == wakes:
            raise Stop
        slept.append(seconds)
        clock.advance(seconds)

    sleep.slept = slept  # type: ignore[attr-defined]
    return sleep


@pytest.fixture(params=["memory", TOPOLOGY_PARAMS[0]])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """The one store two replicas share."""
    if request.param == "memory":
        yield MemoryStore()
        return
    topology = topology_of(request, request.param)
    store = RedisStore.from_topology(topology, prefix=f"lifecycle:{secrets.token_hex(6)}:")
    try:
        yield store
    finally:
        await store.aclose()


def replica(store: Store, clock: FakeClock, events: list[dict[str, Any]]) -> Hub:
    settings = api_settings(lifecycle={"interval_seconds": INTERVAL})
    made = hub_module.build_hub(settings, store=store, clock=clock)
    made.audit.sinks.append(events.append)
    return made


async def test_two_replicas_claim_each_interval_once(shared: Store) -> None:
    clock, ran = FakeClock(1_000_000.0), Ran()
    first, second = replica(shared, clock, []), replica(shared, clock, [])
    slot = lifecycle.slot_of(clock(), INTERVAL)
    assert await lifecycle.tick_if_claimed(first, slot, [ran.job("first")]) == [
        "probe: ran on first"
    ]
    assert await lifecycle.tick_if_claimed(second, slot, [ran.job("second")]) is None
    assert await lifecycle.tick_if_claimed(first, slot, [ran.job("first")]) is None
    # The next interval goes to whoever comes first.
    assert await lifecycle.tick_if_claimed(second, slot + 1, [ran.job("second")]) is not None
    assert [name for name, _ in ran.runs] == ["first", "second"]


async def test_run_forever_ticks_once_per_interval_across_replicas(shared: Store) -> None:
    start = 1_000_000.0  # 200 s before a boundary (1,000,200 = 3334 * 300)
    ran = Ran()
    for name in ("first", "second"):  # the second replica lives the same three intervals
        clock = FakeClock(start)
        hub = replica(shared, clock, [])
        sleep = sleeper(clock, wakes=3)
        with pytest.raises(Stop):
            await lifecycle.run_forever(hub, [ran.job(name)], sleep=sleep)
        assert sleep.slept == [200.0, INTERVAL, INTERVAL]  # woken at each boundary
    moments = [now.timestamp() for _, now in ran.runs]
    assert [name for name, _ in ran.runs] == ["first"] * 3
    assert moments == [1_000_200.0, 1_000_500.0, 1_000_800.0]


def test_a_timer_a_little_early_or_late_names_its_interval() -> None:
    assert lifecycle.slot_of(3000.0, INTERVAL) == 10
    assert lifecycle.slot_of(2999.98, INTERVAL) == 10
    assert lifecycle.slot_of(3000.5, INTERVAL) == 10
    assert lifecycle.slot_of(3300.0, INTERVAL) == 11


async def test_a_failing_job_is_logged_and_the_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub(api_settings(), [])
    ran = Ran()

    async def broken(service: AdminService, now: datetime) -> list[str]:
        raise RuntimeError("boom")

    async def unreachable(service: AdminService, now: datetime) -> list[str]:
        raise StoreUnavailable("redis down")

    moment = datetime(2026, 6, 1, tzinfo=UTC)
    with caplog.at_level(logging.INFO, logger="isthmus.lifecycle"):
        done = await lifecycle.tick(
            hub, moment, [("broken", broken), ("down", unreachable), ran.job("hub")]
        )
    assert done == ["probe: ran on hub"]
    assert ran.runs == [("hub", moment)]
    messages = [r.getMessage() for r in caplog.records]
    assert "lifecycle job broken failed" in messages
    assert "lifecycle job down skipped, store unreachable: redis down" in messages
    assert "lifecycle: probe: ran on hub" in messages
    await hub.aclose()


async def test_run_forever_survives_a_store_outage(caplog: pytest.LogCaptureFixture) -> None:
    class Down(MemoryStore):
        async def add_once(self, key: str, ttl: float) -> bool:
            raise StoreUnavailable("redis down")

    clock, ran = FakeClock(1_000_000.0), Ran()
    hub = replica(Down(), clock, [])
    with caplog.at_level(logging.WARNING, logger="isthmus.lifecycle"), pytest.raises(Stop):
        await lifecycle.run_forever(hub, [ran.job("hub")], sleep=sleeper(clock, wakes=2))
    assert ran.runs == []
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["lifecycle skipped, store unreachable: redis down"] * 2


async def test_the_hub_starts_the_runner_only_when_enabled() -> None:
    on = make_hub(api_settings(), [])
    off = make_hub(api_settings(lifecycle={"enabled": False}), [])
    for hub in (on, off):
        await hub.start()
    assert on._lifecycle is not None and not on._lifecycle.done()
    assert off._lifecycle is None
    for hub in (on, off):
        await hub.aclose()
    assert on._lifecycle is None


# ---------------------------------------------------------------------- the CLI


def _in_days(days: float) -> float:
    return time.time() + days * accounts.DAY


def _bob(identity_subject: str = "bob") -> FederatedIdentity:
    return FederatedIdentity(
        "acme",
        "acme-oidc",
        "https://idp.acme.example",
        identity_subject,
        f"{identity_subject}@acme.example",
        True,
    )


def _grant_to(subject: str) -> dict[str, Any]:
    until = datetime.fromtimestamp(_in_days(1000), UTC).isoformat()
    return {"partner_id": "acme", "connection_id": "acme-oidc", "subject": subject,
            "apps": ["orders"], "valid_until": until}  # fmt: skip


def test_the_command_on_a_memory_store_leaves_accounts_to_the_hub(tmp_path: Path) -> None:
    config = write_config(tmp_path / "hub")

    async def grant(hub: Hub) -> None:
        await AdminService(hub).grant(SYSTEM, _grant_to("bob"))

    with_hub(config, grant)
    result = ok(config, "lifecycle", "run")
    assert result.stdout == "lifecycle: 0 changes\n"
    assert "accounts: left to the hub — store.backend is memory" in result.stderr
    assert as_json(config, "lifecycle", "run") == {"done": [], "left_to_the_hub": ["accounts"]}


@pytest.fixture
def redis_config(tmp_path: Path, redis_url: str) -> Path:
    store = {"backend": "redis", "url": redis_url, "prefix": f"cli:{secrets.token_hex(6)}:"}
    return write_config(tmp_path / "hub", {**CONFIG, "store": store})


def test_the_command_ends_the_grants_of_inactive_accounts(
    redis_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: dict[str, str] = {}

    async def setup(hub: Hub) -> None:
        service = AdminService(hub)
        for who in ("bob", "carol"):
            made[who] = (await service.grant(SYSTEM, _grant_to(who))).id
        # carol signed in 89 days from now (in the command's future): she stays active.
        acme = hub.registry.partner("acme")
        assert acme is not None
        ttl = accounts.account_ttl(acme.settings, hub.base_settings.lifecycle)
        await accounts.record_sign_in(hub.store, _bob("carol"), _in_days(89), ttl)

    with_hub(redis_config, setup)
    nothing = as_json(redis_config, "lifecycle", "run")
    assert nothing == {"done": [], "left_to_the_hub": []}

    # The command runs 91 days from now.
    real = hub_module.build_hub

    def later(settings: Any, **kwargs: Any) -> Hub:
        return real(settings, clock=lambda: _in_days(91), **kwargs)

    monkeypatch.setattr(hub_module, "build_hub", later)
    result = ok(redis_config, "lifecycle", "run")
    lines = result.stdout.splitlines()
    assert lines[-1] == "lifecycle: 1 change"
    assert lines[0].startswith(f"accounts: grant {made['bob']} of acme-oidc/bob (acme)")
    assert "never signed in, inactive for 90 days" in lines[0]
    assert result.stderr == ""
    assert ok(redis_config, "lifecycle", "run").stdout == "lifecycle: 0 changes\n"
    assert isthmus(redis_config, "lifecycle", "run", "--json").exit_code == 0

"""The hub's periodic housekeeping (issue 9; docs/lifecycle.md).

Every ``lifecycle.interval_seconds`` each replica tries to claim the interval in the
shared store (``add_once``); the one that wins runs every job once:

1. :func:`federation.admin.signup_service.expire_requests` — sign-up requests nobody decided on
   in ``signup.request_ttl_days`` are closed as expired;
2. :func:`federation.admin.review_service.run_reviews` — access reviews due are opened (sponsors
   mailed), reviews whose window ended are closed and their unconfirmed lines lapse;
3. :func:`federation.admin.accounts.end_inactive_grants` — the grants of people who have
   not signed in for ``inactive_after_days`` end.

Every job writes through :class:`~federation.admin.service.AdminService` as the
``lifecycle`` actor, so each change is versioned, in the history and in the audit trail.
``isthmus lifecycle run`` runs one tick from the command line (cron, tests); with the
embedded memory store it leaves the accounts job to the hub (that store is the hub
process's own: a command would see nobody ever sign in).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from federation.admin import accounts, review_service, signup_service
from federation.admin.service import Actor, AdminService
from federation.admin.tokens import Role
from federation.errors import StoreUnavailable

if TYPE_CHECKING:
    from federation.hub import Hub

# A job: what it did, one line per change (for the log and `isthmus lifecycle run`).
Job = Callable[[AdminService, datetime], Awaitable[list[str]]]
JOBS: tuple[tuple[str, Job], ...] = (
    ("signups", signup_service.expire_requests),
    ("reviews", review_service.run_reviews),
    ("accounts", accounts.end_inactive_grants),
)
LIFECYCLE = Actor("lifecycle", Role.admin)
# Jobs that read what only the serving hubs' store holds (who signed in when): run from
# another process on the embedded memory store, they would see nobody ever sign in.
SHARED_STORE_JOBS = frozenset({"accounts"})
_log = logging.getLogger("isthmus.lifecycle")


async def tick(
    hub: Hub, now: datetime | None = None, jobs: Sequence[tuple[str, Job]] = JOBS
) -> list[str]:
    """Run every job once; a job that fails is logged and the others still run."""
    await hub.ready()
    moment = now or datetime.fromtimestamp(hub.clock(), UTC)
    service = AdminService(hub)
    done: list[str] = []
    for name, job in jobs:
        try:
            done += [f"{name}: {line}" for line in await job(service, moment)]
        except StoreUnavailable as exc:
            _log.warning("lifecycle job %s skipped, store unreachable: %s", name, exc)
        except Exception:
            _log.exception("lifecycle job %s failed", name)
    for line in done:
        _log.info("lifecycle: %s", line)
    return done


def slot_of(moment: float, interval: float) -> int:
    """The interval a wake-up at ``moment`` belongs to: the nearest boundary, so that a
    timer firing a little early or late still names the interval it was set for."""
    return round(moment / interval)


async def tick_if_claimed(
    hub: Hub, slot: int, jobs: Sequence[tuple[str, Job]] = JOBS
) -> list[str] | None:
    """Run the tick of interval ``slot`` if this replica is the first to claim it in the
    shared store; None when another replica (or this one, earlier) already has."""
    interval = hub.base_settings.lifecycle.interval_seconds
    if not await hub.store.add_once(f"lifecycle:tick:{slot}", interval * 2):
        return None
    return await tick(hub, jobs=jobs)


def outside_the_hub(hub: Hub) -> tuple[tuple[tuple[str, Job], ...], tuple[str, ...]]:
    """The jobs another process (``isthmus lifecycle run``) may run on ``hub``'s settings,
    and the names of those it must leave to the serving hubs (memory store: not shared)."""
    if hub.base_settings.store.backend != "memory":
        return JOBS, ()
    kept = tuple((name, job) for name, job in JOBS if name not in SHARED_STORE_JOBS)
    return kept, tuple(name for name, _ in JOBS if name in SHARED_STORE_JOBS)


async def run_forever(
    hub: Hub,
    jobs: Sequence[tuple[str, Job]] = JOBS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """One tick per interval across all replicas: each wakes at every interval boundary
    (of ``hub.clock``) and the first to claim the interval runs it."""
    interval = hub.base_settings.lifecycle.interval_seconds
    while True:
        await sleep(max(interval - hub.clock() % interval, 0.05))
        try:
            await tick_if_claimed(hub, slot_of(hub.clock(), interval), jobs)
        except StoreUnavailable as exc:
            _log.warning("lifecycle skipped, store unreachable: %s", exc)
        except Exception:
            _log.exception("lifecycle tick failed")

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
``isthmus lifecycle run`` runs one tick from the command line (cron, tests).
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


async def run_forever(hub: Hub) -> None:
    """One tick per interval across all replicas (the first to claim the interval)."""
    interval = hub.base_settings.lifecycle.interval_seconds
    while True:
        await asyncio.sleep(max(interval - hub.clock() % interval, 0.05))
        slot = int(hub.clock() // interval)
        try:
            if await hub.store.add_once(f"lifecycle:tick:{slot}", interval * 2):
                await tick(hub)
        except StoreUnavailable as exc:
            _log.warning("lifecycle skipped, store unreachable: %s", exc)
        except Exception:
            _log.exception("lifecycle tick failed")

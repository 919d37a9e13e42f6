"""Readiness: may this replica take traffic?

Ready when the store answers PING and the registry its revision, each within the
timeout, and the hub is not shutting down. A check's result is reused for
``cache_seconds`` and concurrent probes share one check in flight, so probes cannot
hammer Redis. Once :meth:`Readiness.drain` is called (SIGTERM, or the lifespan ending)
the answer is "shutting down" at once and for good, without asking anything.

What the probe answers names what is down (``store``, ``registry``, ``shutdown``) and
how (``unreachable``, ``timeout``); the cause goes to the log, once per change of state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from federation.admin.documents import DocumentStore
from federation.errors import StoreUnavailable
from federation.stores.base import Store

__all__ = ["Readiness", "Report"]

_log = logging.getLogger("isthmus.readiness")


@dataclass(frozen=True, slots=True)
class Report:
    checks: dict[str, str]  # name → "ok", or what is wrong

    @property
    def ready(self) -> bool:
        return all(state == "ok" for state in self.checks.values())

    @property
    def down(self) -> list[str]:
        return [name for name, state in self.checks.items() if state != "ok"]

    def body(self) -> dict[str, Any]:
        if self.ready:
            return {"status": "ready", "checks": self.checks}
        return {"status": "unavailable", "down": self.down, "checks": self.checks}


SHUTTING_DOWN = Report({"shutdown": "in progress"})


class Readiness:
    def __init__(
        self,
        store: Store,
        documents: DocumentStore,
        *,
        timeout: float,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.documents = documents
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._draining = False
        self._last: Report | None = None
        self._checked_at = 0.0
        self._pending: asyncio.Future[Report] | None = None

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        """Not ready from now on (safe to call from a signal handler)."""
        self._draining = True

    async def report(self) -> Report:
        if self._draining:
            return SHUTTING_DOWN
        last = self._last
        if last is not None and self._clock() - self._checked_at < self.cache_seconds:
            return last
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._check())
        # Shielded: a probe that hangs up does not cancel the check the others wait for.
        report = await asyncio.shield(self._pending)
        return SHUTTING_DOWN if self._draining else report

    async def _check(self) -> Report:
        try:
            store, registry = await asyncio.gather(
                self._probe("store", self.store.ping),
                self._probe("registry", self.documents.revision),
            )
            report = Report({"store": store, "registry": registry})
            previous, self._last, self._checked_at = self._last, report, self._clock()
            if previous is not None and previous.ready != report.ready and report.ready:
                _log.info("ready again: the store and the registry answer")
            return report
        finally:
            self._pending = None

    async def _probe(self, name: str, call: Callable[[], Awaitable[object]]) -> str:
        was = self._last.checks.get(name) if self._last is not None else "ok"
        try:
            async with asyncio.timeout(self.timeout):
                await call()
        except TimeoutError:
            state, detail = "timeout", f"no answer within {self.timeout} s"
        except StoreUnavailable as exc:
            state, detail = "unreachable", exc.detail
        except Exception as exc:  # any failure of a check is "not ready", never a 500
            state, detail = "error", f"{type(exc).__name__}: {exc}"
        else:
            return "ok"
        if state != was:
            _log.warning("not ready: %s %s: %s", name, state, detail)
        return state

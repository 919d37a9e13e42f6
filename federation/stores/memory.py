"""In-memory store: the embedded single-process default."""

from __future__ import annotations

import copy
import heapq
import time
from collections.abc import Callable

from federation.stores.base import JSON


class MemoryStore:
    """Dicts with expiry times; expired entries vanish on read and in periodic sweeps.

    Everything runs on the event loop thread without awaiting in between, so each
    operation is atomic with respect to the others.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[float, JSON]] = {}
        self._sets: dict[str, tuple[float, set[str]]] = {}
        self._expiries: list[tuple[float, str]] = []

    async def put(self, key: str, value: JSON, ttl: float) -> None:
        expires = self._expires(ttl)
        self._values[key] = (expires, copy.deepcopy(value))
        heapq.heappush(self._expiries, (expires, key))
        self._sweep()

    async def get(self, key: str) -> JSON | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._values[key]
            return None
        return copy.deepcopy(entry[1])

    async def take(self, key: str) -> JSON | None:
        entry = self._values.pop(key, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    async def delete(self, key: str) -> bool:
        entry = self._values.pop(key, None)
        found = self._sets.pop(key, None) is not None
        return (entry is not None and entry[0] > self._clock()) or found

    async def add_once(self, key: str, ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.put(key, {}, ttl)
        return True

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        now = self._clock()
        expires, members = self._sets.get(key, (0.0, set()))
        if expires <= now:
            members = set()
        self._sets[key] = (max(expires, self._expires(ttl)), members | {member})

    async def set_members(self, key: str) -> set[str]:
        entry = self._sets.get(key)
        if entry is None or entry[0] <= self._clock():
            self._sets.pop(key, None)
            return set()
        return set(entry[1])

    async def set_remove(self, key: str, member: str) -> None:
        entry = self._sets.get(key)
        if entry is not None:
            entry[1].discard(member)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _expires(self, ttl: float) -> float:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        return self._clock() + ttl

    def _sweep(self) -> None:
        # Amortised clean-up so an idle key does not live forever in a long-running process.
        now = self._clock()
        if len(self._expiries) > 2 * len(self._values) + 1024:
            self._expiries = [(exp, key) for key, (exp, _) in self._values.items()]
            heapq.heapify(self._expiries)
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            entry = self._values.get(key)
            if entry is not None and entry[0] <= now:
                del self._values[key]

"""In-memory store: the embedded single-process default."""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Callable, Sequence

from federation.stores.base import JSON, Put, SetAdd

# What one key holds: a JSON document (kept encoded, as Redis keeps it) or a set.
_Entry = tuple[float, str | set[str]]


class MemoryStore:
    """One dict of entries with expiry times; expired entries vanish on read and in sweeps.

    It behaves as :class:`~federation.stores.redis.RedisStore` does, so that code tested
    against it holds against Redis:

    * values are stored JSON-encoded: what comes back is a fresh copy (mutating it, or the
      dict given to :meth:`put`, changes nothing stored), tuples come back as lists, and a
      value that is not JSON raises ``TypeError``/``ValueError`` at :meth:`put`;
    * one key space: a key holds either a value or a set. :meth:`put` and a successful
      :meth:`add_once` replace whatever the key held; reading a key with the operation of
      the other kind raises ``TypeError`` (a programming error, as WRONGTYPE is in Redis);
    * a set whose last member is removed no longer exists.

    ``clock`` returns seconds (``time.monotonic`` by default); tests inject a fake one to
    move time forward. Everything runs on the event loop thread without awaiting in
    between, so each operation is atomic with respect to the others.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        # (expires, key) candidates for the sweep; stale ones are skipped.
        self._expiries: list[tuple[float, str]] = []

    async def put(self, key: str, value: JSON, ttl: float) -> None:
        encoded = _encode(value)
        self._write(key, encoded, self._expires(ttl))

    async def write_many(self, puts: Sequence[Put] = (), adds: Sequence[SetAdd] = ()) -> None:
        # Check every value first so a bad one writes nothing; no await in between, so no
        # other task sees a part of it.
        checked = [(key, _encode(value), self._expires(ttl)) for key, value, ttl in puts]
        for _, _, ttl in adds:
            self._expires(ttl)
        for key, encoded, expires in checked:
            self._write(key, encoded, expires)
        for key, member, ttl in adds:
            await self.set_add(key, member, ttl)

    async def get(self, key: str) -> JSON | None:
        data = self._live(key)
        if data is None:
            return None
        return _decode(_value(data))

    async def take(self, key: str) -> JSON | None:
        data = self._live(key)
        if data is None:
            return None
        encoded = _value(data)
        del self._entries[key]
        return _decode(encoded)

    async def delete(self, key: str) -> bool:
        found = self._live(key) is not None
        self._entries.pop(key, None)
        return found

    async def add_once(self, key: str, ttl: float) -> bool:
        expires = self._expires(ttl)
        if self._live(key) is not None:
            return False
        self._write(key, "{}", expires)
        return True

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        expires = self._expires(ttl)
        data = self._live(key)
        if data is None:
            self._write(key, {member}, expires)
            return
        members = _members(data)
        members.add(member)
        current = self._entries[key][0]
        if expires > current:
            self._write(key, members, expires)

    async def set_members(self, key: str) -> set[str]:
        data = self._live(key)
        return set() if data is None else set(_members(data))

    async def set_remove(self, key: str, member: str) -> None:
        data = self._live(key)
        if data is None:
            return
        members = _members(data)
        members.discard(member)
        if not members:
            del self._entries[key]

    def size(self) -> int:
        """Live keys (for tests and the embedded store's metrics)."""
        now = self._clock()
        return sum(1 for expires, _ in self._entries.values() if expires > now)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _expires(self, ttl: float) -> float:
        if not ttl > 0:  # also rejects NaN
            raise ValueError("ttl must be positive")
        return self._clock() + ttl

    def _live(self, key: str) -> str | set[str] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def _write(self, key: str, data: str | set[str], expires: float) -> None:
        self._entries[key] = (expires, data)
        heapq.heappush(self._expiries, (expires, key))
        self._sweep()

    def _sweep(self) -> None:
        # Amortised clean-up so an idle key does not live forever in a long-running process.
        now = self._clock()
        if len(self._expiries) > 2 * len(self._entries) + 1024:
            self._expiries = [(exp, key) for key, (exp, _) in self._entries.items()]
            heapq.heapify(self._expiries)
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            if entry is not None and entry[0] <= now:
                del self._entries[key]


def _encode(value: JSON) -> str:
    if not isinstance(value, dict):
        raise TypeError(f"store values are JSON objects, not {type(value).__name__}")
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _decode(encoded: str) -> JSON:
    value = json.loads(encoded)
    assert isinstance(value, dict)
    return value


def _value(data: str | set[str]) -> str:
    if not isinstance(data, str):
        raise TypeError("this key holds a set, not a value")
    return data


def _members(data: str | set[str]) -> set[str]:
    if isinstance(data, str):
        raise TypeError("this key holds a value, not a set")
    return data

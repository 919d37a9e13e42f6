"""The store interface every backend implements (and the contract suite checks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

JSON = dict[str, Any]
Put = tuple[str, JSON, float]  # key, value, ttl
SetAdd = tuple[str, str, float]  # key, member, ttl


class Store(Protocol):
    """Key/value and set operations with a TTL (seconds) on everything written.

    Keys are plain strings; backends add their own prefix. Every failure to reach the
    backend raises :class:`federation.errors.StoreUnavailable` (fail closed).
    """

    async def put(self, key: str, value: JSON, ttl: float) -> None:
        """Write ``value`` under ``key``, replacing any previous value."""

    async def get(self, key: str) -> JSON | None:
        """The value, or None when absent or expired."""

    async def write_many(self, puts: Sequence[Put] = (), adds: Sequence[SetAdd] = ()) -> None:
        """Several ``put`` and ``set_add`` in one round trip, seen by others all at once.

        Writes that belong together (a session and its indexes, the tokens of one token
        response) go here: one network round trip instead of one per key. Values are
        checked before anything is written, so a bad value writes nothing.
        """

    async def take(self, key: str) -> JSON | None:
        """Read and delete atomically: of concurrent callers exactly one gets the value."""

    async def delete(self, key: str) -> bool:
        """True when something was deleted."""

    async def add_once(self, key: str, ttl: float) -> bool:
        """Replay cache: True the first time ``key`` is seen within ``ttl``, then False."""

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        """Add to a set (an index such as "sessions of partner X"); the set's TTL is
        extended to at least ``ttl``."""

    async def set_members(self, key: str) -> set[str]:
        """Members of the set (empty when absent)."""

    async def set_remove(self, key: str, member: str) -> None:
        """Remove one member; absent members are ignored."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the backend cannot be reached."""

    async def aclose(self) -> None:
        """Release connections."""

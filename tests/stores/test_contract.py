"""The Store contract, run against every implementation (memory, and Redis as one server,
a Sentinel master and a Cluster).

Time: ``harness.elapse(seconds)`` moves a fake clock for the memory store. For Redis it
writes a witness key with that TTL and polls (with a deadline) until Redis itself has
expired it: everything written before with a TTL no longer than ``seconds`` has expired
by then, on the server's clock, with no sleep that merely hopes enough time has passed.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from federation.stores.base import Store
from federation.stores.memory import MemoryStore
from federation.stores.redis import RedisStore
from tests.fakes.clock import FakeClock
from tests.peers.redis import TOPOLOGY_PARAMS, topology_of

SHORT = 0.3  # seconds: a TTL that tests wait out
LONG = 300.0  # seconds: a TTL that never runs out during a test
EXPIRY_DEADLINE = 10.0  # seconds past SHORT before a Redis expiry counts as missed


@dataclass
class Harness:
    kind: str
    store: Store
    # Another store on the same backend, in another namespace (another prefix for Redis).
    other: Store
    elapse: Callable[[float], Awaitable[None]]


async def until(predicate: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


@pytest.fixture(params=["memory", *TOPOLOGY_PARAMS])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        yield Harness("memory", MemoryStore(clock=clock), MemoryStore(clock=clock), advance)
        return

    topology = topology_of(request, request.param)
    run = secrets.token_hex(6)
    store = RedisStore.from_topology(topology, prefix=f"contract:{run}:a:")
    other = RedisStore.from_topology(topology, prefix=f"contract:{run}:b:")
    witness = RedisStore.from_topology(topology, prefix=f"contract:{run}:witness:")

    async def elapse(seconds: float) -> None:
        key = secrets.token_hex(8)
        await witness.put(key, {}, seconds)

        async def gone() -> bool:
            return await witness.get(key) is None

        await until(gone, seconds + EXPIRY_DEADLINE)

    try:
        yield Harness(request.param, store, other, elapse)
    finally:
        for each in (store, other, witness):
            await each.aclose()


NESTED: dict[str, Any] = {
    "sub": "248289761001",
    "partner": {"id": "acme", "kind": "supplier", "domains": ["acme.example", "acme.test"]},
    "groups": [],
    "claims": {"amr": ["pwd", "otp"], "acr": None, "mfa": True, "n": 3, "ratio": 0.25},
    "name": "Zoë Ångström 日本",
    "deep": {"a": {"b": {"c": {"d": [1, [2, [3, {"e": "f"}]]]}}}},
}


# --- values ----------------------------------------------------------------------------


async def test_put_get_round_trip(harness: Harness) -> None:
    await harness.store.put("k", NESTED, LONG)
    assert await harness.store.get("k") == NESTED


async def test_get_absent(harness: Harness) -> None:
    assert await harness.store.get("absent") is None
    assert await harness.store.take("absent") is None


async def test_put_overwrites(harness: Harness) -> None:
    await harness.store.put("k", {"v": 1}, LONG)
    await harness.store.put("k", {"w": 2}, LONG)
    assert await harness.store.get("k") == {"w": 2}


async def test_values_are_json(harness: Harness) -> None:
    # What the memory store accepts, Redis must accept too, and the other way round.
    await harness.store.put("k", {"t": (1, 2), "i": {1: "one"}}, LONG)
    assert await harness.store.get("k") == {"t": [1, 2], "i": {"1": "one"}}
    with pytest.raises(TypeError):
        await harness.store.put("bad", {"s": {1, 2}}, LONG)
    with pytest.raises(ValueError):
        await harness.store.put("bad", {"x": math.nan}, LONG)
    assert await harness.store.get("bad") is None


@pytest.mark.parametrize("ttl", [0, -1, math.nan])
async def test_ttl_must_be_positive(harness: Harness, ttl: float) -> None:
    with pytest.raises(ValueError):
        await harness.store.put("k", {}, ttl)
    with pytest.raises(ValueError):
        await harness.store.add_once("k", ttl)
    with pytest.raises(ValueError):
        await harness.store.set_add("s", "m", ttl)
    assert await harness.store.get("k") is None
    assert await harness.store.set_members("s") == set()


async def test_value_isolation(harness: Harness) -> None:
    value = {"nested": {"x": [1]}}
    await harness.store.put("k", value, LONG)
    value["nested"]["x"].append(2)  # the caller's dict, after put
    got = await harness.store.get("k")
    assert got == {"nested": {"x": [1]}}
    assert got is not None
    got["nested"]["x"].append(3)  # a returned dict
    got["new"] = True
    assert await harness.store.get("k") == {"nested": {"x": [1]}}
    taken = await harness.store.take("k")
    assert taken == {"nested": {"x": [1]}}


async def test_ttl_expiry(harness: Harness) -> None:
    await harness.store.put("short", NESTED, SHORT)
    await harness.store.put("long", NESTED, LONG)
    assert await harness.store.get("short") == NESTED
    await harness.elapse(SHORT)
    assert await harness.store.get("short") is None
    assert await harness.store.take("short") is None
    assert await harness.store.delete("short") is False
    assert await harness.store.get("long") == NESTED


async def test_overwrite_replaces_ttl(harness: Harness) -> None:
    await harness.store.put("shortened", {"v": 1}, LONG)
    await harness.store.put("shortened", {"v": 2}, SHORT)
    await harness.store.put("lengthened", {"v": 1}, SHORT)
    await harness.store.put("lengthened", {"v": 2}, LONG)
    await harness.elapse(SHORT)
    assert await harness.store.get("shortened") is None
    assert await harness.store.get("lengthened") == {"v": 2}


async def test_take_is_single_use(harness: Harness) -> None:
    await harness.store.put("code", {"code": "abc"}, LONG)
    assert await harness.store.take("code") == {"code": "abc"}
    assert await harness.store.take("code") is None
    assert await harness.store.get("code") is None


async def test_take_under_concurrency(harness: Harness) -> None:
    await harness.store.put("code", NESTED, LONG)
    results = await asyncio.gather(*(harness.store.take("code") for _ in range(50)))
    winners = [result for result in results if result is not None]
    assert winners == [NESTED]
    assert results.count(None) == 49
    assert await harness.store.get("code") is None


async def test_delete(harness: Harness) -> None:
    await harness.store.put("k", {"v": 1}, LONG)
    assert await harness.store.delete("k") is True
    assert await harness.store.get("k") is None
    assert await harness.store.delete("k") is False
    assert await harness.store.delete("never") is False


# --- replay cache ---------------------------------------------------------------------------


async def test_add_once(harness: Harness) -> None:
    assert await harness.store.add_once("jti:1", SHORT) is True
    assert await harness.store.add_once("jti:1", LONG) is False
    assert await harness.store.add_once("jti:1", SHORT) is False
    assert await harness.store.add_once("jti:2", SHORT) is True
    await harness.elapse(SHORT)
    assert await harness.store.add_once("jti:1", LONG) is True
    assert await harness.store.add_once("jti:1", LONG) is False


async def test_add_once_under_concurrency(harness: Harness) -> None:
    results = await asyncio.gather(*(harness.store.add_once("jti", LONG) for _ in range(50)))
    assert results.count(True) == 1
    assert results.count(False) == 49


async def test_add_once_after_put_and_delete(harness: Harness) -> None:
    await harness.store.put("k", {"v": 1}, LONG)
    assert await harness.store.add_once("k", LONG) is False
    assert await harness.store.get("k") == {"v": 1}  # untouched
    assert await harness.store.delete("k") is True
    assert await harness.store.add_once("k", LONG) is True
    assert await harness.store.delete("k") is True


# --- sets ----------------------------------------------------------------------------------


async def test_set_add_members_remove(harness: Harness) -> None:
    assert await harness.store.set_members("idx") == set()
    await harness.store.set_add("idx", "a", LONG)
    await harness.store.set_add("idx", "b", LONG)
    await harness.store.set_add("idx", "a", LONG)
    assert await harness.store.set_members("idx") == {"a", "b"}
    await harness.store.set_remove("idx", "a")
    await harness.store.set_remove("idx", "not-there")
    await harness.store.set_remove("no-such-set", "a")
    assert await harness.store.set_members("idx") == {"b"}
    members = await harness.store.set_members("idx")
    members.add("mutated")
    assert await harness.store.set_members("idx") == {"b"}


async def test_set_emptied_no_longer_exists(harness: Harness) -> None:
    await harness.store.set_add("idx", "a", LONG)
    await harness.store.set_remove("idx", "a")
    assert await harness.store.set_members("idx") == set()
    assert await harness.store.delete("idx") is False


async def test_delete_set(harness: Harness) -> None:
    await harness.store.set_add("idx", "a", LONG)
    assert await harness.store.delete("idx") is True
    assert await harness.store.set_members("idx") == set()
    assert await harness.store.delete("idx") is False


async def test_set_expiry_and_extension(harness: Harness) -> None:
    # Expires after its TTL...
    await harness.store.set_add("expires", "a", SHORT)
    # ...unless a later set_add extends it...
    await harness.store.set_add("extended", "a", SHORT)
    await harness.store.set_add("extended", "b", LONG)
    # ...and a later, shorter set_add never shortens it.
    await harness.store.set_add("kept", "a", LONG)
    await harness.store.set_add("kept", "b", SHORT)
    await harness.elapse(SHORT)
    assert await harness.store.delete("expires") is False  # before any read drops it
    assert await harness.store.set_members("expires") == set()
    assert await harness.store.set_members("extended") == {"a", "b"}
    assert await harness.store.set_members("kept") == {"a", "b"}
    # An expired set starts afresh: no member of the old one comes back.
    await harness.store.set_add("expires", "c", LONG)
    assert await harness.store.set_members("expires") == {"c"}


async def test_set_add_under_concurrency(harness: Harness) -> None:
    members = [f"m{i}" for i in range(50)]
    await asyncio.gather(*(harness.store.set_add("idx", m, LONG) for m in members))
    assert await harness.store.set_members("idx") == set(members)


async def test_one_key_space(harness: Harness) -> None:
    # A key holds a value or a set; the operation of the other kind is a programming error.
    await harness.store.set_add("idx", "a", LONG)
    with pytest.raises(TypeError):
        await harness.store.get("idx")
    with pytest.raises(TypeError):
        await harness.store.take("idx")
    assert await harness.store.set_members("idx") == {"a"}  # take did not delete it
    assert await harness.store.add_once("idx", LONG) is False  # the key is taken
    await harness.store.put("val", {"v": 1}, LONG)
    with pytest.raises(TypeError):
        await harness.store.set_add("val", "a", LONG)
    with pytest.raises(TypeError):
        await harness.store.set_members("val")
    with pytest.raises(TypeError):
        await harness.store.set_remove("val", "a")
    assert await harness.store.get("val") == {"v": 1}
    # put replaces whatever the key held.
    await harness.store.put("idx", {"v": 2}, LONG)
    assert await harness.store.get("idx") == {"v": 2}


async def test_write_many(harness: Harness) -> None:
    await harness.store.set_add("idx", "old", SHORT)
    await harness.store.write_many(
        puts=[("a", {"v": 1}, SHORT), ("b", NESTED, LONG)],
        adds=[("idx", "new", LONG), ("fresh", "x", SHORT)],
    )
    assert await harness.store.get("a") == {"v": 1}
    assert await harness.store.get("b") == NESTED
    assert await harness.store.set_members("idx") == {"old", "new"}
    assert await harness.store.set_members("fresh") == {"x"}
    await harness.elapse(SHORT)
    assert await harness.store.get("a") is None
    assert await harness.store.get("b") == NESTED
    assert await harness.store.set_members("idx") == {"old", "new"}  # extended, not shortened
    assert await harness.store.set_members("fresh") == set()


async def test_write_many_with_a_bad_value_writes_nothing(harness: Harness) -> None:
    with pytest.raises(TypeError):
        await harness.store.write_many(
            puts=[("good", {"v": 1}, LONG), ("bad", ["not", "an", "object"], LONG)],  # type: ignore[list-item]
            adds=[("idx", "m", LONG)],
        )
    with pytest.raises(ValueError):
        await harness.store.write_many(puts=[("good", {"v": 1}, LONG)], adds=[("idx", "m", 0)])
    assert await harness.store.get("good") is None
    assert await harness.store.set_members("idx") == set()


async def test_write_many_of_nothing(harness: Harness) -> None:
    await harness.store.write_many()
    assert await harness.store.get("anything") is None


# --- namespaces and health ------------------------------------------------------------------


async def test_keys_isolated_by_prefix(harness: Harness) -> None:
    a, b = harness.store, harness.other
    await a.put("k", {"owner": "a"}, LONG)
    assert await b.get("k") is None
    assert await b.take("k") is None
    assert await b.delete("k") is False
    await b.put("k", {"owner": "b"}, LONG)
    assert await a.get("k") == {"owner": "a"}
    assert await b.add_once("k", LONG) is False
    assert await b.add_once("only-b", LONG) is True
    assert await a.add_once("only-b", LONG) is True
    await a.set_add("idx", "a", LONG)
    assert await b.set_members("idx") == set()
    await b.set_add("idx", "b", LONG)
    await b.set_remove("idx", "a")
    assert await a.set_members("idx") == {"a"}
    assert await b.delete("idx") is True
    assert await a.set_members("idx") == {"a"}
    assert await a.take("k") == {"owner": "a"}
    assert await b.get("k") == {"owner": "b"}


async def test_ping(harness: Harness) -> None:
    await harness.store.ping()
    await harness.other.ping()

"""RedisStore beyond the contract: fail closed when Redis is unreachable, recover after.

Security invariant 7: a store that cannot be reached means no access, so every operation
must raise StoreUnavailable — promptly, thanks to the timeouts — and never hang or
answer as if the key were absent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from federation.errors import StoreUnavailable
from federation.stores.redis import RedisStore
from tests.peers.common import free_port
from tests.peers.redis import RedisServer

pytestmark = pytest.mark.integration

SECRET_KEY = "flow:s3cr3t-flow-id"

Operation = Callable[[RedisStore], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "put": lambda s: s.put(SECRET_KEY, {"v": 1}, 60),
    "get": lambda s: s.get(SECRET_KEY),
    "take": lambda s: s.take(SECRET_KEY),
    "delete": lambda s: s.delete(SECRET_KEY),
    "add_once": lambda s: s.add_once(SECRET_KEY, 60),
    "set_add": lambda s: s.set_add(SECRET_KEY + ":idx", "m", 60),
    "set_members": lambda s: s.set_members(SECRET_KEY + ":idx"),
    "set_remove": lambda s: s.set_remove(SECRET_KEY + ":idx", "m"),
    "ping": lambda s: s.ping(),
}


async def assert_all_unavailable(store: RedisStore, cause: str, within: float) -> None:
    for name, operation in OPERATIONS.items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await operation(store)
        elapsed = time.monotonic() - started
        assert elapsed < within, f"{name} took {elapsed:.2f} s"
        error = caught.value
        assert isinstance(error.__cause__, RedisError | OSError), name
        assert cause in error.detail, (name, error.detail)
        assert "s3cr3t" not in error.detail  # keys can be bearer secrets: not in the log
        assert "s3cr3t" not in error.public_message
        assert error.status == 503


async def test_closed_port_fails_closed_on_every_operation() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        await assert_all_unavailable(store, "ConnectionError", within=2.0)
    finally:
        await store.aclose()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_stalled_server_times_out(silent_server: int) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{silent_server}/0", timeout=0.1)
    try:
        # A few attempts of 0.1 s each (one retry; redis-py retries the connect handshake
        # within each), plus backoff: bounded, never hanging.
        await assert_all_unavailable(store, "Timeout", within=2.0)
    finally:
        await store.aclose()


async def test_server_stopped_and_back(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    store = RedisStore.from_url(server.url)
    try:
        await store.put("k", {"v": 1}, 60)
        assert await store.get("k") == {"v": 1}

        server.stop()
        await assert_all_unavailable(store, "Error", within=2.0)

        server.start()  # same port; ephemeral, so the data is gone
        await store.ping()
        assert await store.get("k") is None
        await store.put("k", {"v": 2}, 60)
        assert await store.take("k") == {"v": 2}

        # Restarted while the pool holds idle connections: the first call must not fail.
        server.stop()
        server.start()
        assert await store.get("k") is None
        assert await store.add_once("jti", 60) is True
    finally:
        await store.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def test_keys_prefixed_and_ttls_in_milliseconds(redis_store: RedisStore, raw: Redis) -> None:
    prefix = redis_store.prefix
    await redis_store.put("v", {"a": [1, {"b": None}]}, 12.5)
    assert await raw.get(prefix + "v") == '{"a":[1,{"b":null}]}'
    assert 12_000 < await raw.pttl(prefix + "v") <= 12_500
    assert await raw.exists("v") == 0

    assert await redis_store.add_once("once", 0.0001) in (True, False)  # rounds up to 1 ms

    await redis_store.set_add("idx", "a", 10)
    assert 9_000 < await raw.pttl(prefix + "idx") <= 10_000
    await redis_store.set_add("idx", "b", 100)
    assert 99_000 < await raw.pttl(prefix + "idx") <= 100_000
    await redis_store.set_add("idx", "c", 10)  # never shortens
    assert 99_000 < await raw.pttl(prefix + "idx") <= 100_000
    assert await raw.smembers(prefix + "idx") == {"a", "b", "c"}


async def test_corrupt_value_fails_closed(redis_store: RedisStore, raw: Redis) -> None:
    await raw.set(redis_store.prefix + "bad", "not json", px=60_000)
    await raw.set(redis_store.prefix + "list", "[1]", px=60_000)
    for key in ("bad", "list"):
        with pytest.raises(StoreUnavailable):
            await redis_store.get(key)

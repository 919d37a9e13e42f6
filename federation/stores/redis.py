"""Redis store: shared state for several hub replicas (``redis.asyncio``).

Every key is ``prefix + key``. Values are JSON objects stored as strings with a
millisecond expiry (``PX``); sets are Redis sets whose expiry only ever grows.

Fail closed (security invariant 7): any error talking to Redis — refused or lost
connection, timeout, an error reply — raises :class:`~federation.errors.StoreUnavailable`
with the cause in ``detail`` (for the log; never shown to the client). The key is left out
of ``detail`` on purpose: keys can carry bearer secrets such as flow ids. The one
exception is WRONGTYPE (a key read with the operation of the other kind), a programming
error that raises ``TypeError`` as :class:`~federation.stores.memory.MemoryStore` does.

Connections come from redis-py's pool and are re-established on demand, so a store
object survives a Redis restart: operations fail while Redis is down and work again once
it is back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from federation.errors import StoreUnavailable
from federation.observability.metrics import store_error
from federation.stores.base import JSON, Put, SetAdd

# Seconds. A hub request must not hang on Redis: the connect timeout bounds an unreachable
# host, the read timeout a stalled server (Redis answers in well under a millisecond; one
# that takes a second is as good as down). With the one retry below, and redis-py retrying
# the connect inside each attempt, a stalled server fails an operation after at most about
# 4 x READ_TIMEOUT; a refused connection fails at once. The health check PINGs a
# connection that has been idle longer than the interval before using it, so one silently
# dropped by a NAT or a failover is replaced instead of failing the request.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 1.0
HEALTH_CHECK_INTERVAL = 15

# SADD, then raise the set's expiry to at least ARGV[2] ms (never lower it). PTTL is -1
# for a key without expiry (cannot happen through this store) and -2 for a missing one.
_SET_ADD = """
redis.call('SADD', KEYS[1], ARGV[1])
local wanted = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < wanted then
  redis.call('PEXPIRE', KEYS[1], wanted)
end
return 1
"""


class RedisStore:
    """:class:`~federation.stores.base.Store` on Redis. Build it with :meth:`from_url`."""

    def __init__(self, client: Redis, prefix: str = "isthmus:") -> None:
        self._redis = client
        self._prefix = prefix
        self._set_add = client.register_script(_SET_ADD)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "isthmus:",
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = READ_TIMEOUT,
        health_check_interval: int = HEALTH_CHECK_INTERVAL,
    ) -> RedisStore:
        """A store on ``redis://``, ``rediss://`` or ``unix://`` ``url``; connects lazily.

        One retry after a connection error or timeout (with a short backoff) covers a
        pooled connection that went stale; a second failure raises StoreUnavailable.
        """
        client = redis_client(
            url,
            connect_timeout=connect_timeout,
            timeout=timeout,
            health_check_interval=health_check_interval,
        )
        return cls(client, prefix)

    @property
    def prefix(self) -> str:
        return self._prefix

    async def put(self, key: str, value: JSON, ttl: float) -> None:
        encoded = _encode(value)
        await self._call("SET", self._redis.set(self._key(key), encoded, px=_millis(ttl)))

    async def write_many(self, puts: Sequence[Put] = (), adds: Sequence[SetAdd] = ()) -> None:
        """One MULTI/EXEC round trip. Under Redis Cluster its keys must share a hash slot."""
        encoded = [(self._key(key), _encode(value), _millis(ttl)) for key, value, ttl in puts]
        members = [(self._key(key), member, _millis(ttl)) for key, member, ttl in adds]
        if not encoded and not members:
            return
        pipe = self._redis.pipeline(transaction=True)
        for key, value, millis in encoded:
            pipe.set(key, value, px=millis)
        for key, member, millis in members:
            # EVAL, not the registered script: a pipeline would first ask SCRIPT EXISTS.
            pipe.eval(_SET_ADD, 1, key, member, millis)
        await self._call("MULTI", pipe.execute())

    async def get(self, key: str) -> JSON | None:
        encoded = await self._call("GET", self._redis.get(self._key(key)))
        return _decode(encoded)

    async def take(self, key: str) -> JSON | None:
        encoded = await self._call("GETDEL", self._redis.getdel(self._key(key)))
        return _decode(encoded)

    async def delete(self, key: str) -> bool:
        deleted = await self._call("DEL", self._redis.delete(self._key(key)))
        return int(deleted) > 0

    async def add_once(self, key: str, ttl: float) -> bool:
        done = await self._call(
            "SET NX", self._redis.set(self._key(key), "{}", px=_millis(ttl), nx=True)
        )
        return bool(done)

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        millis = _millis(ttl)
        await self._call(
            "set_add script", self._set_add(keys=[self._key(key)], args=[member, millis])
        )

    async def set_members(self, key: str) -> set[str]:
        members = await self._call("SMEMBERS", self._redis.smembers(self._key(key)))
        return {str(member) for member in members}

    async def set_remove(self, key: str, member: str) -> None:
        await self._call("SREM", self._redis.srem(self._key(key), member))

    async def ping(self) -> None:
        await self._call("PING", self._redis.ping())

    async def aclose(self) -> None:
        with unavailable("close"):
            await self._redis.aclose()

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def _call(self, what: str, pending: object) -> Any:
        # redis-py types its commands for sync and async clients at once: an awaitable here.
        with unavailable(what):
            return await cast("Awaitable[Any]", pending)


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    try:
        yield
    except ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            raise TypeError(f"redis {what}: the key holds the other kind (value/set)") from exc
        store_error(what)  # counted in isthmus_store_errors_total
        raise StoreUnavailable(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc
    except (RedisError, OSError) as exc:
        # OSError covers socket errors redis-py lets through (and TimeoutError, its subclass).
        store_error(what)
        raise StoreUnavailable(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc


def _millis(ttl: float) -> int:
    if not ttl > 0:  # also rejects NaN
        raise ValueError("ttl must be positive")
    return max(1, math.ceil(ttl * 1000))


def _encode(value: JSON) -> str:
    if not isinstance(value, dict):
        raise TypeError(f"store values are JSON objects, not {type(value).__name__}")
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _decode(encoded: object) -> JSON | None:
    if encoded is None:
        return None
    try:
        value = json.loads(cast("str", encoded))
    except ValueError as exc:
        raise StoreUnavailable(f"redis value is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StoreUnavailable(f"redis value is not a JSON object: {type(value).__name__}")
    return value


def redis_client(
    url: str,
    connect_timeout: float = CONNECT_TIMEOUT,
    timeout: float = READ_TIMEOUT,
    health_check_interval: int = HEALTH_CHECK_INTERVAL,
) -> Redis:
    """A client as every Redis user of the hub wants it (store, registry, audit stream):
    bounded timeouts, one retry after a connection error, a health check when idle."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        health_check_interval=health_check_interval,
        retry=Retry(
            ExponentialWithJitterBackoff(base=0.01, cap=0.1),
            retries=1,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        ),
        client_name="isthmus",
    )

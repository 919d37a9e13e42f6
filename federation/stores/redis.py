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

Three topologies (:class:`RedisTopology`, built by :func:`connect`; docs/operations-redis.md):

* one server: a ``redis://``, ``rediss://`` or ``unix://`` URL;
* Redis Sentinel: the sentinels are asked for the current master before each new
  connection. During a failover operations fail as StoreUnavailable (fail closed); once a
  replica is promoted, the next connections go to it, with no restart. A connection still
  open to a demoted master is dropped on its first READONLY reply;
* Redis Cluster: keys are spread over the nodes by hash slot. Every single-key operation
  and every Lua script here touches one key, so they work unchanged. :meth:`write_many`
  cannot be one MULTI there: see its doc for the order that keeps a partial write
  harmless.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
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


# A client of any topology: one server or a Sentinel-managed master (Redis), or a Cluster.
Client: TypeAlias = Redis | RedisCluster


@dataclass(frozen=True)
class SentinelTarget:
    """A master watched by Redis Sentinel: where the sentinels listen, the master's name.

    ``username``/``password`` authenticate to the master (and its replicas, which may
    become master); ``sentinel_password`` to the sentinels (their ``requirepass``).
    """

    hosts: tuple[tuple[str, int], ...]
    master_name: str
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    db: int = 0


@dataclass(frozen=True)
class RedisTopology:
    """Where a Redis is: one server (``url``), a Sentinel master, or a Cluster.

    Cluster: ``url`` is any node (its scheme, credentials and TLS apply to every node) and
    ``cluster_nodes`` further start-up nodes; either may be missing, not both.
    """

    url: str | None = None
    sentinel: SentinelTarget | None = None
    cluster: bool = False
    cluster_nodes: tuple[tuple[str, int], ...] = ()


def hash_tag(key: str) -> str | None:
    """What Redis Cluster hashes of ``key`` when it holds a hash tag (the text between the
    first ``{`` and the next ``}``, when not empty), else None (the whole key is hashed)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    return key[start + 1 : end] if end > start + 1 else None


class RedisStore:
    """:class:`~federation.stores.base.Store` on Redis. Build it with :meth:`from_url` or
    :meth:`from_topology`."""

    def __init__(self, client: Client, prefix: str = "isthmus:") -> None:
        self._redis = client
        self._prefix = prefix
        self._set_add = client.register_script(_SET_ADD)
        # write_many is one MULTI except under a Cluster (see write_many).
        self._atomic = not isinstance(client, RedisCluster)

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

    @classmethod
    def from_topology(
        cls,
        topology: RedisTopology,
        prefix: str = "isthmus:",
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = READ_TIMEOUT,
        health_check_interval: int = HEALTH_CHECK_INTERVAL,
    ) -> RedisStore:
        """A store on any topology (see :func:`connect`); connects lazily."""
        return cls(connect(topology, connect_timeout, timeout, health_check_interval), prefix)

    @property
    def prefix(self) -> str:
        return self._prefix

    async def put(self, key: str, value: JSON, ttl: float) -> None:
        encoded = _encode(value)
        await self._call("SET", self._redis.set(self._key(key), encoded, px=_millis(ttl)))

    async def write_many(self, puts: Sequence[Put] = (), adds: Sequence[SetAdd] = ()) -> None:
        """One MULTI/EXEC round trip: all or nothing.

        Under Redis Cluster the keys of one call lie in different slots (a session, its sid
        record and its partner's index) and no MULTI can span them (nor does redis-py's
        Cluster client run MULTI well: it executes each queued command through a thread
        and an event loop of its own). There the set additions (the indexes) are written
        first, and the values only once every addition succeeded, each step one pipeline.
        A failure in between leaves index members whose record is missing — harmless:
        every reader of an index skips a member whose record is gone, and the member
        expires with its set. The other order could leave a session that no index knows
        of, which a partner suspension (it ends the sessions its index lists) would not
        end. A failed step raises StoreUnavailable and the caller hands nothing out (no
        cookie, no token), so a value written by half a call is never reachable either.
        """
        encoded = [(self._key(key), _encode(value), _millis(ttl)) for key, value, ttl in puts]
        members = [(self._key(key), member, _millis(ttl)) for key, member, ttl in adds]
        if not encoded and not members:
            return
        if not self._atomic:
            await self._write_indexes_first(encoded, members)
            return
        pipe = self._redis.pipeline(transaction=True)
        for key, value, millis in encoded:
            pipe.set(key, value, px=millis)
        for key, member, millis in members:
            # EVAL, not the registered script: a pipeline would first ask SCRIPT EXISTS.
            pipe.eval(_SET_ADD, 1, key, member, millis)
        await self._call("MULTI", pipe.execute())

    async def _write_indexes_first(
        self, encoded: list[tuple[str, str, int]], members: list[tuple[str, str, int]]
    ) -> None:
        if members:
            pipe = self._redis.pipeline(transaction=False)
            for key, member, millis in members:
                pipe.eval(_SET_ADD, 1, key, member, millis)
            await self._call("set_add pipeline", pipe.execute())
        if encoded:
            pipe = self._redis.pipeline(transaction=False)
            for key, value, millis in encoded:
                pipe.set(key, value, px=millis)
            await self._call("SET pipeline", pipe.execute())

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
        await close_client(self._redis)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def _call(self, what: str, pending: object) -> Any:
        return await call(self._redis, what, pending)


async def call(client: Client, what: str, pending: object) -> Any:
    """Await ``pending``, a command of ``client`` not yet started, errors mapped by
    :func:`unavailable`.

    A Cluster client first learns the slots (once; again after a reset): redis-py sends a
    command issued before that to a random node, and the MOVED replies that follow make it
    reset itself, dropping the connections of every command under way at the time."""
    # redis-py types its commands for sync and async clients at once: an awaitable here.
    awaitable = cast("Awaitable[Any]", pending)
    with unavailable(what):
        if isinstance(client, RedisCluster):
            try:
                await client.initialize()
            except BaseException:
                if inspect.iscoroutine(awaitable):
                    awaitable.close()  # never started: no "never awaited" warning
                raise
        return await awaitable


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    try:
        yield
    except ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            raise TypeError(f"redis {what}: the key holds the other kind (value/set)") from exc
        store_error(what)  # counted in isthmus_store_errors_total
        raise StoreUnavailable(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc
    except (RedisError, RedisClusterException, OSError) as exc:
        # OSError covers socket errors redis-py lets through (and TimeoutError, its subclass);
        # RedisClusterException a cluster whose slots cannot be learnt from any node.
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


def _retry() -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(base=0.01, cap=0.1),
        retries=1,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )


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
        retry=_retry(),
        client_name="isthmus",
    )


def connect(
    topology: RedisTopology,
    connect_timeout: float = CONNECT_TIMEOUT,
    timeout: float = READ_TIMEOUT,
    health_check_interval: int = HEALTH_CHECK_INTERVAL,
) -> Client:
    """A client of ``topology``, with :func:`redis_client`'s timeouts and retry; lazy (no
    connection is made before the first command). Close it with :func:`close_client`."""
    if topology.sentinel is not None:
        return _sentinel_client(topology.sentinel, connect_timeout, timeout, health_check_interval)
    if topology.cluster:
        return _cluster_client(topology, connect_timeout, timeout, health_check_interval)
    if topology.url is None:
        raise ValueError("a single-server topology needs a url")
    return redis_client(topology.url, connect_timeout, timeout, health_check_interval)


def _sentinel_client(
    target: SentinelTarget, connect_timeout: float, timeout: float, health_check_interval: int
) -> Redis:
    if not target.hosts:
        raise ValueError("a Sentinel topology needs at least one sentinel")
    # redis-py leaves Sentinel.__init__ unannotated.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.hosts),
        sentinel_kwargs={
            "password": target.sentinel_password,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": timeout,
            "decode_responses": True,
            "client_name": "isthmus-sentinel",
            # No retry: a sentinel that does not answer is skipped for the next one at
            # once (redis-py's default would back off for seconds on each new connection).
            "retry": Retry(NoBackoff(), retries=0),
        },
    )
    master: Redis = sentinel.master_for(
        target.master_name,
        db=target.db,
        username=target.username,
        password=target.password,
        decode_responses=True,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        health_check_interval=health_check_interval,
        retry=_retry(),
        client_name="isthmus",
    )
    return master


def _cluster_client(
    topology: RedisTopology, connect_timeout: float, timeout: float, health_check_interval: int
) -> RedisCluster:
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "health_check_interval": health_check_interval,
        "retry": _retry(),
        "client_name": "isthmus",
    }
    nodes = [ClusterNode(host, port) for host, port in topology.cluster_nodes]
    if topology.url is not None:
        # The URL's node joins the start-up nodes; its credentials and TLS apply to all.
        return RedisCluster.from_url(topology.url, startup_nodes=nodes or None, **options)
    if not nodes:
        raise ValueError("a Cluster topology needs a url or cluster nodes")
    return RedisCluster(startup_nodes=nodes, **options)


async def close_client(client: Client) -> None:
    """Close ``client`` and, for a Sentinel master, the connections to the sentinels."""
    with unavailable("close"):
        await client.aclose()
        pool = client.connection_pool if isinstance(client, Redis) else None
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()

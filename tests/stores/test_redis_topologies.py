"""Redis Sentinel and Redis Cluster: settings, wiring, failover and cross-slot writes.

The Store, DocumentStore and AuditLog contracts run on both topologies too (their suites
are parametrized over ``tests.peers.redis.TOPOLOGIES``); this module covers what the
contracts cannot: conflicting settings, the hub's wiring of each topology, a Sentinel
failover (fail closed, then recover without restart), a Cluster node going down and
coming back, and how a session's keys in several slots are written and ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from federation.admin.auditlogs import RedisAuditLog
from federation.admin.documents import Write
from federation.admin.redis_documents import RedisDocumentStore
from federation.audit import AuditQuery
from federation.errors import ConfigError, StoreUnavailable
from federation.hub import make_audit_log, make_documents, make_store
from federation.identity import FederatedIdentity
from federation.sessions import SessionManager
from federation.settings import Settings, load_settings
from federation.stores.redis import RedisStore, RedisTopology, hash_tag
from tests.peers.redis import (
    ClusterDeployment,
    SentinelDeployment,
    ask,
)

LONG = 300.0  # seconds: a TTL that never runs out during a test
FAILOVER_DEADLINE = 30.0  # seconds for the sentinels to notice and promote the replica
RECOVERY_DEADLINE = 30.0  # seconds for a restarted cluster node to serve its slots again


def person(partner: str, subject: str) -> FederatedIdentity:
    return FederatedIdentity(partner, f"{partner}-oidc", f"https://idp.{partner}.test", subject)


def settings_of(tmp_path: Path, data: dict[str, Any]) -> Settings:
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path, env={})


def problems_of(tmp_path: Path, data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        settings_of(tmp_path, data)
    return dict(caught.value.problems)


async def until_works(operation: Callable[[], Awaitable[object]], within: float) -> int:
    """Retry ``operation`` until it succeeds; every failure before must be StoreUnavailable
    (fail closed). Returns how many attempts failed."""
    deadline = time.monotonic() + within
    failures = 0
    while True:
        try:
            await operation()
        except StoreUnavailable:
            failures += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"still unavailable after {within} s") from None
            await asyncio.sleep(0.05)  # poll interval
            continue
        return failures


# --- settings --------------------------------------------------------------------------


SENTINEL = {"hosts": ["10.0.0.1:26379", "[fd00::2]:26379"], "master_name": "isthmus"}


def test_settings_accept_each_topology(tmp_path: Path) -> None:
    single = settings_of(tmp_path, {"store": {"backend": "redis", "url": "rediss://r:6380/0"}})
    assert single.store.url == "rediss://r:6380/0"
    unix = settings_of(tmp_path, {"store": {"backend": "redis", "url": "unix:///run/r.sock"}})
    assert unix.store.url == "unix:///run/r.sock"
    sentinel = settings_of(
        tmp_path,
        {
            "store": {"backend": "redis", "sentinel": {**SENTINEL, "password": "p"}},
            "registry": {"backend": "redis"},
        },
    )
    assert sentinel.store.sentinel is not None
    assert sentinel.store.sentinel.addresses() == (("10.0.0.1", 26379), ("fd00::2", 26379))
    cluster = settings_of(
        tmp_path,
        {"store": {"backend": "redis", "cluster": True, "cluster_nodes": ["a:7000", "b:7001"]}},
    )
    assert cluster.store.cluster_addresses() == (("a", 7000), ("b", 7001))
    assert not cluster.registry.own_redis


def test_settings_sentinel_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        env={
            "ISTHMUS_STORE__BACKEND": "redis",
            "ISTHMUS_STORE__SENTINEL__HOSTS": '["s1:26379","s2:26379"]',
            "ISTHMUS_STORE__SENTINEL__MASTER_NAME": "isthmus",
            "ISTHMUS_STORE__SENTINEL__PASSWORD": "secret",
        },
    )
    assert settings.store.sentinel is not None
    assert settings.store.sentinel.addresses() == (("s1", 26379), ("s2", 26379))
    assert settings.store.sentinel.password == "secret"


def test_settings_report_conflicting_options(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        {
            "store": {
                "backend": "redis",
                "url": "redis://r:6379/0",
                "sentinel": {"hosts": ["s:26379", "no-port"], "master_name": "m"},
                "cluster": True,
            },
        },
    )
    assert "not both" in problems["store.sentinel"]
    assert "exclude each other" in problems["store.cluster"]
    assert "host:port" in problems["store.sentinel.hosts.1"]


@pytest.mark.parametrize(
    ("store", "where", "says"),
    [
        ({"backend": "redis"}, "store.url", "required"),
        ({"backend": "redis", "cluster": True}, "store.url", "any node"),
        ({"backend": "redis", "url": "http://r:6379"}, "store.url", "redis://"),
        ({"backend": "redis", "url": "redis://r:99999/0"}, "store.url", "port"),
        ({"backend": "redis", "url": "unix:///s", "cluster": True}, "store.url", "TCP"),
        ({"backend": "redis", "url": "redis://r:7000/2", "cluster": True}, "store.url", "0"),
        ({"backend": "redis", "url": "redis://r/0", "cluster_nodes": ["a:1"]},
         "store.cluster_nodes", "cluster: true"),
        ({"backend": "redis", "cluster": True, "cluster_nodes": ["a"]},
         "store.cluster_nodes.0", "host:port"),
    ],
)  # fmt: skip
def test_settings_report_each_store_problem(
    tmp_path: Path, store: dict[str, Any], where: str, says: str
) -> None:
    problems = problems_of(tmp_path, {"store": store})
    assert says in problems[where], problems


def test_settings_registry_follows_the_store_or_names_its_own(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, {"registry": {"backend": "redis"}})
    assert "required" in problems["registry.url"]
    problems = problems_of(
        tmp_path,
        {"store": {"backend": "redis", "url": "redis://r/0"}, "registry": {"cluster": True}},
    )
    assert "follows the store" in problems["registry.cluster"]
    problems = problems_of(
        tmp_path,
        {"registry": {"backend": "redis", "url": "redis://r/0", "sentinel": SENTINEL}},
    )
    assert "not both" in problems["registry.sentinel"]
    own = settings_of(
        tmp_path,
        {
            "store": {"backend": "redis", "cluster": True, "url": "redis://c:7000/0"},
            "registry": {"backend": "redis", "sentinel": SENTINEL},
        },
    )
    assert own.registry.own_redis


def test_hash_tag() -> None:
    assert hash_tag("{isthmus:registry}:revision") == "isthmus:registry"
    assert hash_tag("isthmus:{registry}:x") == "registry"
    assert hash_tag("isthmus:registry:x") is None
    assert hash_tag("{}:x") is None  # an empty tag does not count: the whole key is hashed
    assert hash_tag("a{b") is None


async def test_registry_needs_a_hash_tag_under_a_cluster() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        RedisDocumentStore.from_topology(
            RedisTopology(url="redis://127.0.0.1:1/0", cluster=True), prefix="isthmus:registry:"
        )


# --- Sentinel --------------------------------------------------------------------------


@pytest.mark.integration
async def test_sentinel_a_dead_sentinel_first_costs_nothing(
    redis_sentinel: SentinelDeployment,
) -> None:
    store = RedisStore.from_topology(redis_sentinel.topology(dead_first=True), prefix="dead1st:")
    try:
        started = time.monotonic()
        await store.put("k", {"v": 1}, LONG)
        assert await store.get("k") == {"v": 1}
        # redis-py's default retry would back off for seconds on the closed port.
        assert time.monotonic() - started < 1.0
    finally:
        await store.aclose()


@pytest.mark.integration
async def test_sentinel_wiring_of_the_hub(
    redis_sentinel: SentinelDeployment, tmp_path: Path
) -> None:
    topology = redis_sentinel.topology()
    assert topology.sentinel is not None
    settings = settings_of(
        tmp_path,
        {
            "store": {
                "backend": "redis",
                "prefix": "wired-sentinel:",
                "sentinel": {
                    "hosts": [f"{host}:{port}" for host, port in topology.sentinel.hosts],
                    "master_name": topology.sentinel.master_name,
                    "password": redis_sentinel.data_password,
                    "sentinel_password": redis_sentinel.sentinel_password,
                },
            },
            "registry": {"backend": "redis"},
        },
    )
    store, documents, log = make_store(settings), make_documents(settings), make_audit_log(settings)
    try:
        await store.put("k", {"v": 1}, LONG)
        await documents.apply([Write("partner", "acme", {"n": 1}, 0)], actor="alice")
        await log.append([{"ts": 1.0, "event": "login", "partner": "acme"}])
        assert await store.get("k") == {"v": 1}
        assert [d.id for d in await documents.documents()] == ["acme"]
        assert [e["event"] for e in await log.query(AuditQuery(partner="acme"))] == ["login"]
        master = redis_sentinel.master_port()
        assert ask(master, redis_sentinel.data_password, "EXISTS", "wired-sentinel:k") == 1
    finally:
        await store.aclose()
        await documents.aclose()
        await log.aclose()


@pytest.mark.integration
async def test_sentinel_failover_fails_closed_then_recovers_without_restart(
    redis_sentinel_factory: Callable[..., SentinelDeployment],
) -> None:
    deployment = redis_sentinel_factory(sentinels=3, quorum=2)
    topology = deployment.topology()
    store = RedisStore.from_topology(topology, prefix="failover:")
    documents = RedisDocumentStore.from_topology(topology, prefix="failover:registry:")
    try:
        await store.put("before", {"v": 1}, LONG)
        await documents.apply([Write("partner", "acme", {"n": 1}, 0)], actor="alice")
        old_master = deployment.master_port()
        assert deployment.replica is not None and deployment.replica.port != old_master
        # Replication is asynchronous: the replica acknowledges everything before the
        # master goes, so that nothing written above can be lost by the failover.
        assert ask(old_master, deployment.data_password, "WAIT", 1, 5000) == 1

        deployment.server(old_master).stop()

        # Fail closed: the master is gone and no replica is promoted yet.
        with pytest.raises(StoreUnavailable):
            await store.get("before")
        with pytest.raises(StoreUnavailable):
            await documents.get("partner", "acme")
        # The sentinels promote the replica; the same store objects then work again.
        await until_works(lambda: store.put("after", {"v": 2}, LONG), FAILOVER_DEADLINE)
        assert deployment.master_port() == deployment.replica.port
        assert await store.get("before") == {"v": 1}
        assert await store.get("after") == {"v": 2}
        doc = await documents.get("partner", "acme")
        assert doc is not None and doc.spec == {"n": 1}
        await documents.apply([Write("partner", "acme", {"n": 2}, 1)], actor="bob")
        assert await documents.revision() == 2
    finally:
        await store.aclose()
        await documents.aclose()


# --- Cluster ---------------------------------------------------------------------------


def node_of(client: RedisCluster, key: str) -> str:
    node = client.get_node_from_key(key)
    assert node is not None
    return str(node.name)


async def keys_under(client: RedisCluster, prefix: str) -> set[str]:
    return {str(key) async for key in client.scan_iter(match=prefix + "*")}


@pytest.mark.integration
async def test_cluster_sessions_across_slots_end_with_their_partner(
    redis_cluster: ClusterDeployment,
) -> None:
    store = RedisStore.from_topology(redis_cluster.topology(), prefix="xslot:")
    sessions = SessionManager(store, 3600)
    try:
        acme = [await sessions.create(person("acme", f"user{i}")) for i in range(6)]
        globex = await sessions.create(person("globex", "carol"))
        client = store._redis
        assert isinstance(client, RedisCluster)
        keys = await keys_under(client, "xslot:")
        # A session, its sid record and its partner's index lie in several slots, on
        # several nodes: no MULTI could span them.
        assert len({key_slot(key.encode()) for key in keys}) > 3
        assert len({node_of(client, key) for key in keys}) > 1
        for session in [*acme, globex]:
            assert await sessions.get(session.id) == session
            assert await sessions.identity_for_sid(session.sid) == session.identity

        assert await sessions.end_partner("acme") == len(acme)

        for session in acme:
            assert await sessions.get(session.id) is None
            assert await sessions.identity_for_sid(session.sid) is None
        assert await sessions.get(globex.id) == globex
    finally:
        await store.aclose()


def fail_pipeline_call(monkeypatch: pytest.MonkeyPatch, failing: int) -> list[int]:
    """Make the ``failing``-th ClusterPipeline.execute (1-based) lose its connection."""
    calls: list[int] = []
    real = ClusterPipeline.execute

    async def execute(self: ClusterPipeline, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(self))
        if len(calls) == failing:
            raise RedisConnectionError("connection lost (test)")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(ClusterPipeline, "execute", execute)
    return calls


@pytest.mark.integration
async def test_cluster_write_many_writes_the_indexes_first(
    redis_cluster: ClusterDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_topology(redis_cluster.topology(), prefix="halfway:")
    sessions = SessionManager(store, 3600)
    client = store._redis
    assert isinstance(client, RedisCluster)
    try:
        # Lost between the two steps: the indexes are written, the session is not.
        calls = fail_pipeline_call(monkeypatch, failing=2)
        with pytest.raises(StoreUnavailable):
            await sessions.create(person("acme", "alice"))
        assert calls == [2, 2]  # partner and subject index, then session and sid record
        assert len(await store.set_members("partner-sessions:acme")) == 1
        assert not {k for k in await keys_under(client, "halfway:") if ":session" in k}
        # What is left is harmless: suspending the partner ends nothing and cleans up.
        assert await sessions.end_partner("acme") == 0
        assert await store.set_members("partner-sessions:acme") == set()

        # Lost on the first step: nothing at all is written.
        monkeypatch.undo()
        before = await keys_under(client, "halfway:")  # alice's subject index is left
        fail_pipeline_call(monkeypatch, failing=1)
        with pytest.raises(StoreUnavailable):
            await sessions.create(person("acme", "bob"))
        assert await keys_under(client, "halfway:") == before
    finally:
        monkeypatch.undo()
        await store.aclose()


@pytest.mark.integration
async def test_cluster_wiring_of_the_hub(redis_cluster: ClusterDeployment, tmp_path: Path) -> None:
    settings = settings_of(
        tmp_path,
        {
            "store": {
                "backend": "redis",
                "prefix": "wired-cluster:",
                "cluster": True,
                "url": redis_cluster.url,
                "cluster_nodes": [f"127.0.0.1:{node.port}" for node in redis_cluster.nodes[1:]],
            },
            "registry": {"backend": "redis"},
        },
    )
    store, documents, log = make_store(settings), make_documents(settings), make_audit_log(settings)
    assert isinstance(store, RedisStore) and isinstance(documents, RedisDocumentStore)
    assert isinstance(log, RedisAuditLog)
    try:
        assert documents.prefix == "{wired-cluster:registry}:"
        await documents.apply(
            [Write("partner", f"p{i}", {"n": i}, 0) for i in range(5)]
            + [Write("app", "wiki", {}, 0)],
            actor="alice",
        )
        await store.put("k", {"v": 1}, LONG)
        await log.append([{"ts": 1.0, "event": "login", "partner": "p1"}])
        assert len(await documents.documents()) == 6
        assert await store.get("k") == {"v": 1}
        assert len(await log.query(AuditQuery(partner="p1"))) == 1
        client = store._redis
        assert isinstance(client, RedisCluster)
        registry_keys = await keys_under(client, "{wired-cluster:registry}:")
        assert len(registry_keys) > 5
        assert {key_slot(key.encode()) for key in registry_keys} == {
            key_slot(b"wired-cluster:registry")
        }
    finally:
        await store.aclose()
        await documents.aclose()
        await log.aclose()


@pytest.mark.integration
async def test_registry_on_its_own_redis_beside_a_cluster_store(
    redis_cluster: ClusterDeployment, redis_url: str, tmp_path: Path
) -> None:
    settings = settings_of(
        tmp_path,
        {
            "store": {"backend": "redis", "cluster": True, "url": redis_cluster.url},
            "registry": {"backend": "redis", "url": redis_url},
        },
    )
    documents = make_documents(settings)
    try:
        assert isinstance(documents, RedisDocumentStore)
        assert documents.prefix == "isthmus:registry:"  # one server: no hash tag needed
        assert not isinstance(documents._redis, RedisCluster)
    finally:
        await documents.aclose()


@pytest.mark.integration
async def test_cluster_node_down_fails_closed_then_recovers_without_restart(
    redis_cluster_factory: Callable[[], ClusterDeployment],
) -> None:
    cluster = redis_cluster_factory()
    store = RedisStore.from_topology(cluster.topology(), prefix="nodedown:")
    client = store._redis
    assert isinstance(client, RedisCluster)
    try:
        await client.initialize()  # learn the slots
        # One key on each node.
        keys: dict[str, str] = {}
        for i in range(200):
            keys.setdefault(node_of(client, f"nodedown:k{i}"), f"k{i}")
            if len(keys) == len(cluster.nodes):
                break
        for key in keys.values():
            await store.put(key, {"key": key}, LONG)
        down = cluster.nodes[-1]
        lost = keys[f"127.0.0.1:{down.port}"]

        down.stop()

        with pytest.raises(StoreUnavailable):
            await store.get(lost)
        # Once the others see it fail, the cluster refuses every slot (full coverage).
        for key in keys.values():
            with pytest.raises(StoreUnavailable):
                await until_refused(store, key)

        down.start()  # no persistence: it comes back empty, with its slots
        cluster.wait_ready()
        await until_works(lambda: store.put(lost, {"key": lost}, LONG), RECOVERY_DEADLINE)
        for key in keys.values():
            assert await store.get(key) == {"key": key}
    finally:
        await store.aclose()


async def until_refused(store: RedisStore, key: str) -> None:
    """Read ``key`` until the store refuses it (StoreUnavailable, raised) or time runs out."""
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while time.monotonic() < deadline:
        await store.get(key)
        await asyncio.sleep(0.05)  # poll interval
    raise AssertionError(f"{key} still served {RECOVERY_DEADLINE} s after a node went down")

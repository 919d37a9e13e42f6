"""The DocumentStore contract, run against every implementation.

SQLite in memory, SQLite in a file (which also proves the documents survive closing and
reopening) and Redis (integration: one real ``redis-server``, a Sentinel master and a
Cluster, each test under a fresh prefix). Concurrency tests race several ``apply`` calls;
for Redis each call goes through its own store object, so its own connection, as separate
replicas would.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from federation.admin.documents import (
    DocumentStore,
    RevisionMoved,
    SqliteDocumentStore,
    VersionConflict,
    Write,
)
from federation.admin.redis_documents import RedisDocumentStore
from federation.errors import StoreUnavailable
from tests.peers.redis import TOPOLOGY_PARAMS, registry_prefix, topology_of

RACERS = 8


@dataclass
class Harness:
    kind: str
    store: DocumentStore
    # Another store on the same data (another connection); closed by the harness.
    open_other: Callable[[], DocumentStore]
    # Close the store and open it again on the same data (None: the data would be gone).
    reopen: Callable[[], Awaitable[DocumentStore]] | None = None
    _others: list[DocumentStore] = field(default_factory=list)

    def other(self) -> DocumentStore:
        store = self.open_other()
        self._others.append(store)
        return store


@pytest.fixture(
    params=[
        "sqlite-memory",
        "sqlite-file",
        *TOPOLOGY_PARAMS,
    ]
)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "sqlite-memory":
        memory = SqliteDocumentStore(":memory:")
        # One in-memory database is one connection: "another store" is the same object.
        h = Harness("sqlite-memory", memory, lambda: memory)
        yield h
        await h.store.aclose()
        return

    if request.param == "sqlite-file":
        path = str(tmp_path / "registry.db")

        async def reopen_file() -> DocumentStore:
            await h.store.aclose()
            h.store = SqliteDocumentStore(path)
            return h.store

        h = Harness(
            "sqlite-file", SqliteDocumentStore(path), lambda: SqliteDocumentStore(path), reopen_file
        )
    else:
        topology = topology_of(request, request.param)
        prefix = registry_prefix(request.param, f"test:registry:{secrets.token_hex(6)}")

        async def reopen_redis() -> DocumentStore:
            await h.store.aclose()
            h.store = RedisDocumentStore.from_topology(topology, prefix=prefix)
            return h.store

        h = Harness(
            request.param,
            RedisDocumentStore.from_topology(topology, prefix=prefix),
            lambda: RedisDocumentStore.from_topology(topology, prefix=prefix),
            reopen_redis,
        )
    try:
        yield h
    finally:
        for store in [h.store, *h._others]:
            await store.aclose()


ACME: dict[str, Any] = {
    "id": "acme",
    "name": "Acme Zoë 日本",
    "domains": ["acme.example"],
    "contract": {"from": None, "ratio": 0.1, "n": 2**60, "empty": {}, "list": []},
}


def put(kind: str, doc_id: str, spec: dict[str, Any], expected: int | None) -> Write:
    return Write(kind, doc_id, spec, expected)


def delete(kind: str, doc_id: str, expected: int | None) -> Write:
    return Write(kind, doc_id, None, expected)


# --- reads and writes ------------------------------------------------------------------


async def test_create_and_get(harness: Harness) -> None:
    store = harness.store
    assert await store.get("partner", "acme") is None
    changes = await store.apply([put("partner", "acme", ACME, 0)], actor="alice", reason="new")
    assert len(changes) == 1
    change = changes[0]
    assert (change.kind, change.id, change.action, change.version) == (
        "partner", "acme", "create", 1,
    )  # fmt: skip
    assert (change.before, change.after, change.actor, change.reason) == (
        None, ACME, "alice", "new",
    )  # fmt: skip
    doc = await store.get("partner", "acme")
    assert doc is not None
    assert (doc.kind, doc.id, doc.version, doc.spec, doc.updated_by) == (
        "partner", "acme", 1, ACME, "alice",
    )  # fmt: skip
    assert doc.key == ("partner", "acme")
    assert doc.updated_at == change.at
    assert await store.get("app", "acme") is None  # another kind, same id


async def test_documents_sorted_and_by_kind(harness: Harness) -> None:
    store = harness.store
    writes = [
        put("partner", "zeta", {"n": 1}, 0),
        put("app", "wiki", {"n": 2}, 0),
        put("partner", "acme", {"n": 3}, 0),
        put("app", "crm", {"n": 4}, 0),
        put("client", "c1", {"n": 5}, 0),
    ]
    await store.apply(writes, actor="alice")
    every = await store.documents()
    assert [d.key for d in every] == [
        ("app", "crm"), ("app", "wiki"), ("client", "c1"), ("partner", "acme"),
        ("partner", "zeta"),
    ]  # fmt: skip
    assert [d.spec["n"] for d in every] == [4, 2, 5, 3, 1]
    assert [d.id for d in await store.documents("partner")] == ["acme", "zeta"]
    assert await store.documents("policy") == []


async def test_update_with_the_right_version(harness: Harness) -> None:
    store = harness.store
    await store.apply([put("partner", "acme", ACME, 0)], actor="alice")
    changed = {**ACME, "name": "Acme 2"}
    (change,) = await store.apply([put("partner", "acme", changed, 1)], actor="bob")
    assert (change.action, change.version, change.before, change.after) == (
        "update", 2, ACME, changed,
    )  # fmt: skip
    doc = await store.get("partner", "acme")
    assert doc is not None
    assert (doc.version, doc.spec, doc.updated_by) == (2, changed, "bob")


async def test_stale_version_refused_and_nothing_written(harness: Harness) -> None:
    store = harness.store
    await store.apply(
        [put("partner", "acme", ACME, 0), put("app", "wiki", {"v": 1}, 0)], actor="alice"
    )
    await store.apply([put("app", "wiki", {"v": 2}, 1)], actor="alice")  # wiki at 2
    revision = await store.revision()
    with pytest.raises(VersionConflict) as refused:
        await store.apply(
            [
                put("partner", "acme", {"v": "fresh"}, 1),  # right
                put("app", "wiki", {"v": "stale"}, 1),  # stale: found 2
                put("app", "new", {"v": "x"}, 0),  # right
                delete("partner", "gone", 3),  # stale: found 0
            ],
            actor="bob",
        )
    assert refused.value.conflicts == [("app", "wiki", 1, 2), ("partner", "gone", 3, 0)]
    assert refused.value.status == 409
    assert await store.revision() == revision
    acme = await store.get("partner", "acme")
    assert acme is not None and (acme.version, acme.spec) == (1, ACME)
    wiki = await store.get("app", "wiki")
    assert wiki is not None and (wiki.version, wiki.spec) == (2, {"v": 2})
    assert await store.get("app", "new") is None
    assert len(await store.history()) == 3


async def test_create_refused_when_it_exists(harness: Harness) -> None:
    store = harness.store
    await store.apply([put("partner", "acme", ACME, 0)], actor="alice")
    with pytest.raises(VersionConflict) as refused:
        await store.apply([put("partner", "acme", {"other": True}, 0)], actor="bob")
    assert refused.value.conflicts == [("partner", "acme", 0, 1)]
    doc = await store.get("partner", "acme")
    assert doc is not None and doc.spec == ACME


async def test_update_of_a_missing_document_refused(harness: Harness) -> None:
    with pytest.raises(VersionConflict) as refused:
        await harness.store.apply([put("partner", "acme", ACME, 1)], actor="bob")
    assert refused.value.conflicts == [("partner", "acme", 1, 0)]
    assert await harness.store.get("partner", "acme") is None


async def test_delete(harness: Harness) -> None:
    store = harness.store
    await store.apply([put("partner", "acme", ACME, 0), put("app", "a", {}, 0)], actor="alice")
    (change,) = await store.apply([delete("partner", "acme", 1)], actor="bob", reason="offboard")
    assert (change.action, change.version, change.before, change.after, change.reason) == (
        "delete", 0, ACME, None, "offboard",
    )  # fmt: skip
    assert await store.get("partner", "acme") is None
    assert [d.key for d in await store.documents()] == [("app", "a")]
    assert await store.documents("partner") == []
    # Created again, it starts over at version 1 (expected 0: it does not exist).
    (again,) = await store.apply([put("partner", "acme", {"back": 1}, 0)], actor="carol")
    assert (again.action, again.version, again.before) == ("create", 1, None)


async def test_no_op_writes_skipped(harness: Harness) -> None:
    store = harness.store
    await store.apply([put("partner", "acme", ACME, 0)], actor="alice")
    revision = await store.revision()
    # Same spec (keys in another order), and deleting what does not exist.
    reordered = dict(reversed(list(ACME.items())))
    changes = await store.apply(
        [
            put("partner", "acme", reordered, 1),
            put("partner", "acme", ACME, None),
            delete("partner", "never", 0),
            delete("partner", "never", None),
        ],
        actor="bob",
    )
    assert changes == []
    assert await store.revision() == revision
    doc = await store.get("partner", "acme")
    assert doc is not None and (doc.version, doc.updated_by) == (1, "alice")
    # One real change among no-ops: only it is recorded.
    changes = await store.apply(
        [put("partner", "acme", ACME, 1), put("app", "wiki", {"x": 1}, 0)], actor="bob"
    )
    assert [(c.kind, c.id) for c in changes] == [("app", "wiki")]


async def test_unchecked_writes(harness: Harness) -> None:
    store = harness.store
    await store.apply([put("partner", "acme", ACME, None)], actor="ci")
    (change,) = await store.apply([put("partner", "acme", {"forced": 1}, None)], actor="ci")
    assert (change.action, change.version) == ("update", 2)
    (gone,) = await store.apply([delete("partner", "acme", None)], actor="ci")
    assert (gone.action, gone.version) == ("delete", 0)


async def test_revision_grows_by_one_per_change(harness: Harness) -> None:
    store = harness.store
    assert await store.revision() == 0
    changes = await store.apply(
        [put("partner", "a", {}, 0), put("partner", "b", {}, 0)], actor="alice"
    )
    assert [c.revision for c in changes] == [1, 2]
    assert await store.revision() == 2
    (change,) = await store.apply([delete("partner", "a", 1)], actor="alice")
    assert change.revision == 3
    assert await store.revision() == 3
    # Another connection sees the same revision.
    assert await harness.other().revision() == 3


async def test_expected_revision(harness: Harness) -> None:
    store = harness.store
    await store.apply([put("partner", "a", {}, 0)], actor="alice")
    await store.apply([put("partner", "b", {}, 0)], actor="alice", expected_revision=1)
    with pytest.raises(RevisionMoved) as moved:
        await store.apply([put("partner", "c", {}, 0)], actor="alice", expected_revision=1)
    assert (moved.value.expected, moved.value.found) == (1, 2)
    assert await store.get("partner", "c") is None
    assert await store.revision() == 2
    # Checked before the versions: a stale batch at a moved revision is RevisionMoved.
    with pytest.raises(RevisionMoved):
        await store.apply([put("partner", "a", {}, 7)], actor="alice", expected_revision=0)


async def test_history_newest_first(harness: Harness) -> None:
    store = harness.store
    await store.apply([put("partner", "acme", {"v": 1}, 0)], actor="alice", reason="one")
    await store.apply([put("app", "wiki", {"w": 1}, 0)], actor="bob", reason="two")
    await store.apply([put("partner", "acme", {"v": 2}, 1)], actor="carol", reason="three")
    await store.apply([delete("partner", "acme", 2)], actor="dave", reason="four")
    await store.apply([put("app", "acme", {"a": 1}, 0)], actor="erin", reason="five")

    every = await store.history()
    assert [c.revision for c in every] == [5, 4, 3, 2, 1]
    assert [c.actor for c in every] == ["erin", "dave", "carol", "bob", "alice"]
    assert [c.reason for c in every] == ["five", "four", "three", "two", "one"]
    assert [c.action for c in every] == ["create", "delete", "update", "create", "create"]
    assert [(c.before, c.after) for c in every[1:3]] == [({"v": 2}, None), ({"v": 1}, {"v": 2})]
    assert all(c.at > 0 for c in every)

    assert [c.revision for c in await store.history(limit=2)] == [5, 4]
    assert [c.revision for c in await store.history(kind="partner")] == [4, 3, 1]
    assert [c.revision for c in await store.history(kind="partner", limit=1)] == [4]
    assert [c.revision for c in await store.history(kind="partner", doc_id="acme")] == [4, 3, 1]
    assert [c.revision for c in await store.history(kind="app", doc_id="acme")] == [5]
    assert [c.revision for c in await store.history(doc_id="acme")] == [5, 4, 3, 1]
    assert [c.revision for c in await store.history(doc_id="acme", limit=2)] == [5, 4]
    assert await store.history(kind="client") == []
    assert await store.history(kind="partner", doc_id="nope") == []
    # Returned changes equal the recorded ones.
    (change,) = await store.apply([put("app", "acme", {"a": 2}, 1)], actor="f")
    assert (await store.history(limit=1)) == [change]


async def test_awkward_names(harness: Harness) -> None:
    store = harness.store
    names = [("partner", "a:b"), ("partner:x", "b"), ("p", "日本 \" ' \n"), ("k", "")]
    await store.apply([put(kind, i, {"k": kind}, 0) for kind, i in names], actor="alice")
    for kind, i in names:
        doc = await store.get(kind, i)
        assert doc is not None and doc.spec == {"k": kind}
        assert [c.id for c in await store.history(kind=kind, doc_id=i)] == [i]
    assert len(await store.documents()) == 4
    assert [d.id for d in await store.documents("partner")] == ["a:b"]


# --- durability ------------------------------------------------------------------------


# An in-memory database ends with its connection: only the durable backends are reopened.
@pytest.mark.parametrize(
    "harness",
    ["sqlite-file", *TOPOLOGY_PARAMS],
    indirect=True,
)
async def test_survives_reopening(harness: Harness) -> None:
    assert harness.reopen is not None
    await harness.store.apply([put("partner", "acme", ACME, 0)], actor="alice", reason="r")
    await harness.store.apply([put("partner", "acme", {"v": 2}, 1)], actor="bob")
    store = await harness.reopen()
    doc = await store.get("partner", "acme")
    assert doc is not None and (doc.version, doc.spec, doc.updated_by) == (2, {"v": 2}, "bob")
    assert await store.revision() == 2
    assert [c.actor for c in await store.history()] == ["bob", "alice"]
    with pytest.raises(VersionConflict):
        await store.apply([put("partner", "acme", {"v": 3}, 1)], actor="carol")


async def test_another_connection_sees_writes(harness: Harness) -> None:
    await harness.store.apply([put("partner", "acme", ACME, 0)], actor="alice")
    other = harness.other()
    doc = await other.get("partner", "acme")
    assert doc is not None and doc.spec == ACME
    await other.apply([put("partner", "acme", {"v": 2}, 1)], actor="bob")
    again = await harness.store.get("partner", "acme")
    assert again is not None and again.version == 2


# --- concurrency -----------------------------------------------------------------------


async def racers(harness: Harness) -> list[DocumentStore]:
    return [harness.other() for _ in range(RACERS)]


async def test_concurrent_updates_exactly_one_wins(harness: Harness) -> None:
    await harness.store.apply([put("partner", "acme", {"v": 0}, 0)], actor="seed")
    stores = await racers(harness)
    results = await asyncio.gather(
        *(
            store.apply([put("partner", "acme", {"v": i + 1}, 1)], actor=f"racer{i}")
            for i, store in enumerate(stores)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, list)]
    lost = [r for r in results if isinstance(r, VersionConflict)]
    assert len(won) == 1 and len(lost) == RACERS - 1, results
    assert all(r.conflicts == [("partner", "acme", 1, 2)] for r in lost)
    doc = await harness.store.get("partner", "acme")
    assert doc is not None and doc.version == 2
    assert doc.spec == won[0][0].after
    assert await harness.store.revision() == 2


async def test_concurrent_creates_exactly_one_wins(harness: Harness) -> None:
    stores = await racers(harness)
    results = await asyncio.gather(
        *(
            store.apply(
                [put("partner", "acme", {"v": i}, 0), put("app", f"a{i}", {}, 0)],
                actor=f"racer{i}",
            )
            for i, store in enumerate(stores)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, list)]
    assert len(won) == 1, results
    assert all(isinstance(r, VersionConflict) for r in results if not isinstance(r, list))
    # The losers wrote nothing, not even their other (non-conflicting) document.
    assert len(await harness.store.documents("app")) == 1
    assert await harness.store.revision() == 2


async def test_concurrent_expected_revision_exactly_one_wins(harness: Harness) -> None:
    stores = await racers(harness)
    results = await asyncio.gather(
        *(
            store.apply([put("partner", f"p{i}", {}, 0)], actor="x", expected_revision=0)
            for i, store in enumerate(stores)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, list) for r in results) == 1, results
    assert sum(isinstance(r, RevisionMoved) for r in results) == RACERS - 1
    assert len(await harness.store.documents()) == 1


# --- Redis only ------------------------------------------------------------------------


@pytest.mark.integration
async def test_redis_down_is_store_unavailable(
    redis_server_factory: Callable[[], Any],
) -> None:
    server = redis_server_factory()
    store = RedisDocumentStore.from_url(server.url, prefix="down:")
    try:
        await store.apply([put("partner", "acme", ACME, 0)], actor="alice")
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.get("partner", "acme")
        with pytest.raises(StoreUnavailable):
            await store.apply([put("partner", "b", {}, 0)], actor="alice")
        with pytest.raises(StoreUnavailable):
            await store.documents()
        server.start()  # no persistence in tests: it comes back empty, and works
        assert await store.revision() == 0
    finally:
        await store.aclose()


@pytest.mark.integration
async def test_redis_keys_under_prefix_without_expiry(redis_url: str) -> None:
    prefix = f"test:registry:{secrets.token_hex(6)}:"
    store = RedisDocumentStore.from_url(redis_url, prefix=prefix)
    try:
        await store.apply([put("partner", "acme", ACME, 0)], actor="alice")
        client = store._redis
        keys = [key async for key in client.scan_iter(match="*")]
        mine = [key for key in keys if key.startswith(prefix)]
        assert mine
        for key in mine:
            assert await client.ttl(key) == -1
    finally:
        await store.aclose()

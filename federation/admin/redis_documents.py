"""The registry's documents in Redis: one store shared by every hub replica.

Same contract as :class:`~federation.admin.documents.SqliteDocumentStore` (the suite in
``tests/admin/test_documents_contract.py`` runs against both). Every key is
``prefix + ...``:

================================  ====================================================
``revision``                      the store-wide revision (a string integer)
``doc:<kind>``                    hash: id → the spec, canonical JSON
``meta:<kind>``                   hash: id → ``{"version":…,"updated_at":…,"updated_by":…}``
``kinds``                         set: the kinds that have documents
``changes``                       hash: revision → the :class:`Change`, JSON
``kindlog:<kind>``                list: the revisions that changed that kind, newest first
``doclog:<["kind","id"] JSON>``   list: the revisions that changed that document
================================  ====================================================

Every change takes exactly one revision, so the whole history newest first is simply
``changes[revision], changes[revision - 1], …``; the two lists index it by kind and by
document. Nothing expires: documents last as long as Redis keeps its data (run it with AOF
or RDB persistence).

:meth:`RedisDocumentStore.apply` is ONE Lua script: it reads the revision and every
written document's version, refuses a moved revision or stale versions (then writes
nothing), and otherwise writes the documents, the changes, the indexes and the new
revision. Redis runs a script alone, so concurrent writers — in other processes, on other
replicas — can never both win a check. The script validates everything before its first
write and declares itself with a shebang, so Redis refuses it up front when out of memory
rather than failing half-way (a script is not rolled back). Specs are opaque strings to
the script (JSON is built by concatenation, never re-encoded by Lua's cjson, which would
round floats and confuse ``{}`` with ``[]``).

Needs Redis 7.0 or later (script shebangs). Under Redis Cluster every key must be in one
hash slot, so that the scripts and transactions may touch them together: the prefix must
carry a hash tag (``{isthmus:registry}:``; the store refuses one without). The registry
is small: one slot holds it easily. Every script declares all the keys it touches.

Errors talking to Redis raise :class:`~federation.errors.StoreUnavailable` (the mapping of
:mod:`federation.stores.redis`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster

from federation.admin.documents import (
    Change,
    Document,
    RevisionMoved,
    Spec,
    VersionConflict,
    Write,
    canonical,
)
from federation.errors import StoreUnavailable
from federation.stores.redis import (
    CONNECT_TIMEOUT,
    HEALTH_CHECK_INTERVAL,
    READ_TIMEOUT,
    Client,
    RedisTopology,
    call,
    close_client,
    connect,
    hash_tag,
    redis_client,
)

DEFAULT_PREFIX = "isthmus:registry:"
_HISTORY_PAGE = 200  # changes read per round trip when history filters by id only
_SNAPSHOT_ATTEMPTS = 10  # documents(): kinds changing between the two reads (rare)

# KEYS: revision, changes, kinds, then per write: doc:<kind>, meta:<kind>, kindlog, doclog.
# ARGV: expected revision ("" = any), number of writes, then per write: kind, id,
#   expected version ("" = any), "1" to put / "0" to delete, the spec (canonical JSON),
#   the change's tail (its other fields, JSON without the opening brace) and the meta's
#   tail (`,"updated_at":…,"updated_by":…}`).
# Returns {"moved", revision} | {"conflict", index, found, index, found, …} |
#   {"ok", change JSON, …}.
_APPLY = """#!lua
local revision = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= revision then
  return {'moved', revision}
end
local n = tonumber(ARGV[2])
local versions, specs = {}, {}
local conflicts = {'conflict'}
for i = 1, n do
  local a, k = 2 + (i - 1) * 7, 3 + (i - 1) * 4
  local id = ARGV[a + 2]
  local meta = redis.call('HGET', KEYS[k + 2], id)
  local version, spec = 0, false
  if meta then
    version = tonumber(string.match(meta, '^{"version":(%d+)'))
    spec = redis.call('HGET', KEYS[k + 1], id)
  end
  versions[i], specs[i] = version, spec
  local expected = ARGV[a + 3]
  if expected ~= '' and tonumber(expected) ~= version then
    table.insert(conflicts, i)
    table.insert(conflicts, version)
  end
end
if #conflicts > 1 then
  return conflicts
end
local changes = {'ok'}
for i = 1, n do
  local a, k = 2 + (i - 1) * 7, 3 + (i - 1) * 4
  local kind, id, put, spec = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4] == '1', ARGV[a + 5]
  local before = specs[i]
  local unchanged
  if before and put then unchanged = before == spec else unchanged = not before and not put end
  if not unchanged then
    revision = revision + 1
    local version, action = 0, 'delete'
    if put then
      version = versions[i] + 1
      if before then action = 'update' else action = 'create' end
      redis.call('HSET', KEYS[k + 1], id, spec)
      redis.call('HSET', KEYS[k + 2], id, '{"version":' .. version .. ARGV[a + 7])
      redis.call('SADD', KEYS[3], kind)
    else
      redis.call('HDEL', KEYS[k + 1], id)
      redis.call('HDEL', KEYS[k + 2], id)
      if redis.call('HLEN', KEYS[k + 2]) == 0 then
        redis.call('SREM', KEYS[3], kind)
      end
    end
    local change = '{"revision":' .. revision .. ',"version":' .. version
      .. ',"action":"' .. action .. '","before":' .. (before or 'null')
      .. ',' .. ARGV[a + 6]
    redis.call('HSET', KEYS[2], revision, change)
    redis.call('LPUSH', KEYS[k + 3], revision)
    redis.call('LPUSH', KEYS[k + 4], revision)
    table.insert(changes, change)
  end
end
redis.call('SET', KEYS[1], revision)
return changes
"""

# Every document at one instant. The kinds' keys are declared, so they were read (SMEMBERS)
# just before: KEYS = revision, kinds, then doc:<kind>, meta:<kind> per kind of ARGV.
# Returns {"retry"} when the kinds changed in between, else
# {"ok", revision, kind, ids+specs flat, metas flat, kind, …}.
_ALL = """
local kinds = redis.call('SMEMBERS', KEYS[2])
if #kinds ~= #ARGV then
  return {'retry'}
end
local declared = {}
for _, kind in ipairs(ARGV) do
  declared[kind] = true
end
for _, kind in ipairs(kinds) do
  if not declared[kind] then
    return {'retry'}
  end
end
local out = {'ok', tonumber(redis.call('GET', KEYS[1]) or '0')}
for i, kind in ipairs(ARGV) do
  table.insert(out, kind)
  table.insert(out, redis.call('HGETALL', KEYS[1 + 2 * i]))
  table.insert(out, redis.call('HGETALL', KEYS[2 + 2 * i]))
end
return out
"""


# One document (its spec and meta, false when absent) or one kind's, at one instant. Scripts,
# not MULTI: redis-py's Cluster client runs each command queued in a transaction through
# a thread and an event loop of its own, and can leave connections bound to that loop.
_GET = """
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1])}
"""
_KIND = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""


class RedisDocumentStore:
    """:class:`~federation.admin.documents.DocumentStore` on Redis; see the module doc."""

    def __init__(self, client: Client, prefix: str = DEFAULT_PREFIX) -> None:
        _check_prefix(isinstance(client, RedisCluster), prefix)
        self._redis = client
        self._prefix = prefix
        self._apply = client.register_script(_APPLY)
        self._all = client.register_script(_ALL)
        self._get = client.register_script(_GET)
        self._kind = client.register_script(_KIND)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = READ_TIMEOUT,
        health_check_interval: int = HEALTH_CHECK_INTERVAL,
    ) -> RedisDocumentStore:
        """A store on ``redis://``, ``rediss://`` or ``unix://`` ``url``; connects lazily.

        Same connection settings as :meth:`federation.stores.redis.RedisStore.from_url`.
        A retried :meth:`apply` whose first attempt did commit cannot write twice: its
        version checks refuse it (or, without checks, its writes are now no-ops).
        """
        return cls(redis_client(url, connect_timeout, timeout, health_check_interval), prefix)

    @classmethod
    def from_topology(
        cls,
        topology: RedisTopology,
        prefix: str = DEFAULT_PREFIX,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = READ_TIMEOUT,
        health_check_interval: int = HEALTH_CHECK_INTERVAL,
    ) -> RedisDocumentStore:
        """A store on any topology (:func:`federation.stores.redis.connect`); under a
        Cluster ``prefix`` must carry a hash tag."""
        _check_prefix(topology.cluster, prefix)
        return cls(connect(topology, connect_timeout, timeout, health_check_interval), prefix)

    @property
    def prefix(self) -> str:
        return self._prefix

    async def get(self, kind: str, doc_id: str) -> Document | None:
        keys = [self._key("doc:", kind), self._key("meta:", kind)]
        spec, meta = await self._call("get", self._get(keys=keys, args=[doc_id]))
        if spec is None or meta is None:
            return None
        return _document(kind, doc_id, spec, meta)

    async def documents(self, kind: str | None = None) -> list[Document]:
        found: list[Document] = []
        if kind is not None:
            keys = [self._key("doc:", kind), self._key("meta:", kind)]
            specs, metas = await self._call("documents", self._kind(keys=keys))
            found = _documents(kind, _pairs(specs), _pairs(metas))
        else:
            for kind_name, specs, metas in await self._snapshot():
                found.extend(_documents(kind_name, specs, metas))
        return sorted(found, key=lambda doc: (doc.kind, doc.id))

    async def _snapshot(self) -> list[tuple[str, dict[str, str], dict[str, str]]]:
        """Every kind's documents and metas at one instant (one script)."""
        for _ in range(_SNAPSHOT_ATTEMPTS):
            kinds = sorted(await self._call("SMEMBERS", self._redis.smembers(self._key("kinds"))))
            keys = [self._key("revision"), self._key("kinds")]
            for kind in kinds:
                keys += [self._key("doc:", kind), self._key("meta:", kind)]
            reply = await self._call("documents", self._all(keys=keys, args=kinds))
            if str(reply[0]) == "retry":
                continue
            return [
                (str(reply[i]), _pairs(reply[i + 1]), _pairs(reply[i + 2]))
                for i in range(2, len(reply), 3)
            ]
        raise StoreUnavailable("redis documents: the kinds kept changing during the read")

    async def apply(
        self,
        writes: Sequence[Write],
        *,
        actor: str,
        reason: str = "",
        expected_revision: int | None = None,
        now: float | None = None,
    ) -> list[Change]:
        now = time.time() if now is None else now
        keys = [self._key("revision"), self._key("changes"), self._key("kinds")]
        args: list[str | int] = [
            "" if expected_revision is None else expected_revision,
            len(writes),
        ]
        meta_tail = "," + canonical({"updated_at": now, "updated_by": actor})[1:]
        for w in writes:
            keys += [
                self._key("doc:", w.kind),
                self._key("meta:", w.kind),
                self._key("kindlog:", w.kind),
                self._key("doclog:", json.dumps([w.kind, w.id])),
            ]
            tail = {
                "kind": w.kind, "id": w.id, "after": w.spec,
                "actor": actor, "at": now, "reason": reason,
            }  # fmt: skip
            args += [
                w.kind,
                w.id,
                "" if w.expected_version is None else w.expected_version,
                "0" if w.spec is None else "1",
                "" if w.spec is None else canonical(w.spec),
                canonical(tail)[1:],
                meta_tail,
            ]
        reply = await self._call("apply", self._apply(keys=keys, args=args))
        status = str(reply[0])
        if status == "moved":
            raise RevisionMoved(cast("int", expected_revision), int(reply[1]))
        if status == "conflict":
            conflicts = []
            for i in range(1, len(reply), 2):
                w = writes[int(reply[i]) - 1]
                conflicts.append((w.kind, w.id, w.expected_version, int(reply[i + 1])))
            raise VersionConflict(conflicts)
        if status != "ok":
            raise StoreUnavailable(f"redis apply script: unexpected reply {status!r}")
        return [Change.from_dict(_json(change)) for change in reply[1:]]

    async def revision(self) -> int:
        revision = await self._call("GET", self._redis.get(self._key("revision")))
        return int(revision or 0)

    async def history(
        self, *, kind: str | None = None, doc_id: str | None = None, limit: int = 100
    ) -> list[Change]:
        if limit <= 0:
            return []
        if kind is not None:
            index = (
                self._key("kindlog:", kind)
                if doc_id is None
                else self._key("doclog:", json.dumps([kind, doc_id]))
            )
            revisions = await self._call("LRANGE", self._redis.lrange(index, 0, limit - 1))
            return await self._changes([int(r) for r in revisions])
        top = await self.revision()
        if doc_id is None:
            return await self._changes(list(range(top, max(0, top - limit), -1)))
        # By id across kinds (rare): walk the whole history down, a page at a time.
        found: list[Change] = []
        while top > 0 and len(found) < limit:
            page = list(range(top, max(0, top - _HISTORY_PAGE), -1))
            found += [change for change in await self._changes(page) if change.id == doc_id]
            top = page[-1] - 1
        return found[:limit]

    async def aclose(self) -> None:
        await close_client(self._redis)

    async def _changes(self, revisions: list[int]) -> list[Change]:
        if not revisions:
            return []
        found = await self._call("HMGET", self._redis.hmget(self._key("changes"), revisions))
        return [Change.from_dict(_json(change)) for change in found if change is not None]

    def _key(self, kind: str, name: str = "") -> str:
        return self._prefix + kind + name

    async def _call(self, what: str, pending: object) -> Any:
        return await call(self._redis, what, pending)


def _check_prefix(cluster: bool, prefix: str) -> None:
    if cluster and hash_tag(prefix) is None:
        raise ValueError(
            f"under Redis Cluster the registry prefix needs a hash tag ({{...}}) so that "
            f"its keys share a slot: {prefix!r}"
        )


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _documents(kind: str, specs: dict[str, str], metas: dict[str, str]) -> list[Document]:
    return [
        _document(kind, doc_id, spec, metas[doc_id])
        for doc_id, spec in specs.items()
        if doc_id in metas
    ]


def _document(kind: str, doc_id: str, spec: str, meta: str) -> Document:
    data = _json(meta)
    body: Spec = _json(spec)
    return Document(
        kind, doc_id, int(data["version"]), body, float(data["updated_at"]),
        str(data["updated_by"]),
    )  # fmt: skip


def _json(encoded: object) -> dict[str, Any]:
    try:
        value = json.loads(cast("str", encoded))
    except (TypeError, ValueError) as exc:
        raise StoreUnavailable(f"redis registry value is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StoreUnavailable(f"redis registry value is not an object: {type(value).__name__}")
    return value

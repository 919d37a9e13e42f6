"""The hub's wiring: one object holding settings, registry, store, keys and connectors.

The web layer reaches it as ``request.app.state.hub``; protocol code receives the parts
it needs as arguments and never sees the web framework.

Partners, clients, apps and policies live in the registry's documents
(:mod:`federation.admin`); :attr:`Hub.catalog` is their compiled snapshot, swapped whole
when they change. ``hub.settings`` and ``hub.registry`` always read the current one.
Until :meth:`Hub.start` the catalog is the settings file's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import CallbackConnector, ClosableConnector
from connectors.registry import ConnectorContext, ConnectorRegistry, default_registry
from federation.admin.auditlogs import BufferedAuditSink
from federation.admin.catalog import Catalog, compile_catalog, documents_of_settings, static_catalog
from federation.admin.documents import DocumentStore, SqliteDocumentStore, VersionConflict, Write
from federation.audit import Audit, AuditLog, MemoryAuditLog
from federation.errors import StoreUnavailable
from federation.keys import KeyManager
from federation.oidc.backchannel import BackchannelSender
from federation.registry import Partner
from federation.sessions import SessionManager
from federation.settings import (
    ClientSettings,
    ConnectionSettings,
    PartnerSettings,
    SentinelSettings,
    Settings,
)
from federation.stores.base import Store
from federation.stores.memory import MemoryStore
from federation.stores.redis import RedisTopology, SentinelTarget

_log = logging.getLogger("isthmus.registry")
_SEED_ATTEMPTS = 5


class LiveRegistry:
    """The :class:`~federation.registry.Registry` of whatever catalog is current: hand
    it to anything that keeps a registry (it never goes stale)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def partner(self, partner_id: str) -> Partner | None:
        return self._hub.catalog.registry.partner(partner_id)

    def partners(self) -> Sequence[Partner]:
        return self._hub.catalog.registry.partners()

    def partner_for_domain(self, domain: str) -> Partner | None:
        return self._hub.catalog.registry.partner_for_domain(domain)

    def connection(self, connection_id: str) -> tuple[Partner, ConnectionSettings] | None:
        return self._hub.catalog.registry.connection(connection_id)

    def client(self, client_id: str) -> ClientSettings | None:
        return self._hub.catalog.registry.client(client_id)


@dataclass
class Hub:
    base_settings: Settings
    store: Store
    keys: KeyManager
    connector_types: ConnectorRegistry
    context: ConnectorContext
    audit: Audit
    documents: DocumentStore
    audit_log: AuditLog
    clock: Callable[[], float] = time.time
    catalog: Catalog = field(init=False)
    registry: LiveRegistry = field(init=False)
    audit_sink: BufferedAuditSink = field(init=False)
    _connectors: dict[str, tuple[Partner, CallbackConnector]] = field(default_factory=dict)
    # What each cached connector was built from: a change rebuilds it.
    _built_from: dict[str, tuple[PartnerSettings, ConnectionSettings]] = field(default_factory=dict)
    # OIDC back-channel logout: told (in the background) whenever sessions end.
    backchannel: BackchannelSender = field(init=False)
    _loaded: bool = False
    _watcher: asyncio.Task[None] | None = None
    _lifecycle: asyncio.Task[None] | None = None
    _retries: asyncio.Task[None] | None = None
    _load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.catalog = static_catalog(self.base_settings)
        self.registry = LiveRegistry(self)
        # Events reach the searchable audit log in batches, off the request path.
        self.audit_sink = BufferedAuditSink(self.audit_log)
        self.audit.sinks.append(self.audit_sink)
        self.backchannel = BackchannelSender(
            self.issuer, self.registry, self.store, self.keys, self.audit, clock=self.clock
        )

    @property
    def settings(self) -> Settings:
        """The settings file with the registry's partners, clients and apps in it."""
        return self.catalog.settings

    @property
    def issuer(self) -> str:
        return self.base_settings.issuer.rstrip("/")

    # ------------------------------------------------------------------ the registry
    async def start(self) -> None:
        """Load the registry (seeding it from the settings file) and follow its changes."""
        await self.ready()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="isthmus-registry-watch")
        if self._retries is None:
            self._retries = asyncio.create_task(
                self.backchannel.run_retries(), name="isthmus-backchannel-retries"
            )
        if self._lifecycle is None and self.base_settings.lifecycle.enabled:
            from federation.admin import lifecycle  # the jobs use the admin service

            self._lifecycle = asyncio.create_task(
                lifecycle.run_forever(self), name="isthmus-lifecycle"
            )

    async def ready(self) -> None:
        """Seed and load the registry once (the watcher is :meth:`start`'s)."""
        async with self._load_lock:
            if not self._loaded:
                await self._seed()
                await self._reload_locked(force=True)
                self._loaded = True

    async def reload(self, *, force: bool = False) -> bool:
        """Take the registry's current documents if they changed; True when swapped."""
        async with self._load_lock:
            return await self._reload_locked(force=force)

    async def _reload_locked(self, *, force: bool) -> bool:
        revision = await self.documents.revision()
        if not force and revision == self.catalog.revision:
            return False
        if self._loaded and revision < self.catalog.revision:
            # Revisions only grow: a smaller one means the registry lost its data (a
            # Redis restarted without persistence). Serving an empty registry would lock
            # every partner out; keep the last good catalog and say so loudly.
            _log.error(
                "registry revision went back from %d to %d: the registry's storage lost "
                "its data; keeping the current catalog. Restore it (backup, or `isthmus "
                "apply -f <export>`) and restart.",
                self.catalog.revision,
                revision,
            )
            return False
        documents = await self.documents.documents()
        self._swap(compile_catalog(self.base_settings, documents, revision, strict=False))
        return True

    def _swap(self, catalog: Catalog) -> None:
        """Make ``catalog`` current; connectors whose partner or connection changed are
        rebuilt on next use (their HTTP pools closed in the background)."""
        self.catalog = catalog
        for connection_id, (_, connector) in list(self._connectors.items()):
            entry = catalog.registry.connection(connection_id)
            built_from = self._built_from.get(connection_id)
            if entry is not None and built_from == (entry[0].settings, entry[1]):
                continue
            del self._connectors[connection_id]
            if isinstance(connector, ClosableConnector):
                _background(connector.aclose())

    async def _seed(self) -> None:
        """Write the settings file's documents the registry does not hold yet.

        Replicas starting together race to seed an empty registry: a document another
        replica wrote first is a conflict here, and the seed starts over with what is
        there now (its copy is the settings file's too).
        """
        seeds = list(documents_of_settings(self.base_settings))
        for _ in range(_SEED_ATTEMPTS):
            present = {d.key: d for d in await self.documents.documents()}
            writes = [Write(k, i, spec, 0) for k, i, spec in seeds if (k, i) not in present]
            if not writes:
                break
            try:
                await self.documents.apply(
                    writes, actor="settings-file", reason="seed", now=self.clock()
                )
                break
            except VersionConflict:
                continue
        for kind, doc_id, spec in seeds:
            found = present.get((kind, doc_id))
            if found is not None and found.spec != spec:
                _log.warning(
                    "%s/%s in the settings file differs from the registry: the registry "
                    "wins (change it with the admin API or `isthmus apply`)",
                    kind,
                    doc_id,
                )

    async def _watch(self) -> None:
        interval = self.base_settings.registry.poll_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except StoreUnavailable as exc:
                _log.warning("registry unreachable, keeping the current catalog: %s", exc)
            except Exception:
                _log.exception("registry could not be loaded, keeping the current catalog")

    @property
    def sessions(self) -> SessionManager:
        return SessionManager(
            self.store,
            self.settings.session.ttl_seconds,
            self.clock,
            on_end=self.backchannel.sessions_ended,
        )

    def connector(self, connection_id: str) -> tuple[Partner, CallbackConnector] | None:
        """The connector of a connection, built once per connection and reused."""
        found = self._connectors.get(connection_id)
        if found is None:
            entry = self.registry.connection(connection_id)
            if entry is None:
                return None
            partner, connection = entry
            found = (
                partner,
                self.connector_types.build(partner.settings, connection, self.context),
            )
            self._connectors[connection_id] = found
            self._built_from[connection_id] = (partner.settings, connection)
        return found

    async def aclose(self) -> None:
        """Release what the hub holds: the registry watcher, back-channel deliveries under
        way and their HTTP pool, connectors' HTTP pools, then the stores."""
        for task in (self._watcher, self._lifecycle, self._retries):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = self._lifecycle = self._retries = None
        await self.backchannel.aclose()
        for _, connector in self._connectors.values():
            if isinstance(connector, ClosableConnector):
                await connector.aclose()
        self._connectors.clear()
        await self.store.aclose()
        await self.documents.aclose()
        await self.audit_sink.aclose()
        await self.audit_log.aclose()

    def callback_url(self, connection_id: str) -> str:
        return f"{self.issuer}/callback/{connection_id}"


class StoreReplayCache:
    """The replay cache lent to connectors: one-time ids in the hub's store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def first_use(self, key: str, ttl: float) -> bool:
        return await self._store.add_once(f"replay:{key}", ttl)


def build_hub(
    settings: Settings,
    *,
    store: Store | None = None,
    context: ConnectorContext | None = None,
    audit: Audit | None = None,
    connector_types: ConnectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
) -> Hub:
    store = store if store is not None else make_store(settings)
    if context is None:
        # The hub's wall clock is its connectors' too (validity windows, token expiry).
        context = ConnectorContext(hub_base_url=settings.issuer.rstrip("/"), wall_clock=clock)
    if context.replay is None:
        context = dataclasses.replace(context, replay=StoreReplayCache(store))
    return Hub(
        base_settings=settings,
        store=store,
        keys=KeyManager(settings.keys.path, settings.keys.algorithm),
        connector_types=connector_types or default_registry(),
        context=context,
        audit=audit or Audit(),
        documents=make_documents(settings),
        audit_log=make_audit_log(settings),
        clock=clock,
    )


def make_documents(settings: Settings) -> DocumentStore:
    registry = settings.registry
    if registry.backend == "sqlite":
        assert registry.path is not None
        return SqliteDocumentStore(str(registry.path))
    if registry.backend == "redis":
        from federation.admin.redis_documents import RedisDocumentStore

        topology = _registry_topology(settings)
        prefix = f"{settings.store.prefix}registry:"
        if topology.cluster:
            # One hash slot for the whole registry: its scripts touch many of its keys.
            prefix = f"{{{settings.store.prefix}registry}}:"
        return RedisDocumentStore.from_topology(topology, prefix=prefix)
    return SqliteDocumentStore(":memory:")


def make_audit_log(settings: Settings) -> AuditLog:
    registry = settings.registry
    if registry.backend == "sqlite":
        from federation.admin.auditlogs import SqliteAuditLog

        assert registry.path is not None
        return SqliteAuditLog(str(registry.path), max_events=registry.audit_max_events)
    if registry.backend == "redis":
        from federation.admin.auditlogs import RedisAuditLog

        return RedisAuditLog.from_topology(
            _registry_topology(settings),
            prefix=f"{settings.store.prefix}audit:",
            max_events=registry.audit_max_events,
        )
    return MemoryAuditLog(registry.audit_max_events)


_tasks: set[asyncio.Task[None]] = set()


def _background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def make_store(settings: Settings) -> Store:
    if settings.store.backend == "redis":
        from federation.stores.redis import RedisStore

        return RedisStore.from_topology(_store_topology(settings), prefix=settings.store.prefix)
    return MemoryStore()


def _store_topology(settings: Settings) -> RedisTopology:
    """The store's Redis: one server, a Sentinel master or a Cluster (validated settings)."""
    store = settings.store
    return RedisTopology(
        url=store.url,
        sentinel=_sentinel_target(store.sentinel),
        cluster=store.cluster,
        cluster_nodes=store.cluster_addresses(),
    )


def _registry_topology(settings: Settings) -> RedisTopology:
    """The registry's and the audit stream's Redis: the store's unless it names its own."""
    registry = settings.registry
    if not registry.own_redis:
        return _store_topology(settings)
    return RedisTopology(
        url=registry.url,
        sentinel=_sentinel_target(registry.sentinel),
        cluster=registry.cluster,
        cluster_nodes=registry.cluster_addresses(),
    )


def _sentinel_target(sentinel: SentinelSettings | None) -> SentinelTarget | None:
    if sentinel is None:
        return None
    return SentinelTarget(
        hosts=sentinel.addresses(),
        master_name=sentinel.master_name,
        username=sentinel.username,
        password=sentinel.password,
        sentinel_password=sentinel.sentinel_password,
        db=sentinel.db,
    )

"""The hub's wiring: one object holding settings, registry, store, keys and connectors.

The web layer reaches it as ``request.app.state.hub``; protocol code receives the parts
it needs as arguments and never sees the web framework.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from connectors.base import CallbackConnector, ClosableConnector
from connectors.registry import ConnectorContext, ConnectorRegistry, default_registry
from federation.audit import Audit
from federation.keys import KeyManager
from federation.oidc.backchannel import BackchannelSender
from federation.registry import Partner, Registry, StaticRegistry
from federation.sessions import SessionManager
from federation.settings import Settings
from federation.stores.base import Store
from federation.stores.memory import MemoryStore


@dataclass
class Hub:
    settings: Settings
    registry: Registry
    store: Store
    keys: KeyManager
    connector_types: ConnectorRegistry
    context: ConnectorContext
    audit: Audit
    clock: Callable[[], float] = time.time
    _connectors: dict[str, tuple[Partner, CallbackConnector]] = field(default_factory=dict)
    # OIDC back-channel logout: told (in the background) whenever sessions end.
    backchannel: BackchannelSender = field(init=False)

    def __post_init__(self) -> None:
        self.backchannel = BackchannelSender(
            self.issuer, self.registry, self.store, self.keys, self.audit, clock=self.clock
        )

    @property
    def issuer(self) -> str:
        return self.settings.issuer.rstrip("/")

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
        return found

    async def aclose(self) -> None:
        """Release what the hub holds: back-channel deliveries under way and their HTTP
        pool, connectors' HTTP pools, then the store."""
        await self.backchannel.aclose()
        for _, connector in self._connectors.values():
            if isinstance(connector, ClosableConnector):
                await connector.aclose()
        self._connectors.clear()
        await self.store.aclose()

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
        settings=settings,
        registry=StaticRegistry.from_settings(settings),
        store=store,
        keys=KeyManager(settings.keys.path, settings.keys.algorithm),
        connector_types=connector_types or default_registry(),
        context=context,
        audit=audit or Audit(),
        clock=clock,
    )


def make_store(settings: Settings) -> Store:
    if settings.store.backend == "redis":
        from federation.stores.redis import RedisStore

        assert settings.store.url is not None
        return RedisStore.from_url(settings.store.url, prefix=settings.store.prefix)
    return MemoryStore()

"""The explicit registry: connection ``type`` → factory building a connector from settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from connectors.base import CallbackConnector
from federation.settings import ConnectionSettings, PartnerSettings


@dataclass(frozen=True)
class ConnectorContext:
    """What the hub lends connectors: an HTTP client factory (tests inject a transport)."""

    http_client: Callable[[], httpx.AsyncClient] = field(default=lambda: httpx.AsyncClient())
    hub_base_url: str = ""


ConnectorFactory = Callable[[PartnerSettings, ConnectionSettings, ConnectorContext], CallbackConnector]


class UnknownConnectorType(LookupError):
    pass


class ConnectorRegistry:
    def __init__(self, factories: Mapping[str, ConnectorFactory]) -> None:
        self._factories = dict(factories)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._factories)

    def build(
        self, partner: PartnerSettings, connection: ConnectionSettings, context: ConnectorContext
    ) -> CallbackConnector:
        try:
            factory = self._factories[connection.type]
        except KeyError:
            raise UnknownConnectorType(connection.type) from None
        return factory(partner, connection, context)


def default_registry() -> ConnectorRegistry:
    from connectors.mock import MockConnector
    from connectors.oidc import OidcConnector

    return ConnectorRegistry({"oidc": OidcConnector.from_settings, "mock": MockConnector.from_settings})

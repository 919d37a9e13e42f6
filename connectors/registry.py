"""The explicit registry: connection ``type`` → factory building a connector from settings."""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from connectors.base import CallbackConnector, ReplayCache
from federation.settings import ConnectionSettings, PartnerSettings


@dataclass(frozen=True)
class ConnectorContext:
    """What the hub lends connectors: its base URL, HTTP plumbing and two clocks.

    ``transport`` routes every upstream request through one transport, ``mounts`` routes
    by origin (``{"https://idp.acme.test": transport}``); tests mount in-process ASGI apps
    with either (``httpx.ASGITransport``). ``clock`` is monotonic seconds, for caches and
    rate limits (never compare it with a time from a message). ``wall_clock`` is POSIX
    seconds (``time.time``), for validity windows in upstream messages: SAML NotBefore /
    NotOnOrAfter, token expiry (``exp``, ``iat``); tests inject either to move time.
    """

    hub_base_url: str = ""
    # One-time ids (SAML assertion ids) against replay, kept in the hub's store.
    replay: ReplayCache | None = None
    transport: httpx.AsyncBaseTransport | None = None
    mounts: Mapping[str, httpx.AsyncBaseTransport] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time

    def http_options(self, timeout: float = 10.0) -> dict[str, Any]:
        """Keyword arguments for an ``httpx.AsyncClient`` (or a subclass such as authlib's)."""
        options: dict[str, Any] = {"timeout": timeout, "follow_redirects": False}
        if self.transport is not None:
            options["transport"] = self.transport
        else:
            options["verify"] = _shared_ssl_context()  # built once: it costs milliseconds
        if self.mounts:
            options["mounts"] = {pattern: t for pattern, t in self.mounts.items()}
        return options

    def http_client(self, timeout: float = 10.0) -> httpx.AsyncClient:
        """A new client; use it as ``async with`` so its connections are closed."""
        return httpx.AsyncClient(**self.http_options(timeout))


@functools.cache
def _shared_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


ConnectorFactory = Callable[
    [PartnerSettings, ConnectionSettings, ConnectorContext], CallbackConnector
]


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
    from connectors.keycloak import KeycloakConnector
    from connectors.mock import MockConnector
    from connectors.oidc import OidcConnector
    from connectors.otp import OtpConnector
    from connectors.saml import SamlConnector

    # MockConnector is a frozen dataclass: its read-only ``id`` does not match the protocol's
    # settable attribute for mypy, although it honours the capability at run time.
    mock = cast(ConnectorFactory, MockConnector.from_settings)
    otp = cast(ConnectorFactory, OtpConnector.from_settings)
    return ConnectorRegistry(
        {
            "oidc": OidcConnector.from_settings,
            "saml": SamlConnector.from_settings,
            "keycloak": KeycloakConnector.from_settings,
            "mock": mock,
            "otp": otp,
        }
    )

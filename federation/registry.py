"""The registry: partners, their connections and the hub's OIDC clients.

A small read interface (:class:`Registry`) that the broker and the provider use. Today it
is loaded from the settings file (:class:`StaticRegistry`); the admin API will write
through an implementation of the same interface.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from federation.settings import (
    ClientSettings,
    ConnectionSettings,
    PartnerSettings,
    PartnerStatus,
    Settings,
)


@dataclass(frozen=True, slots=True)
class Partner:
    settings: PartnerSettings

    @property
    def id(self) -> str:
        return self.settings.id

    def owns_domain(self, domain: str) -> bool:
        return domain.lower() in self.settings.domains

    def may_sign_in(self, when: datetime) -> bool:
        """Active and inside its contract window."""
        return self.settings.status is PartnerStatus.active and self.settings.contract.contains(
            when
        )


class Registry(Protocol):
    def partner(self, partner_id: str) -> Partner | None: ...

    def partners(self) -> Sequence[Partner]: ...

    def partner_for_domain(self, domain: str) -> Partner | None: ...

    def connection(self, connection_id: str) -> tuple[Partner, ConnectionSettings] | None: ...

    def client(self, client_id: str) -> ClientSettings | None: ...


class StaticRegistry:
    """Immutable registry built once from settings; lookups are dict hits."""

    def __init__(
        self, partners: Iterable[PartnerSettings], clients: Iterable[ClientSettings]
    ) -> None:
        self._partners = {p.id: Partner(p) for p in partners}
        self._domains = {d: p for p in self._partners.values() for d in p.settings.domains}
        self._connections = {
            c.id: (p, c) for p in self._partners.values() for c in p.settings.connections
        }
        self._clients = {c.client_id: c for c in clients}

    @classmethod
    def from_settings(cls, settings: Settings) -> StaticRegistry:
        return cls(settings.partners, settings.clients)

    def partner(self, partner_id: str) -> Partner | None:
        return self._partners.get(partner_id)

    def partners(self) -> Sequence[Partner]:
        return tuple(self._partners.values())

    def partner_for_domain(self, domain: str) -> Partner | None:
        return self._domains.get(domain.lower().rstrip("."))

    def connection(self, connection_id: str) -> tuple[Partner, ConnectionSettings] | None:
        return self._connections.get(connection_id)

    def client(self, client_id: str) -> ClientSettings | None:
        return self._clients.get(client_id)

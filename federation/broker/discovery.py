"""Home-realm discovery: email or domain hint → verified domain → partner → connections."""

from __future__ import annotations

from dataclasses import dataclass

from connectors.base import CallbackConnector
from federation.registry import Partner, Registry


@dataclass(frozen=True, slots=True)
class Realm:
    """The outcome: no partner, or a partner with one (go) or several (choose) connections."""

    domain: str
    partner: Partner | None
    connection_ids: tuple[str, ...] = ()

    @property
    def unknown(self) -> bool:
        return self.partner is None or not self.connection_ids

    @property
    def ambiguous(self) -> bool:
        return len(self.connection_ids) > 1


def domain_of(email_or_domain: str) -> str | None:
    value = email_or_domain.strip().lower().rstrip(".")
    if "@" in value:
        local, _, value = value.rpartition("@")
        if not local:
            return None
    if not value or "." not in value or len(value) > 253:
        return None
    if not all(
        part and (part.replace("-", "").isalnum()) and part.isascii() for part in value.split(".")
    ):
        return None
    return value


def discover(registry: Registry, email_or_domain: str) -> Realm | None:
    """None when the input is not an email or domain at all."""
    domain = domain_of(email_or_domain)
    if domain is None:
        return None
    partner = registry.partner_for_domain(domain)
    if partner is None:
        return Realm(domain, None)
    return Realm(domain, partner, tuple(c.id for c in partner.settings.connections))


def connection_label(
    partner: Partner, connection_id: str, connector: CallbackConnector | None
) -> str:
    for connection in partner.settings.connections:
        if connection.id == connection_id and connection.display_name:
            return connection.display_name
    return f"{partner.settings.name} ({connection_id})"

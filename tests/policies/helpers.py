"""Small YAML policies in, decisions out: the shape every criterion test takes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import policies
from federation.identity import FederatedIdentity
from federation.settings import PartnerSettings

MONDAY_10_UTC = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)


def policy(text: str, **kwargs: Any) -> policies.Policy:
    kwargs.setdefault("name", "orders")
    return policies.load_policy(text, **kwargs)


def subject(
    *,
    partner: str = "acme",
    kind: str = "supplier",
    status: str = "active",
    contract: dict[str, Any] | None = None,
    grants: tuple[policies.Grant, ...] = (),
    **identity: Any,
) -> policies.Subject:
    fields: dict[str, Any] = {
        "partner_id": partner,
        "connection_id": f"{partner}-oidc",
        "issuer": f"https://idp.{partner}.example",
        "subject": "u1",
        "email": f"alice@{partner}.example",
        "email_verified": True,
    }
    fields.update(identity)
    settings = PartnerSettings(
        id=partner, name=partner.title(), kind=kind, status=status, contract=contract or {}
    )
    return policies.Subject(FederatedIdentity(**fields), settings, grants)


def request(
    path: str = "/",
    method: str = "GET",
    *,
    ip: str | None = "203.0.113.7",
    at: datetime = MONDAY_10_UTC,
    host: str = "orders.example",
) -> policies.AccessRequest:
    return policies.AccessRequest(method, path, host, ip, at)


def decide(text: str, who: policies.Subject | None = None, **req: Any) -> policies.Decision:
    return policy(text).decide(who or subject(), request(**req))


def allows(text: str, who: policies.Subject | None = None, **req: Any) -> bool:
    return decide(text, who, **req).allowed


def allow_when(when: str) -> str:
    """A one-rule policy allowing what ``when`` (a YAML flow mapping) matches."""
    return f"rules:\n  - name: r\n    effect: allow\n    when: {when}\n"

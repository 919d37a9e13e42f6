"""The one neutral identity in the middle of the hub.

Connectors produce a :class:`FederatedIdentity`; the broker binds it to a partner;
sessions, token issuers and policies only read it. It is keyed on
``(partner_id, connection_id, issuer, subject)`` — never on email (security invariant 1).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class FederatedIdentity:
    partner_id: str
    connection_id: str
    issuer: str
    subject: str
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    acr: str | None = None
    amr: tuple[str, ...] = ()
    auth_time: int | None = None
    # What the IdP said, untouched; never used for decisions, kept for audit and mapping.
    raw_claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.partner_id, self.connection_id, self.issuer, self.subject)

    @property
    def hub_subject(self) -> str:
        """The ``sub`` the hub issues: stable, opaque, derived from the key, never the email."""
        material = "\x1f".join(self.key).encode()
        return base64.b32encode(hashlib.sha256(material).digest()).decode().rstrip("=").lower()[:32]

    @property
    def email_domain(self) -> str | None:
        if not self.email or "@" not in self.email:
            return None
        return self.email.rsplit("@", 1)[1].lower()

    def without_email(self) -> FederatedIdentity:
        return replace(self, email=None, email_verified=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["raw_claims"] = dict(self.raw_claims)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FederatedIdentity:
        return cls(
            partner_id=str(data["partner_id"]),
            connection_id=str(data["connection_id"]),
            issuer=str(data["issuer"]),
            subject=str(data["subject"]),
            email=data.get("email"),
            email_verified=bool(data.get("email_verified", False)),
            name=data.get("name"),
            groups=tuple(data.get("groups") or ()),
            roles=tuple(data.get("roles") or ()),
            acr=data.get("acr"),
            amr=tuple(data.get("amr") or ()),
            auth_time=data.get("auth_time"),
            raw_claims=dict(data.get("raw_claims") or {}),
        )

"""Self-service sign-up (issue 9): the registry's ``signup`` documents.

A person from a company the hub does not know asks for access on ``/signup`` and names an
internal sponsor; once they prove their address (a link mailed to it) the request is a
``signup`` document, ``pending``. The named sponsor — and only them — approves or refuses
it in the console. Approval extends the partner that owns the address's domain, or
creates a partner whose domain stays *pending* until its DNS proof passes; a grant for
the requested apps is made then, and nothing before. The flow and its rules:
:mod:`federation.admin.signup_service`; docs/signup.md.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class SignupStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    refused = "refused"
    expired = "expired"


class SignupSpec(BaseModel):
    """One request, id ``s-`` and a random suffix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    company: str = Field(min_length=1, max_length=200)
    sponsor: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    apps: tuple[str, ...] = Field(min_length=1)
    message: str = Field(default="", max_length=1000)
    status: SignupStatus = SignupStatus.pending
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_note: str = Field(default="", max_length=1000)
    # Set on approval: the partner extended or created, and the grant made.
    partner_id: str | None = None
    grant_id: str | None = None
    # True when the approval created ``partner_id`` (its domain waits for a DNS proof).
    partner_created: bool = False
    # The SHA-256 of the requester's link to the domain step (the link itself is mailed,
    # never stored; masked in the history and the audit trail like every secret's hash).
    secret_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # When the requester's domain passed its DNS proof (the partner became active).
    verified_at: datetime | None = None

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()

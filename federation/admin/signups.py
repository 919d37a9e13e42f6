"""Self-service sign-up (issue 9): the registry's ``signup`` documents.

A person from a company the hub does not know asks for access on ``/signup`` and names an
internal sponsor; once they prove their address (a link mailed to it) the request is a
``signup`` document, ``pending``. The named sponsor — and only them — approves or refuses
it in the console. Approval extends the partner that owns the address's domain, or
creates a partner whose domain stays *pending* until its DNS proof passes; a grant for
the requested apps is made then, and nothing before.
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

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()

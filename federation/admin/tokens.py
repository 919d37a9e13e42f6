"""Scoped API tokens for automation: ``isth_<id>_<secret>``, stored as a hash.

The public id names the token's document (``api_token/<id>``); the secret part is shown
once, at creation, and only its SHA-256 is kept. A token carries one role, and a partner
admin's token its partner: it can do exactly what a person with that role could.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

PREFIX = "isth_"
_TOKEN = re.compile(r"^isth_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


class Role(StrEnum):
    admin = "admin"  # everything
    auditor = "auditor"  # read every document and the audit trail; change nothing
    partner_admin = "partner_admin"  # one partner: its connections, domains, sessions
    # An internal person (a hub session only, never a token): the sign-up requests that
    # name them, and the grants and access reviews of the partners they sponsor.
    sponsor = "sponsor"


class ApiTokenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    role: Role
    partner_id: str | None = None
    secret_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime
    expires_at: datetime | None = None
    created_by: str = ""

    @model_validator(mode="after")
    def _partner_for_partner_admins(self) -> ApiTokenSpec:
        if self.role is Role.sponsor:
            raise ValueError("sponsors act as themselves, in a hub session: no API token")
        if (self.role is Role.partner_admin) != (self.partner_id is not None):
            raise ValueError("partner_id is required for role partner_admin, and only for it")
        return self


def new_token() -> tuple[str, str, str]:
    """(public id, the whole token to hand out once, the hash to store)."""
    token_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    return token_id, f"{PREFIX}{token_id}_{secret}", _hash(secret)


def parse(token: str) -> tuple[str, str] | None:
    """(public id, secret) of a well-formed token, else None."""
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(spec: ApiTokenSpec, secret: str) -> bool:
    return hmac.compare_digest(spec.secret_sha256, _hash(secret))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

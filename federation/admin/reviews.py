"""Access reviews (issue 9): the registry's ``review`` and ``lapse`` documents.

Every ``review.every_days`` of a partner (PartnerSettings.review) the lifecycle opens a
``review`` document listing who from that partner used which app since the last one; its
sponsors confirm lines in the console. When the window closes, every line nobody
confirmed lapses: the person's grants for that app end and a ``lapse`` document keeps
them out of it — whatever the policy says — until a sponsor or an admin restores it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from federation.identity import FederatedIdentity


class LineDecision(StrEnum):
    pending = "pending"
    confirmed = "confirmed"
    lapsed = "lapsed"


class ReviewLine(BaseModel):
    """One person's use of one app during the period (a person: connection + subject)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connection_id: str
    subject: str
    email: str | None = None
    name: str | None = None
    app: str
    uses: int = Field(ge=0)
    last_used: datetime | None = None
    decision: LineDecision = LineDecision.pending
    decided_by: str | None = None
    decided_at: datetime | None = None


class ReviewSpec(BaseModel):
    """One review of one partner, id ``r-<partner>-<YYYYMMDD>`` (the day it opened)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partner_id: str
    opened_at: datetime
    closes_at: datetime
    period_from: datetime
    period_until: datetime
    sponsors: tuple[str, ...] = ()
    closed_at: datetime | None = None
    lines: tuple[ReviewLine, ...] = ()


class LapseSpec(BaseModel):
    """A person kept out of some apps of a partner after a review nobody confirmed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partner_id: str
    connection_id: str
    subject: str
    email: str | None = None
    apps: tuple[str, ...] = Field(min_length=1)
    since: datetime
    review_id: str


@dataclass(frozen=True, slots=True)
class LapseIndex:
    """Lapses by (partner, connection, subject): a decision looks up one dict."""

    by_subject: Mapping[tuple[str, str, str], tuple[LapseSpec, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, lapses: Iterable[LapseSpec]) -> LapseIndex:
        found: dict[tuple[str, str, str], list[LapseSpec]] = {}
        for lapse in lapses:
            key = (lapse.partner_id, lapse.connection_id, lapse.subject)
            found.setdefault(key, []).append(lapse)
        return cls({k: tuple(v) for k, v in found.items()})

    def lapse_for(self, identity: FederatedIdentity, app_id: str) -> LapseSpec | None:
        """The lapse keeping ``identity`` out of ``app_id``, if any."""
        if not self.by_subject:
            return None  # no lapses at all: the common case costs nothing
        key = (identity.partner_id, identity.connection_id, identity.subject)
        for lapse in self.by_subject.get(key, ()):
            if app_id in lapse.apps:
                return lapse
        return None

"""Access reviews (issue 9): the registry's ``review`` and ``lapse`` documents.

Every ``review.every_days`` of a partner (PartnerSettings.review) the lifecycle opens a
``review`` document listing who from that partner used which app since the last one (and
who holds a personal grant for an app, used or not); its sponsors confirm lines in the
console. When the window closes, every line nobody confirmed lapses: the person's grants
for that app end and a ``lapse`` document keeps them out of it — whatever the policy
says — until a sponsor or an admin restores it. The jobs and the writes are in
:mod:`federation.admin.review_service`; docs/reviews.md tells the whole story.

A person is ``connection_id`` + ``subject`` (invariant 1: never the email alone), except
for a line that comes only from a personal grant made out to an email address nobody has
signed in with yet: that line, and the lapse it may become, name the email. A lapse that
names an email besides the subject also refuses that verified email on the partner's
other connections: a lapse only takes access away, so matching more is the safe side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from federation.identity import FederatedIdentity
from policies.model import Reason

LAPSED = "access_lapsed"  # the reason code of a refusal caused by a lapse


class LineDecision(StrEnum):
    pending = "pending"
    confirmed = "confirmed"
    lapsed = "lapsed"


def _one_person(connection_id: str | None, subject: str | None, email: str | None) -> None:
    if (connection_id is None) != (subject is None):
        raise ValueError("give connection_id and subject together")
    if subject is None and email is None:
        raise ValueError("name the person: connection_id + subject, or an email")


class ReviewLine(BaseModel):
    """One person's use of one app during the period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connection_id: str | None = None
    subject: str | None = None
    email: str | None = None
    name: str | None = None
    app: str
    uses: int = Field(default=0, ge=0)
    last_used: datetime | None = None
    # The end of the person's personal grant(s) for this app, when they hold one.
    grant_until: datetime | None = None
    decision: LineDecision = LineDecision.pending
    decided_by: str | None = None
    decided_at: datetime | None = None

    @model_validator(mode="after")
    def _person(self) -> ReviewLine:
        _one_person(self.connection_id, self.subject, self.email)
        return self

    @property
    def who(self) -> str:
        return self.email or f"{self.subject} ({self.connection_id})"


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

    def is_open(self, now: datetime) -> bool:
        """Lines may still be confirmed (the window has not ended)."""
        return self.closed_at is None and now < self.closes_at

    def count(self, decision: LineDecision) -> int:
        return sum(1 for line in self.lines if line.decision is decision)


class LapseSpec(BaseModel):
    """A person kept out of some apps of a partner after a review nobody confirmed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partner_id: str
    connection_id: str | None = None
    subject: str | None = None
    email: str | None = None
    apps: tuple[str, ...] = Field(min_length=1)
    since: datetime
    review_id: str
    # When that review opened: the date the refused user is told.
    reviewed_at: datetime | None = None

    @model_validator(mode="after")
    def _person(self) -> LapseSpec:
        _one_person(self.connection_id, self.subject, self.email)
        return self


def lapse_id(
    partner_id: str, connection_id: str | None, subject: str | None, email: str | None
) -> str:
    """``l-`` and a digest of the person: one lapse document per person of a partner."""
    person = f"{connection_id}/{subject}" if subject is not None else f"email/{email or ''}"
    digest = hashlib.sha256(f"{partner_id}/{person}".encode()).hexdigest()[:20]
    return f"l-{digest}"


def line_lapse_id(partner_id: str, line: ReviewLine) -> str:
    email = line.email.lower() if line.email else None
    return lapse_id(partner_id, line.connection_id, line.subject, email)


def lapse_reason(lapse: LapseSpec, app_id: str) -> Reason:
    """The explained refusal of a lapsed person (shown to them: ``public``)."""
    reviewed = (lapse.reviewed_at or lapse.since).date().isoformat()
    message = (
        f"your access to {app_id} lapsed on {lapse.since.date().isoformat()}: nobody "
        f"confirmed it in the access review of {reviewed}; ask your sponsor to restore it"
    )
    return Reason(LAPSED, message, None, True)


@dataclass(frozen=True, slots=True)
class LapseIndex:
    """Lapses by (partner, connection, subject) and by (partner, email): a decision looks
    up one or two dicts, and none at all when nothing has lapsed."""

    by_subject: Mapping[tuple[str, str, str], tuple[LapseSpec, ...]] = field(default_factory=dict)
    by_email: Mapping[tuple[str, str], tuple[LapseSpec, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, lapses: Iterable[LapseSpec]) -> LapseIndex:
        by_subject: dict[tuple[str, str, str], list[LapseSpec]] = {}
        by_email: dict[tuple[str, str], list[LapseSpec]] = {}
        for lapse in lapses:
            if lapse.connection_id is not None and lapse.subject is not None:
                key = (lapse.partner_id, lapse.connection_id, lapse.subject)
                by_subject.setdefault(key, []).append(lapse)
            # A lapse naming an email also keeps out whoever signs in to the same partner
            # with that verified email through *another* connection (the partner's IdP and
            # its one-time codes, say): else switching connection lifted the lapse.
            if lapse.email is not None:
                by_email.setdefault((lapse.partner_id, lapse.email.lower()), []).append(lapse)
        return cls(
            {k: tuple(v) for k, v in by_subject.items()},
            {k: tuple(v) for k, v in by_email.items()},
        )

    def lapse_for(self, identity: FederatedIdentity, app_id: str) -> LapseSpec | None:
        """The lapse keeping ``identity`` out of ``app_id``, if any: one naming its
        connection and subject, or one naming its email when its IdP verified that email
        (refusing on an email is the safe direction: it never grants anything)."""
        if not (self.by_subject or self.by_email):
            return None  # no lapses at all: the common case costs nothing
        key = (identity.partner_id, identity.connection_id, identity.subject)
        found = self.by_subject.get(key, ())
        if self.by_email and identity.email and identity.email_verified:
            found += self.by_email.get((identity.partner_id, identity.email.lower()), ())
        for lapse in found:
            if app_id in lapse.apps:
                return lapse
        return None

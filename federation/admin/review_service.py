"""Access reviews: opened when due, confirmed by sponsors, closed with lapses.

See :mod:`federation.admin.reviews` for the documents and docs/reviews.md for the flow.

:func:`run_reviews` is a lifecycle job (:mod:`federation.admin.lifecycle`): it closes the
reviews whose window has ended, then opens the reviews that are due. A partner's first
review is due ``every_days`` after the partner was first written to the registry (at once
when that is longer ago); each next one ``every_days`` after the previous one opened. A
review covers the time since the previous one's period ended (the first: since the
partner was created). The id of a review is ``r-<partner>-<YYYYMMDD>`` and it is created
with version 0, so two replicas running the job at once open it once: the other one's
write is a version conflict, skipped.

:func:`confirm` and :func:`restore` are for the partner's sponsors and for admins;
auditors and sponsors read the reviews of their partners (:func:`reviews`,
:func:`review`), partner admins none. Everything is audited: ``review.opened``,
``review.confirmed`` (one per line), ``review.closed``, ``access.lapsed`` (one per line),
``access.restored``; and the documents' own ``admin.change`` events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from federation.admin.catalog import GrantSpec
from federation.admin.documents import Document, Spec, VersionConflict, Write
from federation.admin.reviews import (
    LapseSpec,
    LineDecision,
    ReviewLine,
    ReviewSpec,
    line_lapse_id,
)
from federation.admin.service import Actor, AdminService, DocumentNotFound, Forbidden
from federation.admin.tokens import Role
from federation.audit import AuditQuery
from federation.errors import InvalidRequest, IsthmusError, UpstreamError
from federation.mail import Mailer, SmtpMailer
from federation.registry import Partner
from federation.settings import PartnerStatus

if TYPE_CHECKING:
    from federation.hub import Hub

LIFECYCLE = Actor("lifecycle", Role.admin)
# Uses counted per review: events past this many (per event kind) are not read.
MAX_EVENTS = 100_000
# The audit events that are a person's use of an app (each carries partner, connection,
# subject, email and app): a proxied or forward-auth request let through, and an
# authorization code issued to an OIDC client.
USE_EVENTS = ("proxy.decision", "oidc.code_issued")
_ATTEMPTS = 5
_log = logging.getLogger("isthmus.reviews")


class ReviewClosed(IsthmusError):
    error = "review_closed"
    status = 409
    public_message = "This review's window has ended: its lines can no longer be confirmed."


def _now(hub: Hub) -> datetime:
    return datetime.fromtimestamp(hub.clock(), UTC)


def _dump(model: ReviewSpec | LapseSpec | GrantSpec) -> Spec:
    return model.model_dump(mode="json", exclude_none=True)


async def _commit(service: AdminService, actor: Actor, writes: list[Write], reason: str) -> None:
    # The service's one write path (checked, versioned, in the history, audited); the
    # authorization is this module's own, since sponsors hold no document rights.
    await service._commit(actor, writes, reason)


# ---------------------------------------------------------------------- who may do what


def may_read(actor: Actor, partner: Partner | None) -> bool:
    if actor.role in (Role.admin, Role.auditor):
        return True
    return actor.role is Role.sponsor and partner is not None and actor.sponsors(partner.settings)


def may_decide(actor: Actor, partner: Partner | None) -> bool:
    """Admins, and the partner's sponsors (an internal person named in ``sponsors``).
    An auditor stays read-only even when named among a partner's sponsors, as for grants
    and sign-up requests."""
    if actor.role is Role.admin:
        return True
    return actor.role is Role.sponsor and partner is not None and actor.sponsors(partner.settings)


def _require_decide(hub: Hub, actor: Actor, partner_id: str) -> None:
    if not may_decide(actor, hub.registry.partner(partner_id)):
        raise Forbidden(f"{actor.name} ({actor.role.value}) does not sponsor {partner_id}")


# ---------------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True)
class Review:
    id: str
    version: int
    spec: ReviewSpec


async def reviews(service: AdminService, actor: Actor) -> list[Review]:
    """The reviews ``actor`` may read, newest first."""
    hub = service.hub
    await hub.ready()
    if actor.role is Role.partner_admin:
        raise Forbidden(f"{actor.name} may not read access reviews")
    found = [
        Review(d.id, d.version, ReviewSpec.model_validate(d.spec))
        for d in await hub.documents.documents("review")
    ]
    mine = [r for r in found if may_read(actor, hub.registry.partner(r.spec.partner_id))]
    return sorted(mine, key=lambda r: (r.spec.opened_at, r.id), reverse=True)


async def review(service: AdminService, actor: Actor, review_id: str) -> Review:
    hub = service.hub
    await hub.ready()
    doc = await hub.documents.get("review", review_id)
    if doc is None:
        raise DocumentNotFound(f"no review/{review_id}")
    spec = ReviewSpec.model_validate(doc.spec)
    if not may_read(actor, hub.registry.partner(spec.partner_id)):
        raise Forbidden(f"{actor.name} ({actor.role.value}) may not read review {review_id}")
    return Review(doc.id, doc.version, spec)


async def lapses(service: AdminService, actor: Actor) -> list[Document]:
    """The lapses ``actor`` may read (as :func:`reviews`: admins and auditors all, a
    sponsor those of the partners they sponsor, partner admins none), newest first."""
    hub = service.hub
    await hub.ready()
    if actor.role is Role.partner_admin:
        raise Forbidden(f"{actor.name} may not read lapses")
    found = []
    for doc in await hub.documents.documents("lapse"):
        spec = LapseSpec.model_validate(doc.spec)
        if may_read(actor, hub.registry.partner(spec.partner_id)):
            found.append((spec.since, doc))
    return [doc for _, doc in sorted(found, key=lambda pair: (pair[0], pair[1].id), reverse=True)]


async def lapse(service: AdminService, lapse_id: str) -> LapseSpec | None:
    doc = await service.hub.documents.get("lapse", lapse_id)
    return LapseSpec.model_validate(doc.spec) if doc is not None else None


# ---------------------------------------------------------------------- decisions


async def confirm(
    service: AdminService, actor: Actor, review_id: str, lines: Iterable[int]
) -> Review:
    """Confirm the lines at these positions (pending ones; others are left as they are)."""
    hub = service.hub
    wanted = sorted(set(lines))
    for _ in range(_ATTEMPTS):
        current = await review(service, actor, review_id)
        spec = current.spec
        _require_decide(hub, actor, spec.partner_id)
        now = _now(hub)
        if not spec.is_open(now):
            raise ReviewClosed(f"review {review_id} closed at {spec.closed_at or spec.closes_at}")
        if any(i < 0 or i >= len(spec.lines) for i in wanted):
            raise InvalidRequest(f"review {review_id} has {len(spec.lines)} lines: {wanted}")
        changed = [i for i in wanted if spec.lines[i].decision is LineDecision.pending]
        if not changed:
            return current
        decided = {"decision": LineDecision.confirmed, "decided_by": actor.name, "decided_at": now}
        new_lines = tuple(
            line.model_copy(update=decided) if i in changed else line
            for i, line in enumerate(spec.lines)
        )
        updated = spec.model_copy(update={"lines": new_lines})
        write = Write("review", review_id, _dump(updated), current.version)
        try:
            await _commit(service, actor, [write], f"review {review_id}: confirmed")
        except VersionConflict:
            continue  # another sponsor confirmed meanwhile: confirm on top of theirs
        for i in changed:
            _audit_line(hub, "review.confirmed", review_id, spec.partner_id, new_lines[i], actor)
        return await review(service, actor, review_id)
    raise IsthmusError(f"review {review_id} kept changing", status=503)


async def restore(
    service: AdminService, actor: Actor, lapse_id: str, apps: Iterable[str]
) -> LapseSpec | None:
    """Lift a lapse for ``apps`` (all of them: the lapse document goes). What it is now."""
    hub = service.hub
    await hub.ready()
    doc = await hub.documents.get("lapse", lapse_id)
    if doc is None:
        raise DocumentNotFound(f"no lapse/{lapse_id}")
    current = LapseSpec.model_validate(doc.spec)
    _require_decide(hub, actor, current.partner_id)
    lifted = [a for a in current.apps if a in set(apps)]
    if not lifted:
        raise InvalidRequest(f"lapse {lapse_id} does not hold {sorted(set(apps))}")
    left = tuple(a for a in current.apps if a not in lifted)
    after = current.model_copy(update={"apps": left}) if left else None
    write = Write("lapse", lapse_id, _dump(after) if after else None, doc.version)
    await _commit(service, actor, [write], f"restored {', '.join(lifted)}")
    for app in lifted:
        hub.audit.emit(
            "access.restored",
            partner=current.partner_id,
            connection=current.connection_id,
            subject=current.subject,
            email=current.email,
            app=app,
            lapse=lapse_id,
            review=current.review_id,
            actor=actor.name,
        )
    return after


# ---------------------------------------------------------------------- the lifecycle job


async def run_reviews(
    service: AdminService, now: datetime, mailer: Mailer | None = None
) -> list[str]:
    """Close the reviews whose window has ended, then open the reviews that are due."""
    hub = service.hub
    await hub.ready()
    done: list[str] = []
    found = [
        Review(d.id, d.version, ReviewSpec.model_validate(d.spec))
        for d in await hub.documents.documents("review")
    ]
    for item in found:
        if item.spec.closed_at is None and now >= item.spec.closes_at:
            try:
                done.append(await _close(service, item, now))
            except VersionConflict:
                continue  # another replica (or a last confirmation) got there first: next tick
    found = [
        Review(d.id, d.version, ReviewSpec.model_validate(d.spec))
        for d in await hub.documents.documents("review")
    ]
    for partner in hub.registry.partners():
        settings = partner.settings
        if settings.review is None or settings.status is not PartnerStatus.active:
            continue
        mine = [r.spec for r in found if r.spec.partner_id == partner.id]
        if any(r.closed_at is None for r in mine):
            continue  # one review at a time
        every = timedelta(days=settings.review.every_days)
        if mine:
            last = max(mine, key=lambda r: r.opened_at)
            due, since = last.opened_at + every, last.period_until
        else:
            created = await _created_at(hub, partner.id) or now - every
            due, since = created + every, created
        if now < due:
            continue
        opened = await _open(service, partner, since, now, mailer)
        if opened:
            done.append(opened)
    return done


async def _created_at(hub: Hub, partner_id: str) -> datetime | None:
    changes = await hub.documents.history(kind="partner", doc_id=partner_id, limit=10_000)
    return datetime.fromtimestamp(min(c.at for c in changes), UTC) if changes else None


async def _open(
    service: AdminService, partner: Partner, since: datetime, now: datetime, mailer: Mailer | None
) -> str | None:
    hub = service.hub
    settings = partner.settings
    assert settings.review is not None
    review_id = f"r-{partner.id}-{now:%Y%m%d}"
    spec = ReviewSpec(
        partner_id=partner.id,
        opened_at=now,
        closes_at=now + timedelta(days=settings.review.window_days),
        period_from=since,
        period_until=now,
        sponsors=tuple(sorted({s.lower() for s in settings.sponsors})),
        lines=await review_lines(hub, partner.id, since, now),
    )
    try:
        await _commit(
            service, LIFECYCLE, [Write("review", review_id, _dump(spec), 0)], "review due"
        )
    except VersionConflict:
        return None  # another replica opened it
    hub.audit.emit(
        "review.opened",
        partner=partner.id,
        review=review_id,
        lines=len(spec.lines),
        sponsors=list(spec.sponsors),
        closes_at=spec.closes_at.isoformat(),
        actor=LIFECYCLE.name,
        note=None if spec.sponsors else "no sponsor: admins review it",
    )
    await _mail_sponsors(hub, review_id, spec, partner, mailer or SmtpMailer(hub.settings.smtp))
    return f"opened {review_id} ({len(spec.lines)} lines)"


async def _mail_sponsors(
    hub: Hub, review_id: str, spec: ReviewSpec, partner: Partner, mailer: Mailer
) -> None:
    link = f"{hub.issuer}/admin/reviews/{review_id}"
    subject = f"Access review: {partner.settings.name}"
    body = (
        f"Please review who from {partner.settings.name} keeps access to which apps.\n\n"
        f"{len(spec.lines)} access(es) to confirm, from {spec.period_from:%Y-%m-%d} to "
        f"{spec.period_until:%Y-%m-%d}:\n{link}\n\n"
        f"Access nobody confirms by {spec.closes_at:%Y-%m-%d %H:%M} UTC lapses.\n"
    )
    for sponsor in spec.sponsors:
        try:
            await mailer.send(sponsor, subject, body)
        except UpstreamError as exc:
            _log.warning("review %s: could not mail %s: %s", review_id, sponsor, exc)
            hub.audit.emit(
                "review.mailed", outcome="failure", partner=partner.id, review=review_id,
                to=sponsor, reason=str(exc),
            )  # fmt: skip
            continue
        hub.audit.emit("review.mailed", partner=partner.id, review=review_id, to=sponsor)


async def review_lines(
    hub: Hub, partner_id: str, since: datetime, until: datetime
) -> tuple[ReviewLine, ...]:
    """Who of the partner used which app in [since, until) (the audit trail), and who
    holds a personal grant for an app at ``until``, used or not."""
    await hub.audit.flush()
    used: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in USE_EVENTS:
        query = AuditQuery(
            partner=partner_id,
            event=event,
            outcome="success",
            since=since.timestamp(),
            until=until.timestamp(),
            limit=MAX_EVENTS,
        )
        for record in await hub.audit_log.query(query):
            connection, subject, app = (record.get(k) for k in ("connection", "subject", "app"))
            if not (connection and subject and app):
                continue  # no person or no app named: not a use to review
            row = used.setdefault(
                (str(connection), str(subject), str(app)), {"uses": 0, "last": 0.0, "email": None}
            )
            row["uses"] += 1
            row["last"] = max(row["last"], float(record.get("ts", 0)))
            row["email"] = row["email"] or record.get("email")
    lines: dict[tuple[str, str, str], ReviewLine] = {
        key: ReviewLine(
            connection_id=key[0],
            subject=key[1],
            app=key[2],
            email=str(row["email"]).lower() if row["email"] else None,
            uses=row["uses"],
            last_used=datetime.fromtimestamp(row["last"], UTC),
        )
        for key, row in used.items()
    }
    by_email = {(line.email, line.app): key for key, line in lines.items() if line.email}
    for grant in _personal_grants(hub, partner_id, until):
        for app in grant.apps:
            if grant.subject is not None and grant.connection_id is not None:
                key = (grant.connection_id, grant.subject, app)
            else:
                email = (grant.email or "").lower()
                key = by_email.get((email, app), ("", email, app))
            line = lines.get(key)
            if line is None:
                line = ReviewLine(
                    connection_id=grant.connection_id,
                    subject=grant.subject,
                    email=grant.email.lower() if grant.email else None,
                    app=app,
                )
            until_before = line.grant_until
            if until_before is None or grant.valid_until > until_before:
                line = line.model_copy(update={"grant_until": grant.valid_until})
            lines[key] = line
    # A line only from a grant by subject names no email: the person's other lines, or
    # their latest event in the audit trail (a sign-in), may.
    emails: dict[tuple[str | None, str | None], str | None] = {
        (li.connection_id, li.subject): li.email for li in lines.values() if li.email
    }
    found = []
    for line in lines.values():
        if line.email is None and line.connection_id and line.subject:
            person = (line.connection_id, line.subject)
            if person not in emails:
                emails[person] = await _last_email(hub, partner_id, *person)
            line = line.model_copy(update={"email": emails[person]})
        found.append(line)
    return tuple(sorted(found, key=lambda li: (li.who.lower(), li.app)))


async def _last_email(hub: Hub, partner_id: str, connection_id: str, subject: str) -> str | None:
    query = AuditQuery(partner=partner_id, user=subject, limit=50)
    for record in await hub.audit_log.query(query):
        if record.get("connection") == connection_id and record.get("subject") == subject:
            email = record.get("email")
            if email:
                return str(email).lower()
    return None


def _personal_grants(hub: Hub, partner_id: str, now: datetime) -> list[GrantSpec]:
    index = hub.catalog.grants
    grants = [g for k, gs in index.by_subject.items() if k[0] == partner_id for g in gs]
    grants += [g for k, gs in index.by_email.items() if k[0] == partner_id for g in gs]
    return [g for g in grants if g.valid_until > now]


async def _close(service: AdminService, item: Review, now: datetime) -> str:
    """Every pending line lapses: a lapse document per person, their personal grants for
    those apps ended; the review is closed — one all-or-nothing write."""
    hub = service.hub
    spec = item.spec
    lapsed_by = {"decision": LineDecision.lapsed, "decided_by": LIFECYCLE.name, "decided_at": now}
    lines = tuple(
        line.model_copy(update=lapsed_by) if line.decision is LineDecision.pending else line
        for line in spec.lines
    )
    newly = [
        line for old, line in zip(spec.lines, lines, strict=True) if old.decision != line.decision
    ]
    closed = spec.model_copy(update={"lines": lines, "closed_at": now})
    writes = [Write("review", item.id, _dump(closed), item.version)]
    writes += await _lapse_writes(hub, item.id, spec, newly, now)
    grant_writes, ended = await _grant_writes(hub, spec.partner_id, newly)
    writes += grant_writes
    await _commit(service, LIFECYCLE, writes, f"review {item.id} closed")
    for line in newly:
        _audit_line(
            hub, "access.lapsed", item.id, spec.partner_id, line, LIFECYCLE,
            lapse=line_lapse_id(spec.partner_id, line),
            grants_ended=ended.get(_person_key(line)) or None,
        )  # fmt: skip
    confirmed = closed.count(LineDecision.confirmed)
    hub.audit.emit(
        "review.closed",
        partner=spec.partner_id,
        review=item.id,
        confirmed=confirmed,
        lapsed=len(newly),
        actor=LIFECYCLE.name,
    )
    return f"closed {item.id} ({confirmed} confirmed, {len(newly)} lapsed)"


def _person_key(line: ReviewLine) -> tuple[str | None, str | None, str | None]:
    if line.subject is not None:
        return (line.connection_id, line.subject, None)
    return (None, None, line.email.lower() if line.email else None)


async def _lapse_writes(
    hub: Hub, review_id: str, spec: ReviewSpec, lines: Sequence[ReviewLine], now: datetime
) -> list[Write]:
    apps: dict[str, list[str]] = {}
    first: dict[str, ReviewLine] = {}
    for line in lines:
        lid = line_lapse_id(spec.partner_id, line)
        apps.setdefault(lid, []).append(line.app)
        first.setdefault(lid, line)
    writes = []
    for lid, lapsed_apps in apps.items():
        line = first[lid]
        doc = await hub.documents.get("lapse", lid)
        held = tuple(LapseSpec.model_validate(doc.spec).apps) if doc is not None else ()
        lapse = LapseSpec(
            partner_id=spec.partner_id,
            connection_id=line.connection_id,
            subject=line.subject,
            email=line.email,
            apps=tuple(sorted({*held, *lapsed_apps})),
            since=now,
            review_id=review_id,
            reviewed_at=spec.opened_at,
        )
        writes.append(Write("lapse", lid, _dump(lapse), doc.version if doc else 0))
    return writes


async def _grant_writes(
    hub: Hub, partner_id: str, lines: Sequence[ReviewLine]
) -> tuple[list[Write], dict[tuple[str | None, str | None, str | None], list[str]]]:
    """The person's personal grants lose the lapsed apps (a grant left with none goes)."""
    writes: list[Write] = []
    ended: dict[tuple[str | None, str | None, str | None], list[str]] = {}
    for doc in await hub.documents.documents("grant"):
        grant = GrantSpec.model_validate(doc.spec)
        if grant.partner_id != partner_id or grant.whole_partner:
            continue
        drop: set[str] = set()
        for line in lines:
            if line.app in grant.apps and _holds(grant, line):
                drop.add(line.app)
                ended.setdefault(_person_key(line), []).append(doc.id)
        if not drop:
            continue
        left = tuple(a for a in grant.apps if a not in drop)
        spec = _dump(grant.model_copy(update={"apps": left})) if left else None
        writes.append(Write("grant", doc.id, spec, doc.version))
    return writes, ended


def _holds(grant: GrantSpec, line: ReviewLine) -> bool:
    if grant.subject is not None:
        return grant.connection_id == line.connection_id and grant.subject == line.subject
    return grant.email is not None and line.email is not None and grant.email.lower() == line.email


def _audit_line(
    hub: Hub,
    event: str,
    review_id: str,
    partner_id: str,
    line: ReviewLine,
    actor: Actor,
    **extra: Any,
) -> None:
    hub.audit.emit(
        event,
        partner=partner_id,
        review=review_id,
        connection=line.connection_id,
        subject=line.subject,
        email=line.email,
        app=line.app,
        actor=actor.name,
        **extra,
    )

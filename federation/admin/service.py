"""The admin service: every admin operation, authorized, validated, recorded.

API, console, CLI and ``isthmus apply`` all call this one class; none of them writes a
document itself. A write:

1. is authorized for its :class:`Actor` (admin, auditor, partner admin of one partner);
2. is checked against the registry *as it would be* (:func:`compile_catalog`): every
   problem at once, each with its field, and nothing written when there is one;
3. is written all-or-nothing with the versions its author read (a stale one is a 409),
   and only if the registry did not move meanwhile (else it is checked again);
4. takes effect: a partner suspended, offboarded or deleted loses every session at once
   (and with them its refresh tokens) on every replica, since sessions are shared;
5. is audited (``admin.change``: who, what, before and after, secrets masked) and
   reloaded here at once; other replicas follow within ``registry.poll_seconds``.
"""

from __future__ import annotations

import difflib
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from federation.admin.catalog import (
    EXPORTED_KINDS,
    ID_FIELDS,
    GrantSpec,
    InvalidDocuments,
    Problem,
    compile_catalog,
    person_problems,
)
from federation.admin.documents import (
    Change,
    Document,
    RevisionMoved,
    Spec,
    VersionConflict,
    Write,
)
from federation.admin.tokens import Role, new_token
from federation.audit import AuditQuery
from federation.errors import IsthmusError, NotFound
from federation.sessions import SessionSummary, partner_sessions
from federation.settings import PartnerSettings, PartnerStatus, Settings

if TYPE_CHECKING:
    from federation.hub import Hub

REDACTED = "**********"
# Values never shown by the API or written to the audit trail (export keeps them).
SECRET_KEYS = frozenset({"client_secret", "secret_sha256"})
# What a partner admin may change in their own partner document.
PARTNER_ADMIN_FIELDS = frozenset({"connections"})
TRANSITIONS: Mapping[PartnerStatus, frozenset[PartnerStatus]] = {
    PartnerStatus.invited: frozenset({PartnerStatus.active, PartnerStatus.offboarded}),
    PartnerStatus.active: frozenset({PartnerStatus.suspended, PartnerStatus.offboarded}),
    PartnerStatus.suspended: frozenset({PartnerStatus.active, PartnerStatus.offboarded}),
    PartnerStatus.offboarded: frozenset(),
}
_CUT_OFF = frozenset({PartnerStatus.suspended, PartnerStatus.offboarded})
# Documents a sponsor reads when their ``partner_id`` is a partner they sponsor.
SPONSOR_READS_BY_PARTNER = frozenset({"grant"})
# Who makes and revokes grants: admins (any partner), sponsors (the partners they sponsor).
GRANTORS = frozenset({Role.admin, Role.sponsor})
_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: ``name`` is what the audit trail records."""

    name: str
    role: Role
    partner_id: str | None = None
    # The verified address of a person in a hub session (None for API tokens): what makes
    # them the sponsor named by a partner or a sign-up request.
    email: str | None = None
    # Sponsors: the ids of the partners naming them, as the registry stood when this
    # request was authenticated (federation.admin.auth). Their reads are scoped by it;
    # their writes are checked again against the registry of the moment (:meth:`sponsors`).
    sponsored: frozenset[str] = frozenset()

    def sponsors(self, partner: PartnerSettings) -> bool:
        """True when this person is one of ``partner``'s sponsors."""
        return self.email is not None and self.email in {s.lower() for s in partner.sponsors}

    def can_read(self, kind: str, doc_id: str) -> bool:
        """May this actor read document ``kind/doc_id``? (For the kinds a sponsor reads by
        their partner, see :meth:`can_read_document`.)"""
        if self.role is Role.partner_admin:
            return kind == "partner" and doc_id == self.partner_id
        if self.role is Role.sponsor:
            # The partners they sponsor (read-only); grants through can_read_document.
            return kind == "partner" and doc_id in self.sponsored
        return kind != "api_token" or self.role is Role.admin

    def can_read_document(self, kind: str, doc_id: str, spec: Spec) -> bool:
        """:meth:`can_read`, and for a sponsor the grants of the partners they sponsor."""
        if self.role is Role.sponsor and kind in SPONSOR_READS_BY_PARTNER:
            return str(spec.get("partner_id", "")) in self.sponsored
        return self.can_read(kind, doc_id)

    def sees_partner(self, partner_id: str) -> bool:
        if self.role is Role.sponsor:
            return partner_id in self.sponsored
        return self.role is not Role.partner_admin or partner_id == self.partner_id


SYSTEM = Actor("system", Role.admin)


class Forbidden(IsthmusError):
    error = "forbidden"
    status = 403
    public_message = "Your role does not allow this."


class DocumentNotFound(NotFound):
    public_message = "There is no such document."


@dataclass(frozen=True, slots=True)
class PlanEntry:
    action: str  # create | update | delete | unchanged
    kind: str
    id: str
    version: int  # the version the plan was made against (0: absent)
    before: Spec | None
    after: Spec | None

    def diff(self) -> str:
        """A unified diff of the document's YAML (secrets masked)."""
        old = _yaml(redact(self.before)) if self.before is not None else ""
        new = _yaml(redact(self.after)) if self.after is not None else ""
        name = f"{self.kind}/{self.id}"
        lines = difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{name}" if self.before is not None else "/dev/null",
            tofile=f"b/{name}" if self.after is not None else "/dev/null",
        )
        return "".join(lines)


@dataclass(frozen=True, slots=True)
class Plan:
    entries: tuple[PlanEntry, ...]

    @property
    def changes(self) -> tuple[PlanEntry, ...]:
        return tuple(e for e in self.entries if e.action != "unchanged")

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0, "unchanged": 0}
        for entry in self.entries:
            counts[entry.action] += 1
        return counts


class AdminService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    # ------------------------------------------------------------------ reads
    async def documents(self, actor: Actor, kind: str) -> list[Document]:
        await self.hub.ready()
        found = await self.hub.documents.documents(kind)
        return [d for d in found if actor.can_read_document(d.kind, d.id, d.spec)]

    async def document(self, actor: Actor, kind: str, doc_id: str) -> Document:
        await self.hub.ready()
        by_partner = actor.role is Role.sponsor and kind in SPONSOR_READS_BY_PARTNER
        if not (by_partner or actor.can_read(kind, doc_id)):
            # A partner admin learns nothing of other partners, not even that they exist.
            raise DocumentNotFound(f"{actor.name} may not read {kind}/{doc_id}")
        found = await self.hub.documents.get(kind, doc_id)
        if found is None:
            raise DocumentNotFound(f"no {kind}/{doc_id}")
        if by_partner and not actor.can_read_document(kind, doc_id, found.spec):
            raise DocumentNotFound(f"{actor.name} may not read {kind}/{doc_id}")
        return found

    async def history(
        self, actor: Actor, *, kind: str | None = None, doc_id: str | None = None, limit: int = 100
    ) -> list[Change]:
        if actor.role is Role.sponsor:
            raise Forbidden(f"{actor.name} (sponsor) may not read the registry's history")
        if actor.role is Role.partner_admin:
            kind, doc_id = "partner", actor.partner_id
        changes = await self.hub.documents.history(kind=kind, doc_id=doc_id, limit=limit)
        return [_masked_change(c) for c in changes]

    async def audit(self, actor: Actor, query: AuditQuery) -> list[dict[str, Any]]:
        if actor.role is Role.sponsor:
            raise Forbidden(f"{actor.name} (sponsor) may not read the audit trail")
        if actor.role is Role.partner_admin:
            # Their own partner's events only, whatever the filter asked.
            query = AuditQuery(**{**_fields(query), "partner": actor.partner_id})
        await self.hub.audit.flush()
        return await self.hub.audit_log.query(query)

    async def export(self, actor: Actor) -> list[tuple[str, str, Spec]]:
        """Every exported document with its secrets: admins only."""
        _require(actor, Role.admin)
        await self.hub.ready()
        return [
            (d.kind, d.id, d.spec)
            for d in await self.hub.documents.documents()
            if d.kind in EXPORTED_KINDS
        ]

    # ------------------------------------------------------------------ writes
    async def put(
        self,
        actor: Actor,
        kind: str,
        doc_id: str,
        spec: Spec,
        expected_version: int,
        *,
        reason: str = "",
    ) -> Document:
        """Create (``expected_version`` 0) or replace a document."""
        await self.hub.ready()
        before = await self.hub.documents.get(kind, doc_id)
        spec = unredact(spec, before.spec if before is not None else None)
        _refuse_masks(kind, doc_id, spec)
        self._authorize_write(actor, kind, doc_id, before.spec if before else None, spec)
        await self._commit(actor, [Write(kind, doc_id, spec, expected_version)], reason)
        return await self.document(SYSTEM, kind, doc_id)

    async def delete(
        self, actor: Actor, kind: str, doc_id: str, expected_version: int, *, reason: str = ""
    ) -> None:
        await self.hub.ready()
        before = await self.document(actor, kind, doc_id)
        self._authorize_write(actor, kind, doc_id, before.spec, None)
        await self._commit(actor, [Write(kind, doc_id, None, expected_version)], reason)

    async def set_status(
        self,
        actor: Actor,
        partner_id: str,
        status: PartnerStatus,
        expected_version: int,
        *,
        reason: str = "",
    ) -> Document:
        """Move a partner through its lifecycle (invited → active → suspended → offboarded)."""
        current = await self.document(actor, "partner", partner_id)
        spec = {**current.spec, "status": status.value}
        return await self.put(actor, "partner", partner_id, spec, expected_version, reason=reason)

    async def plan(
        self, actor: Actor, desired: Iterable[tuple[str, str, Spec]], *, prune: bool = False
    ) -> Plan:
        """What applying ``desired`` would change (``prune``: delete what it leaves out)."""
        _require(actor, Role.admin)
        await self.hub.ready()
        current = {d.key: d for d in await self.hub.documents.documents()}
        wanted = {(kind, doc_id): spec for kind, doc_id, spec in desired}
        entries = []
        for key in sorted(set(wanted) | (set(current) if prune else set())):
            kind, doc_id = key
            if kind not in EXPORTED_KINDS and key not in wanted:
                continue  # tokens are not managed by files: never pruned
            doc = current.get(key)
            before = doc.spec if doc else None
            after = wanted.get(key)
            if after is not None:
                after = unredact(after, before)
                _refuse_masks(kind, doc_id, after)
            action = "unchanged" if before == after else _action(before, after)
            entries.append(
                PlanEntry(action, kind, doc_id, doc.version if doc else 0, before, after)
            )
        return Plan(tuple(entries))

    async def apply(self, actor: Actor, plan: Plan, *, reason: str = "") -> list[Change]:
        """Carry out ``plan`` as planned: stale if anything it read changed since (409)."""
        _require(actor, Role.admin)
        writes = [Write(e.kind, e.id, e.after, e.version) for e in plan.changes]
        return await self._commit(actor, writes, reason or "apply")

    # ------------------------------------------------------------------ domains
    async def claim_domain(self, actor: Actor, partner_id: str, domain: str) -> Document:
        """Add ``domain`` as pending: the partner proves it with a DNS TXT record."""
        from federation.admin.domains import new_token

        current = await self.document(actor, "partner", partner_id)
        name = domain.strip().lower().rstrip(".")
        taken = self.hub.registry.partner_for_domain(name)
        problems = []
        if taken is not None:
            owner = "this partner" if taken.id == partner_id else "another partner"
            problems.append(
                Problem("partner", partner_id, "domain", f"{name} is verified by {owner}")
            )
        if any(p.get("name") == name for p in current.spec.get("pending_domains", ())):
            problems.append(Problem("partner", partner_id, "domain", f"{name} is already pending"))
        if problems:
            raise InvalidDocuments(problems)
        pending = {"name": name, "token": new_token(), "requested_at": _now_iso()}
        spec = {
            **current.spec,
            "pending_domains": [*current.spec.get("pending_domains", ()), pending],
        }
        await self._commit_domain(actor, partner_id, spec, current.version, f"claim {name}")
        return await self.document(SYSTEM, "partner", partner_id)

    async def verify_domain(self, actor: Actor, partner_id: str, domain: str) -> Any:
        """Look the TXT record up; a match moves the domain to the verified ones."""
        from federation.admin.domains import check_domain

        current = await self.document(actor, "partner", partner_id)
        _require_domain_writer(actor, partner_id)  # before any lookup is made
        name = domain.strip().lower().rstrip(".")
        pending = [p for p in current.spec.get("pending_domains", ()) if p.get("name") == name]
        if not pending:
            raise InvalidDocuments(
                [Problem("partner", partner_id, "domain", f"{name} is not a pending domain")]
            )
        check = await check_domain(name, str(pending[0]["token"]), self.hub.base_settings.dns)
        self.hub.audit.emit(
            "admin.domain.verification",
            outcome="success" if check.verified else "failure",
            partner=partner_id,
            domain=name,
            actor=actor.name,
            reason=check.problem,
        )
        if check.verified:
            spec = {
                **current.spec,
                "domains": [*current.spec.get("domains", ()), name],
                "pending_domains": [
                    p for p in current.spec.get("pending_domains", ()) if p.get("name") != name
                ],
            }
            await self._commit_domain(actor, partner_id, spec, current.version, f"verified {name}")
        return check

    async def remove_domain(self, actor: Actor, partner_id: str, domain: str) -> Document:
        current = await self.document(actor, "partner", partner_id)
        name = domain.strip().lower().rstrip(".")
        spec = {
            **current.spec,
            "domains": [d for d in current.spec.get("domains", ()) if d != name],
            "pending_domains": [
                p for p in current.spec.get("pending_domains", ()) if p.get("name") != name
            ],
        }
        await self._commit_domain(actor, partner_id, spec, current.version, f"remove {name}")
        return await self.document(SYSTEM, "partner", partner_id)

    async def _commit_domain(
        self, actor: Actor, partner_id: str, spec: Spec, version: int, reason: str
    ) -> None:
        _require_domain_writer(actor, partner_id)
        await self._commit(actor, [Write("partner", partner_id, spec, version)], reason)

    # ------------------------------------------------------------------ sessions
    async def sessions(self, actor: Actor, partner_id: str) -> list[SessionSummary]:
        await self.document(actor, "partner", partner_id)
        return await partner_sessions(self.hub.store, partner_id, self.hub.clock())

    async def end_session(self, actor: Actor, partner_id: str, sid: str) -> bool:
        await self.document(actor, "partner", partner_id)
        if actor.role in (Role.auditor, Role.sponsor):
            raise Forbidden(f"{actor.name} may not end sessions")
        ended = await self.hub.sessions.end_sid(partner_id, sid)
        self.hub.audit.emit(
            "admin.session.end",
            outcome="success" if ended else "failure",
            partner=partner_id,
            sid=sid,
            actor=actor.name,
        )
        return ended

    # ------------------------------------------------------------------ API tokens
    async def create_token(
        self,
        actor: Actor,
        *,
        name: str,
        role: Role,
        partner_id: str | None = None,
        ttl_days: int | None = None,
    ) -> tuple[str, Document]:
        """A new token: the whole token is returned here, once, and never stored."""
        _require(actor, Role.admin)
        token_id, token, hashed = new_token()
        now = datetime.now(UTC)
        spec = {
            "name": name,
            "role": role.value,
            "partner_id": partner_id,
            "secret_sha256": hashed,
            "created_at": now.isoformat(),
            "expires_at": (now + timedelta(days=ttl_days)).isoformat() if ttl_days else None,
            "created_by": actor.name,
        }
        spec = {k: v for k, v in spec.items() if v is not None}
        if partner_id is not None and self.hub.registry.partner(partner_id) is None:
            raise InvalidDocuments(
                [Problem("api_token", token_id, "partner_id", "no such partner")]
            )
        await self._commit(actor, [Write("api_token", token_id, spec, 0)], f"token {name}")
        return token, await self.document(SYSTEM, "api_token", token_id)

    # ------------------------------------------------------------------ grants
    async def grant(self, actor: Actor, spec: Spec, *, reason: str = "") -> Document:
        """A new time-boxed grant: ``valid_until`` must still be ahead.

        Admins grant for any partner. A sponsor grants for the partners naming them
        (``sponsors``), for at most ``signup.max_grant_days`` from now, and is always the
        ``granted_by`` of what they grant.
        """
        await self.hub.ready()
        partner_id = str(spec.get("partner_id") or "")
        self._authorize_grant(actor, partner_id, "create")
        grant_id = f"g-{secrets.token_hex(6)}"
        spec = {"granted_by": actor.name, **spec}
        if actor.role is not Role.admin:
            spec["granted_by"] = actor.name  # a sponsor speaks for themselves only
        try:
            model = GrantSpec.model_validate(spec)
        except ValueError:
            model = None  # every field's problem is reported by the write's check
        if model is not None:
            problems = []
            now = datetime.fromtimestamp(self.hub.clock(), UTC)
            if actor.role is Role.sponsor:
                problems += _sponsor_app_problems(grant_id, model, self.hub.settings)
            if model.valid_until <= now:
                ended = model.valid_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
                message = f"{ended} has passed: a grant must end later"
                problems.append(Problem("grant", grant_id, "valid_until", message))
            elif actor.role is Role.sponsor:
                longest = self.hub.settings.signup.max_grant_days
                latest = now + timedelta(days=longest)
                if model.valid_until > latest:
                    message = (
                        f"a sponsor grants for at most {longest} days: end it on "
                        f"{latest.date().isoformat()} or earlier (an admin can grant longer)"
                    )
                    problems.append(Problem("grant", grant_id, "valid_until", message))
            partner = self.hub.registry.partner(model.partner_id)
            if partner is not None:
                problems += person_problems(grant_id, model, partner.settings)
            if problems:
                raise InvalidDocuments(problems)
        note = reason or str(spec.get("reason") or "") or "grant"
        await self._commit(actor, [Write("grant", grant_id, spec, 0)], note)
        self.hub.audit.emit(
            "admin.grant.create",
            outcome="success",
            actor=actor.name,
            role=actor.role.value,
            partner=partner_id,
            id=grant_id,
            apps=list(spec.get("apps") or ()),
            email=spec.get("email"),
            subject=spec.get("subject"),
            valid_until=str(spec.get("valid_until")),
            reason=str(spec.get("reason") or "") or None,
        )
        return await self.document(SYSTEM, "grant", grant_id)

    async def revoke_grant(self, actor: Actor, grant_id: str, *, reason: str = "") -> None:
        """End a grant now (it is deleted; the history keeps it). A sponsor revokes any
        grant of a partner they sponsor, whoever made it."""
        if actor.role not in GRANTORS:
            self._refuse_grant(actor, "", "revoke", f"{actor.role.value} may not revoke grants")
        current = await self.document(actor, "grant", grant_id)
        partner_id = str(current.spec.get("partner_id", ""))
        self._authorize_grant(actor, partner_id, "revoke")
        write = Write("grant", grant_id, None, current.version)
        await self._commit(actor, [write], reason or "revoked")
        self.hub.audit.emit(
            "admin.grant.revoke",
            outcome="success",
            actor=actor.name,
            role=actor.role.value,
            partner=partner_id,
            id=grant_id,
            apps=list(current.spec.get("apps") or ()),
            reason=reason or None,
        )

    def _authorize_grant(self, actor: Actor, partner_id: str, action: str) -> None:
        """Admins: any partner. Sponsors: a partner naming them now. Anyone else: no."""
        if actor.role is Role.admin:
            return
        if actor.role is Role.sponsor:
            partner = self.hub.registry.partner(partner_id)
            if partner is not None and actor.sponsors(partner.settings):
                return
            # The same refusal whether the partner exists or not: nothing is learnt.
            self._refuse_grant(actor, partner_id, action, "not a sponsor of this partner")
        self._refuse_grant(actor, partner_id, action, f"{actor.role.value} may not {action}")

    def _refuse_grant(self, actor: Actor, partner_id: str, action: str, why: str) -> NoReturn:
        self.hub.audit.emit(
            f"admin.grant.{action}",
            outcome="failure",
            actor=actor.name,
            role=actor.role.value,
            partner=partner_id or None,
            reason=why,
        )
        raise Forbidden(f"{actor.name} ({actor.role.value}) may not {action} grants: {why}")

    # ------------------------------------------------------------------ the write path
    def _authorize_write(
        self, actor: Actor, kind: str, doc_id: str, before: Spec | None, after: Spec | None
    ) -> None:
        if actor.role is Role.admin:
            return
        if actor.role is Role.partner_admin and kind == "partner" and doc_id == actor.partner_id:
            if (
                before is not None
                and after is not None
                and _only(before, after, PARTNER_ADMIN_FIELDS)
            ):
                return
            raise Forbidden(
                f"{actor.name} may change only {', '.join(sorted(PARTNER_ADMIN_FIELDS))} "
                f"of partner {doc_id}"
            )
        if not actor.can_read(kind, doc_id):
            raise DocumentNotFound(f"{actor.name} may not read {kind}/{doc_id}")
        raise Forbidden(f"{actor.name} ({actor.role.value}) may not change {kind}/{doc_id}")

    async def _commit(self, actor: Actor, writes: Sequence[Write], reason: str) -> list[Change]:
        docs = self.hub.documents
        for _ in range(_ATTEMPTS):
            revision = await docs.revision()
            current = {d.key: d for d in await docs.documents()}
            _check_versions(writes, current)
            _check_transitions(writes, current)
            candidate = dict(current)
            for w in writes:
                if w.spec is None:
                    candidate.pop((w.kind, w.id), None)
                else:
                    candidate[(w.kind, w.id)] = Document(w.kind, w.id, 0, w.spec, 0.0, actor.name)
            compile_catalog(self.hub.base_settings, candidate.values(), revision)
            try:
                changes = await docs.apply(
                    writes,
                    actor=actor.name,
                    reason=reason,
                    expected_revision=revision,
                    now=self.hub.clock(),
                )
            except RevisionMoved:
                continue  # someone else wrote meanwhile: check again against theirs
            break
        else:
            raise IsthmusError("the registry kept changing under this write", status=503)
        await self._effects(actor, changes)
        await self.hub.reload()
        return changes

    async def _effects(self, actor: Actor, changes: Sequence[Change]) -> None:
        for change in changes:
            masked = _masked_change(change)
            self.hub.audit.emit(
                "admin.change",
                actor=actor.name,
                kind=change.kind,
                id=change.id,
                action=change.action,
                version=change.version,
                revision=change.revision,
                partner=_partner_of(change),
                before=masked.before,
                after=masked.after,
                reason=change.reason or None,
            )
            if change.kind == "partner" and _cut_off(change):
                ended = await self.hub.sessions.end_partner(change.id)
                self.hub.audit.emit(
                    "admin.partner.sessions_revoked",
                    actor=actor.name,
                    partner=change.id,
                    sessions=ended,
                )


# ---------------------------------------------------------------------- helpers


def redact(spec: Any) -> Any:
    """``spec`` with every secret value masked (API answers, diffs, the audit trail)."""
    if isinstance(spec, dict):
        return {k: (REDACTED if k in SECRET_KEYS and v else redact(v)) for k, v in spec.items()}
    if isinstance(spec, list):
        return [redact(v) for v in spec]
    return spec


def unredact(spec: Any, old: Any) -> Any:
    """Put back the secrets a client sent masked (it read them masked): unchanged."""
    if isinstance(spec, dict) and isinstance(old, dict):
        return {
            k: (old.get(k) if v == REDACTED and k in SECRET_KEYS else unredact(v, old.get(k)))
            for k, v in spec.items()
        }
    if isinstance(spec, list) and isinstance(old, list):
        # Connections are matched by id, other lists by position.
        by_id = {o.get("id"): o for o in old if isinstance(o, dict) and "id" in o}
        return [
            unredact(v, by_id.get(v.get("id")) if isinstance(v, dict) and "id" in v else
                     (old[i] if i < len(old) else None))
            for i, v in enumerate(spec)
        ]  # fmt: skip
    return spec


def _refuse_masks(kind: str, doc_id: str, spec: Any, path: str = "") -> None:
    """A mask with no stored secret behind it (a copied answer) is not a secret."""
    found = list(_masks(spec, path))
    if found:
        message = "a masked secret with no stored value to keep: give the secret itself"
        raise InvalidDocuments([Problem(kind, doc_id, field, message) for field in found])


def _masks(spec: Any, path: str) -> Iterator[str]:
    if isinstance(spec, dict):
        for key, value in spec.items():
            where = f"{path}.{key}" if path else str(key)
            if value == REDACTED and key in SECRET_KEYS:
                yield where
            else:
                yield from _masks(value, where)
    elif isinstance(spec, list):
        for index, value in enumerate(spec):
            yield from _masks(value, f"{path}.{index}" if path else str(index))


def _masked_change(change: Change) -> Change:
    return Change(
        change.revision, change.kind, change.id, change.action, change.version,
        redact(change.before), redact(change.after), change.actor, change.at, change.reason,
    )  # fmt: skip


def _partner_of(change: Change) -> str | None:
    if change.kind == "partner":
        return change.id
    spec = change.after or change.before or {}
    partner = spec.get("partner_id")
    return str(partner) if partner else None


def _cut_off(change: Change) -> bool:
    """Did this change take a partner's access away (suspended, offboarded, deleted)?"""
    before = _status(change.before)
    after = _status(change.after) if change.after is not None else PartnerStatus.offboarded
    return after in _CUT_OFF and before not in _CUT_OFF


def _status(spec: Spec | None) -> PartnerStatus | None:
    if spec is None:
        return None
    return PartnerStatus(spec.get("status", PartnerStatus.invited.value))


def _check_versions(writes: Sequence[Write], current: Mapping[tuple[str, str], Document]) -> None:
    stale: list[tuple[str, str, int | None, int]] = []
    for w in writes:
        found = current.get((w.kind, w.id))
        version = found.version if found else 0
        if w.expected_version is not None and w.expected_version != version:
            stale.append((w.kind, w.id, w.expected_version, version))
    if stale:
        raise VersionConflict(stale)


def _check_transitions(
    writes: Sequence[Write], current: Mapping[tuple[str, str], Document]
) -> None:
    problems = []
    for w in writes:
        found = current.get((w.kind, w.id))
        if w.kind != "partner" or found is None:
            continue
        if w.spec is None:
            # Deleting (also by `apply --prune`) is for partners that never were or no
            # longer are active: offboarding is the step that ends their sessions.
            if _status(found.spec) not in (PartnerStatus.invited, PartnerStatus.offboarded):
                message = "offboard the partner before deleting it"
                problems.append(Problem("partner", w.id, "status", message))
            continue
        try:
            before, after = _status(found.spec), _status(w.spec)
        except ValueError:
            continue  # an unknown status: the model check reports it
        if before is None or after is None or before == after:
            continue
        if after not in TRANSITIONS[before]:
            allowed = ", ".join(sorted(s.value for s in TRANSITIONS[before])) or "none"
            message = f"a partner cannot go from {before.value} to {after.value}"
            problems.append(Problem("partner", w.id, "status", f"{message} (allowed: {allowed})"))
    if problems:
        raise InvalidDocuments(problems)


def _only(before: Spec, after: Spec, fields: frozenset[str]) -> bool:
    """True when ``before`` and ``after`` differ in ``fields`` at most."""
    keys = (set(before) | set(after)) - fields
    return all(before.get(k) == after.get(k) for k in keys)


def _require_domain_writer(actor: Actor, partner_id: str) -> None:
    # Domain operations are open to the partner's own admins (the DNS proves the claim).
    if not (actor.role is Role.admin or actor.partner_id == partner_id):
        raise Forbidden(f"{actor.name} may not change the domains of {partner_id}")


def _sponsor_app_problems(grant_id: str, grant: GrantSpec, settings: Settings) -> list[Problem]:
    """The apps of a sponsor's grant outside ``admin.sponsor_apps`` (when it is set)."""
    allowed = settings.admin.sponsor_apps
    if allowed is None:
        return []
    message = "sponsors may grant only " + (", ".join(allowed) or "no app") + " (ask an admin)"
    return [
        Problem("grant", grant_id, f"apps.{index}", message)
        for index, app_id in enumerate(grant.apps)
        if app_id not in allowed
    ]


def _require(actor: Actor, role: Role) -> None:
    if actor.role is not role:
        raise Forbidden(f"{actor.name} ({actor.role.value}) is not {role.value}")


def _action(before: Spec | None, after: Spec | None) -> str:
    if before is None:
        return "create"
    return "delete" if after is None else "update"


def _fields(query: AuditQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in query.__dataclass_fields__}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _yaml(spec: Any) -> str:
    return yaml.safe_dump(spec, sort_keys=True, default_flow_style=False, allow_unicode=True)


__all__ = [
    "ID_FIELDS",
    "SYSTEM",
    "Actor",
    "AdminService",
    "DocumentNotFound",
    "Forbidden",
    "Plan",
    "PlanEntry",
    "Role",
    "redact",
    "unredact",
]

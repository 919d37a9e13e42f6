"""Sign-up requests: asked, confirmed, decided by the named sponsor, expired (docs/signup.md).

1. :func:`start` — the form on ``/signup`` passed :func:`check_request`: the request waits
   in the shared store (``CONFIRM_TTL``) under the SHA-256 of a random token, and the
   token is mailed to the requester as a link. Nothing is in the registry yet.
2. :func:`confirm` — the link's button: the stored request is taken (single use) and
   becomes a ``signup`` document, ``pending`` (audit ``signup.requested``); the sponsor
   is mailed a link to the console.
3. :func:`approve` / :func:`refuse` — by the named sponsor only (:func:`may_decide`:
   their verified address is the request's ``sponsor``; a sponsor, or an admin so named);
   anyone else gets a 403 (audit ``signup.refused_actor``), a decided or expired request
   a 409. Approval writes, all at once: the ``grant`` (by email, the approved apps, until
   a date within ``max_grant_days``), the decided request, and either

   * the partner that owns the requester's domain, unchanged (the requester can sign in
     at once through it; who sponsors an existing partner stays the admins' decision —
     an approval never makes its sponsor one), or
   * a partner created for the company (``invited``, an ``otp`` connection, the domain
     *pending*, the sponsor as its sponsor) — or the one an earlier approval created for
     the same domain, still waiting for its proof. Its grant is inert until then: an
     unverified domain routes no sign-in. The requester is mailed the domain step.

4. :func:`check_domain` — the requester's domain step: the DNS TXT proof
   (:meth:`AdminService.verify_domain`); when it passes the partner becomes ``active``
   and the requester is mailed "you can sign in" (audit ``signup.domain_verified``).
5. :func:`expire_requests` — the lifecycle job: pending requests past ``expires_at``
   become ``expired`` (audit ``signup.expired``).

Nothing is granted before approval: until then there is no grant, no partner and no
domain claim. Every write goes through :class:`AdminService` as a system actor whose name
says who acted (``signup (<sponsor>)``), so each change is versioned and in the history.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from federation.admin.catalog import (
    RESERVED_IDS,
    GrantSpec,
    InvalidDocuments,
    Problem,
    dump,
    person_problems,
)
from federation.admin.documents import Document, Spec
from federation.admin.domains import DomainCheck, challenge_name, challenge_value, new_token
from federation.admin.service import (
    SYSTEM,
    Actor,
    AdminService,
    DocumentNotFound,
    Forbidden,
    Plan,
    PlanEntry,
)
from federation.admin.signups import SignupSpec, SignupStatus
from federation.admin.tokens import Role
from federation.errors import IsthmusError, NotFound
from federation.mail import Mailer
from federation.settings import PartnerKind, PartnerStatus

if TYPE_CHECKING:
    from federation.hub import Hub

CONFIRM_TTL = 24 * 3600  # an unconfirmed request waits this long in the store
_CONFIRM_KEY = "signup:confirm:"
_SLUG = re.compile(r"[^a-z0-9]+")
# One plain address: no list (``a@x.com,b@y.com``), display name or quoting, which a
# mail header would read as more than one recipient.
_EMAIL = re.compile(r"^[^@\s,;:<>\"()\[\]\\]+@[^@\s,;:<>\"()\[\]\\]+\.[^@\s,;:<>\"()\[\]\\]+$")
# Characters no one-line field may hold: they go into mail subjects and headers (a CR/LF
# would be a header injection, refused by the mail library only once the request is
# filed) and into the console. Controls, line and paragraph separators, bidi overrides.
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The message may hold line breaks and tabs, not the other control characters.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class AlreadyDecided(IsthmusError):
    error = "already_decided"
    status = 409
    public_message = "This request was already decided, or it expired: nothing was changed."


class NotTheSponsor(Forbidden):
    public_message = "Only the sponsor this request names can see and decide it."


class LinkInvalid(NotFound):
    error = "invalid_link"
    public_message = "This link has expired, was already used, or is not valid."


# ---------------------------------------------------------------------- the request


@dataclass(frozen=True, slots=True)
class Ask:
    """What the requester typed on ``/signup``."""

    name: str
    email: str
    company: str
    sponsor: str
    apps: tuple[str, ...]
    message: str = ""

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "company": self.company,
            "sponsor": self.sponsor,
            "apps": list(self.apps),
            "message": self.message,
        }

    @classmethod
    def of_json(cls, data: Mapping[str, Any]) -> Ask:
        return cls(
            str(data["name"]),
            str(data["email"]),
            str(data["company"]),
            str(data["sponsor"]),
            tuple(str(a) for a in data["apps"]),
            str(data.get("message", "")),
        )


def _domain_of(email: str) -> str:
    return email.rpartition("@")[2].lower()


def _listed(domain: str, domains: Sequence[str]) -> bool:
    """``domain`` is one of ``domains`` or below one of them."""
    return any(domain == d.lower() or domain.endswith(f".{d.lower()}") for d in domains)


def sponsor_domains(hub: Hub) -> tuple[str, ...]:
    """Where sponsors' addresses may be: ``signup.sponsor_domains``, else the verified
    domains of the internal partners."""
    configured = hub.settings.signup.sponsor_domains
    if configured:
        return tuple(d.lower() for d in configured)
    return tuple(
        d
        for p in hub.registry.partners()
        if p.settings.kind is PartnerKind.internal
        for d in p.settings.domains
    )


def check_request(hub: Hub, ask: Ask) -> dict[str, str]:
    """Every problem of the form, by field (empty: the request may go on)."""
    signup = hub.settings.signup
    problems: dict[str, str] = {}
    if not ask.name or len(ask.name) > 200:
        problems["name"] = "Enter your name (at most 200 characters)."
    elif _NOT_ONE_LINE.search(ask.name):
        problems["name"] = "Enter your name on one line, without control characters."
    if not _EMAIL.match(ask.email) or len(ask.email) > 254 or _NOT_ONE_LINE.search(ask.email):
        problems["email"] = "Enter your work email address, like name@company.com."
    elif _listed(ask.domain, signup.blocked_domains):
        problems["email"] = (
            f"Addresses at {ask.domain} cannot be used: give the address your company gave you."
        )
    else:
        owner = hub.registry.partner_for_domain(ask.domain)
        if owner is not None and owner.settings.kind is PartnerKind.internal:
            problems["email"] = "Staff sign in with their company account: no sign-up needed."
    if not ask.company or len(ask.company) > 200:
        problems["company"] = "Enter your company's name (at most 200 characters)."
    elif _NOT_ONE_LINE.search(ask.company):
        problems["company"] = "Enter your company's name on one line, without control characters."
    if not _EMAIL.match(ask.sponsor) or len(ask.sponsor) > 254 or _NOT_ONE_LINE.search(ask.sponsor):
        problems["sponsor"] = "Enter the work email of the person who sponsors your access."
    elif not _listed(_domain_of(ask.sponsor), sponsor_domains(hub)):
        problems["sponsor"] = "Your sponsor must be one of our staff: give their work email."
    elif ask.sponsor.lower() == ask.email.lower():
        problems["sponsor"] = "You cannot sponsor yourself."
    if not ask.apps:
        problems["apps"] = "Choose at least one application."
    elif not set(ask.apps) <= set(signup.apps):
        problems["apps"] = "Choose among the applications listed."
    if len(ask.message) > 1000:
        problems["message"] = "Keep the message under 1,000 characters."
    elif _NOT_TEXT.search(ask.message):
        problems["message"] = "Remove the control characters from the message."
    return problems


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def base_url(hub: Hub) -> str:
    return hub.settings.issuer.rstrip("/")


def app_names(hub: Hub, apps: Sequence[str]) -> list[str]:
    by_id = {a.id: a for a in hub.settings.apps}
    return [(by_id[a].name or a) if a in by_id else a for a in apps]


async def start(hub: Hub, ask: Ask, mailer: Mailer) -> None:
    """Keep the request unconfirmed (hashed token, ``CONFIRM_TTL``) and mail its link."""
    token = secrets.token_urlsafe(32)
    await hub.store.put(_CONFIRM_KEY + digest(token), ask.to_json(), CONFIRM_TTL)
    link = f"{base_url(hub)}/signup/confirm?t={token}"
    body = (
        f"Hello {ask.name},\n\n"
        f"someone (we hope you) asked for access to {', '.join(app_names(hub, ask.apps))} "
        f"for {ask.email}, sponsored by {ask.sponsor}.\n\n"
        f"Confirm the request within 24 hours:\n{link}\n\n"
        "If you did not ask for this, ignore this email: nothing happens without the link.\n"
    )
    await mailer.send(ask.email.lower(), "Confirm your access request", body)


async def pending_ask(hub: Hub, token: str) -> Ask:
    """The unconfirmed request behind a confirmation link (nothing used up)."""
    found = await hub.store.get(_CONFIRM_KEY + digest(token)) if token else None
    if not isinstance(found, dict):
        raise LinkInvalid("unknown or expired sign-up confirmation link")
    return Ask.of_json(found)


async def confirm(service: AdminService, token: str, mailer: Mailer) -> Document:
    """Take the unconfirmed request (single use) and file it as a pending ``signup``
    document; mail the sponsor a link to it."""
    hub = service.hub
    found = await hub.store.take(_CONFIRM_KEY + digest(token)) if token else None
    if not isinstance(found, dict):
        raise LinkInvalid("unknown, expired or used sign-up confirmation link")
    ask = Ask.of_json(found)
    now = _now(hub)
    signup_id = f"s-{secrets.token_hex(6)}"
    spec = SignupSpec(
        name=ask.name,
        email=ask.email.lower(),
        company=ask.company,
        sponsor=ask.sponsor.lower(),
        apps=ask.apps,
        message=ask.message,
        requested_at=now,
        expires_at=now + timedelta(days=hub.settings.signup.request_ttl_days),
    )
    actor = Actor(f"signup ({spec.email})", Role.admin)
    doc = await service.put(actor, "signup", signup_id, dump(spec), 0, reason="sign-up request")
    hub.audit.emit(
        "signup.requested",
        outcome="success",
        signup=signup_id,
        email=spec.email,
        company=spec.company,
        sponsor=spec.sponsor,
        apps=list(spec.apps),
        domain=spec.domain,
    )
    body = (
        f"{spec.name} <{spec.email}> of {spec.company} asks for access to "
        f"{', '.join(app_names(hub, spec.apps))} and names you as their sponsor.\n\n"
        + (f"Their message: {spec.message}\n\n" if spec.message else "")
        + f"Approve or refuse the request:\n{base_url(hub)}/admin/requests/{signup_id}\n\n"
        f"Without a decision it expires on {spec.expires_at:%Y-%m-%d}.\n"
    )
    await mailer.send(spec.sponsor, f"Access request from {spec.company}", body)
    return doc


# ---------------------------------------------------------------------- reading


def may_decide(actor: Actor, spec: SignupSpec) -> bool:
    """Only the named sponsor decides: an internal person (a sponsor, or an admin) whose
    verified address is the request's ``sponsor``."""
    return (
        actor.role in (Role.sponsor, Role.admin)
        and actor.email is not None
        and actor.email.lower() == spec.sponsor.lower()
    )


def may_see(actor: Actor, spec: SignupSpec) -> bool:
    if actor.role in (Role.admin, Role.auditor):
        return True
    return actor.role is Role.sponsor and may_decide(actor, spec)


async def requests(service: AdminService, actor: Actor) -> list[tuple[Document, SignupSpec]]:
    """The requests ``actor`` may see, newest first: a sponsor's own, everyone's for
    admins and auditors; partner admins none."""
    if actor.role is Role.partner_admin:
        raise Forbidden(f"{actor.name} (partner admin) may not read sign-up requests")
    found = []
    for doc in await service.documents(SYSTEM, "signup"):
        spec = SignupSpec.model_validate(doc.spec)
        if may_see(actor, spec):
            found.append((doc, spec))
    return sorted(found, key=lambda pair: pair[1].requested_at, reverse=True)


async def request(
    service: AdminService, actor: Actor, signup_id: str
) -> tuple[Document, SignupSpec]:
    """One request: 404 when there is none, 403 when it names another sponsor."""
    if actor.role is Role.partner_admin:
        raise Forbidden(f"{actor.name} (partner admin) may not read sign-up requests")
    doc, spec = await _load(service, signup_id)
    if not may_see(actor, spec):
        raise NotTheSponsor(f"{actor.name} is not the sponsor of {signup_id}")
    return doc, spec


async def _load(service: AdminService, signup_id: str) -> tuple[Document, SignupSpec]:
    try:
        doc = await service.document(SYSTEM, "signup", signup_id)
    except DocumentNotFound:
        raise DocumentNotFound(f"no signup/{signup_id}") from None
    return doc, SignupSpec.model_validate(doc.spec)


# ---------------------------------------------------------------------- deciding


@dataclass(frozen=True, slots=True)
class Approval:
    signup_id: str
    partner_id: str
    grant_id: str
    created: bool  # a partner was created (or one waiting for its proof reused)
    waiting: bool  # the domain waits for its DNS proof
    valid_until: datetime


def _refuse_actor(
    service: AdminService, actor: Actor, signup_id: str, spec: SignupSpec, action: str
) -> None:
    if may_decide(actor, spec):
        return
    service.hub.audit.emit(
        "signup.refused_actor",
        outcome="failure",
        signup=signup_id,
        actor=actor.name,
        action=action,
        sponsor=spec.sponsor,
        reason="not_the_sponsor",
    )
    raise NotTheSponsor(f"{actor.name} may not {action} {signup_id}: it names {spec.sponsor}")


def _still_pending(signup_id: str, spec: SignupSpec, now: datetime) -> None:
    if spec.status is not SignupStatus.pending:
        raise AlreadyDecided(f"signup/{signup_id} is {spec.status.value}")
    if spec.expires_at <= now:
        raise AlreadyDecided(f"signup/{signup_id} expired on {spec.expires_at.isoformat()}")


def _decision_problems(
    hub: Hub, signup_id: str, spec: SignupSpec, apps: Sequence[str], until: datetime, now: datetime
) -> list[Problem]:
    problems = []
    if not apps:
        problems.append(Problem("signup", signup_id, "apps", "approve at least one app"))
    elif not set(apps) <= set(spec.apps):
        extra = ", ".join(sorted(set(apps) - set(spec.apps)))
        problems.append(Problem("signup", signup_id, "apps", f"not requested: {extra}"))
    longest = now + timedelta(days=hub.settings.signup.max_grant_days)
    if until.tzinfo is None:
        problems.append(Problem("signup", signup_id, "until", "the date must carry a timezone"))
    elif until <= now:
        problems.append(Problem("signup", signup_id, "until", "the date must be in the future"))
    elif until > longest:
        message = f"at most {hub.settings.signup.max_grant_days} days: until {longest:%Y-%m-%d}"
        problems.append(Problem("signup", signup_id, "until", message))
    return problems


async def approve(
    service: AdminService,
    actor: Actor,
    signup_id: str,
    *,
    apps: Sequence[str],
    until: datetime,
    note: str = "",
    mailer: Mailer,
    now: datetime | None = None,
) -> Approval:
    """The named sponsor approves: grant, partner (extended or created) and the decided
    request are written together, or nothing is."""
    hub = service.hub
    now = now or _now(hub)
    doc, spec = await _load(service, signup_id)
    _refuse_actor(service, actor, signup_id, spec, "approve")
    _still_pending(signup_id, spec, now)
    chosen = tuple(a for a in spec.apps if a in set(apps))
    problems = _decision_problems(hub, signup_id, spec, list(apps), until, now)
    if problems:
        raise InvalidDocuments(problems)
    sponsor = spec.sponsor.lower()
    grant_id = f"g-{secrets.token_hex(6)}"
    entries: list[PlanEntry] = []
    owner = hub.registry.partner_for_domain(spec.domain)
    if owner is not None and owner.settings.kind is PartnerKind.internal:
        # The form refused staff addresses; the domain became an internal partner's
        # since. Approving would make the requester staff (a sponsor) of that partner.
        message = f"{spec.domain} is an internal partner's domain: staff need no sign-up"
        raise InvalidDocuments([Problem("signup", signup_id, "email", message)])
    link_token: str | None = None
    if owner is not None:
        partner_id, created = owner.id, False
    else:
        waiting = await _waiting_partner(service, spec.domain)
        created = True
        if waiting is not None:
            partner_id = waiting.id  # its sponsor stays the one whose approval made it
        else:
            partner_id = _new_partner_id(hub, spec.company)
            new = _new_partner(hub, partner_id, spec, sponsor)
            entries.append(PlanEntry("create", "partner", partner_id, 0, None, new))
        link_token = secrets.token_urlsafe(32)
    grant = GrantSpec(
        partner_id=partner_id,
        email=spec.email,
        apps=chosen,
        valid_until=until,
        granted_by=sponsor,
        reason=f"sign-up {signup_id}" + (f": {note}" if note else ""),
    )
    if owner is not None:
        found = person_problems(grant_id, grant, owner.settings)
        if found:
            raise InvalidDocuments(found)
    decided = spec.model_copy(
        update={
            "status": SignupStatus.approved,
            "decided_by": actor.name,
            "decided_at": now,
            "decision_note": note,
            "partner_id": partner_id,
            "grant_id": grant_id,
            "partner_created": created,
            "secret_sha256": digest(link_token) if link_token else None,
        }
    )
    entries.append(PlanEntry("create", "grant", grant_id, 0, None, dump(grant)))
    entries.append(PlanEntry("update", "signup", signup_id, doc.version, doc.spec, dump(decided)))
    writer = Actor(f"signup ({actor.name})", Role.admin)
    await service.apply(writer, Plan(tuple(entries)), reason=f"sign-up {signup_id} approved")
    hub.audit.emit(
        "signup.approved",
        outcome="success",
        signup=signup_id,
        actor=actor.name,
        partner=partner_id,
        grant=grant_id,
        email=spec.email,
        apps=list(chosen),
        valid_until=until.isoformat(),
        partner_created=created,
        note=note or None,
    )
    names = ", ".join(app_names(hub, chosen))
    if link_token is None:
        body = (
            f"Hello {spec.name},\n\n{sponsor} approved your access to {names} until "
            f"{until:%Y-%m-%d}.\n\nYou can sign in now:\n{base_url(hub)}/login\n"
        )
        await mailer.send(spec.email, "Your access request was approved", body)
    else:
        link = f"{base_url(hub)}/signup/{signup_id}/domain?t={link_token}"
        body = (
            f"Hello {spec.name},\n\n{sponsor} approved your access to {names} until "
            f"{until:%Y-%m-%d}.\n\nOne step is left: prove that {spec.company} owns "
            f"{spec.domain} by publishing a DNS TXT record. The record and a button to "
            f"check it are here:\n{link}\n\nOnce the check passes you can sign in.\n"
        )
        await mailer.send(spec.email, "Your access request was approved: one step left", body)
    return Approval(signup_id, partner_id, grant_id, created, link_token is not None, until)


async def refuse(
    service: AdminService,
    actor: Actor,
    signup_id: str,
    *,
    note: str = "",
    mailer: Mailer | None = None,
    now: datetime | None = None,
) -> Document:
    """The named sponsor refuses: the request is closed, nothing else is written."""
    hub = service.hub
    now = now or _now(hub)
    doc, spec = await _load(service, signup_id)
    _refuse_actor(service, actor, signup_id, spec, "refuse")
    _still_pending(signup_id, spec, now)
    decided = spec.model_copy(
        update={
            "status": SignupStatus.refused,
            "decided_by": actor.name,
            "decided_at": now,
            "decision_note": note,
        }
    )
    writer = Actor(f"signup ({actor.name})", Role.admin)
    saved = await service.put(
        writer, "signup", signup_id, dump(decided), doc.version, reason="sign-up refused"
    )
    hub.audit.emit(
        "signup.refused",
        outcome="success",
        signup=signup_id,
        actor=actor.name,
        email=spec.email,
        note=note or None,
    )
    if mailer is not None:
        body = (
            f"Hello {spec.name},\n\nyour request for access was not approved by "
            f"{spec.sponsor}." + (f"\n\nTheir note: {note}" if note else "") + "\n"
        )
        await mailer.send(spec.email, "Your access request was not approved", body)
    return saved


async def expire_requests(service: AdminService, now: datetime) -> list[str]:
    """Close the pending requests whose ``expires_at`` has passed."""
    done = []
    for doc in await service.documents(SYSTEM, "signup"):
        spec = SignupSpec.model_validate(doc.spec)
        if spec.status is not SignupStatus.pending or spec.expires_at > now:
            continue
        expired = spec.model_copy(
            update={"status": SignupStatus.expired, "decided_by": "lifecycle", "decided_at": now}
        )
        writer = Actor("lifecycle", Role.admin)
        await service.put(
            writer, "signup", doc.id, dump(expired), doc.version, reason="sign-up expired"
        )
        service.hub.audit.emit(
            "signup.expired", outcome="success", signup=doc.id, email=spec.email,
            sponsor=spec.sponsor, expires_at=spec.expires_at.isoformat(),
        )  # fmt: skip
        done.append(
            f"{doc.id} ({spec.email}) expired, undecided since {spec.requested_at:%Y-%m-%d}"
        )
    return done


# ---------------------------------------------------------------------- partners


async def _waiting_partner(service: AdminService, domain: str) -> Document | None:
    """The partner an earlier approval created for ``domain``, still waiting for its proof."""
    for doc in await service.documents(SYSTEM, "signup"):
        spec = SignupSpec.model_validate(doc.spec)
        if not (spec.partner_created and spec.partner_id and spec.domain == domain):
            continue
        partner = service.hub.registry.partner(spec.partner_id)
        if partner is None or partner.settings.status is PartnerStatus.offboarded:
            continue
        if any(p.name == domain for p in partner.settings.pending_domains):
            return await service.document(SYSTEM, "partner", partner.id)
    return None


def slug(company: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", company).encode("ascii", "ignore").decode()
    return _SLUG.sub("-", ascii_name.lower()).strip("-")[:50].strip("-") or "partner"


def _new_partner_id(hub: Hub, company: str) -> str:
    """A unique partner id from the company's name (whose ``<id>-otp`` connection id is
    free too)."""
    base = slug(company)
    taken = {p.id for p in hub.registry.partners()} | set(RESERVED_IDS["partner"])
    candidate, n = base, 2
    while candidate in taken or hub.registry.connection(f"{candidate}-otp") is not None:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _new_partner(hub: Hub, partner_id: str, spec: SignupSpec, sponsor: str) -> Spec:
    return {
        "id": partner_id,
        "name": spec.company,
        "kind": hub.settings.signup.partner_kind.value,
        "status": PartnerStatus.invited.value,
        "sponsors": [sponsor],
        "connections": [{"type": "otp", "id": f"{partner_id}-otp"}],
        "pending_domains": [
            {
                "name": spec.domain,
                "token": new_token(),
                "requested_at": _now(hub).isoformat(timespec="seconds"),
            }
        ],
    }


# ---------------------------------------------------------------------- the domain step


@dataclass(frozen=True, slots=True)
class DomainStep:
    signup_id: str
    signup: SignupSpec
    partner_id: str
    partner_name: str
    record_name: str
    record_value: str
    verified: bool
    check: DomainCheck | None = None


async def domain_step(service: AdminService, signup_id: str, token: str) -> DomainStep:
    """Where the requester's domain stands (the link's token checked; nothing changed)."""
    doc, spec = await _linked(service, signup_id, token)
    return _step(service.hub, doc.id, spec)


async def check_domain(
    service: AdminService, signup_id: str, token: str, mailer: Mailer
) -> DomainStep:
    """Look the TXT record up; when it is there the domain is verified, the partner
    becomes active and the requester is told they can sign in."""
    hub = service.hub
    doc, spec = await _linked(service, signup_id, token)
    step = _step(hub, doc.id, spec)
    partner_id = step.partner_id
    actor = Actor(f"signup ({spec.email})", Role.admin)
    check: DomainCheck | None = None
    if not step.verified:
        check = await service.verify_domain(actor, partner_id, spec.domain)
        if not check.verified:
            return replace(step, check=check)
    partner = await service.document(SYSTEM, "partner", partner_id)
    if partner.spec.get("status", PartnerStatus.invited.value) == PartnerStatus.invited.value:
        await service.set_status(
            actor, partner_id, PartnerStatus.active, partner.version,
            reason=f"sign-up {signup_id}: {spec.domain} verified",
        )  # fmt: skip
    if spec.verified_at is None:
        doc = await service.document(SYSTEM, "signup", signup_id)
        done = spec.model_copy(update={"verified_at": _now(hub)})
        await service.put(
            actor, "signup", signup_id, dump(done), doc.version, reason="domain verified"
        )
        hub.audit.emit(
            "signup.domain_verified",
            outcome="success",
            signup=signup_id,
            partner=partner_id,
            domain=spec.domain,
            email=spec.email,
        )
        body = (
            f"Hello {spec.name},\n\n{spec.domain} is verified: you can sign in now with "
            f"your work email (we will mail you a one-time code):\n{base_url(hub)}/login\n"
        )
        await mailer.send(spec.email, "You can sign in", body)
    _, spec = await _load(service, signup_id)
    return _step(hub, signup_id, spec, check)


async def _linked(service: AdminService, signup_id: str, token: str) -> tuple[Document, SignupSpec]:
    """The approved request whose domain-step link this is (else 404, whatever is wrong)."""
    try:
        doc, spec = await _load(service, signup_id)
    except DocumentNotFound:
        raise LinkInvalid(f"no signup/{signup_id}") from None
    if (
        spec.status is not SignupStatus.approved
        or spec.secret_sha256 is None
        or spec.partner_id is None
        or not token
        or not hmac.compare_digest(digest(token), spec.secret_sha256)
    ):
        raise LinkInvalid(f"signup/{signup_id}: no such domain-step link")
    if service.hub.registry.partner(spec.partner_id) is None:
        raise LinkInvalid(f"signup/{signup_id}: partner {spec.partner_id} is gone")
    return doc, spec


def _step(
    hub: Hub, signup_id: str, spec: SignupSpec, check: DomainCheck | None = None
) -> DomainStep:
    assert spec.partner_id is not None
    partner = hub.registry.partner(spec.partner_id)
    if partner is None:
        raise LinkInvalid(f"signup/{signup_id}: partner {spec.partner_id} is gone")
    pending = {p.name: p.token for p in partner.settings.pending_domains}
    verified = spec.domain in partner.settings.domains
    token = pending.get(spec.domain, "")
    return DomainStep(
        signup_id,
        spec,
        partner.id,
        partner.settings.name,
        challenge_name(spec.domain),
        challenge_value(token) if token else "",
        verified,
        check,
    )


def _now(hub: Hub) -> datetime:
    return datetime.fromtimestamp(hub.clock(), UTC)

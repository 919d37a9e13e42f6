"""The admin console: server-rendered pages over :class:`AdminService` (docs/console.md).

Pages under ``/admin/`` (the JSON API is ``/admin/api/``): the partner list, the
onboarding wizard, a partner's page, an app's "who can reach what" matrix and the audit
trail. Every page resolves its actor from the hub session (:func:`authenticate`): nobody
signed in goes to the login page and comes back; a sponsor (an internal person without an
admin role) sees the partners they sponsor, read-only, and their grants
(:mod:`federation.web.console_grants`); anyone else without an admin role gets the 403
error page (with its request id). Every form carries the CSRF double-submit
token and the version of the document it was rendered from: a stale version changes
nothing and the form comes back with the person's input and the conflict explained.
Validation problems (:class:`InvalidDocuments`) are shown next to their fields and listed
at the top of the form, each linked to its field.

No JavaScript is needed: each wizard step is one form, and the partner being onboarded is
itself the draft (created ``invited`` at step 1, activated at step 5).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import yaml
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from federation.admin import onboarding
from federation.admin.auth import AdminAuthRequired, authenticate
from federation.admin.catalog import InvalidDocuments, Problem, validate_spec
from federation.admin.documents import Change, Document, VersionConflict
from federation.admin.domains import DomainCheck, challenge_name, challenge_value, new_token
from federation.admin.service import (
    TRANSITIONS,
    Actor,
    AdminService,
    DocumentNotFound,
    Forbidden,
    Plan,
    PlanEntry,
)
from federation.admin.tokens import Role
from federation.audit import AuditQuery
from federation.errors import InvalidRequest
from federation.settings import PartnerKind, PartnerSettings, PartnerStatus
from federation.web import csrf
from federation.web.pages import form_page, hub_of, login_redirect
from policies.reach import Reach, partner_reach
from policies.rules import Rule

Page = Callable[[Request, Actor], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

STEPS = ("Partner", "Identity provider", "Connection test", "Apps and policies", "Activate")
VERBS = {
    PartnerStatus.active: "Activate",
    PartnerStatus.suspended: "Suspend",
    PartnerStatus.offboarded: "Offboard",
    PartnerStatus.invited: "Invite",
}
CONSEQUENCES = {
    PartnerStatus.active: "Its people can sign in again (through verified domains only), and "
    "its access policies apply.",
    PartnerStatus.suspended: "Every live session of this partner ends at once, on every "
    "replica, and its people cannot sign in until it is activated again.",
    PartnerStatus.offboarded: "Every live session ends at once and the partner can never be "
    "activated again: offboarding is final.",
    PartnerStatus.invited: "",
}
RULE_TEMPLATES = {
    "all": "Every user of this partner may use the app",
    "read": "Every user of this partner may read (GET and HEAD only)",
    "group": "Members of one group of this partner may use the app",
}
AUDIT_FILTERS = ("partner", "user", "app", "event", "outcome", "since", "until")
AUDIT_LIMIT = 200
_DOMAIN_SPLIT = re.compile(r"[\s,;]+")


# ---------------------------------------------------------------------- plumbing


def console_page(handler: Page) -> Endpoint:
    """The actor of the hub session, or the login page (and back here afterwards)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        hub = hub_of(request)
        cookie = request.cookies.get(hub.settings.session.cookie_name)
        try:
            actor = await authenticate(hub, None, cookie)
        except AdminAuthRequired:
            return login_redirect(request, _return_url(request))
        try:
            return await handler(request, actor)
        finally:
            await request.close()  # a multipart form's uploaded files (wizard step 2)

    return endpoint


def _return_url(request: Request) -> str:
    if request.method != "GET":
        return "/admin/"  # a form posted without a session: start again from the console
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def service_of(request: Request) -> AdminService:
    return AdminService(hub_of(request))


def show(
    request: Request, actor: Actor, template: str, *, status: int = 200, **context: Any
) -> Response:
    """Render a console page with the actor, the navigation and a CSRF token."""
    return form_page(
        request,
        f"console/{template}",
        status=status,
        actor=actor,
        role=_role_label(actor),
        is_admin=actor.role is Role.admin,
        is_partner_admin=actor.role is Role.partner_admin,
        is_sponsor=actor.role is Role.sponsor,
        section=context.pop("section", ""),
        **context,
    )


def _role_label(actor: Actor) -> str:
    if actor.role is Role.partner_admin:
        return f"partner admin of {actor.partner_id}"
    return actor.role.value


async def read_form(request: Request) -> FormData:
    form = await request.form()
    csrf.check(request, form)
    return form


def text(form: FormData | Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def require_admin(actor: Actor) -> None:
    if actor.role is not Role.admin:
        raise Forbidden(f"{actor.name} ({actor.role.value}) may not onboard partners")


# Wizard steps a partner admin may use for their own partner: its connection (the one
# part of the partner document they may change) and the connection test.
CONNECTION_STEPS = frozenset({2, 3})


def _require_step(actor: Actor, number: int, partner_id: str) -> None:
    if number in CONNECTION_STEPS and actor.partner_id == partner_id:
        return
    require_admin(actor)


def when(ts: float | int | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def grant_state(spec: Mapping[str, Any], now: datetime) -> str:
    """A grant as its grantee lives it at ``now``: active, expired or not yet."""
    if datetime.fromisoformat(str(spec["valid_until"])) <= now:
        return "expired"
    start = spec.get("valid_from")
    if start and datetime.fromisoformat(str(start)) > now:
        return "not yet"
    return "active"


@dataclass
class Errors:
    """Problems by form field (shown next to it) and the summary at the top of the form."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    summary: list[tuple[str | None, str]] = field(default_factory=list)

    def add(self, name: str | None, message: str, label: str = "") -> None:
        if name is not None:
            self.fields.setdefault(name, []).append(message)
        self.summary.append((name, f"{label}: {message}" if label else message))

    def __bool__(self) -> bool:
        return bool(self.summary)


def problems_to_errors(
    problems: Iterable[Problem],
    to_field: Callable[[Problem], str | None],
    labels: Mapping[str, str],
) -> Errors:
    errors = Errors()
    for problem in problems:
        name = to_field(problem)
        label = labels.get(name or "", "")
        where = "" if name is not None or not problem.field else f" ({problem.field})"
        errors.add(name, _friendly(problem.message) + where, label)
    return errors


_ID_PATTERN = "String should match pattern '^[a-z0-9][a-z0-9_-]{0,62}$'"


def _friendly(message: str) -> str:
    """The id pattern said in words (the models' own message quotes the regex)."""
    if message == _ID_PATTERN:
        return "use lower-case letters, digits, - and _ only (at most 63, not starting with - or _)"
    return message


def _stale_message(seen: int | None, current: int) -> str:
    seen_text = f"version {seen}" if seen is not None else "an unknown version"
    return (
        f"Someone else changed this since you loaded the page (you saw {seen_text}, it is "
        f"now version {current}). Nothing was changed. Check the current state below, then "
        "submit your change again."
    )


# ---------------------------------------------------------------------- partner list


@dataclass(frozen=True)
class PartnerRow:
    id: str
    name: str
    kind: str
    status: str
    domains: tuple[str, ...]
    pending: tuple[str, ...]
    connections: tuple[str, ...]
    sessions: int


async def to_console(request: Request) -> Response:
    return RedirectResponse("/admin/", status_code=307)


@console_page
async def partner_list(request: Request, actor: Actor) -> Response:
    service = service_of(request)
    query = text(request.query_params, "q").lower()
    status = text(request.query_params, "status")
    rows = []
    for doc in await service.documents(actor, "partner"):
        spec = doc.spec
        pending = tuple(str(p.get("name", "")) for p in spec.get("pending_domains", ()))
        domains = tuple(str(d) for d in spec.get("domains", ()))
        haystack = [doc.id, str(spec.get("name", "")), *domains, *pending]
        if query and not any(query in value.lower() for value in haystack):
            continue
        row_status = str(spec.get("status", PartnerStatus.invited.value))
        if status and row_status != status:
            continue
        connections = tuple(f"{c.get('id')} ({c.get('type')})" for c in spec.get("connections", ()))
        live = len(await service.sessions(actor, doc.id))
        rows.append(
            PartnerRow(
                doc.id,
                str(spec.get("name", doc.id)),
                str(spec.get("kind", "")),
                row_status,
                domains,
                pending,
                connections,
                live,
            )
        )
    # A sponsor's list is the partners naming them as a sponsor (AdminService reads).
    return show(
        request,
        actor,
        "partners.html",
        section="partners",
        rows=rows,
        q=text(request.query_params, "q"),
        status_filter=status,
        statuses=[s.value for s in PartnerStatus],
    )


# ---------------------------------------------------------------------- partner page


@dataclass(frozen=True)
class PendingRow:
    name: str
    record_name: str
    record_value: str
    requested_at: str


@dataclass(frozen=True)
class ConnectionRow:
    id: str
    type: str
    display_name: str
    source: str


@dataclass(frozen=True)
class SessionRow:
    sid: str
    who: str
    connection: str
    created: str
    expires: str


@dataclass(frozen=True)
class ChangeRow:
    when: str
    action: str
    version: int
    actor: str
    what: str
    reason: str


@dataclass(frozen=True)
class EventRow:
    when: str
    event: str
    outcome: str
    partner: str
    user: str
    app: str
    actor: str
    details: str


@dataclass
class PartnerView:
    """What a partner page shows besides the partner: results of the action just taken."""

    notice: str = ""
    stale: str = ""
    errors: Errors = field(default_factory=Errors)
    report: onboarding.Report | None = None  # of a connection test
    tested: str = ""
    domain_check: DomainCheck | None = None
    claim_value: str = ""


def pending_rows(spec: Mapping[str, Any]) -> list[PendingRow]:
    return [
        PendingRow(
            str(p.get("name", "")),
            challenge_name(str(p.get("name", ""))),
            challenge_value(str(p.get("token", ""))),
            str(p.get("requested_at", "")),
        )
        for p in spec.get("pending_domains", ())
    ]


def connection_rows(spec: Mapping[str, Any]) -> list[ConnectionRow]:
    rows = []
    for c in spec.get("connections", ()):
        kind = str(c.get("type", ""))
        if kind == "oidc":
            source = f"issuer {c.get('issuer', '')}, client {c.get('client_id', '')}"
        elif kind == "saml":
            source = (
                f"metadata {c['idp_metadata_url']}"
                if c.get("idp_metadata_url")
                else "metadata file"
                if c.get("idp_metadata_file")
                else "metadata pasted (XML)"
            )
        elif kind == "mock":
            users = len(c.get("users", ()))
            source = f"demo IdP, {users} user{'' if users == 1 else 's'}"
        else:
            source = ""
        rows.append(ConnectionRow(str(c.get("id")), kind, str(c.get("display_name") or ""), source))
    return rows


def change_row(change: Change) -> ChangeRow:
    before, after = change.before or {}, change.after or {}
    if change.action == "create":
        what = "created"
    elif change.action == "delete":
        what = "deleted"
    elif before.get("status") != after.get("status"):
        what = f"status {before.get('status', 'invited')} → {after.get('status', 'invited')}"
    else:
        keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        what = "changed " + ", ".join(keys) if keys else "no change"
    return ChangeRow(
        when(change.at), change.action, change.version, change.actor, what, change.reason
    )


_DETAIL_KEYS = (
    "kind",
    "id",
    "action",
    "method",
    "path",
    "decision",
    "reasons",
    "connection",
    "domain",
    "reason",
    "sessions",
    "sid",
    "request_id",
)


def event_row(record: Mapping[str, Any]) -> EventRow:
    details = []
    for key in _DETAIL_KEYS:
        value = record.get(key)
        if value in (None, "", []):
            continue
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        details.append(f"{key}: {shown}")
    return EventRow(
        when(record.get("ts")),
        str(record.get("event", "")),
        str(record.get("outcome", "")),
        str(record.get("partner", "")),
        str(record.get("email") or record.get("subject") or ""),
        str(record.get("app", "")),
        str(record.get("actor", "")),
        "; ".join(details),
    )


async def _partner_page(
    request: Request,
    actor: Actor,
    partner_id: str,
    view: PartnerView | None = None,
    *,
    status: int = 200,
) -> Response:
    service = service_of(request)
    doc = await service.document(actor, "partner", partner_id)
    view = view or PartnerView()
    spec = doc.spec
    current = PartnerStatus(spec.get("status", PartnerStatus.invited.value))
    live = await service.sessions(actor, partner_id)
    sessions = [
        SessionRow(
            s.sid,
            f"{s.identity.name or ''} <{s.identity.email or s.identity.subject}>".strip(),
            s.identity.connection_id,
            when(s.created_at),
            when(s.expires_at),
        )
        for s in live
    ]
    sponsor = actor.role is Role.sponsor
    # A sponsor's page is read-only and narrower: no history, no audit events, and the
    # live sessions as counts (people, sessions) rather than who.
    history = (
        []
        if sponsor
        else [
            change_row(c)
            for c in await service.history(actor, kind="partner", doc_id=partner_id, limit=15)
        ]
    )
    events = (
        []
        if sponsor
        else [event_row(e) for e in await service.audit(actor, AuditQuery(partner=partner_id))]
    )
    people = len({(s.identity.connection_id, s.identity.subject) for s in live})
    grants = await _grant_counts(request, actor, partner_id)
    is_admin = actor.role is Role.admin
    manages = is_admin or (actor.role is Role.partner_admin and actor.partner_id == partner_id)
    transitions = sorted(TRANSITIONS[current], key=list(PartnerStatus).index)
    contract = spec.get("contract") or {}
    return show(
        request,
        actor,
        "partner.html",
        status=status,
        section="partners",
        doc=doc,
        spec=spec,
        status_value=current.value,
        contract=contract,
        pending=pending_rows(spec),
        connections=connection_rows(spec),
        sessions=sessions,
        history=history,
        events=events[:20],
        transitions=[(s.value, VERBS[s]) for s in transitions] if is_admin else [],
        manages=manages,
        view=view,
        people=people,
        grants=grants,
    )


@dataclass(frozen=True)
class GrantCounts:
    """The partner page's Grants section: how many count now, how many are to come, and
    whether this person may grant for the partner (None: they may not read grants)."""

    active: int
    upcoming: int
    expired: int
    may_grant: bool


async def _grant_counts(request: Request, actor: Actor, partner_id: str) -> GrantCounts | None:
    if actor.role is Role.partner_admin:
        return None  # grants are for admins, auditors and sponsors
    now = datetime.fromtimestamp(hub_of(request).clock(), UTC)
    states = [
        grant_state(d.spec, now)
        for d in await service_of(request).documents(actor, "grant")
        if d.spec.get("partner_id") == partner_id
    ]
    partner = hub_of(request).registry.partner(partner_id)
    may_grant = actor.role is Role.admin or (
        actor.role is Role.sponsor and partner is not None and actor.sponsors(partner.settings)
    )
    return GrantCounts(
        states.count("active"), states.count("not yet"), states.count("expired"), may_grant
    )


@console_page
async def partner_page(request: Request, actor: Actor) -> Response:
    view = PartnerView()
    changed = text(request.query_params, "changed")
    if changed in {s.value for s in PartnerStatus}:
        view.notice = f"The partner is now {changed}."
    return await _partner_page(request, actor, request.path_params["partner_id"], view)


async def _posted(request: Request, actor: Actor) -> tuple[FormData, Document, PartnerView | None]:
    """The form (CSRF checked), the partner as it is now, and a view explaining the
    conflict when the form was rendered from another version of it."""
    form = await read_form(request)
    doc = await service_of(request).document(actor, "partner", request.path_params["partner_id"])
    seen = _int(text(form, "version"))
    if seen != doc.version:
        return form, doc, PartnerView(stale=_stale_message(seen, doc.version))
    return form, doc, None


@console_page
async def claim_domain(request: Request, actor: Actor) -> Response:
    form, doc, stale = await _posted(request, actor)
    domain = text(form, "domain")
    if stale is not None:
        stale.claim_value = domain
        return await _partner_page(request, actor, doc.id, stale, status=409)
    view = PartnerView(claim_value=domain)
    if not domain:
        view.errors.add("domain", "Enter a domain name, like example.com.", "Domain")
        return await _partner_page(request, actor, doc.id, view, status=422)
    try:
        await service_of(request).claim_domain(actor, doc.id, domain)
    except InvalidDocuments as exc:
        view.errors = problems_to_errors(exc.problems, lambda p: "domain", {"domain": "Domain"})
        return await _partner_page(request, actor, doc.id, view, status=422)
    except VersionConflict as exc:
        view.stale = _stale_message(doc.version, _found_version(exc, doc.version))
        return await _partner_page(request, actor, doc.id, view, status=409)
    notice = f"{domain.lower()} is claimed: publish its TXT record, then verify it."
    return await _partner_page(request, actor, doc.id, PartnerView(notice=notice))


@console_page
async def verify_domain(request: Request, actor: Actor) -> Response:
    form, doc, stale = await _posted(request, actor)
    if stale is not None:
        return await _partner_page(request, actor, doc.id, stale, status=409)
    domain = text(form, "domain")
    view = PartnerView()
    try:
        check = await service_of(request).verify_domain(actor, doc.id, domain)
    except InvalidDocuments as exc:
        view.errors = problems_to_errors(exc.problems, lambda p: None, {})
        return await _partner_page(request, actor, doc.id, view, status=422)
    view.domain_check = check
    if check.verified:
        view.notice = f"{check.domain} is verified: it now routes sign-ins to this partner."
    return await _partner_page(request, actor, doc.id, view, status=200 if check.verified else 422)


@console_page
async def test_partner_connection(request: Request, actor: Actor) -> Response:
    _, doc, stale = await _posted(request, actor)
    onboarding.require_tester(actor, doc.id)
    if stale is not None:
        return await _partner_page(request, actor, doc.id, stale, status=409)
    connection_id = request.path_params["connection_id"]
    if connection_id not in {c.get("id") for c in doc.spec.get("connections", ())}:
        raise DocumentNotFound(f"partner {doc.id} has no connection {connection_id}")
    report = await onboarding.test_connection(hub_of(request), doc.id, connection_id)
    view = PartnerView(report=report, tested=connection_id)
    return await _partner_page(request, actor, doc.id, view)


@console_page
async def end_session(request: Request, actor: Actor) -> Response:
    form, doc, stale = await _posted(request, actor)
    if stale is not None:
        return await _partner_page(request, actor, doc.id, stale, status=409)
    sid = text(form, "sid")
    ended = await service_of(request).end_session(actor, doc.id, sid)
    notice = "The session was ended." if ended else "That session had already ended."
    return await _partner_page(request, actor, doc.id, PartnerView(notice=notice))


@console_page
async def change_status(request: Request, actor: Actor) -> Response:
    form, doc, stale = await _posted(request, actor)
    if stale is not None:
        return await _partner_page(request, actor, doc.id, stale, status=409)
    try:
        target = PartnerStatus(text(form, "status"))
    except ValueError:
        raise InvalidRequest("unknown partner status") from None
    if text(form, "confirm") != "yes":
        live = len(await service_of(request).sessions(actor, doc.id))
        return show(
            request,
            actor,
            "confirm.html",
            section="partners",
            doc=doc,
            target=target.value,
            verb=VERBS[target],
            consequence=CONSEQUENCES[target],
            live=live,
        )
    view = PartnerView()
    try:
        await service_of(request).set_status(actor, doc.id, target, doc.version)
    except InvalidDocuments as exc:
        view.errors = problems_to_errors(exc.problems, lambda p: None, {})
        return await _partner_page(request, actor, doc.id, view, status=422)
    except VersionConflict as exc:
        view.stale = _stale_message(doc.version, _found_version(exc, doc.version))
        return await _partner_page(request, actor, doc.id, view, status=409)
    return RedirectResponse(f"/admin/partners/{doc.id}?changed={target.value}", status_code=303)


def _found_version(exc: VersionConflict, default: int) -> int:
    return exc.conflicts[0][3] if exc.conflicts else default


# ---------------------------------------------------------------------- apps and the matrix


@dataclass(frozen=True)
class AppRow:
    id: str
    name: str
    where: str
    rules: int


def _app_where(spec: Mapping[str, Any]) -> str:
    hosts = ", ".join(spec.get("hosts", ())) or "the hub's host"
    return f"{hosts}, under {spec.get('path_prefix', '/')}"


@console_page
async def app_list(request: Request, actor: Actor) -> Response:
    service = service_of(request)
    if actor.role in (Role.partner_admin, Role.sponsor):
        raise Forbidden(f"{actor.name} may not read apps")
    hub = hub_of(request)
    rows = [
        AppRow(
            d.id,
            str(d.spec.get("name") or d.id),
            _app_where(d.spec),
            len(hub.catalog.policies.policy(d.id).rules),
        )
        for d in await service.documents(actor, "app")
    ]
    return show(request, actor, "apps.html", section="apps", rows=rows)


@dataclass(frozen=True)
class MatrixRow:
    partner_id: str
    name: str
    reach: Reach


@console_page
async def app_page(request: Request, actor: Actor) -> Response:
    service = service_of(request)
    app = await service.document(actor, "app", request.path_params["app_id"])
    hub = hub_of(request)
    policy = hub.catalog.policies.policy(app.id)
    try:
        policy_doc: Document | None = await service.document(actor, "policy", app.id)
    except DocumentNotFound:
        policy_doc = None
    now = datetime.fromtimestamp(hub.clock(), UTC)
    rows = [
        MatrixRow(p.id, p.settings.name, partner_reach(policy, p.settings, now))
        for p in sorted(hub.registry.partners(), key=lambda p: p.settings.name.lower())
    ]
    return show(
        request,
        actor,
        "app.html",
        section="apps",
        app=app,
        where=_app_where(app.spec),
        rules=[(r.name, r.effect, _requires(r)) for r in policy.rules],
        rows=rows,
        policy_doc=policy_doc,
        policy_yaml=_yaml(policy_doc.spec) if policy_doc else "",
        now=when(now.timestamp()),
    )


def _requires(rule: Rule) -> str:
    return " and ".join(c.describe() for c in rule.all_checks)


def _yaml(spec: Any) -> str:
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=False, allow_unicode=True)


# ---------------------------------------------------------------------- audit


def _epoch(value: str) -> float:
    """A ``datetime-local`` value (or ISO 8601), read as UTC when it names no zone."""
    when = datetime.fromisoformat(value)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@console_page
async def audit_page(request: Request, actor: Actor) -> Response:
    params = {name: text(request.query_params, name) for name in AUDIT_FILTERS}
    if actor.role is Role.partner_admin:
        params["partner"] = actor.partner_id or ""
    errors = Errors()
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        try:
            times[name] = _epoch(params[name]) if params[name] else None
        except ValueError:
            errors.add(name, "Enter a date and time, like 2025-03-03T10:00.", name.title())
            times[name] = None
    outcome = params["outcome"] if params["outcome"] in ("success", "failure") else ""
    params["outcome"] = outcome
    query = AuditQuery(
        partner=params["partner"] or None,
        user=params["user"] or None,
        app=params["app"] or None,
        event=params["event"] or None,
        outcome=outcome or None,
        since=times["since"],
        until=times["until"],
        limit=AUDIT_LIMIT,
    )
    events = [] if errors else [event_row(e) for e in await service_of(request).audit(actor, query)]
    chosen = {k: v for k, v in params.items() if v}
    export = "/admin/api/v1/audit/export" + (f"?{urlencode(chosen)}" if chosen else "")
    return show(
        request,
        actor,
        "audit.html",
        status=422 if errors else 200,
        section="audit",
        params=params,
        errors=errors,
        events=events,
        export=export,
        limit=AUDIT_LIMIT,
        filtered=bool(chosen),
    )


# ---------------------------------------------------------------------- onboarding wizard


@dataclass
class Step:
    """One wizard step as rendered: its number, the partner so far, the form's values."""

    number: int
    doc: Document | None = None
    values: dict[str, str] = field(default_factory=dict)
    errors: Errors = field(default_factory=Errors)
    stale: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_STEP1_LABELS = {"kind": "Kind", "id": "Partner id", "name": "Name", "domains": "Domains"}
_STEP2_LABELS = {
    "connection_id": "Connection id",
    "protocol": "Protocol",
    "oidc_url": "Discovery URL",
    "client_id": "Client id",
    "client_secret": "Client secret",
    "saml_url": "Metadata URL",
    "saml_xml": "Metadata XML",
}
_STEP4_LABELS = {"apps": "Apps", "template": "Rule", "group": "Group"}


def _show_step(request: Request, actor: Actor, step: Step, *, status: int = 200) -> Response:
    labels = {1: _STEP1_LABELS, 2: _STEP2_LABELS, 4: _STEP4_LABELS}.get(step.number, {})
    return show(
        request,
        actor,
        f"wizard_{step.number}.html",
        status=status,
        section="new",
        steps=STEPS,
        step=step,
        doc=step.doc,
        spec=step.doc.spec if step.doc else {},
        values=step.values,
        errors=step.errors,
        labels=labels,
        kinds=[k.value for k in PartnerKind],
        pending=pending_rows(step.doc.spec) if step.doc else [],
        connections=connection_rows(step.doc.spec) if step.doc else [],
        templates=RULE_TEMPLATES,
        **step.extra,
    )


def _next(partner_id: str, number: int, **extra: str) -> RedirectResponse:
    query = urlencode({"partner": partner_id, "step": number, **extra})
    return RedirectResponse(f"/admin/partners/new?{query}", status_code=303)


@console_page
async def wizard_page(request: Request, actor: Actor) -> Response:
    number = _int(text(request.query_params, "step")) or 1
    partner_id = text(request.query_params, "partner")
    _require_step(actor, number if partner_id else 1, partner_id)
    if number <= 1 or number > len(STEPS) or not partner_id:
        return _show_step(request, actor, Step(1, values={"kind": "supplier"}))
    doc = await service_of(request).document(actor, "partner", partner_id)
    step = Step(number, doc)
    if number == 2:
        step.values = {"connection_id": f"{doc.id}-idp", "protocol": "oidc"}
        return await _step2_page(request, actor, step)
    if number == 3:
        return await _step3_page(request, actor, step)
    if number == 4:
        return await _step4_page(request, actor, step)
    return await _step5_page(request, actor, step)


@console_page
async def wizard_submit(request: Request, actor: Actor) -> Response:
    form = await read_form(request)
    number = _int(text(form, "step")) or 1
    _require_step(actor, number, text(form, "partner"))
    if number == 1:
        return await _step1_submit(request, actor, form)
    doc = await service_of(request).document(actor, "partner", text(form, "partner"))
    step = Step(number, doc)
    seen = _int(text(form, "version"))
    if number in (2, 5) and seen != doc.version:
        step.stale = _stale_message(seen, doc.version)
    if number == 2:
        return await _step2_submit(request, actor, form, step)
    if number == 4:
        return await _step4_submit(request, actor, form, step)
    if number == 5:
        return await _step5_submit(request, actor, step)
    raise InvalidRequest(f"wizard step {number} takes no form")


# --- step 1: kind, id, name, domains (the partner is created, invited; domains pending)


def _step1_field(problem: Problem) -> str | None:
    head = problem.field.split(".")[0]
    if head in ("id", "name", "kind"):
        return head
    if head in ("domains", "pending_domains", "domain"):
        return "domains"
    return None


async def _step1_submit(request: Request, actor: Actor, form: FormData) -> Response:
    values = {name: text(form, name) for name in ("kind", "id", "name", "domains")}
    hub = hub_of(request)
    partner_id = values["id"].lower()
    domains = [d.lower().rstrip(".") for d in _DOMAIN_SPLIT.split(values["domains"]) if d]
    problems: list[Problem] = []
    if not values["name"]:
        problems.append(Problem("partner", partner_id, "name", "required"))
    if not domains:
        problems.append(Problem("partner", partner_id, "domains", "give at least one email domain"))
    for domain in dict.fromkeys(domains):
        owner = hub.registry.partner_for_domain(domain)
        if owner is not None:
            problems.append(
                Problem("partner", partner_id, "domains", f"{domain} is verified by {owner.id}")
            )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    spec: dict[str, Any] = {
        "id": partner_id,
        "name": values["name"],
        "kind": values["kind"],
        "status": PartnerStatus.invited.value,
        "pending_domains": [
            {"name": d, "token": new_token(), "requested_at": now} for d in dict.fromkeys(domains)
        ],
    }
    _, model_problems = validate_spec("partner", partner_id, spec)
    problems += [p for p in model_problems if not (p.field == "name" and not values["name"])]
    if partner_id and await hub.documents.get("partner", partner_id) is not None:
        problems.append(Problem("partner", partner_id, "id", "a partner with this id exists"))
    if not problems:
        try:
            await service_of(request).put(
                actor, "partner", partner_id, spec, 0, reason="onboarding"
            )
            return _next(partner_id, 2)
        except InvalidDocuments as exc:
            problems = exc.problems
        except VersionConflict:
            problems = [Problem("partner", partner_id, "id", "a partner with this id exists")]
    step = Step(1, values=values)
    step.errors = problems_to_errors(problems, _step1_field, _STEP1_LABELS)
    return _show_step(request, actor, step, status=422)


# --- step 2: the IdP (OIDC discovery or SAML metadata), inspected, saved as a connection


def _step2_field(problem: Problem) -> str | None:
    parts = problem.field.split(".")
    if parts[0] != "connections":
        return None
    name = parts[2] if len(parts) > 2 else ""
    return {
        "id": "connection_id",
        "issuer": "oidc_url",
        "client_id": "client_id",
        "client_secret": "client_secret",
        "idp_metadata_url": "saml_url",
        "idp_metadata_xml": "saml_xml",
        "": "saml_url",
    }.get(name)


async def _step2_page(request: Request, actor: Actor, step: Step, *, status: int = 200) -> Response:
    return _show_step(request, actor, step, status=status)


async def _upload(form: FormData, name: str) -> str:
    upload = form.get(name)
    if not isinstance(upload, UploadFile) or not upload.filename:
        return ""
    data = await upload.read()
    return data.decode("utf-8", errors="replace")


async def _step2_submit(request: Request, actor: Actor, form: FormData, step: Step) -> Response:
    assert step.doc is not None
    names = ("connection_id", "protocol", "oidc_url", "client_id", "client_secret", "saml_url")
    step.values = {name: text(form, name) for name in names}
    step.values["saml_xml"] = str(form.get("saml_xml") or "").strip()
    if step.stale:
        return await _step2_page(request, actor, step, status=409)
    uploaded = await _upload(form, "saml_file")
    xml = step.values["saml_xml"] or uploaded.strip()
    values, errors = step.values, step.errors
    connection_id = values["connection_id"]
    if not connection_id:
        errors.add("connection_id", "required", _STEP2_LABELS["connection_id"])
    hub = hub_of(request)
    if values["protocol"] == "saml":
        if bool(values["saml_url"]) == bool(xml):
            message = "give the metadata URL, or paste or upload the metadata XML (one of them)"
            errors.add("saml_url", message, _STEP2_LABELS["saml_url"])
        if errors:
            return await _step2_page(request, actor, step, status=422)
        report = await onboarding.inspect_saml(
            hub.context,
            connection_id=connection_id,
            metadata_url=values["saml_url"] or None,
            metadata_xml=xml or None,
        )
        source_field = "saml_url" if values["saml_url"] else "saml_xml"
    else:
        values["protocol"] = "oidc"
        for name in ("oidc_url", "client_id"):
            if not values[name]:
                errors.add(name, "required", _STEP2_LABELS[name])
        if errors:
            return await _step2_page(request, actor, step, status=422)
        report = await onboarding.inspect_oidc(
            values["oidc_url"],
            hub.context,
            connection_id=connection_id,
            client_id=values["client_id"],
            client_secret=values["client_secret"] or None,
        )
        source_field = "oidc_url"
    step.extra["report"] = report
    failed = [c for c in report.checks if c.status == "error"]
    if report.connection is None or failed:
        for check in failed:
            errors.add(source_field, f"{check.name}: {check.detail}", _STEP2_LABELS[source_field])
        if not failed:
            errors.add(source_field, "no connection could be made of it", "")
        return await _step2_page(request, actor, step, status=422)
    others = [c for c in step.doc.spec.get("connections", ()) if c.get("id") != connection_id]
    spec = {**step.doc.spec, "connections": [*others, report.connection]}
    try:
        await service_of(request).put(
            actor, "partner", step.doc.id, spec, step.doc.version, reason="onboarding: IdP"
        )
    except InvalidDocuments as exc:
        step.errors = problems_to_errors(exc.problems, _step2_field, _STEP2_LABELS)
        return await _step2_page(request, actor, step, status=422)
    except VersionConflict as exc:
        step.stale = _stale_message(step.doc.version, _found_version(exc, step.doc.version))
        return await _step2_page(request, actor, step, status=409)
    return _next(step.doc.id, 3, connection=connection_id)


# --- step 3: the connection test


async def _step3_page(request: Request, actor: Actor, step: Step) -> Response:
    assert step.doc is not None
    ids = [str(c.get("id")) for c in step.doc.spec.get("connections", ())]
    wanted = text(request.query_params, "connection")
    connection_id = wanted if wanted in ids else (ids[-1] if ids else "")
    report = (
        await onboarding.test_connection(hub_of(request), step.doc.id, connection_id)
        if connection_id
        else None
    )
    step.extra.update(report=report, connection_id=connection_id)
    return _show_step(request, actor, step)


# --- step 4: apps and policies (an allow rule for this partner in each chosen app's policy


@dataclass(frozen=True)
class AppChoice:
    id: str
    name: str
    version: int  # the policy document's version (0: none yet)
    reach: Reach
    has_rule: bool


def _rule_name(partner_id: str, template: str) -> str:
    return f"{partner_id}-{template}-users" if template != "group" else f"{partner_id}-group"


async def _app_choices(request: Request, actor: Actor, partner: PartnerSettings) -> list[AppChoice]:
    service = service_of(request)
    hub = hub_of(request)
    policies = {d.id: d for d in await service.documents(actor, "policy")}
    now = datetime.fromtimestamp(hub.clock(), UTC)
    active = partner.model_copy(update={"status": PartnerStatus.active})
    choices = []
    for app in await service.documents(actor, "app"):
        found = policies.get(app.id)
        names = {str(r.get("name")) for r in (found.spec.get("rules") or [])} if found else set()
        choices.append(
            AppChoice(
                app.id,
                str(app.spec.get("name") or app.id),
                found.version if found else 0,
                partner_reach(hub.catalog.policies.policy(app.id), active, now),
                any(n.startswith(f"{partner.id}-") for n in names),
            )
        )
    return choices


async def _step4_page(request: Request, actor: Actor, step: Step, *, status: int = 200) -> Response:
    assert step.doc is not None
    partner = PartnerSettings.model_validate(step.doc.spec)
    step.extra["apps"] = await _app_choices(request, actor, partner)
    step.values.setdefault("template", "all")
    step.extra.setdefault("chosen", [])
    return _show_step(request, actor, step, status=status)


def _rule(partner: PartnerSettings, template: str, group: str, app_name: str) -> dict[str, Any]:
    when: dict[str, Any] = {"partner": partner.id}
    if template == "read":
        when["method"] = ["GET", "HEAD"]
        reason = f"{partner.name} may read {app_name}."
    elif template == "group":
        when["group"] = group
        reason = f"Members of {group} at {partner.name} may use {app_name}."
    else:
        reason = f"{partner.name} may use {app_name}."
    return {
        "name": _rule_name(partner.id, template),
        "effect": "allow",
        "when": when,
        "reason": reason,
    }


async def _step4_submit(request: Request, actor: Actor, form: FormData, step: Step) -> Response:
    assert step.doc is not None
    partner = PartnerSettings.model_validate(step.doc.spec)
    chosen = [str(v) for v in form.getlist("app") if isinstance(v, str)]
    template = text(form, "template")
    group = text(form, "group")
    step.values = {"template": template, "group": group}
    step.extra["chosen"] = chosen
    if template not in RULE_TEMPLATES:
        step.errors.add("template", "choose one of the rules", _STEP4_LABELS["template"])
    if template == "group" and not group:
        step.errors.add("group", "required for this rule", _STEP4_LABELS["group"])
    if step.errors:
        return await _step4_page(request, actor, step, status=422)
    if not chosen:
        return _next(partner.id, 5)
    service = service_of(request)
    entries = []
    stale = []
    for app_id in chosen:
        app = await service.document(actor, "app", app_id)
        current = await hub_of(request).documents.get("policy", app_id)
        seen = _int(text(form, f"version-{app_id}"))
        version = current.version if current else 0
        if seen != version:
            stale.append(f"{app_id}: you saw version {seen}, it is now version {version}")
        before = current.spec if current else None
        rule = _rule(partner, template, group, str(app.spec.get("name") or app_id))
        rules = [r for r in (before or {}).get("rules", []) if r.get("name") != rule["name"]]
        after = {**(before or {}), "rules": [*rules, rule]}
        action = "update" if before is not None else "create"
        entries.append(PlanEntry(action, "policy", app_id, seen or 0, before, after))
    if stale:
        step.stale = (
            "Someone else changed these policies since you loaded the page: "
            + "; ".join(stale)
            + ". Nothing was changed. Check them below, then submit again."
        )
        return await _step4_page(request, actor, step, status=409)
    try:
        await service.apply(actor, Plan(tuple(entries)), reason=f"onboarding {partner.id}")
    except InvalidDocuments as exc:
        step.errors = problems_to_errors(exc.problems, lambda p: "apps", _STEP4_LABELS)
        return await _step4_page(request, actor, step, status=422)
    except VersionConflict as exc:
        step.stale = "Someone else changed these policies meanwhile: " + str(exc)
        return await _step4_page(request, actor, step, status=409)
    return _next(partner.id, 5)


# --- step 5: review and activate


async def _step5_page(request: Request, actor: Actor, step: Step, *, status: int = 200) -> Response:
    assert step.doc is not None
    partner = PartnerSettings.model_validate(step.doc.spec)
    step.extra["apps"] = await _app_choices(request, actor, partner)
    return _show_step(request, actor, step, status=status)


async def _step5_submit(request: Request, actor: Actor, step: Step) -> Response:
    assert step.doc is not None
    if step.stale:
        return await _step5_page(request, actor, step, status=409)
    try:
        await service_of(request).set_status(
            actor, step.doc.id, PartnerStatus.active, step.doc.version, reason="onboarding"
        )
    except InvalidDocuments as exc:
        step.errors = problems_to_errors(exc.problems, lambda p: None, {})
        return await _step5_page(request, actor, step, status=422)
    except VersionConflict as exc:
        step.stale = _stale_message(step.doc.version, _found_version(exc, step.doc.version))
        return await _step5_page(request, actor, step, status=409)
    return RedirectResponse(f"/admin/partners/{step.doc.id}?changed=active", status_code=303)


routes: list[BaseRoute] = [
    Route("/admin", to_console, methods=["GET"]),
    Route("/admin/", partner_list, methods=["GET"]),
    Route("/admin/partners/new", wizard_page, methods=["GET"]),
    Route("/admin/partners/new", wizard_submit, methods=["POST"]),
    Route("/admin/partners/{partner_id}", partner_page, methods=["GET"]),
    Route("/admin/partners/{partner_id}/domains", claim_domain, methods=["POST"]),
    Route("/admin/partners/{partner_id}/domains/verify", verify_domain, methods=["POST"]),
    Route(
        "/admin/partners/{partner_id}/connections/{connection_id}/test",
        test_partner_connection,
        methods=["POST"],
    ),
    Route("/admin/partners/{partner_id}/sessions/end", end_session, methods=["POST"]),
    Route("/admin/partners/{partner_id}/status", change_status, methods=["POST"]),
    Route("/admin/apps", app_list, methods=["GET"]),
    Route("/admin/apps/{app_id}", app_page, methods=["GET"]),
    Route("/admin/audit", audit_page, methods=["GET"]),
]

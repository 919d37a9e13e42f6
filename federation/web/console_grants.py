"""Console: time-boxed grants (docs/console.md#grants).

``/admin/grants`` lists grants — every grant for admins and auditors, the grants of the
partners they sponsor for a sponsor — filtered by partner: who (a person, or everyone at
the partner), the apps, from, until, the state (active, expired, not yet) and who granted
it. ``/admin/grants/new`` is the form to grant (the partners offered are those the person
may grant for); each grant the person may revoke has a *Revoke* button. Every write is
:meth:`AdminService.grant` / :meth:`AdminService.revoke_grant`, which authorize again: the
page only offers what the service would accept. Auditors read; partner admins get 403.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from federation.admin.catalog import InvalidDocuments, Problem
from federation.admin.documents import Document
from federation.admin.service import Actor, Forbidden
from federation.admin.tokens import Role
from federation.hub import Hub
from federation.settings import PartnerStatus
from federation.web.console import (
    Errors,
    console_page,
    grant_state,
    problems_to_errors,
    read_form,
    service_of,
    show,
    text,
    when,
)
from federation.web.pages import hub_of

LABELS = {
    "partner": "Partner",
    "who": "Who",
    "email": "Person's work email",
    "apps": "Apps",
    "until": "Access ends on",
    "reason": "Reason",
}
# The grant's fields as the form names them (apps.1 is the apps fieldset too).
FORM_FIELDS = {
    "partner_id": "partner",
    "email": "email",
    "apps": "apps",
    "valid_until": "until",
    "reason": "reason",
}
WHO = {"person": "One person, by email", "everyone": "Everyone at the partner"}
_GRANT_ID = re.compile(r"^g-[0-9a-f]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class GrantRow:
    id: str
    partner_id: str
    partner_name: str
    who: str
    apps: tuple[str, ...]
    starts: str
    until: str
    state: str
    granted_by: str
    reason: str
    may_revoke: bool


@dataclass
class GrantForm:
    values: dict[str, str] = field(default_factory=lambda: {"who": "person"})
    apps: list[str] = field(default_factory=list)
    errors: Errors = field(default_factory=Errors)


# ---------------------------------------------------------------------- who may do what


def _require_reader(actor: Actor) -> None:
    if actor.role is Role.partner_admin:
        raise Forbidden(f"{actor.name} (partner admin) may not read grants")


def grantable(hub: Hub, actor: Actor) -> list[tuple[str, str]]:
    """(id, name) of the partners ``actor`` may grant for: every partner not offboarded
    for an admin, the partners naming them as a sponsor for a sponsor, none otherwise."""
    partners = sorted(hub.registry.partners(), key=lambda p: p.settings.name.lower())
    if actor.role is Role.admin:
        chosen = [p for p in partners if p.settings.status is not PartnerStatus.offboarded]
    elif actor.role is Role.sponsor:
        chosen = [p for p in partners if actor.sponsors(p.settings)]
    else:
        chosen = []
    return [(p.id, p.settings.name) for p in chosen]


def _visible_partners(hub: Hub, actor: Actor) -> list[tuple[str, str]]:
    partners = sorted(hub.registry.partners(), key=lambda p: p.settings.name.lower())
    return [(p.id, p.settings.name) for p in partners if actor.sees_partner(p.id)]


# ---------------------------------------------------------------------- the list


def _who(spec: Mapping[str, Any], partner_name: str) -> str:
    if spec.get("email"):
        return str(spec["email"])
    if spec.get("subject"):
        return f"{spec['subject']} (through {spec.get('connection_id')})"
    return f"everyone at {partner_name}"


def _day(value: Any) -> str:
    """An ISO-8601 time as the page shows it: the date, and the time when not midnight."""
    moment = datetime.fromisoformat(str(value)).astimezone(UTC)
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def grant_row(doc: Document, hub: Hub, now: datetime, may_grant: set[str]) -> GrantRow:
    spec = doc.spec
    partner_id = str(spec.get("partner_id", ""))
    partner = hub.registry.partner(partner_id)
    name = partner.settings.name if partner is not None else partner_id
    starts = _day(spec["valid_from"]) if spec.get("valid_from") else when(doc.updated_at)[:10]
    return GrantRow(
        doc.id,
        partner_id,
        name,
        _who(spec, name),
        tuple(str(a) for a in spec.get("apps", ())),
        starts,
        _day(spec["valid_until"]),
        grant_state(spec, now),
        str(spec.get("granted_by", "")),
        str(spec.get("reason", "")),
        partner_id in may_grant,
    )


def _notice(request: Request) -> str:
    granted = text(request.query_params, "granted")
    revoked = text(request.query_params, "revoked")
    if _GRANT_ID.match(granted):
        return f"Access granted (grant {granted})."
    if _GRANT_ID.match(revoked):
        return f"Grant {revoked} was revoked: it no longer gives access."
    return ""


@console_page
async def grant_list(request: Request, actor: Actor) -> Response:
    _require_reader(actor)
    hub = hub_of(request)
    now = datetime.fromtimestamp(hub.clock(), UTC)
    partner = text(request.query_params, "partner")
    may_grant = {pid for pid, _ in grantable(hub, actor)}
    docs = await service_of(request).documents(actor, "grant")
    rows = sorted(
        (
            grant_row(d, hub, now, may_grant)
            for d in docs
            if not partner or d.spec.get("partner_id") == partner
        ),
        key=lambda r: (r.state != "active", r.partner_name.lower(), r.until, r.id),
    )
    return show(
        request,
        actor,
        "grants.html",
        section="grants",
        rows=rows,
        partner_filter=partner,
        partners=[(pid, f"{name} ({pid})") for pid, name in _visible_partners(hub, actor)],
        may_grant=bool(may_grant),
        notice=_notice(request),
        today=now.date().isoformat(),
    )


# ---------------------------------------------------------------------- the form


def _show_form(request: Request, actor: Actor, form: GrantForm, *, status: int = 200) -> Response:
    hub = hub_of(request)
    partners = grantable(hub, actor)
    if not partners:
        raise Forbidden(f"{actor.name} ({actor.role.value}) may not grant for any partner")
    listed = hub.settings.admin.sponsor_apps if actor.role is Role.sponsor else None
    apps = sorted(
        (a for a in hub.settings.apps if listed is None or a.id in listed),
        key=lambda a: (a.name or a.id).lower(),
    )
    longest = hub.settings.signup.max_grant_days if actor.role is Role.sponsor else None
    return show(
        request,
        actor,
        "grant_form.html",
        status=status,
        section="grants",
        form=form,
        labels=LABELS,
        partners=partners,
        apps=[(a.id, a.name or a.id) for a in apps],
        who_options=WHO,
        longest=longest,
    )


@console_page
async def grant_form(request: Request, actor: Actor) -> Response:
    form = GrantForm()
    form.values["partner"] = text(request.query_params, "partner")
    return _show_form(request, actor, form)


def _form_field(problem: Problem) -> str | None:
    head = problem.field.partition(".")[0]
    return FORM_FIELDS.get(head)


def _valid_until(raw: str) -> str | None:
    """The day the access ends, as the stored time: 00:00 UTC that day (the day the
    refused user is told their access ended on)."""
    if not _DATE.match(raw):
        return None
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return day.isoformat()


def _spec_of(form: GrantForm) -> dict[str, Any] | None:
    """The grant the form asks for, or None with its problems in ``form.errors``."""
    values, errors = form.values, form.errors
    if not values["partner"]:
        errors.add("partner", "Choose the partner.", LABELS["partner"])
    if values["who"] not in WHO:
        errors.add("who", "Choose one person or everyone at the partner.", LABELS["who"])
    elif values["who"] == "person" and not values["email"]:
        message = "Enter the person's work email, like bob@acme.example."
        errors.add("email", message, LABELS["email"])
    if not form.apps:
        errors.add("apps", "Choose at least one app.", LABELS["apps"])
    until = _valid_until(values["until"])
    if until is None:
        errors.add("until", "Enter the day access ends, like 2026-06-30.", LABELS["until"])
    if errors or until is None:
        return None
    spec: dict[str, Any] = {
        "partner_id": values["partner"],
        "apps": list(form.apps),
        "valid_until": until,
    }
    if values["who"] == "person":
        spec["email"] = values["email"]
    if values["reason"]:
        spec["reason"] = values["reason"]
    return spec


def _read(form_data: FormData) -> GrantForm:
    names = ("partner", "who", "email", "until", "reason")
    form = GrantForm(values={name: text(form_data, name) for name in names})
    form.apps = [str(v) for v in form_data.getlist("app") if isinstance(v, str) and v]
    if form.values["who"] == "everyone":
        form.values["email"] = ""
    return form


@console_page
async def grant_submit(request: Request, actor: Actor) -> Response:
    form = _read(await read_form(request))
    spec = _spec_of(form)
    if spec is None:
        return _show_form(request, actor, form, status=422)
    try:
        doc = await service_of(request).grant(actor, spec)
    except InvalidDocuments as exc:
        form.errors = problems_to_errors(exc.problems, _form_field, LABELS)
        return _show_form(request, actor, form, status=422)
    query = urlencode({"partner": doc.spec["partner_id"], "granted": doc.id})
    return RedirectResponse(f"/admin/grants?{query}", status_code=303)


@console_page
async def grant_revoke(request: Request, actor: Actor) -> Response:
    form = await read_form(request)
    grant_id = request.path_params["grant_id"]
    await service_of(request).revoke_grant(actor, grant_id, reason="revoked in the console")
    back: Sequence[tuple[str, str]] = [("revoked", grant_id)]
    partner = text(form, "partner")
    if partner:
        back = [("partner", partner), *back]
    return RedirectResponse(f"/admin/grants?{urlencode(back)}", status_code=303)


routes: list[BaseRoute] = [
    Route("/admin/grants", grant_list, methods=["GET"]),
    Route("/admin/grants", grant_submit, methods=["POST"]),
    Route("/admin/grants/new", grant_form, methods=["GET"]),
    Route("/admin/grants/{grant_id}/revoke", grant_revoke, methods=["POST"]),
]

"""Console: sign-up requests — the named sponsor approves or refuses (docs/signup.md).

``/admin/requests`` lists the requests the person may see: a sponsor those naming them,
admins and auditors all of them (read-only unless they are the named sponsor); partner
admins none. ``/admin/requests/{id}`` shows one with, for its sponsor while it is pending,
an Approve form (the apps, a subset of those asked for; the last day of access, by
default ``signup.grant_days`` ahead) and a Refuse form (a note). Anyone else posting them
gets the 403 page; a request decided meanwhile comes back as it now is (409).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from federation.admin import signup_service
from federation.admin.catalog import InvalidDocuments, Problem
from federation.admin.documents import VersionConflict
from federation.admin.service import Actor
from federation.admin.signup_service import AlreadyDecided
from federation.admin.signups import SignupStatus
from federation.mail import SmtpMailer
from federation.web.console import (
    Errors,
    console_page,
    problems_to_errors,
    read_form,
    service_of,
    show,
    text,
)
from federation.web.pages import hub_of

LABELS = {"apps": "Applications", "until": "Access until", "note": "Note"}


@dataclass
class RequestView:
    notice: str = ""
    stale: str = ""
    errors: Errors | None = None
    apps: tuple[str, ...] | None = None  # the approve form's input, kept on a problem
    until: str = ""
    note: str = ""


def _now(request: Request) -> datetime:
    return datetime.fromtimestamp(hub_of(request).clock(), UTC)


@console_page
async def request_list(request: Request, actor: Actor) -> Response:
    found = await signup_service.requests(service_of(request), actor)
    status = text(request.query_params, "status")
    if status in {s.value for s in SignupStatus}:
        found = [(d, s) for d, s in found if s.status.value == status]
    return show(
        request,
        actor,
        "requests.html",
        section="requests",
        rows=found,
        statuses=[s.value for s in SignupStatus],
        status_filter=status,
    )


async def _request_page(
    request: Request,
    actor: Actor,
    view: RequestView | None = None,
    *,
    status: int = 200,
) -> Response:
    hub = hub_of(request)
    doc, spec = await signup_service.request(
        service_of(request), actor, request.path_params["signup_id"]
    )
    view = view or RequestView()
    now = _now(request)
    expired = spec.status is SignupStatus.pending and spec.expires_at <= now
    decides = signup_service.may_decide(actor, spec) and spec.status is SignupStatus.pending
    default_until = (now + timedelta(days=hub.settings.signup.grant_days)).date()
    longest = (now + timedelta(days=hub.settings.signup.max_grant_days)).date()
    apps = list(zip(spec.apps, signup_service.app_names(hub, spec.apps), strict=True))
    return show(
        request,
        actor,
        "request.html",
        status=status,
        section="requests",
        doc=doc,
        spec=spec,
        apps=apps,
        chosen=view.apps if view.apps is not None else spec.apps,
        until=view.until or default_until.isoformat(),
        min_until=(now + timedelta(days=1)).date().isoformat(),
        max_until=longest.isoformat(),
        decides=decides and not expired,
        expired=expired,
        known=hub.registry.partner_for_domain(spec.domain),
        view=view,
        errors=view.errors or Errors(),
    )


@console_page
async def request_page(request: Request, actor: Actor) -> Response:
    view = RequestView()
    done = text(request.query_params, "done")
    if done == "approved":
        view.notice = "Approved."
    elif done == "refused":
        view.notice = "Refused: the requester was told."
    return await _request_page(request, actor, view)


def _until(value: str, now: datetime, max_days: int) -> datetime | None:
    """The end of the chosen day (UTC), never past the longest grant allowed."""
    try:
        day = date.fromisoformat(value)
        end = datetime.combine(day + timedelta(days=1), time(), UTC)
    except (ValueError, OverflowError):  # not a date, or 9999-12-31 (no day after it)
        return None
    longest = now + timedelta(days=max_days)
    return min(end, longest) if day <= longest.date() else end


@console_page
async def approve(request: Request, actor: Actor) -> Response:
    form = await read_form(request)
    hub = hub_of(request)
    signup_id = request.path_params["signup_id"]
    apps = tuple(a for a in form.getlist("apps") if isinstance(a, str))
    view = RequestView(apps=apps, until=text(form, "until"), note=text(form, "note"))
    now = _now(request)
    until = _until(view.until, now, hub.settings.signup.max_grant_days)
    if until is None:
        view.errors = Errors()
        view.errors.add("until", "Enter a date, like 2030-12-31.", LABELS["until"])
        return await _request_page(request, actor, view, status=422)
    try:
        await signup_service.approve(
            service_of(request),
            actor,
            signup_id,
            apps=apps,
            until=until,
            note=view.note,
            mailer=SmtpMailer(hub.settings.smtp),
            now=now,
        )
    except InvalidDocuments as exc:
        view.errors = problems_to_errors(exc.problems, _field, LABELS)
        return await _request_page(request, actor, view, status=422)
    except (AlreadyDecided, VersionConflict):
        return await _decided(request, actor)
    return RedirectResponse(f"/admin/requests/{signup_id}?done=approved", status_code=303)


@console_page
async def refuse(request: Request, actor: Actor) -> Response:
    form = await read_form(request)
    hub = hub_of(request)
    signup_id = request.path_params["signup_id"]
    try:
        await signup_service.refuse(
            service_of(request),
            actor,
            signup_id,
            note=text(form, "note")[:1000],
            mailer=SmtpMailer(hub.settings.smtp),
            now=_now(request),
        )
    except (AlreadyDecided, VersionConflict):
        return await _decided(request, actor)
    return RedirectResponse(f"/admin/requests/{signup_id}?done=refused", status_code=303)


async def _decided(request: Request, actor: Actor) -> Response:
    view = RequestView(
        stale="This request was decided meanwhile, or it expired: nothing was changed. "
        "It is shown as it is now."
    )
    return await _request_page(request, actor, view, status=409)


def _field(problem: Problem) -> str | None:
    return problem.field if problem.field in LABELS else None


routes: list[BaseRoute] = [
    Route("/admin/requests", request_list, methods=["GET"]),
    Route("/admin/requests/{signup_id}", request_page, methods=["GET"]),
    Route("/admin/requests/{signup_id}/approve", approve, methods=["POST"]),
    Route("/admin/requests/{signup_id}/refuse", refuse, methods=["POST"]),
]

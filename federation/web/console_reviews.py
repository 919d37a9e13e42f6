"""Console: access reviews — sponsors confirm who keeps access (docs/reviews.md).

``/admin/reviews`` lists the open and recent reviews the person may read (a sponsor: of
the partners they sponsor; admins and auditors: all). ``/admin/reviews/{id}`` shows the
lines — who, email, app, uses, last use, grant end — with a checkbox each, "Confirm
selected" and "Confirm all" while the window is open, and once closed which lines lapsed,
each with a Restore button while the lapse holds. Every form carries the CSRF token; the
decisions themselves are :mod:`federation.admin.review_service`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from federation.admin import review_service
from federation.admin.review_service import Review, ReviewClosed, may_decide
from federation.admin.reviews import LineDecision, ReviewLine, line_lapse_id
from federation.admin.service import Actor
from federation.errors import InvalidRequest
from federation.web.console import console_page, read_form, service_of, show, text
from federation.web.pages import hub_of

RECENT = 50  # closed reviews listed after the open ones


def at(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


@dataclass(frozen=True)
class ReviewRow:
    id: str
    partner: str
    opened: str
    closes: str
    state: str  # open | closing (window ended, not closed yet) | closed
    pending: int
    confirmed: int
    lapsed: int


@dataclass(frozen=True)
class LineRow:
    index: int
    who: str
    email: str
    app: str
    uses: int
    last_used: str
    grant_until: str
    decision: str
    decided: str
    # A lapsed line still held by its lapse: the lapse to restore.
    lapse_id: str | None


def _state(item: Review, now: datetime) -> str:
    if item.spec.closed_at is not None:
        return "closed"
    return "open" if item.spec.is_open(now) else "closing"


def _row(item: Review, partner_name: str, now: datetime) -> ReviewRow:
    spec = item.spec
    return ReviewRow(
        item.id,
        partner_name,
        at(spec.opened_at),
        at(spec.closes_at),
        _state(item, now),
        spec.count(LineDecision.pending),
        spec.count(LineDecision.confirmed),
        spec.count(LineDecision.lapsed),
    )


def _now(request: Request) -> datetime:
    return datetime.fromtimestamp(hub_of(request).clock(), UTC)


def _partner_name(request: Request, partner_id: str) -> str:
    partner = hub_of(request).registry.partner(partner_id)
    return partner.settings.name if partner else partner_id


@console_page
async def review_list(request: Request, actor: Actor) -> Response:
    now = _now(request)
    found = await review_service.reviews(service_of(request), actor)
    rows = [_row(r, _partner_name(request, r.spec.partner_id), now) for r in found]
    open_rows = [r for r in rows if r.state != "closed"]
    closed_rows = [r for r in rows if r.state == "closed"][:RECENT]
    return show(
        request,
        actor,
        "reviews.html",
        section="reviews",
        open_rows=open_rows,
        closed_rows=closed_rows,
    )


def _line_row(index: int, line: ReviewLine, partner_id: str, held: bool) -> LineRow:
    name = line.name or line.subject or ""
    decided = f"{line.decided_by}, {at(line.decided_at)}" if line.decided_by else ""
    return LineRow(
        index,
        name or line.who,
        line.email or "",
        line.app,
        line.uses,
        at(line.last_used),
        at(line.grant_until),
        line.decision.value,
        decided,
        line_lapse_id(partner_id, line) if held else None,
    )


async def _review_page(
    request: Request, actor: Actor, review_id: str, *, notice: str = "", status: int = 200
) -> Response:
    service = service_of(request)
    item = await review_service.review(service, actor, review_id)
    hub = hub_of(request)
    spec = item.spec
    rows = []
    for index, line in enumerate(spec.lines):
        held = False
        if line.decision is LineDecision.lapsed:
            lapse = await review_service.lapse(service, line_lapse_id(spec.partner_id, line))
            held = lapse is not None and line.app in lapse.apps
        rows.append(_line_row(index, line, spec.partner_id, held))
    now = _now(request)
    return show(
        request,
        actor,
        "review.html",
        status=status,
        section="reviews",
        review=item,
        partner_name=_partner_name(request, spec.partner_id),
        rows=rows,
        state=_state(item, now),
        may_decide=may_decide(actor, hub.registry.partner(spec.partner_id)),
        opened=at(spec.opened_at),
        closes=at(spec.closes_at),
        closed=at(spec.closed_at),
        period=f"{at(spec.period_from)} to {at(spec.period_until)}",
        pending=spec.count(LineDecision.pending),
        notice=notice,
    )


_NOTICES = {
    "confirmed": "Confirmed: {n} line{s}.",
    "restored": "Access restored: {app}.",
}


@console_page
async def review_page(request: Request, actor: Actor) -> Response:
    done = text(request.query_params, "done")
    notice = ""
    if done in _NOTICES:
        n = text(request.query_params, "n")
        values = {"n": n, "s": "" if n == "1" else "s", "app": text(request.query_params, "app")}
        notice = _NOTICES[done].format(**values)
    return await _review_page(request, actor, request.path_params["review_id"], notice=notice)


def _back(review_id: str, **query: str) -> RedirectResponse:
    return RedirectResponse(f"/admin/reviews/{review_id}?{urlencode(query)}", status_code=303)


@console_page
async def confirm_lines(request: Request, actor: Actor) -> Response:
    form = await read_form(request)
    review_id = request.path_params["review_id"]
    service = service_of(request)
    before = await review_service.review(service, actor, review_id)
    if text(form, "what") == "all":
        chosen = [
            i for i, line in enumerate(before.spec.lines) if line.decision is LineDecision.pending
        ]
    else:
        values = [v for v in form.getlist("line") if isinstance(v, str)]
        if not all(v.isdigit() for v in values):
            raise InvalidRequest(f"line numbers expected: {values}")
        chosen = [int(v) for v in values]
    if not chosen:
        return await _review_page(
            request, actor, review_id, notice="Nothing selected: nothing was confirmed.", status=422
        )
    try:
        after = await review_service.confirm(service, actor, review_id, chosen)
    except ReviewClosed as exc:
        return await _review_page(request, actor, review_id, notice=exc.public_message, status=409)
    newly = before.spec.count(LineDecision.pending) - after.spec.count(LineDecision.pending)
    return _back(review_id, done="confirmed", n=str(newly))


@console_page
async def restore_lapse(request: Request, actor: Actor) -> Response:
    form = await read_form(request)
    review_id = request.path_params["review_id"]
    await review_service.review(service_of(request), actor, review_id)  # may they read it?
    app = text(form, "app")
    await review_service.restore(service_of(request), actor, text(form, "lapse"), [app])
    return _back(review_id, done="restored", app=app)


routes: list[BaseRoute] = [
    Route("/admin/reviews", review_list, methods=["GET"]),
    Route("/admin/reviews/{review_id}", review_page, methods=["GET"]),
    Route("/admin/reviews/{review_id}/confirm", confirm_lines, methods=["POST"]),
    Route("/admin/reviews/{review_id}/restore", restore_lapse, methods=["POST"]),
]

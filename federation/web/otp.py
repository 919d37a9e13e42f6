"""The one-time-code connection's pages: type the address, then the code mailed to it.

``GET /otp/{connection_id}?state=FLOW`` is where :class:`connectors.otp.OtpConnector`
sends the browser. Each page belongs to one login flow (the ``state``), which must be this
browser's (its flow cookie) and for this connection. ``POST /otp/{id}/send`` mails a code
— the "code sent" page is the same whether or not the address is allowed, so it tells
nobody which addresses exist; a refused address is audited, no mail is sent.
``POST /otp/{id}/verify`` checks the code, records the proven address in the flow and
sends the browser to the normal callback, which opens the session. Every form carries
the CSRF token.

The mail also carries a magic link (``magic_link``): ``GET /otp/{id}/link?state=FLOW&t=TOKEN``
only shows "Continue signing in as …" — it never uses the link up, since mail scanners
open links — and its button POSTs to ``/otp/{id}/link``, which proves the token and then
goes on exactly like the code. The link works only in the browser holding the flow's
cookie: anywhere else the page says where to open it and nobody is signed in (no login
CSRF). An expired, used or burnt link gets a page with a way to start again.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from connectors.otp import CODE, LINK, VERIFIED_EMAIL, CodeRefused, OtpConnector, RateLimited
from federation.broker.flows import LoginFlow
from federation.errors import InvalidState, NotFound
from federation.mail import SmtpMailer
from federation.registry import Partner
from federation.web import csrf
from federation.web.cookies import FLOW_COOKIE
from federation.web.pages import broker_of, form_field, form_page, hub_of, source_ip
from federation.web.templating import render


async def email_page(request: Request) -> Response:
    partner, connector = _otp(request)
    flow = await _flow(request, request.query_params.get("state", ""))
    email = request.query_params.get("email", "")
    return _email_form(request, partner, connector, flow, email)


async def send(request: Request) -> Response:
    partner, connector = _otp(request)
    form = await request.form()
    token = csrf.check(request, form)
    flow = await _flow(request, form_field(form, "state"))
    email = form_field(form, "email").strip()
    hub = hub_of(request)
    if "@" not in email or len(email) > 254:
        message = "Please enter your work email address, like name@company.com."
        return _email_form(request, partner, connector, flow, email, status=400, message=message)
    try:
        sent = await connector.send_code(
            hub.store, SmtpMailer(hub.settings.smtp), flow.id, email, source_ip(request)
        )
    except RateLimited as exc:
        _audit(request, connector, "otp.refused", "rate_limited", email=email, detail=exc.detail)
        return _email_form(
            request, partner, connector, flow, email, status=429, message=str(exc.detail)
        )
    if sent.sent:
        _audit(request, connector, "otp.sent", None, email=sent.email)
    else:
        _audit(request, connector, "otp.refused", "outside_domains", email=sent.email)
    return _code_form(request, partner, connector, flow, sent.email, token)


async def verify(request: Request) -> Response:
    partner, connector = _otp(request)
    form = await request.form()
    token = csrf.check(request, form)
    flow = await _flow(request, form_field(form, "state"))
    email = form_field(form, "email")
    hub = hub_of(request)
    try:
        proven = await connector.verify_code(
            hub.store, flow.id, form_field(form, "code"), source_ip(request)
        )
    except (CodeRefused, RateLimited) as exc:
        _audit(
            request,
            connector,
            "otp.refused",
            _reason(exc),
            email=email,
            method=CODE,
            detail=exc.detail,
        )
        return _code_form(
            request, partner, connector, flow, email, token, status=exc.status, message=exc.detail
        )
    return await _proven(request, connector, flow, proven, CODE)


async def link_page(request: Request) -> Response:
    """What the mailed link opens: a button to continue, nothing used up yet."""
    partner, connector = _otp(request)
    query = request.query_params
    flow = await _link_flow(request, connector, query.get("state", ""))
    if isinstance(flow, Response):
        return flow
    token = query.get("t", "")
    try:
        email = await connector.check_link(
            hub_of(request).store, flow.id, token, source_ip(request)
        )
    except (CodeRefused, RateLimited) as exc:
        return _link_refused(request, connector, exc, flow)
    return form_page(
        request,
        "otp_link.html",
        partner=partner,
        connection_id=connector.id,
        state=flow.id,
        token=token,
        email=email,
    )


async def link_submit(request: Request) -> Response:
    """The "Continue" button: prove the link's token (using it up), then go on as the code
    path does."""
    _, connector = _otp(request)
    form = await request.form()
    csrf.check(request, form)
    flow = await _link_flow(request, connector, form_field(form, "state"))
    if isinstance(flow, Response):
        return flow
    try:
        proven = await connector.verify_link(
            hub_of(request).store, flow.id, form_field(form, "t"), source_ip(request)
        )
    except (CodeRefused, RateLimited) as exc:
        return _link_refused(request, connector, exc, flow)
    return await _proven(request, connector, flow, proven, LINK)


async def _proven(
    request: Request, connector: OtpConnector, flow: LoginFlow, email: str, method: str
) -> Response:
    """Record the proven address in the flow and send the browser to the callback."""
    state = {**flow.connector_state, VERIFIED_EMAIL: email}
    await broker_of(request).flows.save(replace(flow, connector_state=state))
    _audit(request, connector, "otp.verified", None, email=email, method=method)
    query = urlencode({"state": flow.id})
    return RedirectResponse(f"/callback/{connector.id}?{query}", status_code=303)


async def _link_flow(
    request: Request, connector: OtpConnector, flow_id: str
) -> LoginFlow | Response:
    """The link's flow when it is this browser's; else the page that says why not. The
    token is not looked at before the browser is known to be the right one."""
    flow = await broker_of(request).flows.get(flow_id)
    if flow is None:  # finished (the link or code was used), or timed out
        exc = CodeRefused(
            "this sign-in link has expired or was already used", reason="expired_or_used"
        )
        return _link_refused(request, connector, exc, None)
    if flow.connection_id != connector.id:
        raise InvalidState(f"the sign-in was started for {flow.connection_id!r}")
    cookie = request.cookies.get(FLOW_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, flow.id):
        _audit(request, connector, "otp.refused", "other_browser", email=None, method=LINK)
        page = render(
            request, "otp_link_refused.html", status=403, other_browser=True, retry_url="/login"
        )
        return page
    return flow


def _link_refused(
    request: Request,
    connector: OtpConnector,
    exc: CodeRefused | RateLimited,
    flow: LoginFlow | None,
) -> Response:
    email = exc.email if isinstance(exc, CodeRefused) else None
    _audit(
        request, connector, "otp.refused", _reason(exc), email=email, method=LINK, detail=exc.detail
    )
    # Start again: a new code in the same sign-in while it lasts, else from the beginning.
    query = {"state": flow.id, **({"email": email} if email else {})} if flow else None
    retry = f"/otp/{connector.id}?{urlencode(query)}" if query else "/login"
    return render(
        request,
        "otp_link_refused.html",
        status=exc.status,
        other_browser=False,
        message=exc.detail,
        retry_url=retry,
    )


def _reason(exc: CodeRefused | RateLimited) -> str:
    return exc.reason if isinstance(exc, CodeRefused) else "rate_limited"


def _otp(request: Request) -> tuple[Partner, OtpConnector]:
    connection_id = request.path_params["connection_id"]
    found = hub_of(request).connector(connection_id)
    if found is None or not isinstance(found[1], OtpConnector):
        raise NotFound(f"no one-time-code connection {connection_id!r}")
    return found[0], found[1]


async def _flow(request: Request, flow_id: str) -> LoginFlow:
    """This browser's flow for this connection (a code belongs to one flow)."""
    flow = await broker_of(request).flows.get(flow_id)
    cookie = request.cookies.get(FLOW_COOKIE, "")
    if flow is None:
        raise InvalidState("the sign-in expired or is unknown; start again")
    if not cookie or not hmac.compare_digest(cookie, flow.id):
        raise InvalidState("this sign-in was started in another browser")
    if flow.connection_id != request.path_params["connection_id"]:
        raise InvalidState(f"the sign-in was started for {flow.connection_id!r}")
    return flow


def _audit(
    request: Request,
    connector: OtpConnector,
    event: str,
    reason: str | None,
    *,
    email: str | None,
    method: str | None = None,
    detail: str | None = None,
) -> None:
    hub_of(request).audit.emit(
        event,
        outcome="failure" if reason else "success",
        partner=connector.partner_id,
        connection=connector.id,
        method=method,
        reason=reason,
        detail=detail,
        email=email.strip().lower() if email else None,
        request_id=request.state.request_id,
    )


def _email_form(
    request: Request,
    partner: Partner,
    connector: OtpConnector,
    flow: LoginFlow,
    email: str,
    *,
    status: int = 200,
    message: str | None = None,
) -> Response:
    return form_page(
        request,
        "otp_email.html",
        status=status,
        partner=partner,
        connection_id=connector.id,
        state=flow.id,
        email=email,
        message=message,
    )


def _code_form(
    request: Request,
    partner: Partner,
    connector: OtpConnector,
    flow: LoginFlow,
    email: str,
    token: str,
    *,
    status: int = 200,
    message: str | None = None,
) -> Response:
    return form_page(
        request,
        "otp_code.html",
        csrf_token=token,
        status=status,
        partner=partner,
        connection_id=connector.id,
        state=flow.id,
        email=email,
        digits=connector.settings.code_digits,
        magic_link=connector.settings.magic_link,
        minutes=max(1, connector.settings.code_ttl_seconds // 60),
        message=message,
    )


routes = [
    Route("/otp/{connection_id}", email_page, methods=["GET"]),
    Route("/otp/{connection_id}/send", send, methods=["POST"]),
    Route("/otp/{connection_id}/verify", verify, methods=["POST"]),
    Route("/otp/{connection_id}/link", link_page, methods=["GET"]),
    Route("/otp/{connection_id}/link", link_submit, methods=["POST"]),
]

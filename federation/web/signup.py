"""The public sign-up pages (``/signup``; docs/signup.md). All 404 unless ``signup.enabled``.

* ``GET /signup`` — the form: name, work email, company, the sponsor's email, the apps of
  ``signup.apps`` (by name), a message. ``POST /signup`` checks it (each problem next to
  its field, 400), rate-limits per source IP (429) and per address, mails a confirmation
  link and answers "check your email" — the same page whether a mail went out or not.
* ``GET /signup/confirm?t=…`` shows the request and a button (mail scanners open links:
  a GET uses nothing up); ``POST /signup/confirm`` files it for the sponsor (single use).
* ``GET /signup/{id}/domain?t=…`` — after approval, for a company the hub did not know:
  the DNS TXT record to publish; ``POST`` ("Check now") looks it up.

Every form carries the CSRF token. The rules live in
:mod:`federation.admin.signup_service`; this module is HTTP in, HTML out.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from federation import ratelimit
from federation.admin import signup_service
from federation.admin.service import AdminService
from federation.admin.signup_service import Ask, DomainStep
from federation.errors import IsthmusError, NotFound, UpstreamError
from federation.hub import Hub
from federation.mail import SmtpMailer
from federation.web import csrf
from federation.web.pages import form_page, hub_of, source_ip

# Requests per source IP, and per requester's address, in RATE_WINDOW seconds.
PER_IP = 10
PER_ADDRESS = 3
RATE_WINDOW = 3600
# DNS checks per request in RATE_WINDOW (each is a lookup the hub makes).
CHECKS = 30


class MailFailed(IsthmusError):
    error = "upstream_error"
    status = 502
    public_message = "We could not send the email just now. Please try again later."


def _enabled(request: Request) -> Hub:
    hub = hub_of(request)
    if not hub.settings.signup.enabled:
        raise NotFound("sign-up is not enabled")
    return hub


def _mailer(hub: Hub) -> SmtpMailer:
    return SmtpMailer(hub.settings.smtp)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _form(
    request: Request,
    hub: Hub,
    ask: Ask | None = None,
    problems: dict[str, str] | None = None,
    *,
    status: int = 200,
    message: str | None = None,
) -> Response:
    apps = hub.settings.signup.apps
    return form_page(
        request,
        "signup_form.html",
        status=status,
        ask=ask,
        apps=list(zip(apps, signup_service.app_names(hub, apps), strict=True)),
        problems=problems or {},
        message=message,
    )


async def signup_page(request: Request) -> Response:
    return _form(request, _enabled(request))


async def submit(request: Request) -> Response:
    hub = _enabled(request)
    form = await request.form()
    csrf.check(request, form)
    ask = Ask(
        name=_text(form, "name"),
        email=_text(form, "email"),
        company=_text(form, "company"),
        sponsor=_text(form, "sponsor"),
        apps=tuple(a for a in form.getlist("apps") if isinstance(a, str)),
        message=_text(form, "message"),
    )
    problems = signup_service.check_request(hub, ask)
    if problems:
        return _form(request, hub, ask, problems, status=400)
    ip = source_ip(request)
    if not await ratelimit.consume(hub.store, f"signup:ip:{ip}", PER_IP, RATE_WINDOW):
        _audit(hub, request, "signup.refused", "rate_limited_ip", ask.email, source_ip=ip)
        message = "Too many requests from your network. Please try again in an hour."
        return _form(request, hub, ask, status=429, message=message)
    address = ask.email.lower()
    if await ratelimit.consume(hub.store, f"signup:address:{address}", PER_ADDRESS, RATE_WINDOW):
        try:
            await signup_service.start(hub, ask, _mailer(hub))
        except UpstreamError as exc:
            raise MailFailed(exc.detail) from exc
        _audit(hub, request, None, None, ask.email, source_ip=ip)
    else:  # the same page: it says nothing about the address
        _audit(hub, request, "signup.refused", "rate_limited_address", ask.email, source_ip=ip)
    return form_page(request, "signup_sent.html", email=ask.email)


def _audit(
    hub: Hub, request: Request, event: str | None, reason: str | None, email: str, **extra: str
) -> None:
    hub.audit.emit(
        event or "signup.confirmation_sent",
        outcome="failure" if reason else "success",
        reason=reason,
        email=email.lower(),
        request_id=request.state.request_id,
        **extra,
    )


async def confirm_page(request: Request) -> Response:
    hub = _enabled(request)
    token = request.query_params.get("t", "")
    ask = await signup_service.pending_ask(hub, token)
    names = signup_service.app_names(hub, ask.apps)
    return form_page(request, "signup_confirm.html", ask=ask, token=token, app_names=names)


async def confirm(request: Request) -> Response:
    hub = _enabled(request)
    form = await request.form()
    csrf.check(request, form)
    try:
        doc = await signup_service.confirm(AdminService(hub), _text(form, "t"), _mailer(hub))
    except UpstreamError as exc:
        raise MailFailed(exc.detail) from exc
    return form_page(request, "signup_done.html", sponsor=doc.spec["sponsor"])


async def domain_page(request: Request) -> Response:
    hub = _enabled(request)
    token = request.query_params.get("t", "")
    signup_id = request.path_params["signup_id"]
    step = await signup_service.domain_step(AdminService(hub), signup_id, token)
    return _domain(request, step, token)


async def domain_check(request: Request) -> Response:
    hub = _enabled(request)
    form = await request.form()
    csrf.check(request, form)
    token = _text(form, "t")
    signup_id = request.path_params["signup_id"]
    service = AdminService(hub)
    step = await signup_service.domain_step(service, signup_id, token)
    key = f"signup:dns:{signup_id}"
    if not step.verified and not await ratelimit.consume(hub.store, key, CHECKS, RATE_WINDOW):
        message = "Too many checks. Please try again in an hour."
        return _domain(request, step, token, status=429, message=message)
    try:
        step = await signup_service.check_domain(service, signup_id, token, _mailer(hub))
    except UpstreamError as exc:
        raise MailFailed(exc.detail) from exc
    failed = step.check is not None and not step.verified
    return _domain(request, step, token, status=422 if failed else 200)


def _domain(
    request: Request,
    step: DomainStep,
    token: str,
    *,
    status: int = 200,
    message: str | None = None,
) -> Response:
    return form_page(
        request, "signup_domain.html", status=status, step=step, token=token, message=message
    )


routes: list[BaseRoute] = [
    Route("/signup", signup_page, methods=["GET"]),
    Route("/signup", submit, methods=["POST"]),
    Route("/signup/confirm", confirm_page, methods=["GET"]),
    Route("/signup/confirm", confirm, methods=["POST"]),
    Route("/signup/{signup_id}/domain", domain_page, methods=["GET"]),
    Route("/signup/{signup_id}/domain", domain_check, methods=["POST"]),
]

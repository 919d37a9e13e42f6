"""Login, callback, logout and the mock IdP's picker page: HTTP in, broker calls, HTML out.

Logout ends the hub session first, whatever follows (fail closed). Then, when the
session's connection can (SAML single logout, OIDC RP-Initiated Logout), the browser goes
to the partner IdP with a one-time ``state``, stored under its digest and bound to the
browser by the ``isthmus_logout`` cookie; an OIDC IdP sends it back to
``/logout/{connection_id}/done`` (federation/web/upstream.py), which checks both.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from connectors.base import LoginRedirect, LogoutConnector
from federation.broker.discovery import Realm
from federation.broker.flows import FLOW_TTL
from federation.broker.login import Broker
from federation.errors import InvalidRequest, IsthmusError, NotFound
from federation.hub import Hub
from federation.proxy.headers import Forwarded, TrustedProxies
from federation.redirects import safe_return_url_for
from federation.sessions import Session, digest
from federation.web import csrf
from federation.web.cookies import FLOW_COOKIE, clear_cookie, set_cookie
from federation.web.templating import render

_log = logging.getLogger("isthmus.web")

LOGOUT_COOKIE = "isthmus_logout"  # binds an upstream logout's state to the browser
LOGOUT_TTL = FLOW_TTL


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def broker_of(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


async def current_session(request: Request) -> Session | None:
    hub = hub_of(request)
    session_id = request.cookies.get(hub.settings.session.cookie_name)
    return await hub.sessions.get(session_id) if session_id else None


def login_redirect(request: Request, return_url: str) -> RedirectResponse:
    return RedirectResponse(f"/login?{urlencode({'rd': return_url})}", status_code=303)


async def home(request: Request) -> Response:
    session = await current_session(request)
    partner = hub_of(request).registry.partner(session.identity.partner_id) if session else None
    return render(request, "home.html", session=session, partner=partner)


async def login_page(request: Request) -> Response:
    """The email form; a ``login_hint`` or ``domain_hint`` that names a partner skips it."""
    query = request.query_params
    login_hint = query.get("login_hint") or None
    attempt = Attempt(query.get("rd") or "/", login_hint or "", csrf.token(request))
    hint = query.get("domain_hint") or login_hint
    realm = broker_of(request).discover(hint) if hint else None
    if realm is not None and not realm.unknown:
        return await _continue(request, attempt, realm)
    return _email_form(request, attempt)


async def login_submit(request: Request) -> Response:
    form = await request.form()
    attempt = Attempt(
        form_field(form, "rd"), form_field(form, "email").strip(), csrf.check(request, form)
    )
    realm = broker_of(request).discover(attempt.email)
    if realm is None:
        message = "Please enter your work email address, like name@company.com."
        return _email_form(request, attempt, status=400, message=message)
    if realm.unknown:
        hub_of(request).audit.emit(
            "login.discovery",
            outcome="failure",
            reason="unknown_domain",
            domain=realm.domain,
            request_id=request.state.request_id,
        )
        message = (
            f"We do not know a company that signs in with “{realm.domain}”. "
            "Check the address, or ask your contact at our company to invite yours."
        )
        return _email_form(request, attempt, status=404, message=message)
    return await _continue(request, attempt, realm)


async def choose_submit(request: Request) -> Response:
    form = await request.form()
    attempt = Attempt(form_field(form, "rd"), form_field(form, "email"), csrf.check(request, form))
    connection_id = form_field(form, "connection")
    realm = broker_of(request).discover(form_field(form, "domain"))
    if realm is None or realm.partner is None or connection_id not in realm.connection_ids:
        raise InvalidRequest(f"connection {connection_id!r} is not offered for this domain")
    return await _start(request, attempt, connection_id)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the login pages carry from form to form until a flow goes upstream."""

    return_url: str
    email: str
    csrf: str


async def _continue(request: Request, attempt: Attempt, realm: Realm) -> Response:
    if not realm.ambiguous:
        return await _start(request, attempt, realm.connection_ids[0])
    assert realm.partner is not None
    options = [
        (c.id, c.display_name or f"{realm.partner.settings.name} — {c.id}")
        for c in realm.partner.settings.connections
    ]
    return form_page(
        request,
        "choose.html",
        csrf_token=attempt.csrf,
        attempt=attempt,
        realm=realm,
        options=options,
        partner=realm.partner,
    )


async def _start(request: Request, attempt: Attempt, connection_id: str) -> Response:
    broker = broker_of(request)
    flow = broker.begin(attempt.return_url, attempt.email or None)
    target = await broker.start(flow, connection_id, request.state.request_id)
    response = browser_to(request, target)
    set_cookie(response, hub_of(request).settings, FLOW_COOKIE, flow.id, FLOW_TTL)
    return response


async def logout_page(request: Request) -> Response:
    """The sign-out form; ``rd`` (an allowed return URL) is where the browser ends up."""
    session = await current_session(request)
    return_url = allowed_return(request, request.query_params.get("rd"))
    return form_page(request, "logout.html", session=session, return_url=return_url)


async def logout_submit(request: Request) -> Response:
    form = await request.form()
    csrf.check(request, form)
    hub = hub_of(request)
    rd = form.get("rd")
    return_url = allowed_return(request, rd if isinstance(rd, str) else None)
    ended = await end_session(request)  # first: the IdP's answer changes nothing here
    upstream = await _upstream_logout(request, ended, return_url) if ended else None
    if upstream is not None:
        response = upstream
    elif return_url is not None:
        response = RedirectResponse(return_url, status_code=303)
    else:
        response = render(request, "logged_out.html")
    clear_cookie(response, hub.settings, hub.settings.session.cookie_name)
    return response


def allowed_return(request: Request, candidate: str | None) -> str | None:
    """``candidate`` when it is a return URL the hub allows (its own pages, proxied apps)."""
    if not candidate:
        return None
    safe = safe_return_url_for(candidate, hub_of(request).settings)
    return safe if safe == candidate else None


def logout_key(state: str) -> str:
    return f"logout:{digest(state)}"


async def _upstream_logout(
    request: Request, ended: Session, return_url: str | None
) -> Response | None:
    """Send the browser to the partner IdP too (SAML SLO, OIDC RP-initiated logout) when
    its connection can. The hub session is already over: an IdP that cannot be told is
    logged and audited, not shown, and the hub's own signed-out page follows."""
    hub = hub_of(request)
    connection_id = ended.identity.connection_id
    found = hub.connector(connection_id)
    if found is None or not isinstance(found[1], LogoutConnector):
        return None
    state = secrets.token_urlsafe(24)
    done = f"{hub.issuer}/logout/{connection_id}/done"
    audit = {
        "partner": ended.identity.partner_id,
        "connection": connection_id,
        "subject": ended.identity.subject,
        "sid": ended.sid,
        "request_id": request.state.request_id,
    }
    try:
        target = await found[1].logout_url(ended.identity, done, state, ended.upstream)
    except IsthmusError as exc:
        _log.warning("upstream logout for %s failed: %s", connection_id, exc.detail)
        hub.audit.emit(
            "logout.upstream.started",
            outcome="failure",
            reason=exc.error,
            detail=exc.detail,
            **audit,
        )
        return None
    if target is None:
        return None
    record = {"connection": connection_id, "return_url": return_url, "flow": target.flow_state}
    await hub.store.put(logout_key(state), record, LOGOUT_TTL)
    hub.audit.emit("logout.upstream.started", **audit)
    response = browser_to(request, target)
    set_cookie(response, hub.settings, LOGOUT_COOKIE, state, LOGOUT_TTL)
    return response


async def end_session(request: Request) -> Session | None:
    """End the browser's hub session everywhere (the store is shared); audit it."""
    hub = hub_of(request)
    session_id = request.cookies.get(hub.settings.session.cookie_name)
    ended = await hub.sessions.end(session_id) if session_id else None
    if ended is not None:
        hub.audit.emit(
            "logout",
            partner=ended.identity.partner_id,
            subject=ended.identity.subject,
            sid=ended.sid,
            request_id=request.state.request_id,
        )
    return ended


async def end_session_response(
    request: Request, *, redirect_to: str | None = None, upstream: bool = False
) -> Response:
    """End the session, clear its cookie, then go to ``redirect_to`` or the signed-out
    page — with ``upstream`` (an app's RP-initiated logout) by way of the partner IdP's
    logout first, as ``/logout`` does, ``redirect_to`` being where the hub's return from
    the IdP ends."""
    ended = await end_session(request)
    chained = await _upstream_logout(request, ended, redirect_to) if upstream and ended else None
    response: Response = (
        chained
        if chained is not None
        else RedirectResponse(redirect_to, status_code=303)
        if redirect_to
        else render(request, "logged_out.html")
    )
    clear_cookie(response, hub_of(request).settings, hub_of(request).settings.session.cookie_name)
    return response


async def mock_idp(request: Request) -> Response:
    """The mock connection's user picker; it only ever returns to the hub's own callback."""
    hub = hub_of(request)
    connection_id = request.path_params["connection_id"]
    entry = hub.registry.connection(connection_id)
    if entry is None or entry[1].type != "mock":
        raise NotFound(f"no mock connection {connection_id!r}")
    partner, connection = entry
    state = request.query_params.get("state", "")
    return render(
        request,
        "mock_login.html",
        partner=partner,
        connection=connection,
        state=state,
        action=hub.callback_url(connection_id),
        login_hint=request.query_params.get("login_hint", ""),
    )


def form_page(
    request: Request,
    template: str,
    *,
    csrf_token: str | None = None,
    status: int = 200,
    **context: object,
) -> Response:
    """A page carrying a form: rendered with its CSRF token (``csrf_token``, or this
    browser's), which the response also sets as the double-submit cookie."""
    token = csrf_token or csrf.token(request)
    page = render(request, template, status=status, csrf=token, **context)
    return csrf.remember(page, hub_of(request).settings, token)


def browser_to(request: Request, target: LoginRedirect) -> Response:
    """A redirect, or for a POST binding a form that the browser submits to ``target``."""
    if target.form is None:
        return RedirectResponse(target.url, status_code=303)
    return render(request, "post_form.html", action=target.url, fields=target.form)


def _email_form(
    request: Request, attempt: Attempt, *, status: int = 200, message: str | None = None
) -> Response:
    return form_page(
        request,
        "login.html",
        csrf_token=attempt.csrf,
        status=status,
        attempt=attempt,
        message=message,
    )


def source_ip(request: Request) -> str:
    """The browser's address: X-Forwarded-For/Forwarded honoured only from trusted_proxies
    (rate limits count per source IP)."""
    hub = hub_of(request)
    peer = request.client.host if request.client else "unknown"
    trusted = TrustedProxies(hub.settings.trusted_proxies)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
    return Forwarded.of(headers, peer, request.url.scheme, request.url.netloc, trusted).client_ip


def form_field(form: object, name: str) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    if not isinstance(value, str):
        raise InvalidRequest(f"form field {name!r} is missing")
    return value


routes = [
    Route("/", home, methods=["GET"]),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/login/connection", choose_submit, methods=["POST"]),
    Route("/logout", logout_page, methods=["GET"]),
    Route("/logout", logout_submit, methods=["POST"]),
    Route("/mock/{connection_id}", mock_idp, methods=["GET"]),
]

"""Where partner IdPs send the browser: the callback (OIDC redirect, SAML ACS), SAML SP
metadata, single logout and the return from an OIDC IdP's end-session endpoint
(``/logout/{connection_id}/done``). Thin: parse HTTP, call the broker or the connector,
answer.

A SAML response arrives as a cross-site POST, which carries no ``SameSite=Lax`` cookie:
the hub would not see the flow cookie that binds the login to the browser that started
it. So a POSTed callback is parked in the store for a minute under a one-time handle and
the browser is sent on (303) to a GET of the same callback — a top-level navigation,
which carries the cookie — where the login completes with the browser binding intact.

``/admin/test-login/{connection_id}`` lets an admin (or that partner's admin) try a
connection: the login goes upstream like any other, but its callback renders what the
connection produced (``test_login.html``) and opens no session, sets no cookie.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from connectors.base import CallbackRequest, LogoutConnector, MetadataConnector
from federation.admin.auth import authenticate
from federation.admin.onboarding import require_tester
from federation.broker.flows import FLOW_TTL
from federation.broker.login import LoginTestResult
from federation.errors import InvalidState, IsthmusError, NotFound
from federation.web import otp
from federation.web.cookies import FLOW_COOKIE, clear_cookie, set_cookie
from federation.web.pages import LOGOUT_COOKIE, broker_of, browser_to, hub_of, logout_key
from federation.web.templating import render

PARKED_TTL = 60
_RESUME = "resume"


async def callback(request: Request) -> Response:
    connection_id = request.path_params["connection_id"]
    with _audited(request, connection_id):  # what fails before the broker is audited too
        if request.method == "POST":
            return await _park(request, connection_id)
        params, method = dict(request.query_params), "GET"
        if _RESUME in params:
            params, method = await _unpark(request, params[_RESUME]), "POST"
    hub = hub_of(request)
    completed = await broker_of(request).complete(
        connection_id,
        params,
        request.cookies.get(FLOW_COOKIE),
        request_id=request.state.request_id,
        method=method,
    )
    if isinstance(completed, LoginTestResult):  # no session, no cookie
        return render(request, "test_login.html", result=completed)
    response = RedirectResponse(completed.return_url, status_code=303)
    set_cookie(
        response,
        hub.settings,
        hub.settings.session.cookie_name,
        completed.session.id,
        hub.settings.session.ttl_seconds,
    )
    clear_cookie(response, hub.settings, FLOW_COOKIE)
    return response


@contextmanager
def _audited(request: Request, connection_id: str) -> Iterator[None]:
    try:
        yield
    except IsthmusError as exc:
        hub_of(request).audit.emit(
            "login.failed",
            outcome="failure",
            connection=connection_id,
            reason=exc.error,
            detail=exc.detail,
            request_id=request.state.request_id,
        )
        raise


async def _park(request: Request, connection_id: str) -> Response:
    form = await request.form()
    params = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    handle = secrets.token_urlsafe(24)
    await hub_of(request).store.put(f"parked:{handle}", params, PARKED_TTL)
    return RedirectResponse(f"/callback/{connection_id}?{_RESUME}={handle}", status_code=303)


async def _unpark(request: Request, handle: str) -> dict[str, str]:
    parked = await hub_of(request).store.take(f"parked:{handle}") if len(handle) < 64 else None
    if parked is None:
        raise InvalidState("parked callback unknown, expired or already used")
    return {str(k): str(v) for k, v in parked.items()}


async def sp_metadata(request: Request) -> Response:
    connector = _connector(request)
    if not isinstance(connector, MetadataConnector):
        raise NotFound(f"connection {request.path_params['connection_id']} has no SP metadata")
    xml = await connector.sp_metadata()
    return Response(xml, media_type="application/samlmetadata+xml")


async def single_logout(request: Request) -> Response:
    """A LogoutRequest from the IdP (end that person's hub sessions) or its LogoutResponse."""
    connection_id = request.path_params["connection_id"]
    connector = _connector(request)
    # SAML only (it publishes SP metadata); an OIDC IdP returns to /logout/{id}/done.
    if not isinstance(connector, LogoutConnector) or not isinstance(connector, MetadataConnector):
        raise NotFound(f"connection {connection_id} has no single logout")
    params = dict(request.query_params)
    if request.method == "POST":
        params.update({k: v for k, v in (await request.form()).items() if isinstance(v, str)})
    hub = hub_of(request)
    outcome = await connector.handle_logout(
        CallbackRequest(str(request.url.replace(query="")), params, request.method)
    )
    if outcome.end_subject is not None:
        ended = await hub.sessions.end_subject(connection_id, outcome.end_subject)
        hub.audit.emit(
            "logout.upstream",
            connection=connection_id,
            subject=outcome.end_subject,
            sessions=ended,
            request_id=request.state.request_id,
        )
    if outcome.redirect is not None:
        return browser_to(request, outcome.redirect)
    response = render(request, "logged_out.html")
    clear_cookie(response, hub.settings, hub.settings.session.cookie_name)
    return response


async def logout_done(request: Request) -> Response:
    """The browser back from the IdP's end-session endpoint (OIDC RP-Initiated Logout
    §3): its ``state`` must be the one-time state of a logout this browser started for this
    connection. The hub session ended before the browser left; here the hub only says so
    (its signed-out page) or goes on to the return URL it allowed at ``/logout``."""
    hub = hub_of(request)
    connection_id = request.path_params["connection_id"]
    params = dict(request.query_params)
    try:
        record = await _take_logout(request, connection_id, params.get("state", ""))
        connector = _connector(request)
        if not isinstance(connector, LogoutConnector):
            raise NotFound(f"connection {connection_id} has no upstream logout")
        await connector.handle_logout(
            CallbackRequest(str(request.url.replace(query="")), params, "GET")
        )
    except IsthmusError as exc:
        hub.audit.emit(
            "logout.upstream.completed",
            outcome="failure",
            connection=connection_id,
            reason=exc.error,
            detail=exc.detail,
            request_id=request.state.request_id,
        )
        raise
    hub.audit.emit(
        "logout.upstream.completed", connection=connection_id, request_id=request.state.request_id
    )
    return_url = record.get("return_url")
    response: Response = (
        RedirectResponse(return_url, status_code=303)
        if isinstance(return_url, str) and return_url
        else render(request, "logged_out.html", upstream=True)
    )
    clear_cookie(response, hub.settings, LOGOUT_COOKIE)
    return response


async def _take_logout(request: Request, connection_id: str, state: str) -> Mapping[str, Any]:
    """The stored logout ``state`` names (taken: a replay finds nothing), checked against
    the browser's logout cookie and the connection."""
    refused = "This sign-out link has expired or was already used. You are signed out here."
    record = await hub_of(request).store.take(logout_key(state)) if 0 < len(state) < 128 else None
    if record is None:
        raise InvalidState(
            "post-logout state unknown, expired or already used", public_message=refused
        )
    cookie = request.cookies.get(LOGOUT_COOKIE)
    if not cookie or not hmac.compare_digest(cookie.encode(), state.encode()):
        raise InvalidState(
            "post-logout redirect arrived in a browser that did not start this logout",
            public_message=refused,
        )
    if record.get("connection") != connection_id:
        raise InvalidState(
            f"logout was started for {record.get('connection')!r}, came back for {connection_id!r}",
            public_message=refused,
        )
    return record


async def test_login(request: Request) -> Response:
    """Start a test login through one connection, for an admin or that partner's admin."""
    hub = hub_of(request)
    connection_id = request.path_params["connection_id"]
    actor = await authenticate(
        hub,
        request.headers.get("authorization"),
        request.cookies.get(hub.settings.session.cookie_name),
    )
    entry = hub.registry.connection(connection_id)
    if entry is None:
        raise NotFound(f"test login for unknown connection {connection_id!r}")
    partner = entry[0]
    require_tester(actor, partner.id)
    broker = broker_of(request)
    flow = broker.begin_test(actor.name)
    try:
        target = await broker.start(flow, connection_id, request.state.request_id)
    except IsthmusError as exc:  # the IdP cannot be reached: the admin sees why
        now = datetime.fromtimestamp(hub.clock(), UTC)
        error = f"{exc.error}: {exc.detail}"
        failed = LoginTestResult.of(partner, connection_id, actor.name, now, error=error)
        return render(request, "test_login.html", status=exc.status, result=failed)
    response = browser_to(request, target)
    set_cookie(response, hub.settings, FLOW_COOKIE, flow.id, FLOW_TTL)
    return response


def _connector(request: Request) -> object:
    found = hub_of(request).connector(request.path_params["connection_id"])
    if found is None:
        raise NotFound(f"unknown connection {request.path_params['connection_id']!r}")
    return found[1]


routes = [
    Route("/callback/{connection_id}", callback, methods=["GET", "POST"]),
    Route("/saml/{connection_id}/metadata", sp_metadata, methods=["GET"]),
    Route("/saml/{connection_id}/slo", single_logout, methods=["GET", "POST"]),
    Route("/logout/{connection_id}/done", logout_done, methods=["GET"]),
    Route("/admin/test-login/{connection_id}", test_login, methods=["GET"]),
    *otp.routes,  # the one-time-code connection's own pages
]

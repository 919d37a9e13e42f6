"""The OIDC provider's HTTP endpoints: thin handlers over ``federation.oidc``.

Parameters in, one protocol call, a response out; every refusal is audited here with the
request id. Errors of the client/redirect_uri check are pages (never redirects); later
authorization errors go back to the client (RFC 6749 §4.1.2.1 with RFC 9207 ``iss``);
JSON endpoints answer RFC 6749 §5.2 errors with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from federation.admin.reviews import lapse_reason
from federation.errors import (
    AccessDenied,
    InvalidToken,
    IsthmusError,
    LoginRequired,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from federation.oidc import core, discovery, rfc6749, rfc7009, rfc7662, rfc9068, rpinitiated
from federation.oidc.context import ProviderContext
from federation.oidc.refresh import exchange_refresh_token
from federation.settings import ClientSettings
from federation.web import errors, pages

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
AUTHORIZE_PATH = "/oauth2/authorize"


def context_of(request: Request) -> ProviderContext:
    hub = pages.hub_of(request)
    return ProviderContext(
        hub.issuer, hub.registry, hub.store, hub.keys, hub.settings.tokens, hub.clock
    )


def _audit_refusal(request: Request, event: str, exc: IsthmusError, client: str | None) -> None:
    pages.hub_of(request).audit.emit(
        event,
        outcome="failure",
        reason=exc.error,
        client=client,
        app=client,
        detail=exc.detail,
        request_id=request.state.request_id,
    )


def _audit(request: Request, event: str, **fields: Any) -> None:
    # The client is the app users sign in to: the audit trail filters both kinds by `app`.
    fields.setdefault("app", fields.get("client"))
    pages.hub_of(request).audit.emit(event, request_id=request.state.request_id, **fields)


async def _pairs(request: Request) -> list[tuple[str, str]]:
    pairs = list(request.query_params.multi_items()) if request.method == "GET" else []
    if request.method == "POST":
        form = await request.form()
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    return pairs


def _with_query(uri: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


# --- discovery and keys ---------------------------------------------------------------


async def openid_configuration(request: Request) -> Response:
    ctx = context_of(request)
    body = discovery.metadata(ctx.issuer, ctx.keys.keys.current.alg)
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})


async def jwks(request: Request) -> Response:
    # current + next + previous: relying parties caching this for 5 minutes keep up
    # with a rotation, since "next" was published before it became current.
    keys = context_of(request).keys.keys.jwks()
    return JSONResponse(
        keys,
        headers={"Cache-Control": "public, max-age=300"},
        media_type="application/jwk-set+json",
    )


# --- authorization endpoint -----------------------------------------------------------


async def authorize(request: Request) -> Response:
    ctx = context_of(request)
    pairs = await _pairs(request)
    try:
        params = rfc6749.parameters(pairs)
        client, redirect_uri = rfc6749.resolve_client(ctx, params)
    except IsthmusError as exc:
        _audit_refusal(request, "oidc.authorize", exc, dict(pairs).get("client_id"))
        raise  # a page: never redirect to an unverified URI
    try:
        areq = rfc6749.validate_authorization_request(client, redirect_uri, params)
    except IsthmusError as exc:
        return _authorize_error(request, ctx, client, redirect_uri, params.get("state"), exc)
    session = await pages.current_session(request)
    fresh = session is not None and rfc6749.needs_fresh_login(areq, session, ctx.now())
    if session is None or fresh:
        if "none" in areq.prompt:
            return _authorize_error(
                request,
                ctx,
                client,
                redirect_uri,
                areq.state,
                LoginRequired("prompt=none without a usable session"),
            )
        # Come back here after sign-in, without prompt=login (or we would loop).
        again = {k: v for k, v in params.items() if not (k == "prompt" and "login" in areq.prompt)}
        here = f"{AUTHORIZE_PATH}?{urlencode(again)}"
        if session is None:
            return pages.login_redirect(request, here)
        return await pages.end_session_response(
            request, redirect_to=f"/login?{urlencode({'rd': here})}"
        )
    assert session is not None
    if ctx.partner_may_sign_in(session.identity.partner_id) is None:
        return _authorize_error(
            request,
            ctx,
            client,
            redirect_uri,
            areq.state,
            AccessDenied(f"partner {session.identity.partner_id} inactive"),
        )
    # An access review nobody confirmed keeps the person out of this client (docs/reviews.md).
    lapse = pages.hub_of(request).catalog.lapses.lapse_for(session.identity, client.client_id)
    if lapse is not None:
        why = lapse_reason(lapse, client.client_id)
        denied = AccessDenied(str(why), public_message=why.message[0].upper() + why.message[1:])
        return _authorize_error(request, ctx, client, redirect_uri, areq.state, denied)
    code = await rfc6749.issue_code(ctx, areq, session)
    _audit(
        request,
        "oidc.code_issued",
        client=client.client_id,
        partner=session.identity.partner_id,
        connection=session.identity.connection_id,
        subject=session.identity.subject,
        email=session.identity.email,
        sid=session.sid,
    )
    location = _with_query(redirect_uri, {"code": code, "state": areq.state, "iss": ctx.issuer})
    return RedirectResponse(location, status_code=303)


def _authorize_error(
    request: Request,
    ctx: ProviderContext,
    client: ClientSettings,
    redirect_uri: str,
    state: str | None,
    exc: IsthmusError,
) -> Response:
    _audit_refusal(request, "oidc.authorize", exc, client.client_id)
    location = _with_query(
        redirect_uri,
        {
            "error": exc.error,
            "error_description": exc.public_message,
            "state": state,
            "iss": ctx.issuer,
        },
    )
    return RedirectResponse(location, status_code=303)


# --- token, introspection, revocation ---------------------------------------------------


def _client_hint(request: Request, params: Mapping[str, str], exc: IsthmusError) -> str | None:
    if isinstance(exc, rfc6749.ClientAuthenticationFailed):
        return exc.client_id
    return params.get("client_id")


async def _authenticated(
    request: Request,
) -> tuple[ProviderContext, dict[str, str], ClientSettings]:
    ctx = context_of(request)
    params = rfc6749.parameters(await _pairs(request))
    client = rfc6749.authenticate_client(ctx, request.headers.get("authorization"), params)
    return ctx, params, client


ClientCall = Callable[[ProviderContext, ClientSettings, dict[str, str]], Awaitable[Response]]


async def _client_endpoint(request: Request, event: str, call: ClientCall) -> Response:
    """Authenticate the client, run ``call``; a refusal is audited and answered in JSON."""
    params: dict[str, str] = {}
    client: ClientSettings | None = None
    try:
        ctx, params, client = await _authenticated(request)
        return await call(ctx, client, params)
    except IsthmusError as exc:
        who = client.client_id if client else _client_hint(request, params, exc)
        _audit_refusal(request, event, exc, who)
        return errors.error_response(request, exc, challenge="Basic")


async def token(request: Request) -> Response:
    async def grant(
        ctx: ProviderContext, client: ClientSettings, params: dict[str, str]
    ) -> Response:
        grant_type = params.get("grant_type")
        if grant_type not in ("authorization_code", "refresh_token"):
            raise UnsupportedGrantType(f"grant_type {grant_type!r}")
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"client {client.client_id} may not use {grant_type}")
        if grant_type == "authorization_code":
            body = await rfc6749.exchange_code(ctx, client, params)
        else:
            body = await exchange_refresh_token(ctx, client, params)
        _audit(request, "oidc.token_issued", client=client.client_id, grant_type=grant_type)
        return JSONResponse(body, headers=NO_STORE)

    return await _client_endpoint(request, "oidc.token", grant)


async def introspect(request: Request) -> Response:
    async def answer(
        ctx: ProviderContext, client: ClientSettings, params: dict[str, str]
    ) -> Response:
        body = await rfc7662.introspect(ctx, client, params.get("token"))
        return JSONResponse(body, headers=NO_STORE)

    return await _client_endpoint(request, "oidc.introspect", answer)


async def revoke(request: Request) -> Response:
    async def answer(
        ctx: ProviderContext, client: ClientSettings, params: dict[str, str]
    ) -> Response:
        revoked = await rfc7009.revoke(ctx, client, params.get("token"))
        _audit(request, "oidc.revoke", client=client.client_id, revoked=revoked)
        return Response(status_code=200, headers=NO_STORE)

    return await _client_endpoint(request, "oidc.revoke", answer)


# --- userinfo ---------------------------------------------------------------------------


async def userinfo(request: Request) -> Response:
    ctx = context_of(request)
    try:
        access_token = await _bearer(request)
        claims, identity = await rfc9068.validate(ctx, access_token)
    except IsthmusError as exc:
        _audit_refusal(request, "oidc.userinfo", exc, None)
        return errors.error_response(request, exc)
    scope = tuple(str(claims.get("scope", "")).split())
    return JSONResponse(core.userinfo(ctx, identity, scope), headers=NO_STORE)


async def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if not header and request.method == "POST":  # RFC 6750 §2.2, form-encoded body
        form = await request.form()
        field = form.get("access_token")
        if isinstance(field, str) and field:
            return field
    raise InvalidToken("no bearer token")


# --- RP-initiated logout ------------------------------------------------------------------


async def logout(request: Request) -> Response:
    ctx = context_of(request)
    pairs = await _pairs(request)
    try:
        params = rfc6749.parameters(pairs)
        req = rpinitiated.validate_logout_request(ctx, params)
    except IsthmusError as exc:
        _audit_refusal(request, "oidc.logout", exc, dict(pairs).get("client_id"))
        raise  # a page, never a redirect to an unregistered URI
    session = await pages.current_session(request)
    if not req.may_end(session.sid if session else None):
        return await pages.logout_page(request)  # ask the user: no silent logout
    _audit(
        request,
        "oidc.logout",
        client=req.client.client_id if req.client else None,
        sid=session.sid if session else None,
    )
    return await pages.end_session_response(request, redirect_to=req.redirect_url(), upstream=True)


routes: list[BaseRoute] = [
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route(AUTHORIZE_PATH, authorize, methods=["GET", "POST"]),
    Route("/oauth2/token", token, methods=["POST"]),
    Route("/oauth2/userinfo", userinfo, methods=["GET", "POST"]),
    Route("/oauth2/jwks", jwks, methods=["GET"]),
    Route("/oauth2/introspect", introspect, methods=["POST"]),
    Route("/oauth2/revoke", revoke, methods=["POST"]),
    Route("/oauth2/logout", logout, methods=["GET", "POST"]),
]

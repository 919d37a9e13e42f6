"""Forward-auth (flow 3 of the map): the edge proxies, the hub decides.

nginx ``auth_request``, Traefik ``forwardAuth`` and Envoy's HTTP ``ext_authz`` ask before
every request; the hub answers

* **200** with the app's identity headers and the assertion JWT header, for the edge to
  copy onto the upstream request (no body, no template: the fast path is one session
  read, one policy decision and a cached signature);
* **401** when there is no valid session, with ``Location`` and ``X-Auth-Redirect`` set to
  the hub's ``/login?rd=<original URL>`` (``rd`` only when it is an app's or the hub's
  own origin, invariant 5). Traefik and Envoy relay the hub's answer to the browser, so
  for them a browser navigation (GET/HEAD asking for HTML) gets a **302** to that URL;
* **403** when the policy (or the partner's status) says no, stating the public reasons:
  JSON by ``Accept``, else a short page. Also for requests the hub cannot place: no app
  for that host and path, an ambiguous path encoding (invariant 4), a caller that is not
  a trusted proxy.

One endpoint per edge dialect, so that a client can never choose which headers describe
its request (Traefik, for one, passes the client's own headers to the auth server):

============================  ===============================================================
``/forward-auth``             nginx: ``X-Original-Method``, ``X-Original-URI``,
                              ``X-Forwarded-Host`` (else ``Host``), ``X-Forwarded-Proto``,
                              ``X-Forwarded-For``
``/forward-auth/traefik``     Traefik: ``X-Forwarded-Method``, ``X-Forwarded-Uri``,
                              ``X-Forwarded-Host``, ``X-Forwarded-Proto``, ``X-Forwarded-For``
``/forward-auth/envoy/…``     Envoy (``path_prefix: /forward-auth/envoy``): the original
                              method, path and query in the request line, ``Host``;
                              ``x-envoy-original-path`` when Envoy rewrote the path
============================  ===============================================================

Everything that describes the original request is the edge's word, so the endpoint
answers only peers in ``trusted_proxies`` (invariant 6); any other caller gets a 403
before a header is read. The client address is the nearest ``X-Forwarded-For`` hop that
is not itself a trusted proxy (:class:`federation.proxy.headers.Forwarded`).

Routing, the path normalization, the decision and its audit event, the identity headers
and the assertion are the reverse proxy's own (:mod:`federation.proxy`), reused as is.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from html import escape
from typing import Literal
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from federation.errors import IsthmusError
from federation.hub import Hub
from federation.proxy.decide import Decider, Verdict
from federation.proxy.forward import Proxy
from federation.proxy.headers import (
    AssertionIssuer,
    Forwarded,
    TrustedProxies,
    identity_header_values,
)
from federation.proxy.routing import AmbiguousPath, Router, app_origins
from federation.redirects import safe_return_url
from federation.web import errors
from federation.web.errors import wants_json

__all__ = ["ForwardAuth", "OriginalRequest", "routes"]

_log = logging.getLogger("isthmus.forward_auth")

Dialect = Literal["nginx", "traefik", "envoy"]
ENVOY_PREFIX = "/forward-auth/envoy"
_NO_STORE = {"Cache-Control": "no-store"}
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)  # RFC 9110
_HOST_BAD = frozenset(" /\\@?#\t\r\n,")


class EdgeRefusal(Exception):
    """The forward-auth request itself is unusable (who sent it, or what it says)."""

    def __init__(self, code: str, detail: str, public: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.public = public


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    """The request the edge is asking about, as the client made it."""

    method: str
    scheme: str
    host: str
    # Path and query exactly as the client sent them (still percent-encoded).
    uri: str
    client_ip: str

    @property
    def raw_path(self) -> str:
        return self.uri.split("?", 1)[0]

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.uri}"


@dataclass
class ForwardAuth:
    """What a decision needs: the reverse proxy's parts (see :func:`engine`)."""

    proxy: Proxy

    @classmethod
    def of(cls, proxy: Proxy) -> ForwardAuth:
        """Forward-auth on the reverse proxy's own router, decider and assertion issuer
        (which follow the registry as it changes)."""
        return cls(proxy)

    @property
    def hub(self) -> Hub:
        return self.proxy.hub

    @property
    def router(self) -> Router:
        return self.proxy.router

    @property
    def decider(self) -> Decider:
        return self.proxy.decider

    @property
    def assertions(self) -> AssertionIssuer:
        return self.proxy.assertions

    @property
    def trusted(self) -> TrustedProxies:
        return self.proxy.trusted

    @property
    def return_origins(self) -> tuple[str, ...]:
        hub = self.hub
        return app_origins(hub.settings.apps, hub.issuer)

    # ------------------------------------------------------------------ the original request
    def original(self, request: Request, dialect: Dialect) -> OriginalRequest:
        peer = request.client.host if request.client else ""
        if peer not in self.trusted:
            raise EdgeRefusal(
                "untrusted_edge",
                f"forward-auth call from {peer or 'an unknown peer'}, which is not in "
                "trusted_proxies: configure the edge's address there",
                "This endpoint answers the configured edge proxies only.",
            )
        headers = request.headers
        default_scheme = urlsplit(self.hub.issuer).scheme
        host = headers.get("host", "")
        if dialect == "nginx":
            method = headers.get("x-original-method", "")
            uri = headers.get("x-original-uri", "")
            required = "X-Original-Method and X-Original-URI"
        elif dialect == "traefik":
            method = headers.get("x-forwarded-method", "")
            uri = headers.get("x-forwarded-uri", "")
            required = "X-Forwarded-Method and X-Forwarded-Uri"
        else:
            method = request.method
            uri = headers.get("x-envoy-original-path") or _envoy_uri(request)
            required = "the original path after " + ENVOY_PREFIX
        forwarded = Forwarded.of(
            [(k, v) for k, v in headers.items()], peer, default_scheme, host, self.trusted
        )
        method = method.strip().upper()
        if not method or not uri:
            raise _bad_edge(f"{dialect} forward-auth request without {required}")
        if not set(method) <= _TOKEN_CHARS or len(method) > 32:
            raise _bad_edge(f"original method {method[:40]!r} is not an HTTP method token")
        if not uri.startswith("/") or uri.startswith("//") or not uri.isprintable():
            raise _bad_edge(f"original URI {uri[:80]!r} is not an origin-form path")
        if not forwarded.host or _HOST_BAD & set(forwarded.host) or not forwarded.host.isascii():
            raise _bad_edge(f"original host {forwarded.host[:80]!r} is not a host")
        return OriginalRequest(method, forwarded.proto, forwarded.host, uri, forwarded.client_ip)

    # ------------------------------------------------------------------ the answer
    async def answer(self, request: Request, dialect: Dialect) -> Response:
        request_id: str = request.state.request_id
        try:
            original = self.original(request, dialect)
            match = self.router.match(original.host, original.raw_path)
        except EdgeRefusal as unusable:
            return self._refused(request, unusable, None)
        except AmbiguousPath as exc:
            ambiguous = EdgeRefusal(
                "ambiguous_path", str(exc), "The address of this request is ambiguous."
            )
            return self._refused(request, ambiguous, original)
        if match is None:
            nowhere = EdgeRefusal(
                "no_app",
                f"no app for host {original.host!r} and path {original.raw_path!r}",
                "There is no application at this address.",
            )
            return self._refused(request, nowhere, original)
        verdict = await self.decider.decide(
            match.app,
            session_id=request.cookies.get(self.hub.settings.session.cookie_name),
            method=original.method,
            path=match.path,
            host=original.host,
            source_ip=original.client_ip,
            request_id=request_id,
        )
        if verdict.allowed:
            return self._allowed(verdict)
        if verdict.session is None:
            return self._login(request, dialect, original)
        return _denied(request, "access_denied", verdict.reasons, request_id)

    def _allowed(self, verdict: Verdict) -> Response:
        assert verdict.session is not None and verdict.partner is not None
        app, identity = verdict.app, verdict.session.identity
        headers = dict(identity_header_values(app, identity, verdict.partner))
        if app.assertion_header:
            headers[app.assertion_header] = self.assertions.issue(
                app, identity, verdict.partner, verdict.session.sid
            )
        headers.update(_NO_STORE)
        return Response(status_code=200, headers=headers)

    def login_url(self, original: OriginalRequest) -> str:
        """The hub's login page, back to the original URL when that URL is safe."""
        target = original.url
        safe = safe_return_url(target, self.hub.issuer, self.return_origins) == target
        query = f"?{urlencode({'rd': target})}" if safe else ""
        return f"{self.hub.issuer}/login{query}"

    def _login(self, request: Request, dialect: Dialect, original: OriginalRequest) -> Response:
        location = self.login_url(original)
        headers = {"Location": location, "X-Auth-Redirect": location, **_NO_STORE}
        navigation = original.method in ("GET", "HEAD") and "text/html" in request.headers.get(
            "accept", ""
        )
        if dialect != "nginx" and navigation:
            return RedirectResponse(location, status_code=302, headers=headers)
        if wants_json(request):
            body = {
                "error": "login_required",
                "login_url": location,
                "request_id": request.state.request_id,
            }
            return JSONResponse(body, status_code=401, headers=headers)
        return Response("Sign-in required.\n", 401, headers, media_type="text/plain")

    def _refused(
        self, request: Request, refusal: EdgeRefusal, original: OriginalRequest | None
    ) -> Response:
        request_id: str = request.state.request_id
        _log.warning("forward-auth refused: %s [request_id=%s]", refusal.detail, request_id)
        self.hub.audit.emit(
            "forward_auth.refused",
            outcome="failure",
            reason=refusal.code,
            detail=refusal.detail,
            peer=request.client.host if request.client else None,
            host=original.host if original else None,
            method=original.method if original else None,
            path=original.raw_path if original else None,
            source_ip=original.client_ip if original else None,
            request_id=request_id,
        )
        status = 400 if refusal.code == "bad_edge_request" else 403
        return _denied(request, refusal.code, (refusal.public,), request_id, status=status)


def _bad_edge(detail: str) -> EdgeRefusal:
    return EdgeRefusal("bad_edge_request", detail, "The edge proxy sent an incomplete request.")


def _envoy_uri(request: Request) -> str:
    raw = bytes(request.scope.get("raw_path") or request.url.path.encode())
    rest = raw.decode("latin-1")[len(ENVOY_PREFIX) :] or "/"
    query = bytes(request.scope.get("query_string") or b"").decode("latin-1")
    return f"{rest}?{query}" if query else rest


def _denied(
    request: Request,
    error: str,
    reasons: tuple[str, ...],
    request_id: str,
    *,
    status: int = 403,
) -> Response:
    if wants_json(request):
        body = {"error": error, "reasons": list(reasons), "request_id": request_id}
        return JSONResponse(body, status_code=status, headers=_NO_STORE)
    items = "".join(f"<li>{escape(reason)}</li>" for reason in reasons)
    page = (
        "<!doctype html><meta charset=utf-8><title>Access denied</title>"
        f"<h1>Access denied</h1><ul>{items}</ul><p>Request id: {escape(request_id)}</p>"
    )
    return HTMLResponse(page, status_code=status, headers=_NO_STORE)


def engine(request: Request) -> ForwardAuth:
    """The app instance's :class:`ForwardAuth` (on its :class:`Proxy`), built on first use."""
    state = request.app.state
    found: ForwardAuth | None = getattr(state, "forward_auth", None)
    if found is None:
        found = ForwardAuth.of(state.proxy)
        state.forward_auth = found
    return found


class Endpoint:
    """One dialect's endpoint, as a plain ASGI app: it answers every method (Envoy asks
    with the original one, whatever it is)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect: Dialect = dialect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await engine(request).answer(request, self.dialect)
        await response(scope, receive, send)


def endpoint_for(path: str) -> Endpoint | None:
    """The dialect endpoint serving ``path``, or None."""
    if path == "/forward-auth":
        return _ENDPOINTS["nginx"]
    if path == "/forward-auth/traefik":
        return _ENDPOINTS["traefik"]
    if path.startswith(ENVOY_PREFIX + "/"):
        return _ENDPOINTS["envoy"]
    return None


class EdgeMiddleware:
    """The edge's hot path: forward-auth calls skip Starlette's router and middleware
    stack (a fifth of a decision's time), keeping the one error mapping and the request
    id. Same routing rule as the proxy: on the hub's host, or from a trusted edge."""

    def __init__(self, app: ASGIApp, host_app: ASGIApp, proxy: Proxy) -> None:
        self.app = app
        self.host_app = host_app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = endpoint_for(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or not self._for_the_hub(scope):
            await self.app(scope, receive, send)
            return
        scope["app"] = self.host_app  # what Request.app (and so engine()) reads
        try:
            await endpoint(scope, receive, send)
        except IsthmusError as exc:
            await errors.error_response(Request(scope), exc)(scope, receive, send)
        except Exception as exc:
            await (await errors.unexpected_error(Request(scope), exc))(scope, receive, send)

    def _for_the_hub(self, scope: Scope) -> bool:
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
        client = scope.get("client")
        return host == self.proxy.hub_host or (
            client is not None and str(client[0]) in self.proxy.trusted
        )


_ENDPOINTS: dict[Dialect, Endpoint] = {d: Endpoint(d) for d in ("nginx", "traefik", "envoy")}

routes = [
    Route("/forward-auth", Endpoint("nginx")),
    Route("/forward-auth/traefik", Endpoint("traefik")),
    Route(ENVOY_PREFIX + "/{rest:path}", Endpoint("envoy")),
]

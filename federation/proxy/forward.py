"""The data path: an ASGI dispatcher in front of the hub's own routes, forwarding on
aiohttp's client (one shared ClientSession, pooled connections, opened and closed with the
app's lifespan).

A request whose host and normalized path belong to an app is decided
(:mod:`federation.proxy.decide`) and, when allowed, streamed to one of the app's upstreams
and back chunk by chunk (never a whole body in memory); WebSockets are relayed message by
message. Everything else — and the hub's own routes on the hub's own host — goes to the
hub. Errors become pages through the one error mapper (:mod:`federation.web.errors`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from yarl import URL

from federation.errors import AccessDenied, InvalidRequest, IsthmusError, StoreUnavailable
from federation.hub import Hub
from federation.observability import metrics
from federation.proxy.decide import Decider, Outcome, PolicySet, Verdict
from federation.proxy.headers import (
    AssertionIssuer,
    Forwarded,
    TrustedProxies,
    identity_header_values,
    response_headers,
    upstream_request_headers,
)
from federation.proxy.routing import AmbiguousPath, Match, Router, is_edge_path, is_hub_path
from federation.settings import AppSettings
from federation.web import errors
from policies.paths import to_upstream

_log = logging.getLogger("isthmus.proxy")

_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_CHUNK = 64 * 1024


class BadGateway(IsthmusError):
    error = "bad_gateway"
    status = 502
    public_message = "The application could not be reached. Please try again shortly."


class GatewayTimeout(IsthmusError):
    error = "gateway_timeout"
    status = 504
    public_message = "The application did not answer in time. Please try again shortly."


class AmbiguousRequestPath(InvalidRequest):
    error = "ambiguous_path"
    public_message = "The address of this request is ambiguous and was refused."


class Denied(AccessDenied):
    """A policy refusal; the public message states the reasons the policy shows."""

    def __init__(self, verdict: Verdict) -> None:
        reasons = "; ".join(r.rstrip(". ") for r in verdict.reasons)
        message = "You do not have access to this page" + (f": {reasons}." if reasons else ".")
        super().__init__(f"app {verdict.app.id}: denied {verdict.path}", public_message=message)
        self.reasons = verdict.reasons


class Proxy:
    """Routing, decisions, identity and the upstream client; started by the lifespan."""

    def __init__(self, hub: Hub, *, policy_set: PolicySet | None = None) -> None:
        self.hub = hub
        # A fixed policy set (tests) is kept; else each catalog brings its policies.
        self._fixed_policies = policy_set
        self._catalog = hub.catalog
        self._router = Router(hub.settings.apps)
        self._decider = Decider(hub, policy_set or hub.catalog.policies)
        self.assertions = AssertionIssuer(hub.keys, hub.issuer, clock=hub.clock)
        self.trusted = TrustedProxies(hub.settings.trusted_proxies)
        self.hub_host = urlsplit(hub.issuer).netloc.lower()
        self.cookie_name = hub.settings.session.cookie_name
        self._client: aiohttp.ClientSession | None = None
        self._timeouts: dict[str, tuple[AppSettings, aiohttp.ClientTimeout]] = {}

    @property
    def router(self) -> Router:
        """The routes of the current catalog (rebuilt once when the registry changes)."""
        if self._catalog is not self.hub.catalog:
            self._follow_catalog()
        return self._router

    @property
    def decider(self) -> Decider:
        if self._catalog is not self.hub.catalog:
            self._follow_catalog()
        return self._decider

    def _follow_catalog(self) -> None:
        catalog = self.hub.catalog
        self._router = Router(catalog.settings.apps)
        self._decider = Decider(self.hub, self._fixed_policies or catalog.policies)
        self._catalog = catalog

    async def start(self) -> None:
        if self._client is None and self.router:
            connector = aiohttp.TCPConnector(
                limit=1024, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=60
            )
            self._client = aiohttp.ClientSession(
                connector=connector,
                # One jar for every user would hand one user's cookies to another.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                read_bufsize=_CHUNK,
            )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def timeout(self, app: AppSettings) -> aiohttp.ClientTimeout:
        """The app's upstream timeouts (one immutable object per app, not per request)."""
        found = self._timeouts.get(app.id)
        if found is None or found[0] is not app:
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=app.connect_timeout_seconds,
                sock_read=app.read_timeout_seconds,
            )
            found = self._timeouts[app.id] = (app, timeout)
        return found[1]

    async def client(self) -> aiohttp.ClientSession:
        if self._client is None:  # served without a lifespan (in-process test transports)
            await self.start()
        assert self._client is not None
        return self._client

    def match(self, scope: Scope) -> Match | None:
        """The app route for this request, or None for the hub's own routes."""
        host = _header(scope, b"host").lower()
        on_hub_host = host == self.hub_host
        if on_hub_host and is_hub_path(scope["path"]):
            return None
        if is_edge_path(scope["path"]) and _peer(scope) in self.trusted:
            # An edge's authorization call (Envoy ext_authz keeps the app's Host): it is
            # for the forward-auth endpoint, whatever the host — only from trusted edges.
            return None
        found = self.router.match(host, _raw_path(scope))
        if found is None or (on_hub_host and is_hub_path(found.path)):
            return None
        return found


class ProxyMiddleware:
    """Dispatches app routes to the proxy; everything else to the hub's own routes."""

    def __init__(self, app: ASGIApp, proxy: Proxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.proxy.router:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            scope.setdefault("state", {}).setdefault("request_id", secrets.token_hex(8))
        try:
            match = self.proxy.match(scope)
        except AmbiguousPath as exc:
            await _refuse(scope, receive, send, AmbiguousRequestPath(str(exc)))
            return
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["state"][metrics.ROUTE_GROUP] = "proxy"
        exchange = Exchange(self.proxy, match, scope, receive, send)
        if scope["type"] == "websocket":
            await exchange.websocket()
        else:
            await exchange.http()


class Exchange:
    """One proxied request: decide, then forward or answer."""

    def __init__(
        self, proxy: Proxy, match: Match, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.proxy = proxy
        self.match = match
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        self.host = _header(scope, b"host")
        peer = scope.get("client")
        self.peer = peer[0] if peer else ""
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        self.forwarded = Forwarded.of(self.headers, self.peer, scheme, self.host, proxy.trusted)
        self.request_id: str = scope["state"]["request_id"]

    async def _verdict(self) -> Verdict:
        cookie = _cookie(self.headers, self.proxy.cookie_name)
        return await self.proxy.decider.decide(
            self.match.app,
            session_id=cookie,
            method=self.scope.get("method", "GET"),
            path=self.match.path,
            host=self.forwarded.host,
            source_ip=self.forwarded.client_ip,
            request_id=self.request_id,
        )

    def _upstream(self, websocket: bool) -> tuple[URL, list[tuple[str, str]]]:
        route = self.match.route
        upstream = route.upstream()
        # The normalized path, re-encoded: the app decodes exactly the path decided on.
        path = upstream.base_path + to_upstream(self.match.forward_path)
        query = self.scope.get("query_string", b"").decode("latin-1")
        origin = upstream.origin
        if websocket:
            origin = origin.replace("http", "ws", 1)
        url = URL(f"{origin}{path}?{query}" if query else f"{origin}{path}", encoded=True)
        headers = upstream_request_headers(
            self.headers,
            route.app,
            self.forwarded,
            session_cookie=self.proxy.cookie_name,
            websocket=websocket,
        )
        headers.append(("X-Request-ID", self.request_id))
        return url, headers

    def _identity(self, verdict: Verdict) -> list[tuple[str, str]]:
        assert verdict.session is not None and verdict.partner is not None
        app, identity = verdict.app, verdict.session.identity
        added = identity_header_values(app, identity, verdict.partner)
        if app.assertion_header:
            token = self.proxy.assertions.issue(app, identity, verdict.partner, verdict.session.sid)
            added.append((app.assertion_header, token))
        return added

    async def http(self) -> None:
        try:
            verdict = await self._verdict()
        except IsthmusError as exc:
            await self._error(exc)
            return
        except (ConnectionError, TimeoutError) as exc:  # the session store (invariant 7)
            await self._error(StoreUnavailable(repr(exc)))
            return
        if verdict.outcome is Outcome.login:
            await self._login(verdict)
            return
        if verdict.outcome is Outcome.deny:
            await self._error(Denied(verdict))
            return
        url, headers = self._upstream(websocket=False)
        headers += self._identity(verdict)
        await self._forward(url, headers)

    async def _forward(self, url: URL, headers: list[tuple[str, str]]) -> None:
        app = self.match.app
        timeout = self.proxy.timeout(app)
        client = await self.proxy.client()
        started = False
        try:
            async with client.request(
                self.scope["method"],
                url,
                headers=headers,
                data=self._body() if _has_body(self.scope) else None,
                allow_redirects=False,
                timeout=timeout,
                compress=None,
            ) as upstream:
                await self.send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status,
                        "headers": response_headers(upstream.raw_headers),
                    }
                )
                started = True
                content = upstream.content
                async for chunk in content.iter_chunked(_CHUNK):
                    # Each chunk goes on as it comes; the last one, when the body is
                    # already complete, closes the response (no extra empty message).
                    done = content.at_eof()
                    await self.send(
                        {"type": "http.response.body", "body": chunk, "more_body": not done}
                    )
                    if done:
                        return
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            metrics.upstream_error(app.id, "interrupted" if started else "timeout")
            if started:
                raise
            await self._error(GatewayTimeout(f"app {app.id} at {url.origin()}: {exc!r}"))
        except (aiohttp.ClientError, OSError) as exc:
            metrics.upstream_error(app.id, "interrupted" if started else "unreachable")
            if started:
                raise
            await self._error(BadGateway(f"app {app.id} at {url.origin()}: {exc!r}"))

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return

    async def _login(self, verdict: Verdict) -> None:
        """To the hub's login with the original absolute URL as ``rd``."""
        query = self.scope.get("query_string", b"").decode("latin-1")
        raw = _raw_path(self.scope) + (f"?{query}" if query else "")
        original = f"{self.forwarded.proto}://{self.forwarded.host}{raw}"
        location = f"{self.proxy.hub.issuer}/login?{urlencode({'rd': original})}"
        request = Request(self.scope)
        response: Response
        if errors.wants_json(request):
            body = {
                "error": "login_required",
                "error_description": "Sign in to reach this application.",
                "login_url": location,
                "request_id": self.request_id,
            }
            response = JSONResponse(
                body, status_code=401, headers={"Cache-Control": "no-store", "Location": location}
            )
        else:
            response = RedirectResponse(location, status_code=303)
            response.headers["Cache-Control"] = "no-store"
        await response(self.scope, self.receive, self.send)

    async def _error(self, exc: IsthmusError) -> None:
        await _refuse(self.scope, self.receive, self.send, exc)

    async def websocket(self) -> None:
        app = self.match.app
        try:
            verdict = await self._verdict()
        except (IsthmusError, ConnectionError, TimeoutError) as exc:
            _log.warning("websocket to %s refused: %r", app.id, exc)
            await self.send({"type": "websocket.close", "code": 1011})
            return
        if not verdict.allowed or not app.websockets:
            await self.send({"type": "websocket.close", "code": 1008})
            return
        url, headers = self._upstream(websocket=True)
        headers += self._identity(verdict)
        protocols = [
            p.strip()
            for name, value in self.headers
            if name.lower() == "sec-websocket-protocol"
            for p in value.split(",")
            if p.strip()
        ]
        client = await self.proxy.client()
        try:
            upstream = await client.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                autoping=True,
                max_msg_size=0,
                compress=0,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            metrics.upstream_error(app.id, "websocket")
            _log.warning("websocket upstream of %s failed: %r [%s]", app.id, exc, self.request_id)
            await self.send({"type": "websocket.close", "code": 1011})
            return
        async with upstream:
            await self.send({"type": "websocket.accept", "subprotocol": upstream.protocol})
            await _relay(upstream, self.receive, self.send)


async def _relay(upstream: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send) -> None:
    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    await upstream.send_str(message["text"])
                else:
                    await upstream.send_bytes(message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                await upstream.close(code=message.get("code", 1000))
                return

    async def upstream_to_client() -> None:
        async for message in upstream:
            if message.type is aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": message.data})
            elif message.type is aiohttp.WSMsgType.BINARY:
                await send({"type": "websocket.send", "bytes": message.data})
        await send({"type": "websocket.close", "code": upstream.close_code or 1000})

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                _log.info("websocket relay ended: %r", task.exception())
    finally:
        for task in tasks:
            task.cancel()


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: IsthmusError) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    request = Request(scope, receive)
    response = errors.error_response(request, exc)
    if isinstance(exc, Denied) and isinstance(response, JSONResponse):
        body: dict[str, Any] = json.loads(bytes(response.body))
        body["reasons"] = list(exc.reasons)
        response = JSONResponse(body, status_code=exc.status, headers=_plain(response))
    await response(scope, receive, send)


def _plain(response: Response) -> dict[str, str]:
    return {
        k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
    }


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    if raw:
        return str(raw.decode("latin-1")).split("?", 1)[0]
    return quote(scope["path"], safe=_PATH_SAFE + "%")


def _cookie(headers: list[tuple[str, str]], name: str) -> str | None:
    for header, value in headers:
        if header.lower() != "cookie":
            continue
        for part in value.split(";"):
            key, _, found = part.strip().partition("=")
            if key == name:
                return found
    return None


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None

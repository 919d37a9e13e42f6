"""The application factory: routes, request ids, error mapping, lifespan."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.broker.login import Broker
from federation.errors import IsthmusError, PayloadTooLarge
from federation.hub import Hub, build_hub
from federation.observability import logging as log_context
from federation.observability.asgi import Observability, ObservabilityMiddleware
from federation.proxy.forward import Proxy, ProxyMiddleware
from federation.settings import Settings
from federation.web import (
    admin_api,
    console,
    console_grants,
    console_requests,
    console_reviews,
    errors,
    forward_auth,
    pages,
    provider,
    signup,
    upstream,
)

_log = logging.getLogger("isthmus")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Give every request an id (an incoming well-formed X-Request-ID is kept) and echo it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        token = log_context.request_id.set(request_id)  # every log line of it carries it

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_context.request_id.reset(token)


class BodyLimitMiddleware:
    """Refuse bodies over ``limit`` bytes (413) as they stream in, never holding more."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body over {self.limit} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            receive = _refusing(too_large)  # refused before a byte of the body is read
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise too_large
            return message

        await self.app(scope, limited, send)


def _refusing(error: Exception) -> Receive:
    async def receive() -> Message:
        raise error

    return receive


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(
    settings: Settings | None = None,
    *,
    hub: Hub | None = None,
    observability: Observability | None = None,
) -> Starlette:
    if hub is None:
        hub = build_hub(settings or Settings())
    proxy = Proxy(hub)
    if observability is None:
        observability = Observability.of(hub)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        counted = observability.enter()  # the registry watcher's store errors count too
        await hub.start()  # the registry: loaded (seeded from the file) and followed
        # The audit writer's task runs in this context, not in the first request's (whose
        # request id its log lines would carry).
        hub.audit_sink.start()
        await proxy.start()
        try:
            yield
        finally:
            observability.readiness.drain()  # not ready from the first step of the end
            await proxy.aclose()
            await hub.aclose()  # the audit sink flushes; the store's connections close
            observability.close(counted)

    app = Starlette(
        routes=_routes(),
        exception_handlers={
            IsthmusError: errors.isthmus_error,
            HTTPException: errors.http_error,
            Exception: errors.unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.broker = Broker(hub)
    app.state.proxy = proxy
    app.state.observability = observability
    app.add_middleware(BodyLimitMiddleware, limit=hub.settings.max_request_bytes)
    # Requests for a proxied app go to the proxy (their bodies stream to the app, outside
    # the hub's body limit); everything else to the hub's own routes.
    app.add_middleware(ProxyMiddleware, proxy=proxy)
    app.add_middleware(forward_auth.EdgeMiddleware, host_app=app, proxy=proxy)
    # Outside the edge and proxy dispatchers: times every request; answers the probes and
    # the metrics before an app route can claim their paths.
    app.add_middleware(ObservabilityMiddleware, observability=observability, hub=hub)
    app.add_middleware(RequestIdMiddleware)
    return app


def _routes() -> list[BaseRoute]:
    static = Path(__file__).parent / "static"
    return [
        Route("/healthz", healthz, methods=["GET"]),
        *pages.routes,
        *upstream.routes,
        *forward_auth.routes,
        *provider.routes,
        *admin_api.routes,
        *console.routes,
        *console_grants.routes,
        *console_requests.routes,
        *console_reviews.routes,
        *signup.routes,
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]

"""The app's observability: probes, the metrics endpoint, request timing and spans.

:class:`ObservabilityMiddleware` sits outside the forward-auth and proxy dispatchers, so it
times every request, the edge's and the proxied ones included. It answers ``/healthz``,
``/readyz`` and the metrics path itself — before any app route can claim them — on the
hub's host and on any host that is not an app's (probes and scrapes come to the pod's
address); on an app's own host those paths are the app's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import Token
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.observability.health import Readiness
from federation.observability.metrics import CONTENT_TYPE, ROUTE_GROUP, Metrics, current
from federation.observability.metrics import route_group as group_of_path
from federation.observability.tracing import Tracing
from federation.proxy.headers import TrustedProxies
from federation.settings import ObservabilitySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from federation.admin.catalog import Catalog
    from federation.hub import Hub

__all__ = ["Observability", "ObservabilityMiddleware"]

_NO_STORE = {"Cache-Control": "no-store"}
Probe = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Observability:
    """What one app observes with: its settings, readiness, metrics (None when disabled)
    and tracing."""

    settings: ObservabilitySettings
    readiness: Readiness
    metrics: Metrics | None
    tracing: Tracing

    @classmethod
    def of(cls, hub: Hub, *, span_exporter: SpanExporter | None = None) -> Observability:
        """Observability of ``hub``, its metrics counting the hub's audit events."""
        settings = hub.base_settings.observability
        metrics = Metrics(hub.registry) if settings.metrics_enabled else None
        if metrics is not None:
            hub.audit.sinks.append(metrics.audit)
        readiness = Readiness(hub.store, hub.documents, timeout=settings.readiness_timeout_seconds)
        return cls(settings, readiness, metrics, Tracing.setup(settings.tracing, span_exporter))

    def enter(self) -> Token[Metrics | None]:
        """Count store errors of the lifespan's work (the registry watcher) here."""
        return current.set(self.metrics)

    def close(self, token: Token[Metrics | None] | None = None) -> None:
        self.readiness.drain()
        self.tracing.shutdown()
        if token is not None:
            current.reset(token)


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, observability: Observability, hub: Hub) -> None:
        self.app = app
        self.hub = hub
        self.readiness = observability.readiness
        self.metrics = observability.metrics
        self.tracing = observability.tracing
        self._traces = observability.tracing.enabled
        settings = observability.settings
        self._probes: dict[str, Probe] = {"/healthz": _healthz, "/readyz": self._readyz}
        if self.metrics is not None:
            self._probes[settings.metrics_path] = self._metrics
        self._metrics_allow = TrustedProxies(settings.metrics_allow)
        self._open_metrics = not settings.metrics_allow
        self._hub_host = urlsplit(hub.issuer).netloc.lower()
        self._app_hosts: tuple[Catalog | None, frozenset[str]] = (None, frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._other(scope, receive, send)
            return
        path = scope["path"]
        probe = self._probes.get(path)
        if probe is not None and scope["method"] in ("GET", "HEAD") and self._for_hub(scope):
            await probe(scope, receive, send)
            return
        metrics = self.metrics
        if self._traces or metrics is None:
            await self._traced(scope, receive, send)
            return
        # The hot path (every forward-auth call, every proxied request): kept inline.
        status = 500  # unless a response starts: an exception becomes a 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = current.set(metrics)
        started = perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = perf_counter() - started
            current.reset(token)
            metrics.observe_request(_group(scope, path), scope["method"], status, elapsed)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Lifespan untouched; a WebSocket counts its upstream errors here."""
        if self.metrics is None or scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        token = current.set(self.metrics)
        try:
            await self.app(scope, receive, send)
        finally:
            current.reset(token)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        """With tracing, or without metrics (then with a span only if tracing)."""
        if not self._traces:
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path, method = scope["path"], scope["method"]
        token = current.set(self.metrics)
        started = perf_counter()
        with self.tracing.server_span(scope["headers"], method, group_of_path(path), path) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                elapsed = perf_counter() - started
                current.reset(token)
                group = _group(scope, path)
                if span is not None:
                    span.update_name(f"{method} {group}")
                    span.set_attribute("isthmus.route", group)
                self.tracing.finish(span, status)
                if self.metrics is not None:
                    self.metrics.observe_request(group, method, status, elapsed)

    # ------------------------------------------------------------------ probes
    def _for_hub(self, scope: Scope) -> bool:
        """The hub's host, or a host no app is named by (a pod address): probes are ours."""
        host = ""
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1").lower().rstrip(".")
                break
        if host == self._hub_host:
            return True
        app_hosts = self._hosts_of_apps()
        return host not in app_hosts and host.rsplit(":", 1)[0] not in app_hosts

    def _hosts_of_apps(self) -> frozenset[str]:
        catalog = self.hub.catalog
        if self._app_hosts[0] is not catalog:
            hosts = frozenset(
                host.strip().lower().rstrip(".")
                for app in catalog.settings.apps
                for host in app.hosts
            )
            self._app_hosts = (catalog, hosts)
        return self._app_hosts[1]

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        report = await self.readiness.report()
        status = 200 if report.ready else 503
        await JSONResponse(report.body(), status, headers=_NO_STORE)(scope, receive, send)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.metrics is not None
        client = scope.get("client")
        if not self._open_metrics and (client is None or client[0] not in self._metrics_allow):
            body = {"error": "forbidden", "error_description": "Metrics are not served here."}
            await JSONResponse(body, 403, headers=_NO_STORE)(scope, receive, send)
            return
        response = Response(self.metrics.render(), headers=_NO_STORE, media_type=CONTENT_TYPE)
        await response(scope, receive, send)


async def _healthz(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"status": "ok"}, headers=_NO_STORE)(scope, receive, send)


def _group(scope: Scope, path: str) -> str:
    state = scope.get("state")
    marked = state.get(ROUTE_GROUP) if state is not None else None
    return str(marked) if marked else group_of_path(path)

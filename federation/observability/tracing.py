"""Optional OpenTelemetry traces (``pip install 'isthmus[otel]'``).

With ``observability.tracing.enabled`` and the packages installed: a server span for every
inbound request (continuing the caller's W3C ``traceparent``), and client spans for the
hub's outbound HTTP — httpx (partner IdPs, back-channel logout) and aiohttp (the proxy's
upstream requests, which carry the ``traceparent`` on) — each with the request id as the
``isthmus.request_id`` attribute. Spans go to an OTLP/HTTP collector in batches.

Otherwise nothing is imported and :class:`Tracing` does nothing; enabled without the
packages, one warning says so and the hub runs untraced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from federation.observability.logging import request_id
from federation.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

__all__ = ["REQUEST_ID_ATTRIBUTE", "Tracing"]

REQUEST_ID_ATTRIBUTE = "isthmus.request_id"
_log = logging.getLogger("isthmus.tracing")
_warned = False
_instrumented: list[Any] = []  # the provider the HTTP clients report to


class Tracing:
    """The hub's tracer, or nothing (:attr:`enabled` is False)."""

    def __init__(self, tracer: Tracer | None = None, provider: TracerProvider | None = None):
        self._tracer = tracer
        self._provider = provider

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @classmethod
    def setup(cls, settings: TracingSettings, exporter: SpanExporter | None = None) -> Tracing:
        """Tracing as configured; ``exporter`` replaces the OTLP one (tests)."""
        global _warned
        if not settings.enabled:
            return cls()
        try:
            return _start(settings, exporter)
        except ImportError as exc:
            if not _warned:
                _warned = True
                _log.warning(
                    "tracing is enabled but OpenTelemetry is not installed (%s): running "
                    "without traces; install isthmus[otel]",
                    exc,
                )
            return cls()

    @contextmanager
    def server_span(
        self, headers: list[tuple[bytes, bytes]], method: str, route: str, path: str
    ) -> Iterator[Span | None]:
        """The span of one inbound request (None when not tracing)."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        attributes = {
            "http.request.method": method,
            "url.path": path,
            "isthmus.route": route,
            REQUEST_ID_ATTRIBUTE: request_id.get() or "",
        }
        with self._tracer.start_as_current_span(
            f"{method} {route}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            yield span

    @staticmethod
    def finish(span: Span | None, status: int) -> None:
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))

    def shutdown(self) -> None:
        """Send what is buffered and stop."""
        if self._provider is not None:
            self._provider.shutdown()
            if _instrumented and _instrumented[0] is self._provider:
                _uninstrument()


def _start(settings: TracingSettings, exporter: SpanExporter | None) -> Tracing:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter(endpoint=settings.otlp_endpoint) if settings.otlp_endpoint else None
        provider.add_span_processor(BatchSpanProcessor(otlp or OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _instrument(provider)
    return Tracing(provider.get_tracer("isthmus"), provider)


def _instrument(provider: TracerProvider) -> None:
    """Client spans for httpx and aiohttp (process-wide: the last hub set up wins)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    if _instrumented:
        _uninstrument()

    def tag(span: Span, *_: object) -> None:
        current = request_id.get()
        if current and span.is_recording():
            span.set_attribute(REQUEST_ID_ATTRIBUTE, current)

    async def tag_async(span: Span, *_: object) -> None:
        tag(span)

    HTTPXClientInstrumentor().instrument(
        tracer_provider=provider, request_hook=tag, async_request_hook=tag_async
    )
    AioHttpClientInstrumentor().instrument(tracer_provider=provider, request_hook=tag)
    _instrumented.append(provider)


def _uninstrument() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    AioHttpClientInstrumentor().uninstrument()
    _instrumented.clear()

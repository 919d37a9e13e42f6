"""OpenTelemetry: off by default; enabled without the packages, one warning and no traces;
enabled with them, a server span per request and client spans for outbound HTTP, all with
the request id."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from federation.observability import tracing as tracing_module
from federation.observability.asgi import Observability
from federation.observability.logging import request_id
from federation.observability.tracing import REQUEST_ID_ATTRIBUTE, Tracing
from federation.settings import TracingSettings
from tests.observability.support import ORDERS_HOST, in_process, make_hub, session_id, settings
from tests.peers.common import missing
from tests.proxy.support import Upstream, serve_upstream

ENABLED = TracingSettings(enabled=True, service_name="isthmus-test")


@pytest.fixture
def exporter() -> Any:
    try:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        missing("OpenTelemetry", "pip install -e '.[otel]'")
    return InMemorySpanExporter()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    recorder = Upstream()
    with serve_upstream(recorder):
        yield recorder


def test_off_by_default() -> None:
    assert not Tracing.setup(TracingSettings()).enabled


def test_enabled_without_the_packages_warns_once_and_runs_untraced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tracing_module, "_warned", False)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.resources", None)  # not installed
    with caplog.at_level("WARNING", logger="isthmus.tracing"):
        first, second = Tracing.setup(ENABLED), Tracing.setup(ENABLED)
    assert not first.enabled and not second.enabled
    warnings = [r for r in caplog.records if r.name == "isthmus.tracing"]
    assert len(warnings) == 1
    assert "isthmus[otel]" in warnings[0].getMessage()


async def test_a_proxied_request_is_one_trace_with_the_request_id(
    exporter: Any, upstream: Upstream
) -> None:
    hub = make_hub(settings(upstream.url, observability={"tracing": ENABLED.model_dump()}))
    observability = Observability.of(hub, span_exporter=exporter)
    async with in_process(hub, observability=observability) as served:
        cookie = await session_id(hub)
        page = await served.http.get(
            "/orders/1",
            headers={"Host": ORDERS_HOST, "Cookie": f"isthmus_session={cookie}"},
        )
        assert page.status_code == 200, page.text
    wanted = page.headers["x-request-id"]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["GET proxy"]
    assert server.attributes[REQUEST_ID_ATTRIBUTE] == wanted
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource.attributes["service.name"] == "isthmus-test"
    client = next(s for s in spans.values() if s.parent is not None)
    assert client.parent.span_id == server.context.span_id
    assert client.context.trace_id == server.context.trace_id
    assert client.attributes[REQUEST_ID_ATTRIBUTE] == wanted
    # the upstream is told the trace, to continue it
    seen = dict((k.lower(), v) for k, v in upstream.seen[-1]["headers"])
    assert f"{server.context.trace_id:032x}" in seen["traceparent"]


async def test_an_incoming_traceparent_is_continued(exporter: Any) -> None:
    hub = make_hub(settings(observability={"tracing": ENABLED.model_dump()}))
    observability = Observability.of(hub, span_exporter=exporter)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with in_process(hub, observability=observability) as served:
        page = await served.http.get("/login", headers={"traceparent": parent})
        assert page.status_code == 200
    (server,) = [s for s in exporter.get_finished_spans() if s.name == "GET login"]
    assert f"{server.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert server.parent.span_id == 0xB7AD6B7169203331


async def test_httpx_calls_get_client_spans_with_the_request_id(
    exporter: Any, upstream: Upstream
) -> None:
    tracing = Tracing.setup(ENABLED, exporter)
    token = request_id.set("req-idp-call")
    try:
        with tracing.server_span([], "GET", "login", "/callback/x"):
            async with httpx.AsyncClient() as http:  # as a connector calls a partner IdP
                assert (await http.get(f"{upstream.url}/token")).status_code == 200
    finally:
        request_id.reset(token)
        tracing.shutdown()
    client = next(s for s in exporter.get_finished_spans() if s.parent is not None)
    assert client.attributes[REQUEST_ID_ATTRIBUTE] == "req-idp-call"

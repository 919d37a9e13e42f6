"""Prometheus metrics: each counter moves on its event, the request histogram groups by
route, labels stay bounded, the endpoint serves the app's own registry."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from federation.observability import metrics as metrics_module
from federation.observability.metrics import Metrics
from tests.observability.support import (
    ORDERS_HOST,
    forward_auth,
    in_process,
    make_hub,
    session_id,
    settings,
)
from tests.peers.common import free_port
from tests.peers.redis import RedisServer
from tests.proxy.support import sign_in

DURATION = "isthmus_request_duration_seconds_count"


async def test_a_login_counts_started_and_succeeded_for_its_partner() -> None:
    async with in_process(make_hub(settings())) as served:
        back = await sign_in(served.http, "alice@acme.example", "alice")
        assert back.status_code == 303, back.text
        m = served.metrics
        assert m.value("isthmus_logins_total", {"partner": "acme", "outcome": "started"}) == 1
        assert m.value("isthmus_logins_total", {"partner": "acme", "outcome": "succeeded"}) == 1
        assert m.value("isthmus_logins_total", {"partner": "acme", "outcome": "failed"}) == 0
        assert m.value(DURATION, {"route": "login", "method": "POST", "status": "3xx"}) == 1


async def test_failed_logins_count_for_the_partner_the_registry_knows() -> None:
    async with in_process(make_hub(settings())) as served:
        # a callback with no flow behind it: refused, and it was acme's connection
        refused = await served.http.get("/callback/acme-mock", params={"state": "nope"})
        assert refused.status_code == 400
        # a callback naming a connection that does not exist: its name is no label
        unknown = await served.http.get("/callback/made-up", params={"state": "nope"})
        assert unknown.status_code == 404
        m = served.metrics
        assert m.value("isthmus_logins_total", {"partner": "acme", "outcome": "failed"}) == 1
        assert m.value("isthmus_logins_total", {"partner": "unknown", "outcome": "failed"}) == 1
        assert "made-up" not in m.render().decode()


async def test_decisions_count_by_app_and_outcome() -> None:
    hub = make_hub(settings())
    async with in_process(hub) as served:
        alice, globex = await session_id(hub), await session_id(hub, "globex", "bob")
        assert (await forward_auth(served.http, alice)).status_code == 200
        assert (await forward_auth(served.http, None)).status_code == 401
        assert (await forward_auth(served.http, globex)).status_code == 403
        nowhere = await forward_auth(served.http, alice, host="nowhere.localhost")
        assert nowhere.status_code == 403
        m = served.metrics
        decisions = "isthmus_decisions_total"
        assert m.value(decisions, {"app": "orders", "outcome": "allow"}) == 1
        assert m.value(decisions, {"app": "orders", "outcome": "login"}) == 1
        assert m.value(decisions, {"app": "orders", "outcome": "deny"}) == 1
        assert m.value(decisions, {"app": "none", "outcome": "no_app"}) == 1
        edge = {"route": "forward_auth", "method": "GET"}
        assert m.value(DURATION, {**edge, "status": "2xx"}) == 1
        assert m.value(DURATION, {**edge, "status": "4xx"}) == 3


async def test_an_unreachable_upstream_counts_as_an_upstream_error() -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}"
    hub = make_hub(settings(nothing_there))
    async with in_process(hub) as served:
        cookie = await session_id(hub)
        page = await served.http.get(
            "/orders/1", headers={"Host": ORDERS_HOST, "Cookie": f"isthmus_session={cookie}"}
        )
        assert page.status_code == 502
        m = served.metrics
        errors = "isthmus_upstream_errors_total"
        assert m.value(errors, {"app": "orders", "kind": "unreachable"}) == 1
        assert m.value(DURATION, {"route": "proxy", "method": "GET", "status": "5xx"}) == 1
        assert m.value("isthmus_decisions_total", {"app": "orders", "outcome": "allow"}) == 1


@pytest.mark.integration
async def test_a_store_error_counts_by_operation(redis_server_factory: object) -> None:
    server: RedisServer = redis_server_factory()  # type: ignore[operator]
    hub = make_hub(settings(store={"backend": "redis", "url": server.url, "prefix": "t:"}))
    async with in_process(hub) as served:
        cookie = await session_id(hub)
        assert (await forward_auth(served.http, cookie)).status_code == 200
        assert served.metrics.value("isthmus_store_errors_total", {"operation": "GET"}) == 0
        server.stop()
        answer = await forward_auth(served.http, cookie)
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("text/html")  # the error page
        assert served.metrics.value("isthmus_store_errors_total", {"operation": "GET"}) == 1


async def test_sessions_ended_count_by_reason() -> None:
    async with in_process(make_hub(settings())) as served:
        await sign_in(served.http, "alice@acme.example", "alice")
        page = await served.http.get("/logout")
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        ended = await served.http.post("/logout", data={"csrf": token})
        assert ended.status_code == 200
        reason = {"reason": "logout"}
        assert served.metrics.value("isthmus_sessions_ended_total", reason) == 1


async def test_label_values_stay_bounded() -> None:
    async with in_process(make_hub(settings())) as served:
        http = served.http
        for i in range(30):
            await http.get(f"/callback/connection-{i}", params={"state": "x"})
            await http.get(f"/no/such/page/{i}")
            await http.request(f"VERB{i}", "/login")
        text = served.metrics.render().decode()
    assert "connection-" not in text and "/no/such" not in text and "VERB" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    partners = {s.labels["partner"] for s in families["isthmus_logins"].samples}
    assert partners == {"unknown"}
    timed = families["isthmus_request_duration_seconds"].samples
    assert {s.labels["route"] for s in timed} <= {"login", "other"}
    assert {s.labels["method"] for s in timed} == {"GET", "other"}
    assert {s.labels["status"] for s in timed} <= {"2xx", "3xx", "4xx"}


def test_each_family_stops_at_its_series_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_SERIES", 3)
    m = Metrics(make_hub(settings()).registry)
    for i in range(10):
        m.upstream_error(f"app-{i}", "timeout")
    errors = "isthmus_upstream_errors_total"
    assert m.value(errors, {"app": "app-2", "kind": "timeout"}) == 1
    assert m.value(errors, {"app": "app-3", "kind": "timeout"}) == 0
    assert m.value(errors, {"app": "other", "kind": "other"}) == 7


async def test_the_metrics_endpoint_serves_the_apps_own_registry() -> None:
    first, second = make_hub(settings()), make_hub(settings())
    async with in_process(first) as one, in_process(second) as two:
        assert (await forward_auth(one.http, await session_id(first))).status_code == 200
        page = await one.http.get("/metrics")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/plain; version=")
        assert page.headers["cache-control"] == "no-store"
        assert 'isthmus_decisions_total{app="orders",outcome="allow"} 1.0' in page.text
        assert "isthmus_build_info{" in page.text and "process_cpu_seconds_total" in page.text
        other = await two.http.get("/metrics")
        assert 'isthmus_decisions_total{app="orders"' not in other.text


@pytest.mark.parametrize(("allow", "status"), [(["10.0.0.0/8"], 403), (["127.0.0.0/8"], 200)])
async def test_metrics_allow_checks_the_peer(allow: list[str], status: int) -> None:
    hub = make_hub(settings(observability={"metrics_allow": allow}))
    async with in_process(hub) as served:  # the in-process client is 127.0.0.1
        assert (await served.http.get("/metrics")).status_code == status


async def test_without_metrics_nothing_is_counted_or_served() -> None:
    hub = make_hub(settings(observability={"metrics_enabled": False}))
    async with in_process(hub) as served:
        assert served.observability.metrics is None
        assert (await forward_auth(served.http, await session_id(hub))).status_code == 200
        assert (await served.http.get("/metrics")).status_code == 404
        assert (await served.http.get("/readyz")).status_code == 200


async def test_the_metrics_path_is_configurable() -> None:
    hub = make_hub(settings(observability={"metrics_path": "/internal/metrics"}))
    async with in_process(hub) as served:
        assert (await served.http.get("/internal/metrics")).status_code == 200
        assert (await served.http.get("/metrics")).status_code == 404

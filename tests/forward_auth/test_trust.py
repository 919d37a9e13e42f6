"""Invariant 6 at the forward-auth endpoint: what describes the original request is the
edge's word, believed from ``trusted_proxies`` only; the client address is the nearest
untrusted hop."""

from __future__ import annotations

from typing import Any

import httpx

from tests.forward_auth.conftest import EDGE, STRANGER, Caller
from tests.forward_auth.support import decisions, envoy, nginx, refusals, traefik


async def test_a_caller_outside_trusted_proxies_is_refused(
    caller: Caller, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    async with caller(STRANGER) as stranger:
        for ask in (nginx, traefik, envoy):
            answer = await ask(stranger, "/orders/7", cookies["acme"], Accept="application/json")
            assert answer.status_code == 403, ask
            assert answer.json()["error"] == "untrusted_edge"
            assert not [h for h in answer.headers if h.startswith("x-isthmus-")]
    assert [e["reason"] for e in refusals(audit_log)] == ["untrusted_edge"] * 3
    assert {e["peer"] for e in refusals(audit_log)} == {STRANGER}
    assert decisions(audit_log) == []


async def test_the_client_is_the_nearest_untrusted_hop(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    # The client wrote "1.2.3.4" itself; 198.51.100.7 is who reached the first trusted hop.
    chain = "1.2.3.4, 198.51.100.7, 10.9.9.9"
    await nginx(edge, "/orders/7", cookies["acme"], **{"X-Forwarded-For": chain})
    await traefik(edge, "/orders/7", cookies["acme"], **{"X-Forwarded-For": chain})
    await envoy(edge, "/orders/7", cookies["acme"], **{"X-Forwarded-For": chain})
    assert [e["source_ip"] for e in decisions(audit_log)] == ["198.51.100.7"] * 3


async def test_without_forwarded_for_the_client_is_the_edge(
    caller: Caller, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    async with caller(EDGE) as edge:
        await edge.get(
            "/forward-auth",
            headers={
                "X-Original-URI": "/orders/7",
                "X-Original-Method": "GET",
                "X-Forwarded-Host": "orders.localhost:8080",
                "Cookie": f"isthmus_session={cookies['acme']}",
            },
        )
    assert decisions(audit_log)[-1]["source_ip"] == EDGE

"""The three edge dialects: nginx auth_request, Traefik forwardAuth, Envoy HTTP ext_authz.

Each one describes the original request with its own headers; the decision is the
policy's (tests/forward_auth/conftest.py: acme everywhere but /admin and DELETE, soylent on
/reports only), taken on the normalized path, and audited.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.forward_auth.conftest import ORDERS_HOST
from tests.forward_auth.support import decisions, envoy, nginx, traefik


async def test_nginx_allowed_denied_by_policy(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    assert (await nginx(edge, "/orders/7?full=1", cookies["acme"])).status_code == 200
    assert (await nginx(edge, "/reports/q1", cookies["soylent"])).status_code == 200
    assert (await nginx(edge, "/orders/7", cookies["soylent"])).status_code == 403
    assert (await nginx(edge, "/admin/users", cookies["acme"])).status_code == 403
    assert (await nginx(edge, "/orders/7", cookies["acme"], "DELETE")).status_code == 403
    assert (await nginx(edge, "/orders/7")).status_code == 401
    made = decisions(audit_log)
    assert [(e["decision"], e["method"], e["path"], e.get("partner")) for e in made] == [
        ("allow", "GET", "/orders/7", "acme"),
        ("allow", "GET", "/reports/q1", "soylent"),
        ("deny", "GET", "/orders/7", "soylent"),
        ("deny", "GET", "/admin/users", "acme"),
        ("deny", "DELETE", "/orders/7", "acme"),
        ("login", "GET", "/orders/7", None),
    ]
    assert {e["app"] for e in made} == {"orders"}
    assert {e["source_ip"] for e in made} == {"198.51.100.7"}


async def test_nginx_decides_on_the_normalized_path(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    # Dot segments, doubled slashes and case tricks reach the path the policy denies.
    for uri in ("/reports/../admin/x", "/reports//..//admin", "/reports/%2e%2e/admin"):
        answer = await nginx(edge, uri, cookies["acme"])
        assert answer.status_code == 403, uri
    for event in decisions(audit_log):
        assert event["path"].startswith("/admin"), event


async def test_nginx_ignores_traefik_headers(
    edge: httpx.AsyncClient, cookies: dict[str, str]
) -> None:
    # A client's own X-Forwarded-Uri passes through nginx to the hub: it must not count.
    answer = await nginx(
        edge, "/orders/7", cookies["soylent"], **{"X-Forwarded-Uri": "/reports/q1"}
    )
    assert answer.status_code == 403


async def test_traefik_allowed_denied_by_policy(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    assert (await traefik(edge, "/reports/q1?x=1", cookies["soylent"])).status_code == 200
    assert (await traefik(edge, "/orders/1", cookies["soylent"])).status_code == 403
    assert (await traefik(edge, "/orders/1", cookies["acme"], "delete")).status_code == 403
    assert [(e["decision"], e["method"]) for e in decisions(audit_log)] == [
        ("allow", "GET"),
        ("deny", "GET"),
        ("deny", "DELETE"),
    ]


async def test_traefik_ignores_nginx_headers(
    edge: httpx.AsyncClient, cookies: dict[str, str]
) -> None:
    # Traefik hands the client's headers to the auth server: X-Original-URI is the client's.
    answer = await traefik(
        edge, "/orders/1", cookies["soylent"], **{"X-Original-URI": "/reports/q1"}
    )
    assert answer.status_code == 403


async def test_envoy_path_prefix_and_original_method(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    assert (await envoy(edge, "/reports/q1?x=1", cookies["soylent"])).status_code == 200
    assert (await envoy(edge, "/orders/1", cookies["acme"], "POST")).status_code == 200
    assert (await envoy(edge, "/orders/1", cookies["acme"], "DELETE")).status_code == 403
    assert (await envoy(edge, "/", cookies["soylent"])).status_code == 403
    made = decisions(audit_log)
    assert [(e["decision"], e["method"], e["path"]) for e in made] == [
        ("allow", "GET", "/reports/q1"),
        ("allow", "POST", "/orders/1"),
        ("deny", "DELETE", "/orders/1"),
        ("deny", "GET", "/"),
    ]


async def test_envoy_original_host(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    """Envoy's check request keeps the app's own Host: it still reaches the forward-auth
    endpoint (from a trusted edge), not the proxy for that app."""
    allowed = await envoy(edge, "/orders/1", cookies["acme"], Host=ORDERS_HOST)
    denied = await envoy(edge, "/admin/x", cookies["acme"], Host=ORDERS_HOST)
    assert (allowed.status_code, denied.status_code) == (200, 403)
    made = [(e["app"], e["decision"], e["path"]) for e in decisions(audit_log)]
    assert made == [("orders", "allow", "/orders/1"), ("orders", "deny", "/admin/x")]


async def test_envoy_original_path_header_wins(
    edge: httpx.AsyncClient, cookies: dict[str, str]
) -> None:
    # Envoy rewrote /reports/q1 into /r/q1 before asking: the client asked for /admin.
    answer = await envoy(
        edge, "/reports/q1", cookies["acme"], **{"x-envoy-original-path": "/admin/x"}
    )
    assert answer.status_code == 403


async def test_envoy_keeps_the_encoded_path(
    edge: httpx.AsyncClient, cookies: dict[str, str]
) -> None:
    # The raw path is decided on, not a form the hub's own server decoded first.
    answer = await envoy(edge, "/reports/%2e%2e/admin/x", cookies["acme"])
    assert answer.status_code == 403


async def test_unknown_host_or_path_is_refused(
    edge: httpx.AsyncClient, cookies: dict[str, str], audit_log: list[dict[str, Any]]
) -> None:
    answer = await nginx(
        edge, "/orders/7", cookies["acme"], **{"X-Forwarded-Host": "elsewhere.example"}
    )
    assert answer.status_code == 403
    assert answer.headers.get("x-isthmus-user") is None
    assert audit_log[-1]["event"] == "forward_auth.refused"
    assert audit_log[-1]["reason"] == "no_app"
    assert audit_log[-1]["host"] == "elsewhere.example"
    assert ORDERS_HOST not in str(audit_log[-1])

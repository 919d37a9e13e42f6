"""Requests as each edge sends them to the hub's forward-auth endpoints."""

from __future__ import annotations

from typing import Any

import httpx

from tests.forward_auth.conftest import ORDERS_HOST


def nginx_headers(uri: str, method: str = "GET", **extra: str) -> dict[str, str]:
    """What tests/peers/nginx/forward_auth.conf.in sends (auth_request subrequest)."""
    return {
        "X-Original-URI": uri,
        "X-Original-Method": method,
        "X-Forwarded-Host": ORDERS_HOST,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-For": "198.51.100.7",
        **extra,
    }


def traefik_headers(uri: str, method: str = "GET", **extra: str) -> dict[str, str]:
    """What Traefik's forwardAuth middleware sends (besides the client's own headers)."""
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": ORDERS_HOST,
        "X-Forwarded-Uri": uri,
        "X-Forwarded-For": "198.51.100.7",
        **extra,
    }


async def nginx(
    http: httpx.AsyncClient, uri: str, cookie: str | None = None, method: str = "GET", **extra: str
) -> httpx.Response:
    return await http.get(
        "/forward-auth", headers=_with_cookie(nginx_headers(uri, method, **extra), cookie)
    )


async def traefik(
    http: httpx.AsyncClient, uri: str, cookie: str | None = None, method: str = "GET", **extra: str
) -> httpx.Response:
    return await http.get(
        "/forward-auth/traefik", headers=_with_cookie(traefik_headers(uri, method, **extra), cookie)
    )


async def envoy(
    http: httpx.AsyncClient, uri: str, cookie: str | None = None, method: str = "GET", **extra: str
) -> httpx.Response:
    """Envoy's HTTP ext_authz: the original method and path behind ``path_prefix``;
    x-forwarded-proto/for as Envoy sets them. The original host goes in X-Forwarded-Host
    (Envoy's ``headers_to_add``), the hub's own in Host (see test_envoy_original_host)."""
    headers = {
        "Host": "127.0.0.1:8080",
        "X-Forwarded-Host": ORDERS_HOST,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-For": "198.51.100.7",
        **extra,
    }
    return await http.request(
        method, f"/forward-auth/envoy{uri}", headers=_with_cookie(headers, cookie)
    )


def _with_cookie(headers: dict[str, str], cookie: str | None) -> dict[str, str]:
    return {**headers, "Cookie": f"isthmus_session={cookie}"} if cookie else headers


def decisions(audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in audit if e["event"] == "proxy.decision"]


def refusals(audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in audit if e["event"] == "forward_auth.refused"]

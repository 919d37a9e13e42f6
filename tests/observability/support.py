"""A hub with mock partners and one proxied app, in process (httpx's ASGI transport: the
client is 127.0.0.1, a trusted edge), and what tests read of its observability."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from connectors.mock import MockConnector
from connectors.registry import ConnectorRegistry
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.identity import FederatedIdentity
from federation.observability.asgi import Observability
from federation.observability.metrics import Metrics
from federation.settings import Settings
from federation.web.app import create_app
from tests.broker.conftest import mock_partner

BASE = "http://127.0.0.1:8080"
ORDERS_HOST = "orders.localhost"
POLICY = {
    "version": 1,
    "rules": [{"name": "acme", "effect": "allow", "when": {"partner": "acme"}}],
}


def settings(upstream: str = "http://127.0.0.1:9", **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "issuer": BASE,
        "allow_insecure_http": True,
        "allow_mock_connections": True,
        "trusted_proxies": ["127.0.0.1/32"],
        "partners": [
            mock_partner("acme", "supplier", "acme.example"),
            mock_partner("globex", "customer", "globex.example"),
        ],
        "apps": [
            {
                "id": "orders",
                "hosts": [ORDERS_HOST],
                "upstreams": [upstream],
                "policy": POLICY,
                "connect_timeout_seconds": 1.0,
                "read_timeout_seconds": 1.0,
            }
        ],
    }
    data.update(overrides)
    return Settings(**data)


def make_hub(config: Settings, audit: list[dict[str, Any]] | None = None) -> Hub:
    mock_only = ConnectorRegistry({"mock": MockConnector.from_settings})
    sinks = [audit.append] if audit is not None else []
    return build_hub(config, audit=Audit(sinks), connector_types=mock_only)


@dataclass
class InProcess:
    app: Starlette
    http: httpx.AsyncClient

    @property
    def observability(self) -> Observability:
        found: Observability = self.app.state.observability
        return found

    @property
    def metrics(self) -> Metrics:
        found = self.observability.metrics
        assert found is not None
        return found


@asynccontextmanager
async def in_process(hub: Hub, **app_options: Any) -> AsyncIterator[InProcess]:
    """The hub's app called in process, inside its lifespan (started, then stopped)."""
    app = create_app(hub=hub, **app_options)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE) as http,
    ):
        yield InProcess(app, http)


async def session_id(hub: Hub, partner: str = "acme", user: str = "alice") -> str:
    identity = FederatedIdentity(
        partner,
        f"{partner}-mock",
        f"mock:{partner}-mock",
        user,
        email=f"{user}@{partner}.example",
        email_verified=True,
    )
    return (await hub.sessions.create(identity)).id


async def forward_auth(
    http: httpx.AsyncClient, cookie: str | None, uri: str = "/x", host: str = ORDERS_HOST
) -> httpx.Response:
    headers = {"X-Original-Method": "GET", "X-Original-URI": uri, "X-Forwarded-Host": host}
    if cookie is not None:
        headers["Cookie"] = f"isthmus_session={cookie}"
    return await http.get("/forward-auth", headers=headers)

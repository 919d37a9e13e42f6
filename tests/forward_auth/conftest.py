"""A hub with one app guarded through forward-auth, mock partners, an audit list, and
in-process clients that call it from a chosen peer address (an edge, or a stranger)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette

from connectors.mock import MockConnector
from connectors.registry import ConnectorRegistry
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.web.app import create_app
from tests.broker.conftest import BASE, hub_settings
from tests.broker.test_mock_partner_to_hub_session import sign_in

EDGE = "10.0.0.5"  # a trusted proxy (in 10.0.0.0/8)
STRANGER = "203.0.113.9"  # not a trusted proxy
ORDERS_HOST = "orders.localhost:8080"  # an app origin: the hub's scheme and port

# acme's people may use the orders app, except its admin area and DELETE; soylent's only
# its reports.
POLICY = """\
version: 1
rules:
  - name: acme-all
    effect: allow
    when:
      partner: acme
  - name: soylent-reports
    effect: allow
    when:
      partner: soylent
      path:
        prefix: /reports
  - name: no-admin
    effect: deny
    when:
      path:
        prefix: /admin
    reason: The admin area is for staff only.
    public: true
  - name: no-delete
    effect: deny
    when:
      method: DELETE
    reason: Nothing is deleted through the extranet.
    public: true
"""


def orders_app(**overrides: Any) -> dict[str, Any]:
    app: dict[str, Any] = {
        "id": "orders",
        "hosts": [ORDERS_HOST],
        "upstreams": ["http://127.0.0.1:9"],
        "policy": yaml.safe_load(POLICY),
        "identity_headers": {
            "X-Isthmus-User": "subject",
            "X-Isthmus-Email": "email",
            "X-Isthmus-Partner": "partner_id",
            "X-Isthmus-Groups": "groups",
        },
    }
    app.update(overrides)
    return app


@pytest.fixture
def audit_log() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def hub(audit_log: list[dict[str, Any]]) -> Hub:
    settings = hub_settings(apps=[orders_app()], trusted_proxies=["10.0.0.0/8"])
    mock_only = ConnectorRegistry({"mock": MockConnector.from_settings})
    return build_hub(settings, audit=Audit([audit_log.append]), connector_types=mock_only)


@pytest.fixture
def app(hub: Hub) -> Starlette:
    return create_app(hub=hub)


Caller = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def caller(app: Starlette) -> Caller:
    """``async with caller(peer) as http``: a client whose TCP peer address is ``peer``."""

    @asynccontextmanager
    async def connect(peer: str) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            yield http

    return connect


@pytest.fixture
async def edge(caller: Caller) -> AsyncIterator[httpx.AsyncClient]:
    async with caller(EDGE) as http:
        yield http


@pytest.fixture
async def cookies(app: Starlette) -> dict[str, str]:
    """Session cookie values of alice@acme, alice@soylent (signed in through the hub)."""
    found: dict[str, str] = {}
    for partner in ("acme", "soylent"):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as browser:
            back = await sign_in(browser, f"alice@{partner}.example", "alice")
            assert back.status_code == 303, back.text
            found[partner] = browser.cookies["isthmus_session"]
    return found

"""A hub with mock partners, an audit list and an in-process HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from connectors.mock import MockConnector
from connectors.registry import ConnectorRegistry
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import Settings

BASE = "http://127.0.0.1:8080"


def mock_partner(
    pid: str, kind: str, domain: str, *, status: str = "active", connections: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "id": pid,
        "name": pid.title() + " Inc",
        "kind": kind,
        "status": status,
        "domains": [domain],
        "connections": [
            {
                "type": "mock",
                "id": f"{pid}-mock{i or ''}",
                "display_name": f"{pid.title()} sign-in {i + 1}",
                "users": [
                    {
                        "subject": "alice",
                        "email": f"alice@{domain}",
                        "name": "Alice",
                        "groups": ["buyers"],
                    },
                    {"subject": "mallory", "email": "mallory@acme.example", "name": "Mallory"},
                    {"subject": "eve", "email": f"eve@{domain}", "email_verified": False},
                ],
            }
            for i in range(connections)
        ],
        **extra,
    }


def hub_settings(**overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "issuer": BASE,
        "allow_insecure_http": True,
        "allow_mock_connections": True,
        "partners": [
            mock_partner("acme", "supplier", "acme.example"),
            mock_partner("globex", "customer", "globex.example", connections=2),
            mock_partner("soylent", "customer", "soylent.example"),
            mock_partner("umbrella", "subcontractor", "umbrella.example", status="suspended"),
            mock_partner(
                "initech",
                "distributor",
                "initech.example",
                contract={"valid_until": "2020-01-01T00:00:00Z"},
            ),
        ],
    }
    data.update(overrides)
    return Settings(**data)


@pytest.fixture
def audit_log() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def hub(audit_log: list[dict[str, Any]]) -> Hub:
    # Tests pick connectors through the explicit registry: only the mock one is needed here.
    mock_only = ConnectorRegistry({"mock": MockConnector.from_settings})
    return build_hub(hub_settings(), audit=Audit([audit_log.append]), connector_types=mock_only)


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    from federation.web.app import create_app

    transport = httpx.ASGITransport(app=create_app(hub=hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http

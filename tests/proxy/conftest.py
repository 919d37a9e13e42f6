"""A hub with two proxied apps in front of a real recording upstream, both on real ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from federation.hub import Hub
from federation.web.app import create_app
from tests.peers.common import free_port
from tests.proxy.support import (
    Upstream,
    make_hub,
    proxy_settings,
    serve_hub,
    serve_upstream,
)


@dataclass
class Env:
    hub: Hub
    base: str
    port: int
    upstream: Upstream
    audit: list[dict[str, Any]]

    @property
    def orders_host(self) -> str:
        return f"orders.localhost:{self.port}"

    def decisions(self) -> list[dict[str, Any]]:
        return [e for e in self.audit if e["event"] == "proxy.decision"]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    recorder = Upstream()
    with serve_upstream(recorder):
        yield recorder


@pytest.fixture
def env(upstream: Upstream) -> Iterator[Env]:
    port = free_port()
    audit: list[dict[str, Any]] = []
    hub = make_hub(proxy_settings(port, upstream.url), audit)
    with serve_hub(create_app(hub=hub), port) as base:
        yield Env(hub, base, port, upstream, audit)


@pytest.fixture
async def http(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=env.base, timeout=30) as client:
        yield client

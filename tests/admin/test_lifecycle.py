"""Two replicas on one Redis: an admin change made through one reaches the other.

Sessions live in the shared store, so a suspension through hub A ends the sessions made
on hub B at once; the registry is shared too, and hub B's catalog follows it on
``reload()`` and, through its watcher, within ``registry.poll_seconds``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from federation.admin.documents import Document, VersionConflict
from federation.admin.service import SYSTEM, AdminService
from federation.hub import Hub
from federation.settings import PartnerStatus
from federation.web.app import create_app
from tests.admin.support import (
    API,
    BASE,
    api_settings,
    bearer,
    etag,
    forward_auth,
    make_hub,
    mint_token,
    sign_in_as,
)
from tests.broker.test_mock_partner_to_hub_session import start_login

pytestmark = pytest.mark.integration

WITHIN = 1.0  # seconds: replicas see a change within this (issue 6)


@dataclass
class Replica:
    hub: Hub
    app: Starlette
    events: list[dict[str, Any]]

    def client(self, **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers)


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    """Hubs A and B: one Redis for sessions and registry, under a prefix of their own."""
    prefix = f"test:{secrets.token_hex(8)}:"
    settings = api_settings(
        store={"backend": "redis", "url": redis_url, "prefix": prefix},
        registry={"backend": "redis"},
    )
    made = []
    for _ in range(2):
        events: list[dict[str, Any]] = []
        hub = make_hub(settings, events)
        await hub.ready()
        made.append(Replica(hub, create_app(hub=hub), events))
    try:
        yield made[0], made[1]
    finally:
        for replica in made:
            await replica.hub.aclose()


async def until(condition: Callable[[], bool], within: float = WITHIN) -> float:
    """Wait until ``condition()`` holds; fail past ``within`` seconds. The time it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        assert loop.time() - start < within, f"not within {within} s"
        await asyncio.sleep(0.005)
    return loop.time() - start


def status_on(hub: Hub, partner_id: str) -> PartnerStatus | None:
    partner = hub.registry.partner(partner_id)
    return partner.settings.status if partner else None


async def test_suspension_through_a_ends_sessions_made_on_b(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    async with a.client(**bearer(await mint_token(a.hub))) as admin, b.client() as bob:
        await sign_in_as(bob, "bob@acme.example")
        cookie = bob.cookies["isthmus_session"]
        assert (await forward_auth(b.app, cookie)).status_code == 200
        sessions = await admin.get(f"{API}/partners/acme/sessions")  # made on B, listed on A
        assert [s["email"] for s in sessions.json()["items"]] == ["bob@acme.example"]

        acme = await admin.get(f"{API}/partners/acme")
        suspended = await admin.post(
            f"{API}/partners/acme/status", json={"status": "suspended"}, headers=etag(acme)
        )
        assert suspended.status_code == 200, suspended.text  # fmt: skip

        # B has not reloaded its catalog: the session is refused all the same (it is gone)
        assert status_on(b.hub, "acme") is PartnerStatus.active
        assert (await forward_auth(b.app, cookie)).status_code == 401
        assert await b.hub.reload() is True
        assert status_on(b.hub, "acme") is PartnerStatus.suspended
        assert (await start_login(bob, "bob@acme.example")).status_code == 403


async def test_b_watcher_follows_a_change_within_a_second(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await b.hub.start()  # the watcher polls the registry's revision
    async with a.client(**bearer(await mint_token(a.hub))) as admin:
        acme = await admin.get(f"{API}/partners/acme")
        await admin.post(f"{API}/partners/acme/status", json={"status": "suspended"},
                         headers=etag(acme))  # fmt: skip
        await until(lambda: status_on(b.hub, "acme") is PartnerStatus.suspended)

        app = {"id": "wiki", "upstreams": ["http://127.0.0.1:9"], "path_prefix": "/wiki"}
        assert (await admin.post(f"{API}/apps", json={"spec": app})).status_code == 201
        await until(lambda: b.hub.catalog.spec("app", "wiki") is not None)


async def test_a_token_revoked_on_a_is_refused_by_b(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    await b.hub.start()
    async with a.client(**bearer(await mint_token(a.hub))) as admin:
        created = await admin.post(f"{API}/tokens", json={"name": "ci", "role": "auditor"})
        token, token_id = created.json()["token"], created.json()["document"]["id"]
        await until(lambda: token_id in b.hub.catalog.tokens)
        async with b.client(**bearer(token)) as ci:
            assert (await ci.get(f"{API}/me")).status_code == 200
            assert (await admin.delete(f"{API}/tokens/{token_id}")).status_code == 204
            await until(lambda: token_id not in b.hub.catalog.tokens)
            assert (await ci.get(f"{API}/me")).status_code == 401


async def test_concurrent_writes_through_both_replicas_one_wins(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    acme = await AdminService(a.hub).document(SYSTEM, "partner", "acme")
    results = await asyncio.gather(
        *(
            AdminService(replica.hub).put(
                SYSTEM, "partner", "acme", {**acme.spec, "name": f"Acme {i}"}, acme.version
            )
            for i, replica in enumerate((a, b, a, b))
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Document)]
    assert len(won) == 1
    assert sum(isinstance(r, VersionConflict) for r in results) == 3
    stored = await b.hub.documents.get("partner", "acme")
    assert stored is not None and stored.version == 2 and stored.spec == won[0].spec

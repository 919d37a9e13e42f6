"""Flow: a just-in-time account that stops signing in loses its grants (issue 9).

People sign in through the hub (mock connection), hold grants, time passes on the hub's
clock, the lifecycle ticks: the grants of whoever has not signed in for
``inactive_after_days`` end, and forward-auth refuses them saying their access ended.
The registry stamps documents with the hub's clock, so a grant made "80 days later" is
80 days younger.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette

from federation.admin import lifecycle
from federation.admin.service import SYSTEM, AdminService
from federation.hub import Hub
from federation.web.app import create_app
from tests.admin.support import BASE, EDGE, ORDERS_HOST, api_settings, make_hub, sign_in_as
from tests.fakes.clock import FakeClock

GRANTED = """\
version: 1
rules:
  - name: project
    effect: allow
    when:
      grant: valid
"""
ACCOUNTS = (("accounts", lifecycle.JOBS[-1][1]),)
DAY = timedelta(days=1)


def _app(app_id: str) -> dict[str, Any]:
    return {"id": app_id, "path_prefix": f"/{app_id}", "upstreams": ["http://127.0.0.1:9"],
            "policy": yaml.safe_load(GRANTED)}  # fmt: skip


class Hubs:
    """A hub on a clock that starts now, its app, and what the tests do with them."""

    def __init__(self, events: list[dict[str, Any]], **overrides: Any) -> None:
        settings = api_settings(apps=[_app("orders"), _app("billing")], **overrides)
        self.clock = FakeClock(time.time())
        self.hub: Hub = make_hub(settings, events)
        self.hub.clock = self.clock
        self.app: Starlette = create_app(hub=self.hub)
        self.service = AdminService(self.hub)
        self.events = events

    def later(self, days: float) -> None:
        self.clock.advance(days * DAY.total_seconds())

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def sign_in(self, email: str) -> str:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as browser:
            await sign_in_as(browser, email)
            return str(browser.cookies["isthmus_session"])

    async def grant(self, days: int = 3000, **person: Any) -> str:
        spec = {"partner_id": "acme", "apps": ["orders"],
                "valid_until": (self.now() + days * DAY).isoformat(), **person}  # fmt: skip
        return (await self.service.grant(SYSTEM, spec)).id

    async def tick(self) -> list[str]:
        return await lifecycle.tick(self.hub, jobs=ACCOUNTS)

    async def ask(self, email: str, app_id: str = "orders") -> httpx.Response:
        """The edge asks about GET /<app_id>/x for ``email`` freshly signed in."""
        cookie = await self.sign_in(email)
        headers = {"X-Original-URI": f"/{app_id}/x", "X-Original-Method": "GET",
                   "X-Forwarded-Host": ORDERS_HOST, "X-Forwarded-Proto": "http",
                   "Accept": "application/json", "Cookie": f"isthmus_session={cookie}"}  # fmt: skip
        transport = httpx.ASGITransport(app=self.app, client=EDGE)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as edge:
            return await edge.get("/forward-auth", headers=headers)

    async def allowed(self, email: str, app_id: str = "orders") -> bool:
        answer = await self.ask(email, app_id)
        assert answer.status_code in (200, 403), answer.text
        return answer.status_code == 200

    async def partner_setting(self, partner_id: str, **changes: Any) -> None:
        doc = await self.service.document(SYSTEM, "partner", partner_id)
        await self.service.put(SYSTEM, "partner", partner_id, {**doc.spec, **changes}, doc.version)

    def lapsed(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "grant.lapsed"]


@pytest.fixture
def hubs(events: list[dict[str, Any]]) -> Hubs:
    return Hubs(events)  # lifecycle.inactive_after_days: 90 (the default)


async def test_a_person_who_stops_signing_in_loses_the_grant_and_is_told(hubs: Hubs) -> None:
    await hubs.sign_in("bob@acme.example")
    bobs = await hubs.grant(connection_id="acme-mock", subject="bob", reason="project X")
    hubs.later(89)
    assert await hubs.tick() == []
    hubs.later(1.01)  # 90 days and a quarter of an hour since bob last signed in
    ended_on = hubs.now().date().isoformat()
    done = await hubs.tick()
    assert len(done) == 1
    assert done[0].startswith(f"accounts: grant {bobs} of acme-mock/bob (acme) to orders ended")
    assert "inactive for 90 days" in done[0]

    refused = await hubs.ask("bob@acme.example")  # signing in again brings nothing back
    assert refused.status_code == 403
    assert f"your access to orders ended on {ended_on}" in refused.json()["reasons"]
    assert await hubs.tick() == []  # ended once

    [event] = hubs.lapsed()
    assert event["reason"] == "inactive" and event["outcome"] == "success"
    assert (event["partner"], event["person"], event["apps"]) == (
        "acme",
        "acme-mock/bob",
        ["orders"],
    )
    assert event["actor"] == "lifecycle" and event["inactive_after_days"] == 90
    # Versioned, in the history, by the lifecycle, with the reason; the grant keeps its own.
    doc = await hubs.service.document(SYSTEM, "grant", bobs)
    assert doc.version == 2 and doc.spec["reason"] == "project X"
    [change, _] = await hubs.service.history(SYSTEM, kind="grant", doc_id=bobs)
    assert (change.actor, change.reason) == ("lifecycle", "inactive for 90 days")
    await hubs.hub.aclose()


async def test_a_recent_sign_in_keeps_a_grant_by_email_until_the_address_goes_quiet(
    hubs: Hubs,
) -> None:
    alices = await hubs.grant(email="Alice@acme.example")  # she has never signed in yet
    hubs.later(60)
    assert await hubs.allowed("alice@acme.example")
    hubs.later(31)  # 91 days since the grant, 31 since her sign-in
    assert await hubs.tick() == []
    assert await hubs.allowed("alice@acme.example")  # and that sign-in counts too
    hubs.later(90.01)
    [line] = await hubs.tick()
    assert f"grant {alices} of Alice@acme.example (acme)" in line
    assert not await hubs.allowed("alice@acme.example")
    [event] = hubs.lapsed()
    assert (event["person"], event["email"], event["reason"]) == (
        "Alice@acme.example",
        "Alice@acme.example",
        "inactive",
    )
    await hubs.hub.aclose()


async def test_someone_who_never_signs_in_counts_from_the_grant(hubs: Hubs) -> None:
    await hubs.sign_in("bob@acme.example")
    hubs.later(80)
    late = await hubs.grant(connection_id="acme-mock", subject="bob")  # bob: quiet 80 days
    never = await hubs.grant(connection_id="acme-mock", subject="nobody")
    hubs.later(11)  # bob last seen 91 days ago, but the grant is 11 days old: both stay
    assert await hubs.tick() == []
    hubs.later(80)
    bob_seen = hubs.now() - 171 * DAY
    done = await hubs.tick()
    assert sorted(done) == sorted(
        [
            f"accounts: grant {late} of acme-mock/bob (acme) to orders ended: last signed in "
            f"{bob_seen.isoformat()}, inactive for 90 days",
            f"accounts: grant {never} of acme-mock/nobody (acme) to orders ended: never signed "
            "in, inactive for 90 days",
        ]
    )
    by_id = {e["id"]: e for e in hubs.lapsed()}
    assert by_id[late]["last_sign_in"] == bob_seen.isoformat()
    assert "last_sign_in" not in by_id[never]
    await hubs.hub.aclose()


async def test_a_whole_partner_grant_is_nobodys_account(hubs: Hubs) -> None:
    await hubs.grant(apps=["billing"])  # every member of acme
    hubs.later(500)
    assert await hubs.tick() == []
    assert await hubs.allowed("bob@acme.example", "billing")
    assert hubs.lapsed() == []
    await hubs.hub.aclose()


async def test_a_partner_sets_its_own_threshold(hubs: Hubs) -> None:
    await hubs.partner_setting("globex", inactive_after_days=10)
    await hubs.partner_setting("acme", inactive_after_days=200)
    ginas = await hubs.grant(partner_id="globex", connection_id="globex-mock", subject="gina")
    await hubs.grant(connection_id="acme-mock", subject="bob")
    hubs.later(10.01)
    [line] = await hubs.tick()
    assert f"grant {ginas} of globex-mock/gina (globex)" in line and "inactive for 10 days" in line
    hubs.later(100)  # bob: 110 days, past the hub's 90 but not acme's 200
    assert await hubs.tick() == []
    hubs.later(90)
    [line] = await hubs.tick()
    assert "acme-mock/bob" in line and "inactive for 200 days" in line
    await hubs.hub.aclose()


async def test_no_threshold_means_never(events: list[dict[str, Any]]) -> None:
    hubs = Hubs(events, lifecycle={"inactive_after_days": None})
    await hubs.grant(connection_id="acme-mock", subject="bob")
    await hubs.grant(email="alice@acme.example")
    hubs.later(2000)
    assert await hubs.tick() == []
    # A partner may still set one of its own.
    await hubs.partner_setting("acme", inactive_after_days=30)
    assert len(await hubs.tick()) == 2
    await hubs.hub.aclose()

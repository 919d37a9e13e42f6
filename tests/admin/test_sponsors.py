"""Sponsors (issue 9): an internal person named in a partner's ``sponsors`` grants that
partner's people apps until a date, revokes those grants, and reads the partner — nothing
else. Through the service, the admin API (their hub session) and the console.

corp is internal: root (admin), audrey (auditor), carl (sponsor of acme), dana (sponsor of
globex). acme: alice (partner admin), bob. globex: gina (partner admin).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette

from federation.admin.auth import sponsor
from federation.admin.catalog import InvalidDocuments
from federation.admin.service import SYSTEM, Actor, AdminService, DocumentNotFound, Forbidden
from federation.admin.tokens import Role
from federation.audit import AuditQuery
from federation.hub import Hub
from federation.settings import Settings
from federation.web.app import create_app
from tests.admin.support import API, BASE, EDGE, ORDERS_HOST, api_settings, make_hub, sign_in_as
from tests.browser.test_console import hidden_fields
from tests.fakes.clock import FakeClock

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MAX_DAYS = 30
GRANTED = yaml.safe_load("""\
version: 1
rules:
  - name: project
    effect: allow
    when:
      grant: valid
""")
CARL = "carl@corp.example (corp)"


def _user(subject: str, domain: str, *roles: str) -> dict[str, Any]:
    return {"subject": subject, "email": f"{subject}@{domain}", "name": subject.title(),
            "roles": list(roles)}  # fmt: skip


def _partner(pid: str, kind: str, *users: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": pid, "name": f"{pid.title()} Inc", "kind": kind, "status": "active",
            "domains": [f"{pid}.example"],
            "connections": [{"type": "mock", "id": f"{pid}-mock", "users": list(users)}],
            **extra}  # fmt: skip


def _app(app_id: str) -> dict[str, Any]:
    return {"id": app_id, "name": app_id.title(), "path_prefix": f"/{app_id}",
            "upstreams": ["http://127.0.0.1:9"], "policy": GRANTED}  # fmt: skip


def sponsor_settings() -> Settings:
    corp = _partner("corp", "internal", _user("root", "corp.example", "isthmus-admin"),
                    _user("audrey", "corp.example", "isthmus-auditor"),
                    _user("carl", "corp.example"), _user("dana", "corp.example"))  # fmt: skip
    acme = _partner("acme", "supplier", _user("alice", "acme.example", "partner-admin"),
                    _user("bob", "acme.example"), sponsors=["Carl@corp.example"])  # fmt: skip
    globex = _partner("globex", "customer", _user("gina", "globex.example", "partner-admin"),
                      sponsors=["dana@corp.example"])  # fmt: skip
    return api_settings(
        partners=[corp, acme, globex],
        apps=[_app("orders"), _app("billing")],
        signup={"max_grant_days": MAX_DAYS},
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START.timestamp())


@pytest.fixture
def hub(events: list[dict[str, Any]], clock: FakeClock) -> Hub:
    made = make_hub(sponsor_settings(), events)
    made.clock = clock
    return made


@pytest.fixture
def service(hub: Hub) -> AdminService:
    return AdminService(hub)


@pytest.fixture
def carl(hub: Hub) -> Actor:
    return sponsor(hub, CARL, "carl@corp.example")


def until(days: float) -> str:
    return (START + timedelta(days=days)).isoformat()


def bob_orders(days: float = 3) -> dict[str, Any]:
    return {"partner_id": "acme", "email": "bob@acme.example", "apps": ["orders"],
            "valid_until": until(days), "reason": "project X"}  # fmt: skip


# ---------------------------------------------------------------------- the service


async def test_a_sponsor_grants_and_revokes_for_their_partner_only(
    service: AdminService, carl: Actor, events: list[dict[str, Any]]
) -> None:
    assert carl.sponsored == frozenset({"acme"})  # named as Carl@…: addresses in any case
    doc = await service.grant(carl, {**bob_orders(), "granted_by": "root"})
    assert doc.spec["granted_by"] == CARL  # a sponsor speaks for themselves only
    made = [e for e in events if e["event"] == "admin.grant.create"]
    assert made[-1]["outcome"] == "success"
    assert (made[-1]["role"], made[-1]["partner"], made[-1]["id"]) == ("sponsor", "acme", doc.id)

    with pytest.raises(Forbidden):
        await service.grant(carl, {**bob_orders(), "partner_id": "globex", "email": None})
    with pytest.raises(Forbidden):  # a partner that does not exist: the same refusal
        await service.grant(carl, {**bob_orders(), "partner_id": "nope"})
    refused = [e for e in events if e["event"] == "admin.grant.create"][-2:]
    assert [(e["outcome"], e["partner"]) for e in refused] == [
        ("failure", "globex"),
        ("failure", "nope"),
    ]

    theirs = await service.grant(SYSTEM, {"partner_id": "globex", "apps": ["orders"],
                                          "valid_until": until(1)})  # fmt: skip
    with pytest.raises(DocumentNotFound):  # not even seen
        await service.revoke_grant(carl, theirs.id)
    by_admin = await service.grant(SYSTEM, {"partner_id": "acme", "apps": ["billing"],
                                            "valid_until": until(1)})  # fmt: skip
    await service.revoke_grant(carl, by_admin.id)  # any grant of a partner they sponsor
    await service.revoke_grant(carl, doc.id)
    left = await service.documents(SYSTEM, "grant")
    assert [d.id for d in left] == [theirs.id]
    revoked = [e for e in events if e["event"] == "admin.grant.revoke"]
    assert [(e["id"], e["actor"]) for e in revoked] == [(by_admin.id, CARL), (doc.id, CARL)]


async def test_a_sponsor_reads_their_partners_and_their_grants_only(
    service: AdminService, carl: Actor
) -> None:
    acme = await service.grant(SYSTEM, bob_orders())
    await service.grant(SYSTEM, {"partner_id": "globex", "apps": ["orders"],
                                 "valid_until": until(1)})  # fmt: skip
    assert [d.id for d in await service.documents(carl, "partner")] == ["acme"]
    assert [d.id for d in await service.documents(carl, "grant")] == [acme.id]
    assert (await service.document(carl, "grant", acme.id)).spec["email"] == "bob@acme.example"
    assert await service.documents(carl, "app") == []
    assert await service.documents(carl, "api_token") == []
    with pytest.raises(DocumentNotFound):
        await service.document(carl, "partner", "globex")
    assert carl.sees_partner("acme") and not carl.sees_partner("globex")
    assert await service.sessions(carl, "acme") == []  # counted on their partner page
    with pytest.raises(Forbidden):
        await service.audit(carl, AuditQuery(partner="acme"))
    with pytest.raises(Forbidden):
        await service.history(carl, kind="partner", doc_id="acme")


async def test_a_sponsor_changes_nothing_else(service: AdminService, carl: Actor) -> None:
    acme = await service.document(SYSTEM, "partner", "acme")
    with pytest.raises(Forbidden):
        await service.put(carl, "partner", "acme", {**acme.spec, "name": "X"}, acme.version)
    with pytest.raises(Forbidden):
        await service.end_session(carl, "acme", "some-sid")
    with pytest.raises(Forbidden):
        await service.claim_domain(carl, "acme", "new.example")
    with pytest.raises(Forbidden):  # refused before any DNS lookup
        await service.verify_domain(carl, "acme", "acme.example")
    with pytest.raises(Forbidden):
        await service.create_token(carl, name="mine", role=Role.admin)
    assert (await service.document(SYSTEM, "partner", "acme")).version == acme.version


async def test_a_sponsors_grant_ends_within_the_maximum(service: AdminService, carl: Actor) -> None:
    with pytest.raises(InvalidDocuments) as refused:
        await service.grant(carl, bob_orders(MAX_DAYS + 1))
    assert [p.field for p in refused.value.problems] == ["valid_until"]
    assert f"at most {MAX_DAYS} days" in refused.value.problems[0].message
    assert "2026-04-01 or earlier" in refused.value.problems[0].message
    await service.grant(carl, bob_orders(MAX_DAYS))  # the last day allowed
    await service.grant(SYSTEM, bob_orders(MAX_DAYS * 10))  # admins are not bound by it
    with pytest.raises(InvalidDocuments) as past:
        await service.grant(carl, bob_orders(-1))
    assert [p.field for p in past.value.problems] == ["valid_until"]


async def test_sponsors_grant_only_the_apps_admins_listed(
    events: list[dict[str, Any]], clock: FakeClock
) -> None:
    settings = sponsor_settings()
    listed = settings.admin.model_copy(update={"sponsor_apps": ("orders",)})
    hub = make_hub(settings.model_copy(update={"admin": listed}), events)
    hub.clock = clock
    service, carl = AdminService(hub), sponsor(hub, CARL, "carl@corp.example")
    with pytest.raises(InvalidDocuments) as refused:
        await service.grant(carl, {**bob_orders(), "apps": ["orders", "billing"]})
    assert [p.field for p in refused.value.problems] == ["apps.1"]
    assert "sponsors may grant only orders" in refused.value.problems[0].message
    await service.grant(carl, bob_orders())  # a listed app
    await service.grant(SYSTEM, {**bob_orders(), "apps": ["billing"]})  # admins: any app


async def test_a_sponsor_no_longer_named_grants_nothing(service: AdminService, carl: Actor) -> None:
    doc = await service.grant(carl, bob_orders())
    acme = await service.document(SYSTEM, "partner", "acme")
    await service.put(SYSTEM, "partner", "acme", {**acme.spec, "sponsors": []}, acme.version)
    # carl's request began while acme still named him: the registry of now decides.
    with pytest.raises(Forbidden):
        await service.grant(carl, bob_orders())
    with pytest.raises(Forbidden):
        await service.revoke_grant(carl, doc.id)
    assert [d.id for d in await service.documents(SYSTEM, "grant")] == [doc.id]


@pytest.mark.parametrize(
    "actor",
    [Actor("audrey", Role.auditor), Actor("alice", Role.partner_admin, "acme"),
     Actor("nobody", Role.sponsor, email="nobody@corp.example")],
)  # fmt: skip
async def test_who_else_may_not_grant_or_revoke(service: AdminService, actor: Actor) -> None:
    with pytest.raises(Forbidden):
        await service.grant(actor, bob_orders())
    doc = await service.grant(SYSTEM, bob_orders())
    with pytest.raises((Forbidden, DocumentNotFound)):
        await service.revoke_grant(actor, doc.id)
    assert [d.id for d in await service.documents(SYSTEM, "grant")] == [doc.id]


# ---------------------------------------------------------------------- the admin API


@pytest.fixture
def app(hub: Hub) -> Starlette:
    return create_app(hub=hub)


@asynccontextmanager
async def signed_in(app: Starlette, email: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        await sign_in_as(http, email)
        yield http


async def ask(app: Starlette, cookie: str, accept: str = "application/json") -> httpx.Response:
    """The edge asks about GET /orders/x for the holder of ``cookie``."""
    headers = {"X-Original-URI": "/orders/x", "X-Original-Method": "GET",
               "X-Forwarded-Host": ORDERS_HOST, "X-Forwarded-Proto": "http",
               "Accept": accept, "Cookie": f"isthmus_session={cookie}"}  # fmt: skip
    transport = httpx.ASGITransport(app=app, client=EDGE)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as edge:
        return await edge.get("/forward-auth", headers=headers)


async def session_of(app: Starlette, email: str) -> str:
    async with signed_in(app, email) as http:
        return str(http.cookies["isthmus_session"])


async def test_a_sponsor_uses_the_grants_endpoints_in_their_session(
    app: Starlette, service: AdminService
) -> None:
    theirs = await service.grant(SYSTEM, {"partner_id": "globex", "apps": ["orders"],
                                          "valid_until": until(1)})  # fmt: skip
    async with signed_in(app, "carl@corp.example") as carl:
        me = await carl.get(f"{API}/me")
        assert (me.status_code, me.json()["role"]) == (200, "sponsor")
        created = await carl.post(f"{API}/grants", json=bob_orders())
        assert created.status_code == 201, created.text
        grant_id = created.json()["id"]
        assert created.json()["spec"]["granted_by"] == CARL
        listed = await carl.get(f"{API}/grants")
        assert [g["id"] for g in listed.json()["items"]] == [grant_id]
        assert (await carl.get(f"{API}/grants/{theirs.id}")).status_code == 404
        assert (await carl.delete(f"{API}/grants/{theirs.id}")).status_code == 404
        other = await carl.post(f"{API}/grants", json={**bob_orders(), "partner_id": "globex",
                                                       "email": None})  # fmt: skip
        assert other.status_code == 403
        too_long = await carl.post(f"{API}/grants", json=bob_orders(MAX_DAYS + 1))
        assert too_long.status_code == 422
        assert [e["field"] for e in too_long.json()["errors"]] == ["valid_until"]
        # Every other endpoint stays closed to sponsors, reads included.
        for path in ("/partners", "/partners/acme", "/apps", "/audit", "/history", "/tokens",
                     "/partners/acme/sessions"):  # fmt: skip
            assert (await carl.get(f"{API}{path}")).status_code == 403, path
        token = await carl.post(f"{API}/tokens", json={"name": "t", "role": "admin"})
        assert token.status_code == 403
        assert (await carl.delete(f"{API}/grants/{grant_id}")).status_code == 204
        assert (await carl.get(f"{API}/grants")).json()["items"] == []


async def test_other_people_and_roles_on_the_grants_endpoints(
    app: Starlette, service: AdminService
) -> None:
    doc = await service.grant(SYSTEM, bob_orders())
    async with signed_in(app, "dana@corp.example") as dana:  # sponsors globex, not acme
        assert (await dana.post(f"{API}/grants", json=bob_orders())).status_code == 403
        assert (await dana.get(f"{API}/grants")).json()["items"] == []
        assert (await dana.delete(f"{API}/grants/{doc.id}")).status_code == 404
    async with signed_in(app, "alice@acme.example") as alice:  # acme's partner admin
        assert (await alice.post(f"{API}/grants", json=bob_orders())).status_code == 403
        assert (await alice.get(f"{API}/grants")).status_code == 403
        assert (await alice.delete(f"{API}/grants/{doc.id}")).status_code == 403
    async with signed_in(app, "audrey@corp.example") as audrey:  # the auditor reads
        assert [g["id"] for g in (await audrey.get(f"{API}/grants")).json()["items"]] == [doc.id]
        assert (await audrey.post(f"{API}/grants", json=bob_orders())).status_code == 403
        assert (await audrey.delete(f"{API}/grants/{doc.id}")).status_code == 403
    async with signed_in(app, "bob@acme.example") as bob:  # no role, not internal
        assert (await bob.get(f"{API}/me")).status_code == 403
        assert (await bob.get(f"{API}/grants")).status_code == 403
    assert [d.id for d in await service.documents(SYSTEM, "grant")] == [doc.id]


async def test_a_sponsors_grant_ends_by_itself_and_the_user_is_told_why(
    app: Starlette, clock: FakeClock
) -> None:
    async with signed_in(app, "carl@corp.example") as carl:
        assert (await carl.post(f"{API}/grants", json=bob_orders(3))).status_code == 201
    bob = await session_of(app, "bob@acme.example")
    assert (await ask(app, bob)).status_code == 200
    alice = await session_of(app, "alice@acme.example")
    assert (await ask(app, alice)).status_code == 403  # bob's grant, not his partner's

    clock.advance(timedelta(days=3).total_seconds())  # nobody acts
    bob = await session_of(app, "bob@acme.example")
    ended = await ask(app, bob)
    assert ended.status_code == 403
    assert "your access to orders ended on 2026-03-05" in ended.json()["reasons"]
    page = await ask(app, bob, accept="text/html")
    assert page.status_code == 403
    assert "your access to orders ended on 2026-03-05" in page.text


# ---------------------------------------------------------------------- the console


async def test_a_sponsors_console_shows_their_partner_read_only(
    app: Starlette, service: AdminService
) -> None:
    await service.grant(SYSTEM, bob_orders())
    async with signed_in(app, "carl@corp.example") as carl:
        listing = await carl.get("/admin/")
        assert listing.status_code == 200
        assert 'id="actor-role">sponsor<' in listing.text
        assert 'id="partner-acme"' in listing.text
        for hidden in ('id="partner-globex"', 'id="partner-corp"', 'href="/admin/audit"',
                       'href="/admin/apps"'):  # fmt: skip
            assert hidden not in listing.text, hidden
        page = await carl.get("/admin/partners/acme")
        assert page.status_code == 200
        assert 'id="read-only"' in page.text
        assert 'id="grant-count">1 active grant.' in page.text
        assert 'id="grant-access"' in page.text
        for action in ('id="status-suspended"', 'id="claim-form"', 'id="add-connection"',
                       "/sessions/end", 'id="history"', 'id="events-h"'):  # fmt: skip
            assert action not in page.text, action
        assert (await carl.get("/admin/partners/globex")).status_code == 404
        assert (await carl.get("/admin/audit")).status_code == 403
        assert (await carl.get("/admin/apps")).status_code == 403
        assert (await carl.get("/admin/partners/new")).status_code == 403
        form = await carl.get("/admin/grants/new")
        offered = re.findall(r'<option value="([^"]*)"', form.text)
        assert offered == ["", "acme"]  # only what they may grant for


async def test_the_grant_form_shows_problems_by_their_fields(
    app: Starlette, service: AdminService
) -> None:
    async with signed_in(app, "carl@corp.example") as carl:
        form = await carl.get("/admin/grants/new?partner=acme")
        fields = hidden_fields(form.text, "grant-form")
        base = {**fields, "partner": "acme", "who": "person", "email": "bob@acme.example",
                "app": ["orders"], "until": "2026-03-10"}  # fmt: skip
        cases = [
            ({"until": "2026-03-01"}, "until", "has passed"),
            ({"until": "2026-06-01"}, "until", f"at most {MAX_DAYS} days"),
            ({"until": "soon"}, "until", "Enter the day access ends"),
            ({"email": ""}, "email", "Enter the person&#39;s work email"),
            ({"email": "x@globex.example"}, "email", "not a verified domain of partner acme"),
            ({"app": []}, "apps", "Choose at least one app"),
        ]
        for change, name, message in cases:
            answer = await carl.post("/admin/grants", data={**base, **change})
            assert answer.status_code == 422, change
            error = re.search(rf'id="f-{name}-error">(.*?)</p>', answer.text, re.S)
            assert error and message in error.group(1), (change, answer.text[-3000:])
            assert 'id="error-summary"' in answer.text
            assert 'value="bob@acme.example"' in answer.text or name == "email"  # kept
        forged = await carl.post("/admin/grants", data={**base, "partner": "globex"})
        assert forged.status_code == 403
        no_csrf = {k: v for k, v in base.items() if k != "csrf"}
        assert (await carl.post("/admin/grants", data=no_csrf)).status_code == 403
        assert await service.documents(SYSTEM, "grant") == []

        made = await carl.post("/admin/grants", data=base, follow_redirects=True)
        assert made.status_code == 200
        assert "Access granted" in made.text
        [doc] = await service.documents(SYSTEM, "grant")
        assert doc.spec["valid_until"] == "2026-03-10T00:00:00+00:00"
        assert doc.spec["granted_by"] == CARL
        row = re.search(rf'<tr id="grant-{doc.id}">(.*?)</tr>', made.text, re.S)
        assert row and "bob@acme.example" in row.group(1) and "active" in row.group(1)
        revoke = hidden_fields(row.group(1))
        gone = await carl.post(f"/admin/grants/{doc.id}/revoke", data=revoke,
                               follow_redirects=True)  # fmt: skip
        assert f"Grant {doc.id} was revoked" in gone.text
        assert await service.documents(SYSTEM, "grant") == []


async def test_auditors_read_grants_and_partner_admins_do_not(
    app: Starlette, service: AdminService, clock: FakeClock
) -> None:
    await service.grant(SYSTEM, bob_orders(1))
    await service.grant(SYSTEM, {"partner_id": "globex", "apps": ["orders", "billing"],
                                 "valid_from": until(2), "valid_until": until(9)})  # fmt: skip
    clock.advance(timedelta(days=1).total_seconds())
    async with signed_in(app, "audrey@corp.example") as audrey:
        page = await audrey.get("/admin/grants")
        assert page.status_code == 200
        states = re.findall(r'<span class="badge [^"]*">([^<]*)</span>', page.text)
        assert sorted(states) == ["expired", "not yet"]
        assert "everyone at Globex Inc" in page.text
        assert 'id="new-grant"' not in page.text and "/revoke" not in page.text
        only = await audrey.get("/admin/grants?partner=globex")
        assert 'id="grant-count" role="status">1 grant of globex.' in only.text
        assert (await audrey.get("/admin/grants/new")).status_code == 403
        partner = await audrey.get("/admin/partners/globex")
        assert "0 active grants, 1 not yet started." in partner.text
        assert 'id="grant-access"' not in partner.text
    async with signed_in(app, "alice@acme.example") as alice:
        assert (await alice.get("/admin/grants")).status_code == 403
        assert 'id="grants-h"' not in (await alice.get("/admin/partners/acme")).text
    async with signed_in(app, "bob@acme.example") as bob:  # not internal, no role
        refused = await bob.get("/admin/", headers={"Accept": "text/html"})
        assert refused.status_code == 403
        assert "no administrator role" in refused.text

"""Time-boxed grants (issue 9): a person, a whole partner or a project's apps, until a
date; the policy's ``grant: valid`` reads them; expiry ends access by itself, and the
refused user is told why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette

from federation.admin.catalog import GrantIndex, GrantSpec, InvalidDocuments
from federation.admin.service import SYSTEM, Actor, AdminService, Forbidden
from federation.admin.tokens import Role
from federation.hub import Hub
from federation.identity import FederatedIdentity
from federation.web.app import create_app
from tests.admin.support import (
    API,
    BASE,
    EDGE,
    ORDERS_HOST,
    api_settings,
    bearer,
    make_hub,
    mint_token,
    sign_in_as,
)
from tests.test_cli_admin import as_json, isthmus, ok, write_config

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GRANTED = """\
version: 1
rules:
  - name: project
    effect: allow
    when:
      grant: valid
"""


class Clock:
    def __init__(self) -> None:
        self.now = START.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta.total_seconds()


def _app(app_id: str) -> dict[str, Any]:
    return {"id": app_id, "path_prefix": f"/{app_id}", "upstreams": ["http://127.0.0.1:9"],
            "policy": yaml.safe_load(GRANTED)}  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(events: list[dict[str, Any]], clock: Clock) -> Hub:
    settings = api_settings(apps=[_app("orders"), _app("billing")])
    made = make_hub(settings, events)
    made.clock = clock
    return made


@pytest.fixture
def app(hub: Hub) -> Starlette:
    return create_app(hub=hub)


@pytest.fixture
def service(hub: Hub) -> AdminService:
    return AdminService(hub)


def until(days: float) -> str:
    return (START + timedelta(days=days)).isoformat()


async def session_of(app: Starlette, email: str) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as browser:
        await sign_in_as(browser, email)
        return str(browser.cookies["isthmus_session"])


async def ask(app: Starlette, cookie: str, app_id: str = "orders") -> httpx.Response:
    """The edge asks about GET /<app_id>/x for the holder of ``cookie`` (JSON answers)."""
    headers = {"X-Original-URI": f"/{app_id}/x", "X-Original-Method": "GET",
               "X-Forwarded-Host": ORDERS_HOST, "X-Forwarded-Proto": "http",
               "Accept": "application/json", "Cookie": f"isthmus_session={cookie}"}  # fmt: skip
    transport = httpx.ASGITransport(app=app, client=EDGE)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as edge:
        return await edge.get("/forward-auth", headers=headers)


# ---------------------------------------------------------------------- access


async def test_a_person_grant_allows_until_its_end_and_then_explains(
    app: Starlette, service: AdminService, clock: Clock
) -> None:
    await service.grant(SYSTEM, {"partner_id": "acme", "connection_id": "acme-mock",
                                 "subject": "bob", "apps": ["orders"],
                                 "valid_until": until(3), "reason": "project X"})  # fmt: skip
    bob = await session_of(app, "bob@acme.example")
    alice = await session_of(app, "alice@acme.example")
    assert (await ask(app, bob)).status_code == 200
    assert (await ask(app, bob, "billing")).status_code == 403  # not granted
    refused = await ask(app, alice)  # the grant is bob's, not his partner's
    assert refused.status_code == 403
    assert not any("ended" in r for r in refused.json()["reasons"])

    clock.advance(timedelta(days=3, seconds=-1))
    bob = await session_of(app, "bob@acme.example")
    assert (await ask(app, bob)).status_code == 200
    clock.advance(timedelta(seconds=1))  # valid while now < valid_until
    bob = await session_of(app, "bob@acme.example")
    ended = await ask(app, bob)
    assert ended.status_code == 403
    assert "your access to orders ended on 2026-03-05" in ended.json()["reasons"]


async def test_a_grant_by_email_and_a_partner_wide_grant(
    app: Starlette, service: AdminService
) -> None:
    await service.grant(SYSTEM, {"partner_id": "acme", "email": "Alice@acme.example",
                                 "apps": ["billing"], "valid_until": until(1)})  # fmt: skip
    await service.grant(SYSTEM, {"partner_id": "acme", "apps": ["orders"],
                                 "valid_until": until(1)})  # fmt: skip
    alice = await session_of(app, "alice@acme.example")
    bob = await session_of(app, "bob@acme.example")
    gina = await session_of(app, "gina@globex.example")
    assert (await ask(app, alice, "billing")).status_code == 200
    assert (await ask(app, bob, "billing")).status_code == 403
    assert (await ask(app, alice)).status_code == 200
    assert (await ask(app, bob)).status_code == 200
    assert (await ask(app, gina)).status_code == 403


async def test_a_project_grant_over_two_apps_starts_at_valid_from_and_can_be_revoked(
    app: Starlette, service: AdminService, clock: Clock
) -> None:
    project = {"partner_id": "globex", "apps": ["orders", "billing"],
               "valid_from": until(1), "valid_until": until(10)}  # fmt: skip
    doc = await service.grant(SYSTEM, project)
    gina = await session_of(app, "gina@globex.example")
    assert (await ask(app, gina)).status_code == 403  # not yet
    clock.advance(timedelta(days=1))
    gina = await session_of(app, "gina@globex.example")
    assert (await ask(app, gina)).status_code == 200
    assert (await ask(app, gina, "billing")).status_code == 200
    await service.revoke_grant(SYSTEM, doc.id)
    assert (await ask(app, gina)).status_code == 403
    assert (await ask(app, gina, "billing")).status_code == 403


# ---------------------------------------------------------------------- refusals


async def test_a_grant_ending_in_the_past_is_refused(service: AdminService) -> None:
    with pytest.raises(InvalidDocuments) as refused:
        await service.grant(SYSTEM, {"partner_id": "acme", "apps": ["orders"],
                                     "valid_until": until(-1)})  # fmt: skip
    assert [p.field for p in refused.value.problems] == ["valid_until"]
    assert await service.documents(SYSTEM, "grant") == []


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"partner_id": "acme", "apps": ["orders", "nope"]}, "apps.1"),
        ({"partner_id": "nope", "apps": ["orders"]}, "partner_id"),
        ({"partner_id": "acme", "apps": ["orders"], "email": "x@globex.example"}, "email"),
        ({"partner_id": "acme", "apps": ["orders"], "connection_id": "acme-mock"}, ""),
        ({"partner_id": "acme", "apps": ["orders"], "connection_id": "other",
          "subject": "bob"}, "connection_id"),
        ({"partner_id": "acme", "apps": []}, "apps"),
    ],
)  # fmt: skip
async def test_a_grant_naming_what_does_not_exist_is_refused(
    service: AdminService, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidDocuments) as refused:
        await service.grant(SYSTEM, {**spec, "valid_until": until(1)})
    assert field in [p.field for p in refused.value.problems]
    assert await service.documents(SYSTEM, "grant") == []


async def test_grants_keep_their_apps_but_not_the_partners_domains(
    service: AdminService, app: Starlette
) -> None:
    doc = await service.grant(SYSTEM, {"partner_id": "acme", "email": "bob@acme.example",
                                       "apps": ["billing"], "valid_until": until(1)})  # fmt: skip
    billing = await service.document(SYSTEM, "app", "billing")
    with pytest.raises(InvalidDocuments) as refused:
        await service.delete(SYSTEM, "app", "billing", billing.version)
    assert ("grant", doc.id, "apps.0") in [(p.kind, p.id, p.field) for p in refused.value.problems]
    # The partner drops the domain: not blocked; the grant now matches no one.
    await service.remove_domain(Actor("alice", Role.partner_admin, "acme"), "acme", "acme.example")
    assert (await service.document(SYSTEM, "grant", doc.id)).spec["email"] == "bob@acme.example"


@pytest.mark.parametrize(
    "actor",
    [Actor("audrey", Role.auditor), Actor("alice", Role.partner_admin, "acme")],
)
async def test_auditors_and_partner_admins_neither_grant_nor_revoke(
    service: AdminService, actor: Actor
) -> None:
    """Admins grant; so do sponsors, for the partners they sponsor (test_sponsors.py)."""
    spec = {"partner_id": "acme", "apps": ["orders"], "valid_until": until(1)}
    with pytest.raises(Forbidden):
        await service.grant(actor, spec)
    doc = await service.grant(SYSTEM, spec)
    with pytest.raises(Forbidden):
        await service.revoke_grant(actor, doc.id)
    assert [d.id for d in await service.documents(SYSTEM, "grant")] == [doc.id]


async def test_a_grant_is_audited_with_who_granted_it(
    service: AdminService, events: list[dict[str, Any]]
) -> None:
    doc = await service.grant(Actor("root", Role.admin), {"partner_id": "acme",
                              "apps": ["orders"], "valid_until": until(1),
                              "reason": "tender 42"})  # fmt: skip
    assert doc.spec["granted_by"] == "root"
    change = [e for e in events if e.get("event") == "admin.change" and e["kind"] == "grant"]
    assert change[0]["partner"] == "acme"
    assert change[0]["reason"] == "tender 42"


# ---------------------------------------------------------------------- the admin API


@pytest.fixture
async def api(app: Starlette, hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """An API client with an admin token."""
    token = await mint_token(hub)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=bearer(token)) as c:
        yield c


async def test_grants_through_the_api(app: Starlette, api: httpx.AsyncClient, hub: Hub) -> None:
    body = {"partner_id": "acme", "email": "bob@acme.example", "apps": ["orders", "billing"],
            "valid_until": until(5), "reason": "project X"}  # fmt: skip
    created = await api.post(f"{API}/grants", json=body)
    assert created.status_code == 201, created.text
    grant_id = created.json()["id"]
    assert created.headers["location"] == f"{API}/grants/{grant_id}"
    assert created.json()["spec"]["granted_by"] == "token:test-admin"
    listed = await api.get(f"{API}/grants", params={"partner": "acme"})
    assert [g["id"] for g in listed.json()["items"]] == [grant_id]
    assert (await api.get(f"{API}/grants", params={"partner": "globex"})).json()["items"] == []
    assert (await api.get(f"{API}/grants/{grant_id}")).json()["spec"]["apps"] == body["apps"]

    bob = await session_of(app, "bob@acme.example")
    assert (await ask(app, bob, "billing")).status_code == 200
    assert (await api.delete(f"{API}/grants/{grant_id}")).status_code == 204
    assert (await ask(app, bob, "billing")).status_code == 403
    assert (await api.get(f"{API}/grants/{grant_id}")).status_code == 404


async def test_the_api_refuses_a_past_grant_and_non_admins(
    api: httpx.AsyncClient, hub: Hub, app: Starlette
) -> None:
    past = {"partner_id": "acme", "apps": ["orders"], "valid_until": until(-1)}
    refused = await api.post(f"{API}/grants", json=past)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["valid_until"]
    unknown = await api.post(
        f"{API}/grants", json={**past, "apps": ["nope"], "valid_until": until(1)}
    )
    assert unknown.status_code == 422
    assert [e["field"] for e in unknown.json()["errors"]] == ["apps.0"]

    auditor = await mint_token(hub, Role.auditor)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as other:
        ok = {**past, "valid_until": until(1)}
        answer = await other.post(f"{API}/grants", json=ok, headers=bearer(auditor))
        assert answer.status_code == 403
        assert (await other.get(f"{API}/grants", headers=bearer(auditor))).status_code == 200


# ---------------------------------------------------------------------- the CLI


def test_grants_through_the_cli(tmp_path: Path) -> None:
    config = write_config(tmp_path / "hub")
    bob = ("--partner", "acme", "--email", "bob@acme.example")
    created = as_json(config, "grants", "create", *bob, "--app", "orders", "--until", "30d")
    assert created["spec"]["apps"] == ["orders"]
    assert created["spec"]["granted_by"].startswith("cli:")
    listed = ok(config, "grants", "list", "--partner", "acme").stdout
    assert created["id"] in listed
    assert "bob@acme.example" in listed
    assert "active" in listed

    past = isthmus(config, "grants", "create", "--partner", "acme", "--app", "orders",
                   "--until", "2020-01-01")  # fmt: skip
    assert past.exit_code == 1
    assert "valid_until" in past.stderr
    unknown = isthmus(config, "grants", "create", "--partner", "acme", "--app", "nope",
                      "--until", "2w")  # fmt: skip
    assert unknown.exit_code == 1
    assert "no app 'nope'" in unknown.stderr

    bundle = tmp_path / "bundle"  # grants are not exported, and a pruning apply keeps them
    ok(config, "export", "-o", str(bundle))
    assert not list(bundle.rglob("*grant*"))
    ok(config, "apply", "-f", str(bundle), "--prune")
    assert created["id"] in ok(config, "grants", "list").stdout

    assert f"revoked grant {created['id']}" in ok(config, "grants", "revoke", created["id"]).stdout
    assert ok(config, "grants", "list").stdout.strip() == "No grants."


def test_a_grant_by_email_names_only_a_verified_email() -> None:
    spec = GrantSpec(partner_id="acme", email="Bob@acme.example", apps=("orders",),
                     valid_until=START + timedelta(days=1), granted_by="root")  # fmt: skip
    index = GrantIndex.of([spec])
    verified = FederatedIdentity("acme", "acme-mock", "i", "bob", email="bob@acme.example",
                                 email_verified=True)  # fmt: skip
    assert [g.app_id for g in index.for_identity(verified, START)] == ["orders"]
    unverified = FederatedIdentity("acme", "acme-mock", "i", "bob", email="bob@acme.example")
    assert index.for_identity(unverified, START) == ()
    elsewhere = FederatedIdentity("globex", "g", "i", "bob", email="bob@acme.example",
                                  email_verified=True)  # fmt: skip
    assert index.for_identity(elsewhere, START) == ()

"""AdminService directly: concurrent writes, plan/apply diffs, masked secrets, history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from federation.admin.catalog import InvalidDocuments
from federation.admin.documents import Document, VersionConflict
from federation.admin.service import REDACTED, SYSTEM, Actor, AdminService, redact, unredact
from federation.admin.tokens import Role
from federation.hub import Hub
from tests.admin.support import CLIENT_SECRET, YieldingStore, api_settings, make_hub

ROOT = Actor("root@corp.example (corp)", Role.admin)
OIDC_SECRET = "acme-upstream-secret-1"
SAML_LIKE_SECRET = "acme-upstream-secret-2"


def oidc_connection(cid: str, secret: str) -> dict[str, Any]:
    return {"type": "oidc", "id": cid, "issuer": f"https://{cid}.idp.test",
            "client_id": "hub", "client_secret": secret}  # fmt: skip


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def hub(events: list[dict[str, Any]]) -> Hub:
    made = make_hub(api_settings(), events)
    made.documents = YieldingStore(made.documents)
    return made


@pytest.fixture
def service(hub: Hub) -> AdminService:
    return AdminService(hub)


async def test_concurrent_puts_with_the_same_version_one_wins(
    service: AdminService, hub: Hub
) -> None:
    acme = await service.document(ROOT, "partner", "acme")
    names = [f"Acme {i}" for i in range(8)]
    results = await asyncio.gather(
        *(service.put(ROOT, "partner", "acme", {**acme.spec, "name": n}, acme.version)
          for n in names),
        return_exceptions=True,
    )  # fmt: skip
    won = [r for r in results if isinstance(r, Document)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 7
    assert all(isinstance(r, VersionConflict) for r in lost)
    assert all(r.conflicts == [("partner", "acme", 1, 2)] for r in lost)  # type: ignore[attr-defined]
    stored = await hub.documents.get("partner", "acme")
    assert stored is not None and stored.version == 2 and stored.spec["name"] == won[0].spec["name"]
    history = await service.history(ROOT, kind="partner", doc_id="acme")
    assert [c.action for c in history] == ["update", "create"]
    assert hub.registry.partner("acme").settings.name == won[0].spec["name"]  # type: ignore[union-attr]


async def test_concurrent_creates_of_one_id_one_wins(service: AdminService) -> None:
    spec = {"id": "wiki", "upstreams": ["http://127.0.0.1:9"], "path_prefix": "/wiki"}
    results = await asyncio.gather(
        *(service.put(ROOT, "app", "wiki", {**spec, "name": f"Wiki {i}"}, 0) for i in range(4)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Document) for r in results) == 1
    assert sum(isinstance(r, VersionConflict) for r in results) == 3


async def test_plan_shows_a_masked_diff_and_apply_carries_it_out(
    service: AdminService, hub: Hub
) -> None:
    exported = await service.export(ROOT)
    unchanged = await service.plan(ROOT, exported)
    assert unchanged.changes == ()
    desired = []
    for kind, doc_id, spec in exported:
        if (kind, doc_id) == ("partner", "acme"):
            spec = {**spec, "name": "Acme Two"}
        if (kind, doc_id) == ("client", "orders"):
            continue  # pruned
        desired.append((kind, doc_id, spec))
    desired.append(("app", "wiki", {"id": "wiki", "upstreams": ["http://127.0.0.1:9"],
                                    "path_prefix": "/wiki"}))  # fmt: skip
    plan = await service.plan(ROOT, desired, prune=True)
    actions = {(e.kind, e.id): e.action for e in plan.changes}
    assert actions == {("partner", "acme"): "update", ("app", "wiki"): "create",
                       ("client", "orders"): "delete"}  # fmt: skip
    assert plan.summary()["unchanged"] == len(exported) - 2
    diffs = {(e.kind, e.id): e.diff() for e in plan.changes}
    assert "-name: Acme Inc\n" in diffs[("partner", "acme")]
    assert "+name: Acme Two\n" in diffs[("partner", "acme")]
    assert diffs[("app", "wiki")].startswith("--- /dev/null\n+++ b/app/wiki\n")
    assert f"-client_secret: '{REDACTED}'" in diffs[("client", "orders")]
    assert CLIENT_SECRET not in "".join(diffs.values())
    # api tokens are never pruned by files
    await service.create_token(ROOT, name="ci", role=Role.auditor)
    assert "api_token" not in {
        e.kind for e in (await service.plan(ROOT, desired, prune=True)).changes
    }

    changes = await service.apply(ROOT, plan)
    assert {(c.kind, c.id, c.action) for c in changes} == {
        ("partner", "acme", "update"), ("app", "wiki", "create"), ("client", "orders", "delete")
    }  # fmt: skip
    assert (await service.plan(ROOT, desired, prune=True)).changes == ()
    assert hub.registry.client("orders") is None
    assert hub.registry.partner("acme").settings.name == "Acme Two"  # type: ignore[union-attr]


async def test_apply_of_a_stale_plan_writes_nothing(service: AdminService, hub: Hub) -> None:
    exported = await service.export(ROOT)
    desired = [(k, i, {**s, "name": "Planned"} if k == "partner" else s) for k, i, s in exported]
    plan = await service.plan(ROOT, desired)
    assert len(plan.changes) == 3
    globex = await service.document(ROOT, "partner", "globex")
    await service.put(ROOT, "partner", "globex", {**globex.spec, "name": "Meanwhile"}, 1)
    revision = await hub.documents.revision()
    with pytest.raises(VersionConflict) as refused:
        await service.apply(ROOT, plan)
    assert refused.value.conflicts == [("partner", "globex", 1, 2)]
    assert await hub.documents.revision() == revision
    acme = await hub.documents.get("partner", "acme")
    assert acme is not None and acme.spec["name"] == "Acme Inc"


async def test_unredact_keeps_secrets_sent_back_masked(service: AdminService, hub: Hub) -> None:
    acme = await service.document(ROOT, "partner", "acme")
    connections = [*acme.spec["connections"], oidc_connection("acme-oidc", OIDC_SECRET),
                   oidc_connection("acme-oidc2", SAML_LIKE_SECRET)]  # fmt: skip
    saved = await service.put(
        ROOT, "partner", "acme", {**acme.spec, "connections": connections}, acme.version
    )
    # what a client read: secrets masked; it reorders the connections and sends them back
    read = redact(saved.spec)
    assert [c.get("client_secret") for c in read["connections"]] == [None, REDACTED, REDACTED]
    read["connections"] = [read["connections"][2], read["connections"][0], read["connections"][1]]
    back = await service.put(ROOT, "partner", "acme", read, saved.version)
    secrets = {c["id"]: c.get("client_secret") for c in back.spec["connections"]}
    assert secrets == {"acme-oidc2": SAML_LIKE_SECRET, "acme-mock": None,
                       "acme-oidc": OIDC_SECRET}  # fmt: skip
    # a new value replaces the secret
    read = redact(back.spec)
    read["connections"][0]["client_secret"] = "rotated-secret"
    rotated = await service.put(ROOT, "partner", "acme", read, back.version)
    assert rotated.spec["connections"][0]["client_secret"] == "rotated-secret"
    assert rotated.spec["connections"][2]["client_secret"] == OIDC_SECRET


async def test_a_mask_with_no_stored_secret_is_refused(service: AdminService, hub: Hub) -> None:
    """A GET answer copied into a new document must not store the mask as its secret."""
    acme = await service.document(ROOT, "partner", "acme")
    copied = redact({**acme.spec, "connections": [oidc_connection("acme-oidc", OIDC_SECRET)]})
    with pytest.raises(InvalidDocuments) as refused:
        await service.put(ROOT, "partner", "acme", copied, acme.version)
    assert [p.field for p in refused.value.problems] == ["connections.0.client_secret"]
    stored = await hub.documents.get("partner", "acme")
    assert stored is not None and stored.version == acme.version


def test_redact_and_unredact_are_inverse_for_what_was_masked() -> None:
    spec = {"client_secret": "s1", "nested": [{"id": "a", "client_secret": "s2"},
                                              {"client_secret": None}], "name": "x"}  # fmt: skip
    masked = redact(spec)
    assert masked == {"client_secret": REDACTED, "name": "x",
                      "nested": [{"id": "a", "client_secret": REDACTED},
                                 {"client_secret": None}]}  # fmt: skip
    assert unredact(masked, spec) == spec


async def test_history_records_before_and_after_with_secrets_masked(
    service: AdminService, hub: Hub, events: list[dict[str, Any]]
) -> None:
    client = await service.document(ROOT, "client", "orders")
    changed = {**client.spec, "client_secret": "new-secret-0123456789", "name": "Orders"}
    await service.put(ROOT, "client", "orders", changed, client.version, reason="rotate")
    history = await service.history(ROOT, kind="client", doc_id="orders")
    latest = history[0]
    assert (latest.action, latest.version, latest.actor, latest.reason) == (
        "update", 2, ROOT.name, "rotate"
    )  # fmt: skip
    assert latest.before is not None and latest.after is not None
    assert latest.before["client_secret"] == latest.after["client_secret"] == REDACTED
    assert "name" not in latest.before and latest.after["name"] == "Orders"
    # the store keeps the real values; every answer and the audit trail mask them
    raw = await hub.documents.history(kind="client", doc_id="orders")
    assert raw[0].after is not None and raw[0].after["client_secret"] == "new-secret-0123456789"
    audited = [e for e in events if e["event"] == "admin.change" and e["id"] == "orders"]
    assert audited[-1]["after"]["client_secret"] == REDACTED
    assert audited[-1]["before"]["client_secret"] == REDACTED
    assert audited[-1]["actor"] == ROOT.name


async def test_partner_admin_history_is_their_partner_only(service: AdminService) -> None:
    alice = Actor("alice@acme.example (acme)", Role.partner_admin, "acme")
    await service.put(SYSTEM, "app", "wiki", {"id": "wiki", "upstreams": ["http://a.test"]}, 0)
    history = await service.history(alice, kind="app")
    assert history and {(c.kind, c.id) for c in history} == {("partner", "acme")}

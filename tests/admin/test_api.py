"""The admin REST API (/admin/api/v1) in-process: auth, versions, scoping, lifecycle, audit.

Admins, auditors and partner admins sign in through the hub's own login (mock partner
IdPs whose users carry the roles), or call with API tokens minted by the admin service.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from connectors.mock import MockConnector
from connectors.registry import ConnectorRegistry
from federation.admin.service import REDACTED, SYSTEM, AdminService
from federation.admin.tokens import Role, new_token
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.web import admin_api
from federation.web.app import create_app
from tests.admin.support import (
    API,
    APP_CB,
    BASE,
    CLIENT_SECRET,
    SignIn,
    api_settings,
    bearer,
    etag,
    fields,
    forward_auth,
    make_hub,
    mint_token,
    oidc_tokens,
    refresh,
    userinfo,
)
from tests.broker.test_mock_partner_to_hub_session import start_login


async def test_no_credentials_is_401_json_even_for_a_browser(http: httpx.AsyncClient) -> None:
    answer = await http.get(f"{API}/partners", headers={"Accept": "text/html"})
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"] == "unauthorized"
    assert answer.json()["request_id"] == answer.headers["x-request-id"]


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer isth_aaaaaaaaaaaa_" + "x" * 43,
                                    "Basic dXNlcjpwYXNz"])  # fmt: skip
async def test_unknown_or_malformed_token_is_401(http: httpx.AsyncClient, header: str) -> None:
    answer = await http.get(f"{API}/me", headers={"Authorization": header})
    assert answer.status_code == 401


async def test_expired_token_is_401(http: httpx.AsyncClient, hub: Hub) -> None:
    token_id, token, hashed = new_token()
    past = datetime.now(UTC) - timedelta(days=1)
    spec = {
        "name": "old",
        "role": "admin",
        "secret_sha256": hashed,
        "created_at": (past - timedelta(days=30)).isoformat(),
        "expires_at": past.isoformat(),
    }
    await AdminService(hub).put(SYSTEM, "api_token", token_id, spec, 0)  # fmt: skip
    assert (await http.get(f"{API}/me", headers=bearer(token))).status_code == 401


async def test_signed_in_without_an_admin_role_is_403(as_user: SignIn) -> None:
    async with as_user("bob@acme.example") as bob:  # a partner's person, no role
        answer = await bob.get(f"{API}/partners")
        assert (await bob.get(f"{API}/me")).status_code == 403
    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"


async def test_an_internal_person_without_a_role_is_a_sponsor_kept_off_the_api(
    as_user: SignIn,
) -> None:
    """Sponsors reach /me and the grants endpoints only (tests/admin/test_sponsors.py)."""
    async with as_user("carl@corp.example") as carl:
        me = await carl.get(f"{API}/me")
        assert me.status_code == 200
        assert me.json()["role"] == "sponsor" and me.json()["csrf_token"]
        answer = await carl.get(f"{API}/partners")
        assert (await carl.get(f"{API}/grants")).json()["items"] == []  # sponsors no one
    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"


async def test_token_crud_round_trip(admin: httpx.AsyncClient, http: httpx.AsyncClient) -> None:
    created = await admin.post(f"{API}/tokens", json={"name": "ci", "role": "auditor",
                                                      "ttl_days": 30})  # fmt: skip
    assert created.status_code == 201, created.text
    token, doc = created.json()["token"], created.json()["document"]
    assert token.startswith(f"isth_{doc['id']}_")
    assert created.headers["location"] == f"{API}/tokens/{doc['id']}"
    assert doc["spec"]["secret_sha256"] == REDACTED
    assert doc["spec"]["role"] == "auditor" and doc["spec"]["expires_at"]

    listed = await admin.get(f"{API}/tokens")
    assert doc["id"] in [d["id"] for d in listed.json()["items"]]
    assert token.split("_")[-1] not in listed.text  # the secret is answered once only

    me = await http.get(f"{API}/me", headers=bearer(token))
    assert me.json() == {"name": "token:ci", "role": "auditor", "partner_id": None,
                         "csrf_token": None}  # fmt: skip

    assert (await admin.delete(f"{API}/tokens/{doc['id']}")).status_code == 204
    assert (await http.get(f"{API}/me", headers=bearer(token))).status_code == 401
    listed = await admin.get(f"{API}/tokens")
    assert doc["id"] not in [d["id"] for d in listed.json()["items"]]
    assert (await admin.delete(f"{API}/tokens/{doc['id']}")).status_code == 404


async def test_partner_admin_token_needs_its_partner(admin: httpx.AsyncClient) -> None:
    missing = await admin.post(f"{API}/tokens", json={"name": "p", "role": "partner_admin"})
    assert missing.status_code == 422
    unknown = await admin.post(
        f"{API}/tokens", json={"name": "p", "role": "partner_admin", "partner_id": "nope"}
    )
    assert unknown.status_code == 422 and fields(unknown) == {"partner_id"}
    scoped = await admin.post(
        f"{API}/tokens", json={"name": "p", "role": "partner_admin", "partner_id": "acme"}
    )
    assert scoped.status_code == 201
    as_partner = bearer(scoped.json()["token"])
    listed = await admin.get(f"{API}/partners", headers=as_partner)
    assert [d["id"] for d in listed.json()["items"]] == ["acme"]


async def test_auditor_reads_and_cannot_write(
    app: Starlette, hub: Hub, http: httpx.AsyncClient, as_user: SignIn
) -> None:
    auditor = bearer(await mint_token(hub, Role.auditor))
    revision = await hub.documents.revision()
    acme = await http.get(f"{API}/partners/acme", headers=auditor)
    assert acme.status_code == 200
    spec = {**acme.json()["spec"], "name": "Hacked"}
    writes = [
        http.put(f"{API}/partners/acme", json={"spec": spec}, headers={**auditor, **etag(acme)}),
        http.post(f"{API}/partners/acme/status", json={"status": "suspended", "version": 1},
                  headers=auditor),
        http.post(f"{API}/apps", json={"spec": {"id": "x", "upstreams": ["http://a.test"]}},
                  headers=auditor),
        http.post(f"{API}/partners/acme/domains", json={"domain": "new.example"},
                  headers=auditor),
        http.post(f"{API}/tokens", json={"name": "t", "role": "admin"}, headers=auditor),
        http.request("DELETE", f"{API}/policies/orders", headers={**auditor, "If-Match": '"1"'}),
    ]  # fmt: skip
    for write in writes:
        answer = await write
        assert answer.status_code == 403, answer.text
    assert await hub.documents.revision() == revision
    assert (await http.get(f"{API}/apps/orders", headers=auditor)).status_code == 200
    assert (await http.get(f"{API}/tokens", headers=auditor)).status_code == 403
    # the same through the auditor's own sign-in
    async with as_user("audrey@corp.example") as audrey:
        assert (await audrey.get(f"{API}/me")).json()["role"] == "auditor"
        refused = await audrey.put(f"{API}/partners/acme", json={"spec": spec, "version": 1})
        assert refused.status_code == 403
    assert await hub.documents.revision() == revision


async def test_admin_signed_in_through_the_hub(as_user: SignIn) -> None:
    async with as_user("root@corp.example") as root:
        me = (await root.get(f"{API}/me")).json()
        assert me["role"] == "admin" and me["name"] == "root@corp.example (corp)"
        assert me["csrf_token"] == root.cookies["isthmus_csrf"]
        acme = await root.get(f"{API}/partners/acme")
        renamed = {**acme.json()["spec"], "name": "Acme Supplies"}
        saved = await root.put(f"{API}/partners/acme", json={"spec": renamed},
                               headers=etag(acme))  # fmt: skip
        assert saved.status_code == 200, saved.text
        assert saved.json()["updated_by"] == "root@corp.example (corp)"


# ---------------------------------------------------------------------- CSRF


async def test_cookie_write_needs_the_csrf_header(as_user: SignIn, hub: Hub) -> None:
    async with as_user("root@corp.example") as root:
        acme = await root.get(f"{API}/partners/acme")
        body = {"spec": {**acme.json()["spec"], "name": "Acme 2"}, "version": 1}
        proof = root.headers.pop(admin_api.CSRF_HEADER)
        missing = await root.put(f"{API}/partners/acme", json=body)
        wrong = await root.put(f"{API}/partners/acme", json=body,
                               headers={admin_api.CSRF_HEADER: "x" * 43})  # fmt: skip
        for answer in (missing, wrong):
            assert answer.status_code == 403
            assert answer.json()["error"] == "csrf_failed"
            assert admin_api.CSRF_HEADER in answer.json()["error_description"]
        assert (await hub.documents.get("partner", "acme")).version == 1  # type: ignore[union-attr]
        saved = await root.put(f"{API}/partners/acme", json=body,
                               headers={admin_api.CSRF_HEADER: proof})  # fmt: skip
        assert saved.status_code == 200


async def test_token_writes_need_no_csrf_and_cross_site_is_refused(
    admin: httpx.AsyncClient, as_user: SignIn
) -> None:
    acme = await admin.get(f"{API}/partners/acme")
    saved = await admin.put(
        f"{API}/partners/acme", json={"spec": {**acme.json()["spec"], "name": "A"}},
        headers=etag(acme),
    )  # fmt: skip
    assert saved.status_code == 200
    async with as_user("root@corp.example") as root:
        cross = await root.get(f"{API}/partners", headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        same = await root.get(f"{API}/partners", headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 200


# ---------------------------------------------------------------------- versions


async def test_versions_etag_if_match_and_conflicts(admin: httpx.AsyncClient, hub: Hub) -> None:
    read = await admin.get(f"{API}/partners/acme")
    assert read.headers["etag"] == '"1"' and read.json()["version"] == 1
    spec = read.json()["spec"]

    missing = await admin.put(f"{API}/partners/acme", json={"spec": {**spec, "name": "X"}})
    assert missing.status_code == 428
    assert "If-Match" in missing.json()["error_description"]
    bad = await admin.put(f"{API}/partners/acme", json={"spec": spec},
                          headers={"If-Match": "yesterday"})  # fmt: skip
    assert bad.status_code == 400

    first = await admin.put(f"{API}/partners/acme", json={"spec": {**spec, "name": "First"}},
                            headers=etag(read))  # fmt: skip
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    stale = await admin.put(f"{API}/partners/acme", json={"spec": {**spec, "name": "Second"}},
                            headers=etag(read))  # fmt: skip
    assert stale.status_code == 409
    assert stale.json()["error"] == "version_conflict"
    assert stale.json()["conflicts"] == [
        {"kind": "partner", "id": "acme", "expected_version": 1, "current_version": 2}
    ]
    current = await hub.documents.get("partner", "acme")
    assert current is not None and current.spec["name"] == "First" and current.version == 2

    # the version in the body does as well as If-Match; a GET answer goes back as it is
    again = (await admin.get(f"{API}/partners/acme")).json()
    again["spec"]["name"] = "Third"
    assert (await admin.put(f"{API}/partners/acme", json=again)).status_code == 200
    stale_status = await admin.post(f"{API}/partners/acme/status",
                                    json={"status": "suspended", "version": 2})  # fmt: skip
    assert stale_status.status_code == 409
    assert (await admin.request("DELETE", f"{API}/apps/orders")).status_code == 428


async def test_create_is_post_with_version_one_and_twice_is_a_conflict(
    admin: httpx.AsyncClient,
) -> None:
    spec = {"id": "newco", "name": "NewCo", "kind": "supplier", "domains": ["newco.example"]}
    created = await admin.post(f"{API}/partners", json={"spec": spec, "reason": "onboarding"})
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.headers["etag"] == '"1"'
    assert created.headers["location"] == f"{API}/partners/newco"
    twice = await admin.post(f"{API}/partners", json={"spec": spec})
    assert twice.status_code == 409
    history = await admin.get(f"{API}/partners/newco/history")
    assert [c["reason"] for c in history.json()["items"]] == ["onboarding"]


# ---------------------------------------------------------------------- bad input


async def test_bodies_that_are_not_json_objects_are_400(admin: httpx.AsyncClient) -> None:
    for content in (b"[1, 2]", b'"partner"', b"{not json", b""):
        answer = await admin.post(
            f"{API}/partners", content=content, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400, content
        assert "JSON" in answer.json()["error_description"]
    envelope = await admin.post(f"{API}/partners", json={"spec": [], "colour": "red"})
    assert envelope.status_code == 422
    assert fields(envelope) == {"spec", "colour"}
    assert {e["kind"] for e in envelope.json()["errors"]} == {"body"}


async def test_invalid_partners_are_422_with_fields_and_nothing_written(
    admin: httpx.AsyncClient, hub: Hub
) -> None:
    revision = await hub.documents.revision()
    base = {"name": "Zeta", "kind": "supplier"}
    bad_id = await admin.post(f"{API}/partners", json={"spec": {**base, "id": "Bad Id!"}})
    assert bad_id.status_code == 422 and fields(bad_id) == {"id"}
    claimed = await admin.post(
        f"{API}/partners", json={"spec": {**base, "id": "zeta", "domains": ["acme.example"]}}
    )
    assert claimed.status_code == 422 and fields(claimed) == {"domains"}
    assert "acme" in claimed.json()["errors"][0]["message"]
    unknown = await admin.post(
        f"{API}/partners", json={"spec": {**base, "id": "zeta", "colour": "red", "kind": "x"}}
    )
    assert unknown.status_code == 422 and fields(unknown) == {"colour", "kind"}
    error = unknown.json()["errors"][0]
    assert error["kind"] == "partner" and error["id"] == "zeta"
    assert await hub.documents.revision() == revision
    assert (await admin.get(f"{API}/partners/zeta")).status_code == 404


async def test_invalid_policy_is_422_with_the_policy_field(
    admin: httpx.AsyncClient, hub: Hub
) -> None:
    policy = await admin.get(f"{API}/policies/orders")
    rules = [{"name": "r", "effect": "maybe", "when": "always"}]
    answer = await admin.put(
        f"{API}/policies/orders", json={"spec": {"version": 1, "rules": rules}},
        headers=etag(policy),
    )  # fmt: skip
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["kind"] == "policy"
    assert fields(answer) == {"rules.0.effect"}
    stored = await hub.documents.get("policy", "orders")
    assert stored is not None and stored.version == 1


async def test_apps_clients_policies_crud(admin: httpx.AsyncClient, hub: Hub) -> None:
    app_spec = {"id": "wiki", "upstreams": ["http://127.0.0.1:9"], "path_prefix": "/wiki"}
    assert (await admin.post(f"{API}/apps", json={"spec": app_spec})).status_code == 201
    no_id = await admin.post(f"{API}/policies", json={"spec": {"rules": []}})
    assert no_id.status_code == 422 and fields(no_id) == {"id"}
    orphan = await admin.post(f"{API}/policies", json={"id": "nope", "spec": {"rules": []}})
    assert orphan.status_code == 422
    policy = {"version": 1, "rules": [{"name": "all", "effect": "allow", "when": "always"}]}
    made = await admin.post(f"{API}/policies", json={"id": "wiki", "spec": policy})
    assert made.status_code == 201 and made.json()["spec"] == policy
    assert hub.catalog.policies.policy("wiki") is not hub.catalog.policies.policy("nope")
    listed = await admin.get(f"{API}/policies")
    assert {d["id"] for d in listed.json()["items"]} == {"orders", "wiki"}
    gone = await admin.request("DELETE", f"{API}/policies/wiki", headers=etag(made))
    assert gone.status_code == 204
    app = await admin.get(f"{API}/apps/wiki")
    deleted = await admin.request(
        "DELETE", f"{API}/apps/wiki", json={"version": 1, "reason": "unused"}
    )
    assert app.status_code == 200 and deleted.status_code == 204
    assert (await admin.get(f"{API}/apps/wiki")).status_code == 404

    # a client's secret is masked in answers and kept when the masked value comes back
    client = await admin.get(f"{API}/clients/orders")
    assert client.json()["spec"]["client_secret"] == REDACTED
    back = client.json()
    back["spec"]["redirect_uris"] = [APP_CB, "https://orders.app.test/cb2"]
    saved = await admin.put(f"{API}/clients/orders", json=back)
    assert saved.status_code == 200 and CLIENT_SECRET not in saved.text
    stored = await hub.documents.get("client", "orders")
    assert stored is not None and stored.spec["client_secret"] == CLIENT_SECRET
    history = await admin.get(f"{API}/history", params={"kind": "client", "id": "orders"})
    change = history.json()["items"][0]
    assert change["action"] == "update"
    assert change["before"]["client_secret"] == change["after"]["client_secret"] == REDACTED
    assert CLIENT_SECRET not in history.text


async def test_partner_search_and_status_filter(admin: httpx.AsyncClient) -> None:
    async def ids(**params: str) -> list[str]:
        answer = await admin.get(f"{API}/partners", params=params)
        assert answer.status_code == 200, answer.text
        return [d["id"] for d in answer.json()["items"]]

    assert await ids() == ["acme", "corp", "globex"]
    assert await ids(q="GLOB") == ["globex"]
    assert await ids(q="acme.example") == ["acme"]
    assert await ids(q="inc") == ["acme", "corp", "globex"]
    acme = await admin.get(f"{API}/partners/acme")
    await admin.post(f"{API}/partners/acme/status", json={"status": "suspended"},
                     headers=etag(acme))  # fmt: skip
    assert await ids(status="suspended") == ["acme"]
    assert await ids(status="active", q="o") == ["corp", "globex"]
    assert (await admin.get(f"{API}/partners", params={"status": "gone"})).status_code == 400


# ---------------------------------------------------------------------- partner admins


async def test_partner_admin_sees_only_their_partner(
    as_user: SignIn, admin: httpx.AsyncClient
) -> None:
    async with as_user("alice@acme.example") as alice:
        me = (await alice.get(f"{API}/me")).json()
        assert (me["role"], me["partner_id"]) == ("partner_admin", "acme")
        listed = await alice.get(f"{API}/partners")
        assert [d["id"] for d in listed.json()["items"]] == ["acme"]
        other = await alice.get(f"{API}/partners/globex")
        nobody = await alice.get(f"{API}/partners/no-such-partner")
        assert other.status_code == nobody.status_code == 404
        assert other.json()["error_description"] == nobody.json()["error_description"]
        globex = await admin.get(f"{API}/partners/globex")
        for answer in (
            await alice.put(f"{API}/partners/globex", json=globex.json()),
            await alice.get(f"{API}/partners/globex/sessions"),
            await alice.get(f"{API}/partners/globex/history"),
            await alice.post(f"{API}/partners/globex/domains", json={"domain": "g2.example"}),
        ):
            assert answer.status_code == 404, answer.text
        for path in ("/apps", "/clients", "/policies/orders", "/tokens"):
            assert (await alice.get(f"{API}{path}")).status_code == 403
        sessions = await alice.get(f"{API}/partners/acme/sessions")
        assert [s["email"] for s in sessions.json()["items"]] == ["alice@acme.example"]
        trail = await alice.get(f"{API}/audit", params={"partner": "globex"})
        assert trail.status_code == 200
        assert {e.get("partner") for e in trail.json()["items"]} == {"acme"}


async def test_partner_admin_changes_connections_and_claims_domains_only(
    as_user: SignIn, hub: Hub
) -> None:
    async with as_user("alice@acme.example") as alice:
        acme = (await alice.get(f"{API}/partners/acme")).json()
        renamed = json.loads(json.dumps(acme))
        renamed["spec"]["connections"][0]["display_name"] = "Acme staff"
        saved = await alice.put(f"{API}/partners/acme", json=renamed)
        assert saved.status_code == 200, saved.text
        current = saved.json()
        for change in ({"name": "Acme Evil"}, {"domains": ["acme.example", "globex.example"]},
                       {"status": "suspended"}, {"kind": "internal"}):  # fmt: skip
            spec = {**current["spec"], **change}
            refused = await alice.put(
                f"{API}/partners/acme", json={"spec": spec, "version": current["version"]}
            )
            assert refused.status_code == 403, change  # fmt: skip
        status = await alice.post(
            f"{API}/partners/acme/status",
            json={"status": "suspended", "version": current["version"]},
        )
        assert status.status_code == 403  # fmt: skip
        created = await alice.post(f"{API}/partners", json={"spec": {"id": "mine"}})
        assert created.status_code == 403

        claim = await alice.post(f"{API}/partners/acme/domains", json={"domain": "Acme.Test."})
        assert claim.status_code == 201, claim.text
        body = claim.json()
        assert body["domain"] == "acme.test"
        assert body["record_type"] == "TXT"
        assert body["record_name"] == "_isthmus-challenge.acme.test"
        pending = body["document"]["spec"]["pending_domains"]
        assert body["record_value"] == f"isthmus-domain-verification={pending[0]['token']}"
        assert body["document"]["spec"]["domains"] == ["acme.example"]  # not routed yet
        twice = await alice.post(f"{API}/partners/acme/domains", json={"domain": "acme.test"})
        assert twice.status_code == 422 and fields(twice) == {"domain"}
        taken = await alice.post(f"{API}/partners/acme/domains", json={"domain": "globex.example"})
        assert taken.status_code == 422 and "another partner" in taken.text
        dropped = await alice.delete(f"{API}/partners/acme/domains/acme.test")
        assert dropped.status_code == 200 and dropped.json()["spec"].get("pending_domains") in (
            None,
            [],
        )
    stored = await hub.documents.get("partner", "acme")
    assert stored is not None
    assert stored.spec["name"] == "Acme Inc" and stored.spec["status"] == "active"
    assert stored.spec["connections"][0]["display_name"] == "Acme staff"


# ---------------------------------------------------------------------- lifecycle


async def test_suspension_ends_every_session_and_refresh_token(
    app: Starlette, admin: httpx.AsyncClient, as_user: SignIn, events: list[dict[str, Any]]
) -> None:
    async with as_user("bob@acme.example") as bob, as_user("gina@globex.example") as gina:
        tokens = await oidc_tokens(bob)
        cookie = bob.cookies["isthmus_session"]
        assert (await forward_auth(app, cookie)).status_code == 200
        assert (await userinfo(bob, tokens["access_token"])).status_code == 200
        sessions = await admin.get(f"{API}/partners/acme/sessions")
        assert [s["email"] for s in sessions.json()["items"]] == ["bob@acme.example"]

        acme = await admin.get(f"{API}/partners/acme")
        suspended = await admin.post(
            f"{API}/partners/acme/status", json={"status": "suspended", "reason": "audit"},
            headers=etag(acme),
        )  # fmt: skip
        assert suspended.status_code == 200, suspended.text
        assert suspended.json()["spec"]["status"] == "suspended"

        assert (await forward_auth(app, cookie)).status_code == 401
        assert (await userinfo(bob, tokens["access_token"])).status_code == 401
        assert (await refresh(bob, tokens["refresh_token"])).json()["error"] == "invalid_grant"
        assert (await admin.get(f"{API}/partners/acme/sessions")).json()["items"] == []
        # another partner's people are untouched
        assert (await forward_auth(app, gina.cookies["isthmus_session"])).status_code == 200

        # reactivated: the refresh token stays dead (its session ended)
        again = await admin.post(f"{API}/partners/acme/status", json={"status": "active"},
                                 headers=etag(suspended))  # fmt: skip
        assert again.status_code == 200
        assert (await refresh(bob, tokens["refresh_token"])).status_code == 400
    revoked = [e for e in events if e["event"] == "admin.partner.sessions_revoked"]
    assert revoked and revoked[0]["partner"] == "acme" and revoked[0]["sessions"] >= 1


async def test_offboarded_cannot_be_reactivated(admin: httpx.AsyncClient) -> None:
    acme = await admin.get(f"{API}/partners/acme")
    off = await admin.post(f"{API}/partners/acme/status", json={"status": "offboarded"},
                           headers=etag(acme))  # fmt: skip
    assert off.status_code == 200
    back = await admin.post(f"{API}/partners/acme/status", json={"status": "active"},
                            headers=etag(off))  # fmt: skip
    assert back.status_code == 422
    assert fields(back) == {"status"}
    assert "offboarded" in back.json()["errors"][0]["message"]
    bogus = await admin.post(f"{API}/partners/acme/status", json={"status": "asleep"},
                             headers=etag(off))  # fmt: skip
    assert bogus.status_code == 422 and fields(bogus) == {"status"}
    # offboarded, it may go
    assert (await admin.delete(f"{API}/partners/acme", headers=etag(off))).status_code == 204


async def test_active_partner_cannot_be_deleted(admin: httpx.AsyncClient) -> None:
    acme = await admin.get(f"{API}/partners/acme")
    refused = await admin.delete(f"{API}/partners/acme", headers=etag(acme))
    assert refused.status_code == 422 and fields(refused) == {"status"}


async def test_contract_window_in_the_past_refuses_sign_in_and_sessions(
    app: Starlette, admin: httpx.AsyncClient, as_user: SignIn, http: httpx.AsyncClient
) -> None:
    async with as_user("bob@acme.example") as bob:
        cookie = bob.cookies["isthmus_session"]
        tokens = await oidc_tokens(bob)
        acme = await admin.get(f"{API}/partners/acme")
        ended = {**acme.json()["spec"], "contract": {"valid_until": "2020-01-01T00:00:00Z"}}
        saved = await admin.put(f"{API}/partners/acme", json={"spec": ended},
                                headers=etag(acme))  # fmt: skip
        assert saved.status_code == 200, saved.text
        assert (await forward_auth(app, cookie)).status_code == 403
        assert (await userinfo(bob, tokens["access_token"])).status_code == 401
        assert (await refresh(bob, tokens["refresh_token"])).status_code == 400
    refused = await start_login(http, "bob@acme.example")
    assert refused.status_code == 403
    assert "partner_not_active" in refused.text


async def test_admin_ends_one_session(
    app: Starlette, admin: httpx.AsyncClient, as_user: SignIn
) -> None:
    async with as_user("bob@acme.example") as bob:
        cookie = bob.cookies["isthmus_session"]
        sessions = (await admin.get(f"{API}/partners/acme/sessions")).json()["items"]
        sid = next(s["sid"] for s in sessions if s["email"] == "bob@acme.example")
        assert cookie not in json.dumps(sessions)
        assert (await admin.delete(f"{API}/partners/acme/sessions/{sid}")).status_code == 204
        assert (await forward_auth(app, cookie)).status_code == 401
        assert (await admin.delete(f"{API}/partners/acme/sessions/{sid}")).status_code == 404


# ---------------------------------------------------------------------- audit


async def test_audit_filters_and_exports(
    admin: httpx.AsyncClient, as_user: SignIn, hub: Hub
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with as_user("bob@acme.example"), as_user("gina@globex.example"):
        pass
    acme = await admin.get(f"{API}/partners/acme")
    await admin.put(f"{API}/partners/acme", json={"spec": {**acme.json()["spec"], "name": "A"}},
                    headers=etag(acme))  # fmt: skip

    async def search(**params: str) -> list[dict[str, Any]]:
        answer = await admin.get(f"{API}/audit", params=params)
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    acme_events = await search(partner="acme")
    assert acme_events and {e["partner"] for e in acme_events} == {"acme"}
    assert {"login.succeeded", "admin.change"} <= {e["event"] for e in acme_events}
    logins = await search(event="login.succeeded", user="GINA@globex.example")
    assert [e["partner"] for e in logins] == ["globex"]
    admin_changes = await search(event="admin.", outcome="success")
    assert admin_changes and all(e["event"].startswith("admin.") for e in admin_changes)
    assert await search(since=before.isoformat(), partner="acme") == acme_events
    assert await search(until=str(before.timestamp()), partner="acme") == []
    assert await search(since="2999-01-01T00:00:00Z") == []
    assert len(await search(limit="1")) == 1
    bad = await admin.get(f"{API}/audit", params={"since": "last tuesday"})
    assert bad.status_code == 400 and fields(bad) == {"since"}

    exported = await admin.get(f"{API}/audit/export", params={"partner": "acme"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert lines == acme_events


async def test_audit_filters_by_app_across_the_proxy_and_the_oidc_provider(
    admin: httpx.AsyncClient, as_user: SignIn, app: Starlette
) -> None:
    """`orders` is both a proxied app and an OIDC client: one filter finds both trails."""
    async with as_user("bob@acme.example") as bob:
        await oidc_tokens(bob)
        decided = await forward_auth(app, bob.cookies.get("isthmus_session"))
        assert decided.status_code in (200, 403)
    answer = await admin.get(f"{API}/audit", params={"app": "orders", "user": "bob@acme.example"})
    found = {e["event"] for e in answer.json()["items"]}
    assert {"oidc.code_issued", "proxy.decision"} <= found, found
    others = await admin.get(f"{API}/audit", params={"app": "no-such-app"})
    assert others.json()["items"] == []


# ---------------------------------------------------------------------- domains (DNS)


@pytest.mark.integration
async def test_domain_claim_and_verify_through_dns(dns_server: Any) -> None:
    events: list[dict[str, Any]] = []
    hub = make_hub(api_settings(dns=dns_server.settings()), events)
    app = create_app(hub=hub)
    token = await mint_token(hub, Role.partner_admin, "acme")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE,
                                 headers=bearer(token)) as alice:  # fmt: skip
        claim = (await alice.post(f"{API}/partners/acme/domains",
                                  json={"domain": "acme.test"})).json()  # fmt: skip
        early = await alice.post(f"{API}/partners/acme/domains/acme.test/verify")
        assert early.status_code == 200 and early.json()["verified"] is False
        assert early.json()["problem"]
        dns_server.set_records({claim["record_name"]: [claim["record_value"]]})
        done = await alice.post(f"{API}/partners/acme/domains/acme.test/verify")
        assert done.json()["verified"] is True and done.json()["problem"] is None
        acme = (await alice.get(f"{API}/partners/acme")).json()["spec"]
        assert acme["domains"] == ["acme.example", "acme.test"]
        assert hub.registry.partner_for_domain("acme.test") is not None
    await hub.aclose()


# ---------------------------------------------------------------------- OpenAPI


async def test_openapi_document_describes_every_route(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    answer = await http.get(f"{API}/openapi.json")  # public: no credentials
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.1")
    served = {
        (method.lower(), route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith(API)
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert served == described
    assert len(described) == len(admin_api.ENDPOINTS) + 1
    schemas = document["components"]["schemas"]
    assert {"PartnerSettings", "AppSettings", "ClientSettings", "Policy", "ErrorView"} <= set(
        schemas
    )
    put_partner = document["paths"][f"{API}/partners/{{id}}"]["put"]
    assert put_partner["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PartnerDocumentUpdate"
    }
    assert {"bearerToken": []} in put_partner["security"]
    assert {"sessionCookie": [], "csrfHeader": []} in put_partner["security"]
    assert "$defs" not in json.dumps(document)  # every definition under components


async def test_openapi_document_is_valid(http: httpx.AsyncClient) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    document = (await http.get(f"{API}/openapi.json")).json()
    validator.validate(document)


async def test_openapi_request_schemas_accept_what_the_api_takes(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    """A partner document as GET answers it validates against the PUT body's schema."""
    jsonschema = pytest.importorskip("jsonschema")
    document = (await http.get(f"{API}/openapi.json")).json()
    schemas = document["components"]["schemas"]
    read = (await admin.get(f"{API}/partners/acme")).json()
    schema = {**schemas["PartnerDocumentUpdate"], "components": {"schemas": schemas}}
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(read)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**read, "spec": {**read["spec"], "kind": "pirate"}})


# ---------------------------------------------------------------------- onboarding

IDP = "https://idp.newco.test"


def newco_idp(request: httpx.Request) -> httpx.Response:
    """A partner OIDC IdP: its discovery document and JWKS (one RS256 key)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    if request.url.path == "/.well-known/openid-configuration":
        return httpx.Response(200, json={
            "issuer": IDP, "authorization_endpoint": f"{IDP}/authorize",
            "token_endpoint": f"{IDP}/token", "jwks_uri": f"{IDP}/jwks",
            "userinfo_endpoint": f"{IDP}/userinfo", "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        })  # fmt: skip
    if request.url.path == "/jwks":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        jwk = {**RSAAlgorithm.to_jwk(key, as_dict=True), "kid": "k1", "use": "sig",
               "alg": "RS256"}  # fmt: skip
        return httpx.Response(200, json={"keys": [jwk]})
    return httpx.Response(404)


@pytest.fixture
async def onboarding(events: list[dict[str, Any]]) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of a hub whose upstream HTTP reaches the newco IdP (in-process)."""
    from connectors.registry import ConnectorContext

    context = ConnectorContext(hub_base_url=BASE, transport=httpx.MockTransport(newco_idp))
    mock_only = ConnectorRegistry({"mock": MockConnector.from_settings})
    hub = build_hub(api_settings(), audit=Audit([events.append]), connector_types=mock_only,
                    context=context)  # fmt: skip
    transport = httpx.ASGITransport(app=create_app(hub=hub))
    headers = bearer(await mint_token(hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as c:
        yield c


async def test_inspect_an_oidc_idp_suggests_its_connection(
    onboarding: httpx.AsyncClient,
) -> None:
    answer = await onboarding.post(f"{API}/onboarding/inspect", json={
        "protocol": "oidc", "connection_id": "newco-oidc", "discovery_url": IDP,
        "client_id": "hub", "client_secret": "newco-secret-value"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["ok"] is True, report
    names = {c["name"] for c in report["checks"]}
    assert {"discovery", "jwks"} <= names
    assert report["connection"]["issuer"] == IDP
    assert report["connection"]["client_secret"] == REDACTED
    assert "newco-secret-value" not in answer.text

    down = await onboarding.post(
        f"{API}/onboarding/inspect",
        json={"protocol": "oidc", "connection_id": "x", "discovery_url": "https://gone.test"},
    )
    assert down.status_code == 200 and down.json()["ok"] is False  # fmt: skip
    bad_xml = await onboarding.post(
        f"{API}/onboarding/inspect",
        json={"protocol": "saml", "connection_id": "x", "metadata_xml": "<not-metadata"},
    )
    assert bad_xml.status_code == 200 and bad_xml.json()["ok"] is False  # fmt: skip
    for body, field in (({"protocol": "oidc", "connection_id": "x"}, "discovery_url"),
                        ({"protocol": "saml", "connection_id": "x"}, "metadata_url"),
                        ({"protocol": "ldap", "connection_id": "x"}, "protocol")):  # fmt: skip
        refused = await onboarding.post(f"{API}/onboarding/inspect", json=body)
        assert refused.status_code == 422 and fields(refused) == {field}


async def test_connection_test_is_scoped_to_the_partner(
    admin: httpx.AsyncClient, as_user: SignIn, hub: Hub
) -> None:
    tested = await admin.post(f"{API}/partners/acme/connections/acme-mock/test")
    assert tested.status_code == 200, tested.text
    report = tested.json()
    assert report["test_login_url"] == f"{BASE}/admin/test-login/acme-mock"
    assert {c["name"]: c["status"] for c in report["checks"]}["mock"] == "ok"
    missing = await admin.post(f"{API}/partners/acme/connections/nope/test")
    assert missing.status_code == 404
    async with as_user("alice@acme.example") as alice:
        own = await alice.post(f"{API}/partners/acme/connections/acme-mock/test")
        other = await alice.post(f"{API}/partners/globex/connections/globex-mock/test")
        inspect = await alice.post(f"{API}/onboarding/inspect",
                                   json={"protocol": "oidc", "connection_id": "x",
                                         "discovery_url": "http://10.0.0.1/"})  # fmt: skip
    assert own.status_code == 200 and other.status_code == 404
    assert inspect.status_code == 403  # the hub fetches URLs for admins only
    auditor = bearer(await mint_token(hub, Role.auditor))
    read_only = await admin.post(f"{API}/partners/acme/connections/acme-mock/test", headers=auditor)
    assert read_only.status_code == 403

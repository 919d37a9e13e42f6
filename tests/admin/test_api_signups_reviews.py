"""The admin API's sign-up requests, access reviews and lapses (/admin/api/v1/signups,
/reviews, /lapses): every endpoint, who may call it, every refusal, and the OpenAPI
document that describes them.

corp is internal: root (admin), audrey (auditor), carl and sam (staff without a role:
sponsors). acme names sam its sponsor and is reviewed every 30 days; alice is its partner
admin. Sign-up requests name carl or sam. Mail goes through a real SMTP server.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import openapi_spec_validator
import pytest
import yaml
from starlette.applications import Starlette

from federation.admin import review_service, signup_service
from federation.admin.reviews import LineDecision, ReviewSpec, lapse_id
from federation.admin.service import REDACTED, SYSTEM, AdminService
from federation.admin.signup_service import Ask
from federation.admin.signups import SignupSpec
from federation.admin.tokens import Role
from federation.hub import Hub
from federation.settings import Settings
from federation.web import admin_api
from federation.web.app import create_app
from tests.admin.support import (
    API,
    BASE,
    POLICY,
    api_settings,
    bearer,
    fields,
    make_hub,
    mint_token,
)
from tests.fakes.clock import FakeClock
from tests.peers.smtp import SmtpSink

EVERY, WINDOW = 30, 7
MAX_DAYS = 180

Browser = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


class Outbox:
    """A mailer for what the tests set up through the services (the API itself mails
    through the configured SMTP server)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append((to, subject, body))


def settings(smtp: SmtpSink) -> Settings:
    base = api_settings(
        smtp={"host": smtp.host, "port": smtp.port},
        signup={"enabled": True, "apps": ["orders", "wiki"], "request_ttl_days": 14,
                "max_grant_days": MAX_DAYS},
    )  # fmt: skip
    data = base.model_dump(mode="json", exclude_none=True)
    corp, acme, globex = data["partners"]
    corp["connections"][0]["users"].append(
        {"subject": "sam", "email": "sam@corp.example", "name": "Sam"}
    )
    acme["sponsors"] = ["sam@corp.example"]
    acme["review"] = {"every_days": EVERY, "window_days": WINDOW}
    globex["review"] = {"every_days": EVERY, "window_days": WINDOW}  # no sponsor: admins
    wiki = {"id": "wiki", "path_prefix": "/wiki", "upstreams": ["http://127.0.0.1:9"],
            "policy": yaml.safe_load(POLICY)}  # fmt: skip
    data["apps"].append(wiki)
    return Settings.model_validate(data)


@pytest.fixture
def clock() -> FakeClock:
    # Real time: the registry history and the audit trail the reviews read carry it.
    return FakeClock(time.time())


@pytest.fixture
def hub(events: list[dict[str, Any]], clock: FakeClock, smtp_sink: SmtpSink) -> Hub:
    made = make_hub(settings(smtp_sink), events)
    made.clock = clock
    return made


@pytest.fixture
def app(hub: Hub) -> Starlette:
    return create_app(hub=hub)


@pytest.fixture
def browser(as_user: Browser) -> Browser:
    """A browser signed in to the hub as ``email`` (the admin tests' own)."""
    return as_user


@pytest.fixture
def token_client(app: Starlette, hub: Hub) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """An API client holding a new token of ``role``."""

    @asynccontextmanager
    async def open_(role: Role, partner_id: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
        token = await mint_token(hub, role, partner_id)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE, headers=bearer(token)
        ) as http:
            yield http

    return open_


NO_CSRF = {admin_api.CSRF_HEADER: ""}


def now(hub: Hub) -> datetime:
    return datetime.fromtimestamp(hub.clock(), UTC)


def later(hub: Hub, days: int = 30) -> str:
    return (now(hub) + timedelta(days=days)).isoformat()


async def pending(hub: Hub, sponsor: str = "carl@corp.example", email: str = "zoe@newco.example",
                  apps: tuple[str, ...] = ("orders",)) -> str:  # fmt: skip
    """A confirmed, pending sign-up request: its id."""
    outbox = Outbox()
    ask = Ask("Zoe", email, "NewCo Ltd", sponsor, apps, "for the spring project")
    await signup_service.start(hub, ask, outbox)
    token = re.findall(r"/signup/confirm\?t=(\S+)", outbox.sent[0][2])[0]
    return (await signup_service.confirm(AdminService(hub), token, outbox)).id


async def stored(hub: Hub, kind: str, doc_id: str) -> dict[str, Any]:
    doc = await hub.documents.get(kind, doc_id)
    assert doc is not None
    return doc.spec


async def signup_status(hub: Hub, signup_id: str) -> str:
    return SignupSpec.model_validate(await stored(hub, "signup", signup_id)).status.value


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


# ---------------------------------------------------------------------- sign-up requests


async def test_the_named_sponsor_reads_and_approves_in_their_session(
    hub: Hub, browser: Browser, smtp_sink: SmtpSink, events: list[dict[str, Any]]
) -> None:
    mine = await pending(hub)
    other = await pending(hub, sponsor="sam@corp.example", email="yves@otherco.example")
    async with browser("carl@corp.example") as carl:
        listed = await carl.get(f"{API}/signups")
        assert listed.status_code == 200, listed.text
        assert [d["id"] for d in listed.json()["items"]] == [mine]  # not sam's
        assert [
            d["id"] for d in (await carl.get(f"{API}/signups?status=pending")).json()["items"]
        ] == [mine]
        assert (await carl.get(f"{API}/signups?status=approved")).json()["items"] == []
        bad = await carl.get(f"{API}/signups?status=maybe")
        assert bad.status_code == 400 and fields(bad) == {"status"}

        one = await carl.get(f"{API}/signups/{mine}")
        assert one.status_code == 200 and one.headers["etag"] == '"1"'
        assert one.json()["kind"] == "signup"
        assert one.json()["spec"]["email"] == "zoe@newco.example"
        assert one.json()["spec"]["status"] == "pending"
        assert (await carl.get(f"{API}/signups/{other}")).status_code == 403
        assert (await carl.get(f"{API}/signups/s-nope")).status_code == 404

        body = {"apps": ["orders"], "until": later(hub), "note": "welcome"}
        forged = await carl.post(f"{API}/signups/{mine}/approve", json=body, headers=NO_CSRF)
        assert forged.status_code == 403 and forged.json()["error"] == "csrf_failed"
        assert await signup_status(hub, mine) == "pending"

        done = await carl.post(f"{API}/signups/{mine}/approve", json=body)
        assert done.status_code == 200, done.text
        answer = done.json()
        assert answer["partner_created"] is True and answer["domain_pending"] is True
        assert answer["signup"]["spec"]["status"] == "approved"
        assert answer["signup"]["spec"]["decision_note"] == "welcome"
        partner_id, grant_id = answer["partner_id"], answer["grant_id"]
        assert answer["signup"]["spec"]["partner_id"] == partner_id

        # The domain-step link's hash never leaves.
        secret = (await stored(hub, "signup", mine))["secret_sha256"]
        assert re.fullmatch(r"[0-9a-f]{64}", secret)
        assert answer["signup"]["spec"]["secret_sha256"] == REDACTED
        read = await carl.get(f"{API}/signups/{mine}")
        listed = await carl.get(f"{API}/signups?status=approved")
        for text in (done.text, read.text, listed.text):
            assert secret not in text
        assert read.json()["spec"]["secret_sha256"] == REDACTED

        again = await carl.post(f"{API}/signups/{mine}/approve", json=body)
        assert again.status_code == 409 and again.json()["error"] == "already_decided"
        refused = await carl.post(f"{API}/signups/{mine}/refuse", json={})
        assert refused.status_code == 409

    grant = await stored(hub, "grant", grant_id)
    assert grant["partner_id"] == partner_id and grant["email"] == "zoe@newco.example"
    assert grant["apps"] == ["orders"] and grant["granted_by"] == "carl@corp.example"
    assert hub.registry.partner(partner_id) is not None
    [mail] = [m for m in smtp_sink.to("zoe@newco.example") if "one step left" in m["Subject"]]
    assert f"/signup/{mine}/domain?t=" in str(mail.get_content())
    [approved] = named(events, "signup.approved")
    assert approved["signup"] == mine and approved["actor"] == "carl@corp.example (corp)"


async def test_admins_and_auditors_read_every_request_but_only_the_named_sponsor_decides(
    hub: Hub,
    browser: Browser,
    token_client: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    events: list[dict[str, Any]],
) -> None:
    carls = await pending(hub)
    sams = await pending(hub, sponsor="sam@corp.example", email="yves@otherco.example")
    body = {"apps": ["orders"], "until": later(hub)}
    async with token_client(Role.admin) as admin, token_client(Role.auditor) as auditor:
        for reader in (admin, auditor):
            listed = await reader.get(f"{API}/signups")
            assert {d["id"] for d in listed.json()["items"]} == {carls, sams}
            assert (await reader.get(f"{API}/signups/{carls}")).status_code == 200
        # An API token is never the named sponsor, an auditor never decides.
        for caller in (admin, auditor):
            for action, payload in (("approve", body), ("refuse", {"note": "no"})):
                answer = await caller.post(f"{API}/signups/{carls}/{action}", json=payload)
                assert answer.status_code == 403, answer.text
    async with browser("sam@corp.example") as sam, browser("root@corp.example") as root:
        for stranger in (sam, root):  # another sponsor; an admin the request does not name
            answer = await stranger.post(f"{API}/signups/{carls}/approve", json=body)
            assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
            answer = await stranger.post(f"{API}/signups/{carls}/refuse", json={})
            assert answer.status_code == 403
    assert await signup_status(hub, carls) == "pending"
    refusals = named(events, "signup.refused_actor")
    assert {(e["actor"], e["action"]) for e in refusals} >= {
        ("sam@corp.example (corp)", "approve"),
        ("root@corp.example (corp)", "refuse"),
    }


async def test_a_partner_admin_is_refused_every_new_endpoint(
    hub: Hub,
    browser: Browser,
    token_client: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    signup_id = await pending(hub)
    calls = [
        ("GET", "/signups", None), ("GET", f"/signups/{signup_id}", None),
        ("POST", f"/signups/{signup_id}/approve", {"apps": ["orders"], "until": later(hub)}),
        ("POST", f"/signups/{signup_id}/refuse", {}),
        ("GET", "/reviews", None), ("GET", "/reviews/r-acme-20300101", None),
        ("POST", "/reviews/r-acme-20300101/confirm", {"all": True}),
        ("GET", "/lapses", None), ("DELETE", "/lapses/l-0123", None),
    ]  # fmt: skip
    async with (
        token_client(Role.partner_admin, "acme") as token,
        browser("alice@acme.example") as alice,
    ):
        for client in (token, alice):
            for method, path, payload in calls:
                answer = await client.request(method, f"{API}{path}", json=payload)
                assert answer.status_code == 403, (method, path, answer.text)
                assert answer.json()["error"] == "forbidden"
    assert await signup_status(hub, signup_id) == "pending"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"apps": ["orders"]}, "until"),  # missing
        ({"until": "2030-01-01T00:00:00Z"}, "apps"),  # missing
        ({"apps": ["orders"], "until": "soon"}, "until"),
        ({"apps": ["orders"], "until": "+30", "colour": "red"}, "colour"),
        ({"apps": ["orders"], "until": "+30", "note": "x" * 1001}, "note"),
        ({"apps": [], "until": "+30"}, "apps"),  # the service's problems, by field
        ({"apps": ["wiki"], "until": "+30"}, "apps"),  # not asked for
        ({"apps": ["orders"], "until": "-1"}, "until"),  # in the past
        ({"apps": ["orders"], "until": f"+{MAX_DAYS + 1}"}, "until"),  # too long
        ({"apps": ["orders"], "until": "2030-01-01T00:00:00"}, "until"),  # no timezone
        ({"apps": ["orders"], "until": "9999-12-31T23:59:59-14:00"}, "until"),
    ],
)
async def test_a_bad_approval_is_refused_naming_the_field(
    hub: Hub, browser: Browser, body: dict[str, Any], field: str
) -> None:
    signup_id = await pending(hub)
    if isinstance(body.get("until"), str) and body["until"][:1] in "+-":
        body = {**body, "until": later(hub, int(body["until"]))}
    async with browser("carl@corp.example") as carl:
        answer = await carl.post(f"{API}/signups/{signup_id}/approve", json=body)
        not_an_object = await carl.post(f"{API}/signups/{signup_id}/approve", json=["orders"])
    assert answer.status_code == 422, answer.text
    assert fields(answer) == {field}
    assert not_an_object.status_code == 400
    assert await signup_status(hub, signup_id) == "pending"
    assert await hub.documents.documents("grant") == []


async def test_the_sponsor_refuses_and_an_expired_request_is_a_409(
    hub: Hub, browser: Browser, clock: FakeClock, smtp_sink: SmtpSink,
    events: list[dict[str, Any]],
) -> None:  # fmt: skip
    first = await pending(hub)
    second = await pending(hub, email="yan@newco.example")
    third = await pending(hub, email="ada@newco.example")
    async with browser("carl@corp.example") as carl:
        bad = await carl.post(f"{API}/signups/{first}/refuse", json={"note": 7})
        assert bad.status_code == 422 and fields(bad) == {"note"}
        done = await carl.post(f"{API}/signups/{first}/refuse", json={"note": "no project"})
        assert done.status_code == 200, done.text
        assert done.json()["spec"]["status"] == "refused"
        assert done.json()["spec"]["decision_note"] == "no project"
        assert done.headers["etag"] == f'"{done.json()["version"]}"'
        # The body is optional.
        bare = await carl.post(f"{API}/signups/{second}/refuse")
        assert bare.status_code == 200 and bare.json()["spec"]["status"] == "refused"
        listed = await carl.get(f"{API}/signups?status=refused")
        assert {d["id"] for d in listed.json()["items"]} == {first, second}
    [mail] = smtp_sink.to("zoe@newco.example")[-1:]
    assert "no project" in str(mail.get_content())
    assert [e["signup"] for e in named(events, "signup.refused")] == [first, second]

    clock.advance(15 * 86400)  # past request_ttl_days
    async with browser("carl@corp.example") as carl:
        late = await carl.post(
            f"{API}/signups/{third}/approve", json={"apps": ["orders"], "until": later(hub)}
        )
    assert late.status_code == 409 and late.json()["error"] == "already_decided"
    assert await hub.documents.documents("grant") == []


# ---------------------------------------------------------------------- access reviews


async def grant(hub: Hub, apps: list[str], **person: str) -> str:
    spec = {"partner_id": "acme", "apps": apps, "valid_until": later(hub, 90), **person}
    return (await AdminService(hub).grant(SYSTEM, spec)).id


async def open_reviews(hub: Hub) -> tuple[str, ReviewSpec]:
    """Run the lifecycle job when acme's first review is due: acme's review."""
    await hub.ready()
    changes = await hub.documents.history(kind="partner", doc_id="acme")
    due = datetime.fromtimestamp(min(c.at for c in changes), UTC) + timedelta(days=EVERY)
    await review_service.run_reviews(AdminService(hub), due, Outbox())
    review_id = f"r-acme-{due:%Y%m%d}"
    return review_id, ReviewSpec.model_validate(await stored(hub, "review", review_id))


async def test_reviews_are_listed_read_and_confirmed_by_the_sponsor(
    hub: Hub,
    browser: Browser,
    token_client: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    events: list[dict[str, Any]],
) -> None:
    await grant(hub, ["orders"], connection_id="acme-mock", subject="bob")
    await grant(hub, ["orders", "wiki"], connection_id="acme-mock", subject="alice")
    review_id, spec = await open_reviews(hub)
    assert [(li.subject, li.app) for li in spec.lines] == [
        ("alice", "orders"), ("alice", "wiki"), ("bob", "orders"),
    ]  # fmt: skip
    url = f"{API}/reviews/{review_id}"
    async with token_client(Role.admin) as admin, token_client(Role.auditor) as auditor:
        everyone = {r["id"] for r in (await admin.get(f"{API}/reviews")).json()["items"]}
        assert review_id in everyone and any(i.startswith("r-globex-") for i in everyone)
        assert {r["id"] for r in (await auditor.get(f"{API}/reviews")).json()["items"]} == everyone
        refused = await auditor.post(f"{url}/confirm", json={"lines": [0]})
        assert refused.status_code == 403  # auditors read, never decide
        assert (await admin.get(f"{API}/reviews?open=maybe")).status_code == 400
    async with browser("audrey@corp.example") as audrey:
        assert (await audrey.get(url)).status_code == 200
        assert (await audrey.post(f"{url}/confirm", json={"lines": [0]})).status_code == 403
    async with browser("carl@corp.example") as carl:  # sponsors no one
        assert (await carl.get(f"{API}/reviews")).json()["items"] == []
        assert (await carl.get(url)).status_code == 403
        assert (await carl.post(f"{url}/confirm", json={"lines": [0]})).status_code == 403
    async with browser("sam@corp.example") as sam:
        mine = (await sam.get(f"{API}/reviews")).json()["items"]
        assert [r["id"] for r in mine] == [review_id]  # not globex's
        assert (await sam.get(f"{API}/reviews?partner=globex")).json()["items"] == []
        assert [r["id"] for r in (await sam.get(f"{API}/reviews?open=true")).json()["items"]] == [
            review_id
        ]
        assert (await sam.get(f"{API}/reviews?open=false")).json()["items"] == []
        read = await sam.get(url)
        assert read.status_code == 200 and read.headers["etag"] == '"1"'
        assert read.json()["state"] == "open" and read.json()["kind"] == "review"
        assert [li["decision"] for li in read.json()["spec"]["lines"]] == ["pending"] * 3
        assert (await sam.get(f"{API}/reviews/r-acme-19990101")).status_code == 404

        forged = await sam.post(f"{url}/confirm", json={"lines": [0]}, headers=NO_CSRF)
        assert forged.status_code == 403 and forged.json()["error"] == "csrf_failed"
        for bad, field in (
            ({}, "lines"), ({"lines": []}, "lines"), ({"lines": [0], "all": True}, "lines"),
            ({"lines": [3]}, "lines.0"), ({"lines": [0, -1]}, "lines.1"),
            ({"lines": ["0"]}, "lines.0"), ({"lines": [True]}, "lines.0"),
            ({"all": "yes"}, "all"), ({"line": [0]}, "line"),
        ):  # fmt: skip
            answer = await sam.post(f"{url}/confirm", json=bad)
            assert answer.status_code == 422, (bad, answer.text)
            assert fields(answer) == {field}, bad
        assert named(events, "review.confirmed") == []

        one = await sam.post(f"{url}/confirm", json={"lines": [2]})
        assert one.status_code == 200, one.text
        assert [li["decision"] for li in one.json()["spec"]["lines"]] == [
            "pending", "pending", "confirmed",
        ]  # fmt: skip
        assert one.json()["spec"]["lines"][2]["decided_by"] == "sam@corp.example (corp)"
        assert one.headers["etag"] == '"2"'
        rest = await sam.post(f"{url}/confirm", json={"all": True})
        assert [li["decision"] for li in rest.json()["spec"]["lines"]] == ["confirmed"] * 3
    confirmed = named(events, "review.confirmed")
    assert [(e["subject"], e["app"]) for e in confirmed] == [
        ("bob", "orders"), ("alice", "orders"), ("alice", "wiki"),
    ]  # fmt: skip


async def test_a_review_whose_window_has_ended_is_a_409(
    hub: Hub, browser: Browser, clock: FakeClock
) -> None:
    await grant(hub, ["orders"], connection_id="acme-mock", subject="bob")
    review_id, spec = await open_reviews(hub)
    clock.advance(spec.closes_at.timestamp() - clock.now)  # the job has not closed it yet
    async with browser("sam@corp.example") as sam:
        read = await sam.get(f"{API}/reviews/{review_id}")
        assert read.json()["state"] == "closing"
        assert (await sam.get(f"{API}/reviews?open=true")).json()["items"] != []
        late = await sam.post(f"{API}/reviews/{review_id}/confirm", json={"all": True})
    assert late.status_code == 409 and late.json()["error"] == "review_closed"
    spec_now = ReviewSpec.model_validate(await stored(hub, "review", review_id))
    assert spec_now.count(LineDecision.pending) == 1


async def test_lapses_are_listed_and_restored_by_the_sponsor(
    hub: Hub,
    browser: Browser,
    token_client: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    events: list[dict[str, Any]],
) -> None:
    await grant(hub, ["orders", "wiki"], connection_id="acme-mock", subject="bob")
    review_id, spec = await open_reviews(hub)
    await review_service.run_reviews(AdminService(hub), spec.closes_at, Outbox())
    bob = lapse_id("acme", "acme-mock", "bob", None)
    url = f"{API}/lapses/{bob}"
    async with token_client(Role.admin) as admin, token_client(Role.auditor) as auditor:
        for reader in (admin, auditor):
            [item] = (await reader.get(f"{API}/lapses")).json()["items"]
            assert item["kind"] == "lapse" and item["id"] == bob
            assert item["spec"]["apps"] == ["orders", "wiki"]
            assert item["spec"]["review_id"] == review_id
        assert (await admin.get(f"{API}/lapses?partner=globex")).json()["items"] == []
        assert (await auditor.delete(url)).status_code == 403
        closed = await admin.get(f"{API}/reviews?open=false&partner=acme")
        assert [r["id"] for r in closed.json()["items"]] == [review_id]
        assert closed.json()["items"][0]["state"] == "closed"
    async with browser("carl@corp.example") as carl:
        assert (await carl.get(f"{API}/lapses")).json()["items"] == []
        assert (await carl.delete(url)).status_code == 403
        # Refused before the body is read: nothing told about the lapse's apps.
        assert (await carl.request("DELETE", url, json={"apps": ["x"]})).status_code == 403
    async with browser("sam@corp.example") as sam:
        assert [d["id"] for d in (await sam.get(f"{API}/lapses?partner=acme")).json()["items"]] == [
            bob
        ]
        assert (await sam.delete(url, headers=NO_CSRF)).status_code == 403
        for bad, field in (
            ({"apps": ["payroll"]}, "apps.0"), ({"apps": ["orders", "hr"]}, "apps.1"),
            ({"apps": []}, "apps"), ({"apps": "orders"}, "apps"),
        ):  # fmt: skip
            answer = await sam.request("DELETE", url, json=bad)
            assert answer.status_code == 422, (bad, answer.text)
            assert fields(answer) == {field}, bad
        assert (await stored(hub, "lapse", bob))["apps"] == ["orders", "wiki"]

        some = await sam.request("DELETE", url, json={"apps": ["orders"]})
        assert some.status_code == 204, some.text
        assert (await stored(hub, "lapse", bob))["apps"] == ["wiki"]
        rest = await sam.delete(url)  # no body: every app left
        assert rest.status_code == 204
        assert await hub.documents.get("lapse", bob) is None
        assert (await sam.get(f"{API}/lapses")).json()["items"] == []
        assert (await sam.delete(url)).status_code == 404
    restored = named(events, "access.restored")
    assert [(e["app"], e["actor"]) for e in restored] == [
        ("orders", "sam@corp.example (corp)"), ("wiki", "sam@corp.example (corp)"),
    ]  # fmt: skip


# ---------------------------------------------------------------------- OpenAPI


SPONSOR_OPERATIONS = {
    "me", "list_grants", "create_grant", "get_grant", "revoke_grant",
    "list_signups", "get_signup", "approve_signup", "refuse_signup",
    "list_reviews", "get_review", "confirm_review", "list_lapses", "restore_lapse",
}  # fmt: skip


async def test_the_openapi_document_describes_them_and_validates(
    http: httpx.AsyncClient, hub: Hub, browser: Browser
) -> None:
    document = (await http.get(f"{API}/openapi.json")).json()
    openapi_spec_validator.validate(document)
    operations = {op["operationId"]: op for ops in document["paths"].values()
                  for op in ops.values()}  # fmt: skip
    assert {o for o, op in operations.items() if "sponsor" in op.get("x-roles", ())} == (
        SPONSOR_OPERATIONS
    )
    assert {e.name for e in admin_api.ENDPOINTS if Role.sponsor in e.roles} == SPONSOR_OPERATIONS
    paths = document["paths"]
    for path, method in (
        ("/signups", "get"), ("/signups/{id}", "get"), ("/signups/{id}/approve", "post"),
        ("/signups/{id}/refuse", "post"), ("/reviews", "get"), ("/reviews/{id}", "get"),
        ("/reviews/{id}/confirm", "post"), ("/lapses", "get"), ("/lapses/{id}", "delete"),
    ):  # fmt: skip
        assert method in paths[f"{API}{path}"], path
    body = paths[f"{API}/reviews/{{id}}/confirm"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReviewConfirmation"
    }
    assert "409" in paths[f"{API}/lapses/{{id}}"]["delete"]["responses"]
    schemas = document["components"]["schemas"]

    # Real answers validate against the schemas the document gives them.
    signup_id = await pending(hub)
    async with browser("carl@corp.example") as carl:
        approved = await carl.post(
            f"{API}/signups/{signup_id}/approve", json={"apps": ["orders"], "until": later(hub)}
        )
        read = await carl.get(f"{API}/signups/{signup_id}")
    checks = [
        ("ApprovalView", approved.json()),
        (paths[f"{API}/signups/{{id}}"]["get"]["responses"]["200"]["content"]
         ["application/json"]["schema"]["$ref"].rpartition("/")[2], read.json()),
    ]  # fmt: skip
    await grant(hub, ["orders"], connection_id="acme-mock", subject="bob")
    review_id, spec = await open_reviews(hub)
    async with browser("sam@corp.example") as sam:
        review = await sam.get(f"{API}/reviews/{review_id}")
        await review_service.run_reviews(AdminService(hub), spec.closes_at, Outbox())
        lapses = await sam.get(f"{API}/lapses")
    checks += [("ReviewView", review.json()),
               ("LapseSpecDocumentView", lapses.json()["items"][0])]  # fmt: skip
    for name, answer in checks:
        schema = {**schemas[name], "components": {"schemas": schemas}}
        jsonschema.Draft202012Validator(schema).validate(answer)
    assert json.dumps(read.json()).count(REDACTED) == 1

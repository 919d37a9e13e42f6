"""Access reviews (issue 9): when a review is due, its lines from real audit events and
personal grants, one review however many replicas run the job, who may confirm, the
close (lapses, grants ended), restore, and the lapse check in decisions.

The hub's clock starts at the real time (audit events and registry history carry real
timestamps); ``run_reviews`` gets its ``now`` from the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette

from federation.admin import review_service
from federation.admin.review_service import ReviewClosed
from federation.admin.reviews import (
    LapseIndex,
    LapseSpec,
    LineDecision,
    ReviewSpec,
    lapse_id,
)
from federation.admin.service import SYSTEM, Actor, AdminService, Forbidden
from federation.admin.tokens import Role
from federation.hub import Hub
from federation.identity import FederatedIdentity
from federation.settings import PartnerStatus
from federation.web.app import create_app
from tests.admin.support import (
    APP_CB,
    BASE,
    POLICY,
    YieldingStore,
    api_settings,
    forward_auth,
    make_hub,
    oidc_tokens,
    sign_in_as,
)
from tests.browser.test_console import hidden_fields
from tests.fakes.clock import FakeClock
from tests.oidc.support import pkce_pair, query_of

EVERY, WINDOW = 30, 7
SAM = Actor("sam@corp.example (corp)", Role.sponsor, email="sam@corp.example")
CARL = Actor("carl@corp.example (corp)", Role.sponsor, email="carl@corp.example")
ALICE = Actor("alice@acme.example (acme)", Role.partner_admin, "acme", email="alice@acme.example")
AUDREY = Actor("audrey@corp.example (corp)", Role.auditor, email="audrey@corp.example")
ROOT = Actor("root@corp.example (corp)", Role.admin, email="root@corp.example")


class Outbox:
    """A :class:`federation.mail.Mailer` keeping what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append((to, subject, body))


def review_settings() -> Any:
    base = api_settings()
    data = base.model_dump(mode="json", exclude_none=True)
    corp, acme, globex = data["partners"]
    corp["connections"][0]["users"].append(
        {"subject": "sam", "email": "sam@corp.example", "name": "Sam"}
    )
    acme["sponsors"] = ["Sam@corp.example"]
    acme["review"] = {"every_days": EVERY, "window_days": WINDOW}
    globex["review"] = {"every_days": EVERY, "window_days": WINDOW}  # no sponsor
    wiki = {"id": "wiki", "path_prefix": "/wiki", "upstreams": ["http://127.0.0.1:9"],
            "policy": yaml.safe_load(POLICY)}  # fmt: skip
    data["apps"].append(wiki)
    return type(base).model_validate(data)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def hub(events: list[dict[str, Any]], clock: FakeClock) -> Hub:
    made = make_hub(review_settings(), events)
    made.clock = clock
    return made


@pytest.fixture
def app(hub: Hub) -> Starlette:
    return create_app(hub=hub)


async def created(hub: Hub, partner_id: str) -> datetime:
    await hub.ready()
    changes = await hub.documents.history(kind="partner", doc_id=partner_id)
    return datetime.fromtimestamp(min(c.at for c in changes), UTC)


@asynccontextmanager
async def browser(app: Starlette, email: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in to the hub as ``email``."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        await sign_in_as(http, email)
        yield http


async def grant(hub: Hub, apps: list[str], days: int = 90, **person: str) -> str:
    until = datetime.fromtimestamp(hub.clock(), UTC) + timedelta(days=days)
    spec = {"partner_id": "acme", "apps": apps, "valid_until": until.isoformat(), **person}
    return (await AdminService(hub).grant(SYSTEM, spec)).id


async def open_acme(hub: Hub, outbox: Outbox | None = None) -> tuple[str, ReviewSpec]:
    now = await created(hub, "acme") + timedelta(days=EVERY)
    done = await review_service.run_reviews(AdminService(hub), now, outbox or Outbox())
    review_id = f"r-acme-{now:%Y%m%d}"
    assert any(line.startswith(f"opened {review_id}") for line in done), done
    doc = await hub.documents.get("review", review_id)
    assert doc is not None
    return review_id, ReviewSpec.model_validate(doc.spec)


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


# ---------------------------------------------------------------------- due, lines


async def test_the_first_review_is_due_every_days_after_the_partner_was_created(
    hub: Hub, events: list[dict[str, Any]]
) -> None:
    start = await created(hub, "acme")
    service, outbox = AdminService(hub), Outbox()
    early = await review_service.run_reviews(service, start + timedelta(days=EVERY, seconds=-1))
    assert early == []
    due = start + timedelta(days=EVERY)
    done = await review_service.run_reviews(service, due, outbox)
    assert sorted(done) == sorted(
        [f"opened r-acme-{due:%Y%m%d} (0 lines)", f"opened r-globex-{due:%Y%m%d} (0 lines)"]
    )  # corp has no `review:` setting
    first = await review_service.review(service, ROOT, f"r-acme-{due:%Y%m%d}")
    spec = first.spec
    assert (spec.period_from, spec.period_until) == (start, due)
    assert spec.closes_at == due + timedelta(days=WINDOW)
    assert spec.sponsors == ("sam@corp.example",)
    # One review at a time: nothing more while it is open, even past the next due date.
    assert await review_service.run_reviews(service, due + timedelta(days=WINDOW - 1)) == []
    # Closed at the window's end; the next one is due every_days after this one opened.
    closing = await review_service.run_reviews(service, due + timedelta(days=WINDOW), outbox)
    assert sorted(closing) == sorted(
        [f"closed r-{p}-{due:%Y%m%d} (0 confirmed, 0 lapsed)" for p in ("acme", "globex")]
    )
    later = due + timedelta(days=EVERY, seconds=-1)
    assert await review_service.run_reviews(service, later, outbox) == []
    second = due + timedelta(days=EVERY)
    assert f"opened r-acme-{second:%Y%m%d} (0 lines)" in await review_service.run_reviews(
        service, second, outbox
    )
    follow = await review_service.review(service, ROOT, f"r-acme-{second:%Y%m%d}")
    assert follow.spec.period_from == spec.period_until
    assert [e["review"] for e in named(events, "review.opened") if e["partner"] == "acme"] == [
        f"r-acme-{due:%Y%m%d}",
        f"r-acme-{second:%Y%m%d}",
    ]


async def test_suspended_partners_are_not_reviewed(hub: Hub) -> None:
    service = AdminService(hub)
    acme = await service.document(SYSTEM, "partner", "acme")
    await service.set_status(SYSTEM, "acme", PartnerStatus.suspended, acme.version)
    now = await created(hub, "acme") + timedelta(days=EVERY)
    done = await review_service.run_reviews(service, now, Outbox())
    assert [line for line in done if "acme" in line] == []


async def test_lines_come_from_real_audit_events_and_personal_grants(
    hub: Hub, app: Starlette
) -> None:
    async with (
        browser(app, "bob@acme.example") as bob,
        browser(app, "alice@acme.example") as alice,
        browser(app, "gina@globex.example") as gina,
    ):
        for client, times in ((bob, 2), (alice, 1), (gina, 3)):
            for _ in range(times):
                assert (
                    await forward_auth(app, client.cookies["isthmus_session"])
                ).status_code == 200
        await oidc_tokens(bob)  # an authorization code for the orders client: one more use
    await grant(hub, ["wiki"], connection_id="acme-mock", subject="bob")
    await grant(hub, ["orders"], email="dora@acme.example")  # never signed in
    _, spec = await open_acme(hub)
    rows = [
        (li.email, li.subject, li.app, li.uses, li.grant_until is not None) for li in spec.lines
    ]
    assert rows == [
        ("alice@acme.example", "alice", "orders", 1, False),
        ("bob@acme.example", "bob", "orders", 3, False),
        ("bob@acme.example", "bob", "wiki", 0, True),
        ("dora@acme.example", None, "orders", 0, True),
    ]  # gina is globex's; her uses are in globex's review
    bob_orders = spec.lines[1]
    assert bob_orders.connection_id == "acme-mock"
    assert bob_orders.last_used is not None
    assert abs(bob_orders.last_used.timestamp() - time.time()) < 60
    assert all(li.decision is LineDecision.pending for li in spec.lines)


async def test_two_replicas_running_the_job_at_once_open_one_review(
    hub: Hub, events: list[dict[str, Any]]
) -> None:
    await hub.ready()
    hub.documents = YieldingStore(hub.documents)  # type: ignore[assignment]
    now = await created(hub, "acme") + timedelta(days=EVERY)
    outbox = Outbox()
    runs = await asyncio.gather(
        *(review_service.run_reviews(AdminService(hub), now, outbox) for _ in range(3))
    )
    opened = [line for run in runs for line in run if "r-acme-" in line]
    assert opened == [f"opened r-acme-{now:%Y%m%d} (0 lines)"]
    assert len([e for e in named(events, "review.opened") if e["partner"] == "acme"]) == 1
    assert [to for to, _, _ in outbox.sent] == ["sam@corp.example"]
    reviews = await hub.documents.documents("review")
    assert sorted(d.id for d in reviews) == [f"r-acme-{now:%Y%m%d}", f"r-globex-{now:%Y%m%d}"]


async def test_sponsors_are_mailed_a_link_and_a_partner_without_one_is_still_reviewed(
    hub: Hub, events: list[dict[str, Any]]
) -> None:
    outbox = Outbox()
    review_id, _ = await open_acme(hub, outbox)
    [(to, subject, body)] = outbox.sent
    assert to == "sam@corp.example" and subject == "Access review: Acme Inc"
    assert f"{BASE}/admin/reviews/{review_id}" in body
    globex = [e for e in named(events, "review.opened") if e["partner"] == "globex"]
    assert globex[0]["sponsors"] == [] and "admins review it" in globex[0]["note"]
    [mailed] = named(events, "review.mailed")
    assert mailed["to"] == "sam@corp.example" and mailed["outcome"] == "success"
    # Admins confirm the lines of a review nobody sponsors.
    await grant_globex_line(hub)


async def grant_globex_line(hub: Hub) -> None:
    [globex] = [r for r in await review_service.reviews(AdminService(hub), ROOT)
                if r.spec.partner_id == "globex"]  # fmt: skip
    assert globex.spec.lines == ()
    with pytest.raises(Forbidden):
        await review_service.review(AdminService(hub), SAM, globex.id)


# ---------------------------------------------------------------------- who decides


async def test_the_sponsor_and_admins_confirm_others_may_not(
    hub: Hub, app: Starlette, events: list[dict[str, Any]]
) -> None:
    await grant(hub, ["orders"], connection_id="acme-mock", subject="bob")
    await grant(hub, ["orders", "wiki"], connection_id="acme-mock", subject="alice")
    review_id, _ = await open_acme(hub)
    service = AdminService(hub)
    for stranger in (CARL, ALICE, AUDREY):
        with pytest.raises(Forbidden):
            await review_service.confirm(service, stranger, review_id, [0])
    assert [r.id for r in await review_service.reviews(service, CARL)] == []
    with pytest.raises(Forbidden):
        await review_service.reviews(service, ALICE)
    assert review_id in [r.id for r in await review_service.reviews(service, AUDREY)]
    done = await review_service.confirm(service, SAM, review_id, [0])
    assert [li.decision for li in done.spec.lines] == [
        LineDecision.confirmed, LineDecision.pending, LineDecision.pending,
    ]  # fmt: skip
    assert done.spec.lines[0].decided_by == SAM.name
    again = await review_service.confirm(service, ROOT, review_id, [0, 2])
    assert again.spec.lines[0].decided_by == SAM.name  # confirmed once, by the sponsor
    assert again.spec.lines[2].decided_by == ROOT.name
    confirmed = named(events, "review.confirmed")
    assert [(e["actor"], e["subject"], e["app"]) for e in confirmed] == [
        (SAM.name, "alice", "orders"),
        (ROOT.name, "bob", "orders"),
    ]


async def test_an_auditor_named_as_sponsor_reads_but_neither_confirms_nor_restores(
    hub: Hub,
) -> None:
    """Auditors are read-only: being listed among a partner's sponsors (Sam's address, Sam
    holding the auditor role) must not let them confirm lines or restore lapses."""
    sam_auditor = Actor("sam@corp.example (corp)", Role.auditor, email="sam@corp.example")
    await grant(hub, ["orders"], connection_id="acme-mock", subject="bob")
    review_id, spec = await open_acme(hub)
    service = AdminService(hub)
    assert (await review_service.review(service, sam_auditor, review_id)).id == review_id
    with pytest.raises(Forbidden):
        await review_service.confirm(service, sam_auditor, review_id, [0])
    await review_service.run_reviews(service, spec.closes_at, Outbox())
    [lapse_doc] = await hub.documents.documents("lapse")
    with pytest.raises(Forbidden):
        await review_service.restore(service, sam_auditor, lapse_doc.id, ["orders"])
    assert await hub.documents.get("lapse", lapse_doc.id) is not None


async def test_the_console_lets_the_sponsor_confirm_and_refuses_another_person(
    hub: Hub, app: Starlette
) -> None:
    await grant(hub, ["orders"], connection_id="acme-mock", subject="bob")
    await grant(hub, ["orders"], connection_id="acme-mock", subject="alice")
    async with browser(app, "alice@acme.example") as alice:  # her sign-in names her email
        assert (await alice.get("/admin/reviews")).status_code == 403
    review_id, spec = await open_acme(hub)
    assert [(li.email, li.subject) for li in spec.lines] == [
        ("alice@acme.example", "alice"), (None, "bob"),
    ]  # fmt: skip
    page_url = f"/admin/reviews/{review_id}"
    async with browser(app, "carl@corp.example") as carl:
        assert (await carl.get(page_url)).status_code == 403
        listed = await carl.get("/admin/reviews")
        assert listed.status_code == 200 and review_id not in listed.text
    async with browser(app, "sam@corp.example") as sam:
        assert review_id in (await sam.get("/admin/reviews")).text
        page = await sam.get(page_url)
        assert page.status_code == 200
        assert "Confirm alice@acme.example for orders" in page.text
        fields = hidden_fields(page.text, "confirm-form")
        forged = await sam.post(f"{page_url}/confirm", data={"line": "1", "what": "selected"})
        assert forged.status_code == 403  # no CSRF token: nothing confirmed
        done = await sam.post(
            f"{page_url}/confirm", data={**fields, "line": "1", "what": "selected"},
            follow_redirects=True,
        )  # fmt: skip
        assert "Confirmed: 1 line." in done.text
        assert 'id="line-1"' in done.text and "decision-confirmed" in done.text
        everything = await sam.post(f"{page_url}/confirm", data={**fields, "what": "all"},
                                    follow_redirects=True)  # fmt: skip
        assert "Confirmed: 1 line." in everything.text
        assert "Confirm selected" not in everything.text  # nothing left to confirm
    stored = await review_service.review(AdminService(hub), ROOT, review_id)
    assert stored.spec.count(LineDecision.confirmed) == 2


# ---------------------------------------------------------------------- close, restore


async def test_closing_lapses_the_unconfirmed_ends_their_grants_and_keeps_them_out(
    hub: Hub, app: Starlette, events: list[dict[str, Any]], clock: FakeClock
) -> None:
    async with (
        browser(app, "bob@acme.example") as bob,
        browser(app, "alice@acme.example") as alice,
    ):
        for client in (bob, alice):
            assert (await forward_auth(app, client.cookies["isthmus_session"])).status_code == 200
        bob_grant = await grant(hub, ["orders", "wiki"], connection_id="acme-mock", subject="bob")
        dora_grant = await grant(hub, ["orders"], email="dora@acme.example")
        review_id, spec = await open_acme(hub)
        assert [(li.who, li.app) for li in spec.lines] == [
            ("alice@acme.example", "orders"), ("bob@acme.example", "orders"),
            ("bob@acme.example", "wiki"), ("dora@acme.example", "orders"),
        ]  # fmt: skip
        service = AdminService(hub)
        await review_service.confirm(service, SAM, review_id, [0, 2])  # alice; bob for wiki
        late = spec.closes_at.timestamp() - hub.clock()
        clock.advance(late)  # the window has ended (the job has not run yet)
        with pytest.raises(ReviewClosed):
            await review_service.confirm(service, SAM, review_id, [1])
        clock.advance(-late)  # back: the sessions made at the start are still alive
        done = await review_service.run_reviews(service, spec.closes_at, Outbox())
        assert f"closed {review_id} (2 confirmed, 2 lapsed)" in done

        closed = await review_service.review(service, ROOT, review_id)
        assert closed.spec.closed_at == spec.closes_at
        assert [li.decision.value for li in closed.spec.lines] == [
            "confirmed",
            "lapsed",
            "confirmed",
            "lapsed",
        ]
        bob_lapse = lapse_id("acme", "acme-mock", "bob", None)
        lapse = await hub.documents.get("lapse", bob_lapse)
        assert lapse is not None and lapse.spec["apps"] == ["orders"]
        assert await hub.documents.get("lapse", lapse_id("acme", None, None, "dora@acme.example"))
        kept = await hub.documents.get("grant", bob_grant)
        assert kept is not None and kept.spec["apps"] == ["wiki"]  # orders removed
        assert await hub.documents.get("grant", dora_grant) is None  # nothing left: gone

        refused = await forward_auth(app, bob.cookies["isthmus_session"])
        assert refused.status_code == 403
        assert "ask your sponsor" in refused.text
        decision = named(events, "proxy.decision")[-1]
        assert decision["outcome"] == "failure"
        assert decision["reasons"][0].startswith("access_lapsed: ")
        assert (await forward_auth(app, alice.cookies["isthmus_session"])).status_code == 200

        lapsed = named(events, "access.lapsed")
        assert sorted((e["email"], e["app"]) for e in lapsed) == [
            ("bob@acme.example", "orders"),
            ("dora@acme.example", "orders"),
        ]
        assert next(e for e in lapsed if e["email"] == "bob@acme.example")["grants_ended"] == [
            bob_grant
        ]
        [closed_event] = [e for e in named(events, "review.closed") if e["partner"] == "acme"]
        assert (closed_event["confirmed"], closed_event["lapsed"]) == (2, 2)

        # The sponsor restores bob's access: the lapse goes, the policy decides again.
        with pytest.raises(Forbidden):
            await review_service.restore(service, CARL, bob_lapse, ["orders"])
        assert await review_service.restore(service, SAM, bob_lapse, ["orders"]) is None
        assert await hub.documents.get("lapse", bob_lapse) is None
        assert (await forward_auth(app, bob.cookies["isthmus_session"])).status_code == 200
        [restored] = named(events, "access.restored")
        assert (restored["subject"], restored["app"], restored["actor"]) == (
            "bob", "orders", SAM.name
        )  # fmt: skip


async def test_a_lapsed_person_gets_no_authorization_code_from_the_oidc_provider(
    hub: Hub, app: Starlette
) -> None:
    async with browser(app, "bob@acme.example") as bob:
        await oidc_tokens(bob)
        _, spec = await open_acme(hub)
        await review_service.run_reviews(AdminService(hub), spec.closes_at, Outbox())
        params = {"response_type": "code", "client_id": "orders", "redirect_uri": APP_CB,
                  "scope": "openid", "state": "s", "code_challenge": pkce_pair()[1],
                  "code_challenge_method": "S256"}  # fmt: skip
        refused = await bob.get("/oauth2/authorize", params=params)
        assert refused.status_code == 303
        answer = query_of(refused.headers["location"])
        assert answer["error"] == "access_denied" and "code" not in answer
        assert "ask your sponsor" in answer["error_description"]


# ---------------------------------------------------------------------- the index


def test_lapses_by_subject_and_by_verified_email_only() -> None:
    since = datetime(2026, 5, 1, tzinfo=UTC)
    by_subject = LapseSpec(partner_id="acme", connection_id="c", subject="bob", apps=("orders",),
                           since=since, review_id="r-acme-20260424")  # fmt: skip
    by_email = LapseSpec(partner_id="acme", email="Dora@acme.example", apps=("wiki",),
                         since=since, review_id="r-acme-20260424")  # fmt: skip
    index = LapseIndex.of([by_subject, by_email])

    def person(subject: str, email: str, verified: bool = True) -> FederatedIdentity:
        return FederatedIdentity(
            partner_id="acme", connection_id="c", issuer="i", subject=subject, email=email,
            email_verified=verified,
        )  # fmt: skip

    assert index.lapse_for(person("bob", "bob@acme.example"), "orders") is by_subject
    assert index.lapse_for(person("bob", "bob@acme.example"), "wiki") is None
    assert index.lapse_for(person("dora", "dora@acme.example"), "wiki") is by_email
    assert index.lapse_for(person("dora", "dora@acme.example", verified=False), "wiki") is None
    assert LapseIndex().lapse_for(person("bob", "bob@acme.example"), "orders") is None
    with pytest.raises(ValueError, match="name the person"):
        LapseSpec(partner_id="acme", apps=("x",), since=since, review_id="r")


def test_a_lapse_follows_the_verified_email_to_the_partners_other_connections() -> None:
    """Bob lapsed as a subject of acme's IdP; signing in with the same verified address
    through acme's one-time codes used to get him past the lapse."""
    since = datetime(2026, 5, 1, tzinfo=UTC)
    lapse = LapseSpec(partner_id="acme", connection_id="acme-idp", subject="b-123",
                      email="Bob@acme.example", apps=("orders",), since=since,
                      review_id="r-acme-20260424")  # fmt: skip
    index = LapseIndex.of([lapse])

    def person(partner: str, connection: str, subject: str, verified: bool = True) -> Any:
        return FederatedIdentity(
            partner_id=partner, connection_id=connection, issuer="i", subject=subject,
            email="bob@acme.example", email_verified=verified,
        )  # fmt: skip

    assert index.lapse_for(person("acme", "acme-idp", "b-123"), "orders") is lapse
    assert index.lapse_for(person("acme", "acme-otp", "f00d"), "orders") is lapse
    assert index.lapse_for(person("acme", "acme-otp", "f00d"), "wiki") is None
    # an unverified address names nobody; another partner's Bob is someone else
    assert index.lapse_for(person("acme", "acme-otp", "f00d", verified=False), "orders") is None
    assert index.lapse_for(person("globex", "globex-otp", "f00d"), "orders") is None

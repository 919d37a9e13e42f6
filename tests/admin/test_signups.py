"""Sign-up requests in the service: the form's checks, confirmation, who may decide, every
refusal, the two ways an approval goes (extend a partner, create one), expiry.

Mail goes to an in-memory mailer here; the flow tests send it through a real SMTP server.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.mock import MockConnector
from connectors.registry import ConnectorRegistry
from federation.admin import lifecycle, signup_service
from federation.admin.catalog import InvalidDocuments
from federation.admin.documents import VersionConflict
from federation.admin.service import SYSTEM, Actor, AdminService, Forbidden
from federation.admin.signup_service import AlreadyDecided, Ask, LinkInvalid
from federation.admin.signups import SignupSpec, SignupStatus
from federation.admin.tokens import Role
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import PartnerStatus
from federation.web.app import create_app
from tests.admin.support import YieldingStore, api_settings, make_hub, sign_in_as
from tests.broker.test_mock_partner_to_hub_session import hidden_fields
from tests.peers.smtp import SmtpSink

START = 1_900_000_000.0
CARL = Actor("carl@corp.example (corp)", Role.sponsor, email="carl@corp.example")
DANA = Actor("dana@corp.example (corp)", Role.sponsor, email="dana@corp.example")
ROOT = Actor("root@corp.example (corp)", Role.admin, email="root@corp.example")
AUDREY = Actor("audrey@corp.example (corp)", Role.auditor, email="audrey@corp.example")
ALICE = Actor("alice@acme.example (acme)", Role.partner_admin, "acme", email="alice@acme.example")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Mailbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append((to, subject, body))

    def to(self, address: str) -> list[str]:
        return [body for to, _, body in self.sent if to == address]

    def link(self, address: str, path: str) -> str:
        found = re.findall(rf"http://[^\s]+{re.escape(path)}[^\s]*", "\n".join(self.to(address)))
        assert found, self.sent
        return str(found[-1])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(events: list[dict[str, Any]], clock: Clock) -> Hub:
    settings = api_settings(
        signup={"enabled": True, "apps": ["orders"], "request_ttl_days": 14, "max_grant_days": 180}
    )
    mock_only = ConnectorRegistry({"mock": MockConnector.from_settings})
    return build_hub(settings, audit=Audit([events.append]), connector_types=mock_only, clock=clock)


@pytest.fixture
def mail() -> Mailbox:
    return Mailbox()


def ask(email: str = "zoe@newco.example", **changes: Any) -> Ask:
    fields: dict[str, Any] = {
        "name": "Zoe",
        "email": email,
        "company": "NewCo Ltd",
        "sponsor": "carl@corp.example",
        "apps": ("orders",),
        "message": "For the spring project",
    }
    return Ask(**{**fields, **changes})


def now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC)


async def pending(hub: Hub, mail: Mailbox, request: Ask | None = None) -> str:
    """A confirmed, pending request: its id."""
    request = request or ask()
    await signup_service.start(hub, request, mail)
    token = mail.link(request.email.lower(), "/signup/confirm").partition("t=")[2]
    doc = await signup_service.confirm(AdminService(hub), token, mail)
    return doc.id


async def approve(hub: Hub, mail: Mailbox, signup_id: str, actor: Actor = CARL, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "apps": ("orders",),
        "until": datetime.fromtimestamp(hub.clock(), UTC) + timedelta(days=30),
        "mailer": mail,
    }
    return await signup_service.approve(AdminService(hub), actor, signup_id, **{**options, **kw})


async def signup(hub: Hub, signup_id: str) -> SignupSpec:
    doc = await AdminService(hub).document(SYSTEM, "signup", signup_id)
    return SignupSpec.model_validate(doc.spec)


def kinds(hub: Hub) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, _ in hub.catalog.documents:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


# ---------------------------------------------------------------------- the form


async def test_a_good_request_has_no_problem(hub: Hub) -> None:
    await hub.ready()
    assert signup_service.check_request(hub, ask()) == {}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"email": "zoe@gmail.com"}, "email", "cannot be used"),
        ({"email": "zoe@mail.gmail.com"}, "email", "cannot be used"),
        ({"email": "zoe@corp.example"}, "email", "Staff sign in"),
        ({"email": "not-an-address"}, "email", "work email"),
        ({"sponsor": "someone@acme.example"}, "sponsor", "one of our staff"),
        ({"sponsor": "someone@gmail.com"}, "sponsor", "one of our staff"),
        ({"apps": ()}, "apps", "at least one"),
        ({"apps": ("orders", "payroll")}, "apps", "among the applications"),
        ({"name": ""}, "name", "your name"),
        ({"company": ""}, "company", "company"),
        ({"message": "x" * 1001}, "message", "1,000"),
    ],
)
async def test_every_problem_is_named_by_its_field(
    hub: Hub, changes: dict[str, Any], field: str, words: str
) -> None:
    await hub.ready()
    problems = signup_service.check_request(hub, ask(**changes))
    assert list(problems) == [field]
    assert words in problems[field]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"company": "NewCo\r\nBcc: eve@evil.test"}, "company"),
        ({"company": "NewCo\u2028Ltd"}, "company"),
        ({"company": "NewCo \u202eLTD"}, "company"),  # a right-to-left override
        ({"name": "Zoe\nSubject: hi"}, "name"),
        ({"name": "Zoe\x00"}, "name"),
        ({"email": "eve@evil.test,zoe@newco.example"}, "email"),
        ({"email": "eve,zoe@newco.example"}, "email"),
        ({"email": "Zoe <zoe@newco.example>"}, "email"),
        ({"sponsor": "eve@evil.test,carl@corp.example"}, "sponsor"),
        ({"sponsor": "eve,carl@corp.example"}, "sponsor"),
        ({"message": "hi\x1b[2J"}, "message"),
    ],
)
async def test_line_breaks_controls_and_address_lists_are_refused(
    hub: Hub, changes: dict[str, Any], field: str
) -> None:
    """What is typed goes into mail headers (subject, recipient): one line, one address."""
    await hub.ready()
    assert list(signup_service.check_request(hub, ask(**changes))) == [field]


async def test_a_message_keeps_its_line_breaks(hub: Hub) -> None:
    await hub.ready()
    assert signup_service.check_request(hub, ask(message="Hello,\r\n\tthe project.")) == {}


async def test_nobody_sponsors_themselves(hub: Hub) -> None:
    await hub.ready()
    staff = ask(email="carl@corp.example")
    # an internal address is refused as such; a self-sponsor outside is refused too
    assert "email" in signup_service.check_request(hub, staff)
    settings = api_settings(signup={"enabled": True, "apps": ["orders"],
                                    "sponsor_domains": ["newco.example"]})  # fmt: skip
    other = make_hub(settings, [])
    await other.ready()
    problems = signup_service.check_request(other, ask(sponsor="Zoe@NewCo.example"))
    assert problems == {"sponsor": "You cannot sponsor yourself."}


async def test_configured_sponsor_domains_replace_the_internal_ones(hub: Hub) -> None:
    settings = api_settings(signup={"enabled": True, "apps": ["orders"],
                                    "sponsor_domains": ["staff.example"]})  # fmt: skip
    other = make_hub(settings, [])
    await other.ready()
    assert "sponsor" in signup_service.check_request(other, ask())
    assert signup_service.check_request(other, ask(sponsor="carl@staff.example")) == {}


# ---------------------------------------------------------------------- confirmation


async def test_nothing_is_filed_until_the_link_is_used_and_it_works_once(
    hub: Hub, mail: Mailbox, events: list[dict[str, Any]], clock: Clock
) -> None:
    await hub.ready()
    before = kinds(hub)
    await signup_service.start(hub, ask(), mail)
    assert kinds(hub) == before  # the unconfirmed request is in the store only
    link = mail.link("zoe@newco.example", "/signup/confirm")
    token = link.partition("t=")[2]
    assert token not in str(await hub.store.get(f"signup:confirm:{token}"))  # stored hashed
    assert (await signup_service.pending_ask(hub, token)).company == "NewCo Ltd"

    doc = await signup_service.confirm(AdminService(hub), token, mail)
    spec = SignupSpec.model_validate(doc.spec)
    assert spec.status is SignupStatus.pending and spec.sponsor == "carl@corp.example"
    assert spec.expires_at == now(clock) + timedelta(days=14)
    assert kinds(hub) == {**before, "signup": 1}  # no grant, no partner, no domain
    assert hub.registry.partner_for_domain("newco.example") is None
    [notice] = mail.to("carl@corp.example")
    assert f"/admin/requests/{doc.id}" in notice and "NewCo Ltd" in notice
    requested = [e for e in events if e["event"] == "signup.requested"]
    assert requested[-1]["signup"] == doc.id and requested[-1]["email"] == "zoe@newco.example"

    with pytest.raises(LinkInvalid):
        await signup_service.confirm(AdminService(hub), token, mail)
    with pytest.raises(LinkInvalid):
        await signup_service.pending_ask(hub, token)
    with pytest.raises(LinkInvalid):
        await signup_service.confirm(AdminService(hub), "forged-" + token, mail)


# ---------------------------------------------------------------------- who decides


@pytest.mark.parametrize("actor", [DANA, ROOT, AUDREY, ALICE], ids=lambda a: a.role.value)
async def test_approval_by_someone_who_is_not_the_sponsor_is_refused(
    hub: Hub, mail: Mailbox, events: list[dict[str, Any]], actor: Actor
) -> None:
    signup_id = await pending(hub, mail)
    before = kinds(hub)
    with pytest.raises(Forbidden) as refused:
        await approve(hub, mail, signup_id, actor)
    assert refused.value.status == 403
    with pytest.raises(Forbidden):
        await signup_service.refuse(AdminService(hub), actor, signup_id, note="no")
    assert kinds(hub) == before
    assert (await signup(hub, signup_id)).status is SignupStatus.pending
    audited = [e for e in events if e["event"] == "signup.refused_actor"]
    assert [(e["actor"], e["action"]) for e in audited] == [
        (actor.name, "approve"),
        (actor.name, "refuse"),
    ]
    assert mail.to("zoe@newco.example")[1:] == []  # only the confirmation link


async def test_an_admin_named_as_sponsor_decides(hub: Hub, mail: Mailbox) -> None:
    signup_id = await pending(hub, mail, ask(sponsor="root@corp.example"))
    await approve(hub, mail, signup_id, ROOT)
    assert (await signup(hub, signup_id)).status is SignupStatus.approved


async def test_the_sponsor_is_matched_case_insensitively(hub: Hub, mail: Mailbox) -> None:
    signup_id = await pending(hub, mail, ask(sponsor="Carl@CORP.example"))
    shouting = Actor("carl", Role.sponsor, email="CARL@corp.example")
    await approve(hub, mail, signup_id, shouting)
    assert (await signup(hub, signup_id)).decided_by == "carl"


async def test_a_sponsor_sees_only_the_requests_naming_them(hub: Hub, mail: Mailbox) -> None:
    mine = await pending(hub, mail)
    theirs = await pending(hub, mail, ask(email="yan@other.example", sponsor="dana@corp.example"))
    service = AdminService(hub)
    assert [d.id for d, _ in await signup_service.requests(service, CARL)] == [mine]
    assert {d.id for d, _ in await signup_service.requests(service, AUDREY)} == {mine, theirs}
    with pytest.raises(Forbidden):
        await signup_service.request(service, CARL, theirs)
    with pytest.raises(Forbidden):
        await signup_service.requests(service, ALICE)


# ---------------------------------------------------------------------- every refusal


async def test_a_decided_request_cannot_be_decided_again(hub: Hub, mail: Mailbox) -> None:
    approved = await pending(hub, mail)
    await approve(hub, mail, approved)
    refused = await pending(hub, mail, ask(email="yan@newco.example"))
    await signup_service.refuse(AdminService(hub), CARL, refused, note="not this year")
    for signup_id in (approved, refused):
        with pytest.raises(AlreadyDecided) as again:
            await approve(hub, mail, signup_id)
        assert again.value.status == 409
        with pytest.raises(AlreadyDecided):
            await signup_service.refuse(AdminService(hub), CARL, signup_id)
    grants = [key for key in hub.catalog.documents if key[0] == "grant"]
    assert len(grants) == 1


async def test_an_expired_request_cannot_be_approved_and_the_job_closes_it(
    hub: Hub, mail: Mailbox, clock: Clock, events: list[dict[str, Any]]
) -> None:
    stale = await pending(hub, mail)
    clock.now += 13 * 86400
    fresh = await pending(hub, mail, ask(email="yan@newco.example"))
    decided = await pending(hub, mail, ask(email="xia@newco.example"))
    await signup_service.refuse(AdminService(hub), CARL, decided)
    clock.now += 2 * 86400  # stale is 15 days old, fresh 2
    with pytest.raises(AlreadyDecided):
        await approve(hub, mail, stale)
    done = await lifecycle.tick(
        hub, now(clock), jobs=(("signups", signup_service.expire_requests),)
    )
    assert len(done) == 1 and stale in done[0]
    assert (await signup(hub, stale)).status is SignupStatus.expired
    assert (await signup(hub, fresh)).status is SignupStatus.pending
    assert (await signup(hub, decided)).status is SignupStatus.refused
    assert [e["signup"] for e in events if e["event"] == "signup.expired"] == [stale]
    assert (
        await lifecycle.tick(hub, now(clock), jobs=(("s", signup_service.expire_requests),)) == []
    )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"apps": ()}, "apps"),
        ({"apps": ("orders", "billing")}, "apps"),
        ({"until": datetime.fromtimestamp(START, UTC) - timedelta(days=1)}, "until"),
        ({"until": datetime.fromtimestamp(START, UTC) + timedelta(days=181)}, "until"),
    ],
)
async def test_an_approval_outside_the_request_or_the_limits_is_refused(
    hub: Hub, mail: Mailbox, options: dict[str, Any], field: str
) -> None:
    signup_id = await pending(hub, mail)
    before = kinds(hub)
    with pytest.raises(InvalidDocuments) as refused:
        await approve(hub, mail, signup_id, **options)
    assert [p.field for p in refused.value.problems] == [field]
    assert kinds(hub) == before


# ---------------------------------------------------------------------- approval


async def test_approval_extends_the_partner_owning_the_domain(
    hub: Hub, mail: Mailbox, events: list[dict[str, Any]], clock: Clock
) -> None:
    signup_id = await pending(hub, mail, ask(email="Bea@ACME.example", company="Acme"))
    until = now(clock) + timedelta(days=30)
    done = await approve(hub, mail, signup_id, until=until, note="spring project")
    assert (done.partner_id, done.created, done.waiting) == ("acme", False, False)
    acme = hub.registry.partner("acme")
    # Sponsoring an existing partner is the admins' decision: an approval never adds one
    # (a sponsor may grant the whole partner any grant-admitting app).
    assert acme is not None and "carl@corp.example" not in acme.settings.sponsors
    grant = hub.catalog.spec("grant", done.grant_id)
    assert grant is not None
    assert grant["email"] == "bea@acme.example" and grant["apps"] == ["orders"]
    assert grant["granted_by"] == "carl@corp.example"
    assert datetime.fromisoformat(grant["valid_until"]) == until
    assert len([p for p in hub.registry.partners()]) == 3  # no partner created
    spec = await signup(hub, signup_id)
    assert (spec.status, spec.partner_id, spec.grant_id) == ("approved", "acme", done.grant_id)
    assert spec.secret_sha256 is None  # no domain step
    [approved] = [e for e in events if e["event"] == "signup.approved"]
    assert approved["partner"] == "acme" and approved["actor"] == CARL.name
    assert "sign in now" in mail.to("bea@acme.example")[-1]
    # a second approval for the same partner still leaves its sponsors alone
    second = await pending(hub, mail, ask(email="cy@acme.example", company="Acme"))
    await approve(hub, mail, second)
    acme = hub.registry.partner("acme")
    assert acme is not None and "carl@corp.example" not in acme.settings.sponsors


async def test_a_sign_up_never_makes_an_internal_partner_or_staff(hub: Hub, mail: Mailbox) -> None:
    """Internal partners' people are staff (sponsors): no configuration lets a sign-up
    create one, and a request whose domain became internal since is not approved."""
    with pytest.raises(ValueError, match="never creates an internal partner"):
        api_settings(signup={"enabled": True, "apps": ["orders"], "partner_kind": "internal"})
    signup_id = await pending(hub, mail, ask(email="bea@acme.example", company="Acme"))
    service = AdminService(hub)
    acme = await service.document(SYSTEM, "partner", "acme")
    await service.put(SYSTEM, "partner", "acme", {**acme.spec, "kind": "internal"}, acme.version)
    before = kinds(hub)
    with pytest.raises(InvalidDocuments, match="internal partner's domain"):
        await approve(hub, mail, signup_id)
    assert kinds(hub) == before and (await signup(hub, signup_id)).status == "pending"
    partner = hub.registry.partner("acme")
    assert partner is not None and "carl@corp.example" not in partner.settings.sponsors


async def test_approval_for_an_unknown_company_creates_a_partner_waiting_for_its_domain(
    hub: Hub, mail: Mailbox
) -> None:
    signup_id = await pending(hub, mail, ask(company="Acme"))  # "acme" is taken
    done = await approve(hub, mail, signup_id)
    assert (done.partner_id, done.created, done.waiting) == ("acme-2", True, True)
    partner = hub.registry.partner("acme-2")
    assert partner is not None
    settings = partner.settings
    assert settings.status is PartnerStatus.invited and settings.kind.value == "customer"
    assert settings.domains == () and [p.name for p in settings.pending_domains] == [
        "newco.example"
    ]
    assert [c.type for c in settings.connections] == ["otp"]
    assert settings.sponsors == ("carl@corp.example",)
    assert hub.registry.partner_for_domain("newco.example") is None  # routes nothing yet
    grant = hub.catalog.spec("grant", done.grant_id)
    assert grant is not None and grant["partner_id"] == "acme-2"
    link = mail.link("zoe@newco.example", f"/signup/{signup_id}/domain")
    token = link.partition("t=")[2]
    step = await signup_service.domain_step(AdminService(hub), signup_id, token)
    assert step.record_name == "_isthmus-challenge.newco.example"
    assert step.record_value == f"isthmus-domain-verification={settings.pending_domains[0].token}"
    assert not step.verified
    for wrong in ("", token[:-1], "x" * 43):
        with pytest.raises(LinkInvalid):
            await signup_service.domain_step(AdminService(hub), signup_id, wrong)

    # a colleague's request, approved while the domain waits, joins the same partner
    other = await pending(hub, mail, ask(email="yan@newco.example", company="NewCo"))
    again = await approve(hub, mail, other)
    assert again.partner_id == "acme-2" and again.waiting
    assert len(list(hub.registry.partners())) == 4


async def test_refusal_closes_the_request_and_grants_nothing(
    hub: Hub, mail: Mailbox, events: list[dict[str, Any]]
) -> None:
    signup_id = await pending(hub, mail)
    before = kinds(hub)
    await signup_service.refuse(AdminService(hub), CARL, signup_id, note="no project", mailer=mail)
    spec = await signup(hub, signup_id)
    assert (spec.status, spec.decision_note, spec.decided_by) == (
        "refused",
        "no project",
        CARL.name,
    )
    assert kinds(hub) == before
    assert "not approved" in mail.to("zoe@newco.example")[-1]
    assert [e["signup"] for e in events if e["event"] == "signup.refused"] == [signup_id]


# ---------------------------------------------------------------------- the pages


def page_hub(smtp: SmtpSink, events: list[dict[str, Any]], **signup: Any) -> Hub:
    settings = api_settings(
        smtp={"host": smtp.host, "port": smtp.port},
        signup={"enabled": True, "apps": ["orders"], **signup},
    )
    return make_hub(settings, events)


def client(hub: Hub) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(hub=hub))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080")


def form(page: str, **fields: Any) -> dict[str, Any]:
    base = {"name": "Zoe", "email": "zoe@newco.example", "company": "NewCo",
            "sponsor": "carl@corp.example", "apps": ["orders"], "message": ""}  # fmt: skip
    return {**hidden_fields(page), **base, **fields}


async def test_sign_up_is_a_404_unless_enabled(events: list[dict[str, Any]]) -> None:
    async with client(make_hub(api_settings(), events)) as http:
        for path in ("/signup", "/signup/confirm?t=x", "/signup/s-1/domain?t=x"):
            assert (await http.get(path)).status_code == 404
        assert (await http.post("/signup", data={})).status_code == 404


async def test_the_form_shows_its_problems_and_refuses_a_post_without_its_token(
    smtp_sink: SmtpSink, events: list[dict[str, Any]]
) -> None:
    async with client(page_hub(smtp_sink, events)) as http:
        page = await http.get("/signup")
        bad = await http.post("/signup", data=form(page.text, email="zoe@gmail.com", apps=[]))
        assert bad.status_code == 400
        assert 'id="f-email-error"' in bad.text and 'id="f-apps-error"' in bad.text
        assert 'value="zoe@gmail.com"' in bad.text
        forged = await http.post("/signup", data={**form(page.text), "csrf": "x" * 43})
        assert forged.status_code == 403
    assert smtp_sink.messages == []


async def test_rate_limits_per_address_say_nothing_and_per_ip_say_429(
    smtp_sink: SmtpSink, events: list[dict[str, Any]]
) -> None:
    async with client(page_hub(smtp_sink, events)) as http:
        page = await http.get("/signup")
        pages = [await http.post("/signup", data=form(page.text)) for _ in range(4)]
        assert [p.status_code for p in pages] == [200] * 4
        assert all("Check your email" in p.text for p in pages)
        assert len(smtp_sink.to("zoe@newco.example")) == 3  # the fourth: no mail
        refused = [e for e in events if e["event"] == "signup.refused"]
        assert [e["reason"] for e in refused] == ["rate_limited_address"]
        for n in range(6):
            await http.post("/signup", data=form(page.text, email=f"p{n}@newco.example"))
        over = await http.post("/signup", data=form(page.text, email="last@newco.example"))
        assert over.status_code == 429 and "Too many requests" in over.text
        assert smtp_sink.to("last@newco.example") == []


async def test_a_company_with_a_line_break_is_refused_before_any_mail(
    smtp_sink: SmtpSink, events: list[dict[str, Any]]
) -> None:
    """It used to pass the form, then fail the sponsor's mail (its subject) after the
    request was filed: a 500, and a request its sponsor never heard of."""
    hub = page_hub(smtp_sink, events)
    async with client(hub) as http:
        page = await http.get("/signup")
        bad = await http.post(
            "/signup", data=form(page.text, company="NewCo\r\nBcc: eve@evil.test")
        )
        assert bad.status_code == 400 and 'id="f-company-error"' in bad.text
    assert smtp_sink.messages == []
    assert await AdminService(hub).documents(SYSTEM, "signup") == []


async def test_the_console_shows_a_decided_request_as_it_is_now(
    smtp_sink: SmtpSink, events: list[dict[str, Any]]
) -> None:
    hub = page_hub(smtp_sink, events)
    async with client(hub) as zoe, client(hub) as carl:
        page = await zoe.get("/signup")
        await zoe.post("/signup", data=form(page.text))
        [mail_] = smtp_sink.to("zoe@newco.example")
        link = re.search(r"/signup/confirm\?t=\S+", str(mail_.get_content()))
        assert link
        confirm = await zoe.get(link.group(0))
        await zoe.post("/signup/confirm", data=hidden_fields(confirm.text))
        [doc] = await AdminService(hub).documents(SYSTEM, "signup")

        await sign_in_as(carl, "carl@corp.example")
        shown = await carl.get(f"/admin/requests/{doc.id}")
        assert shown.status_code == 200 and 'id="approve-form"' in shown.text
        refuse = await carl.post(
            f"/admin/requests/{doc.id}/refuse", data={**hidden_fields(shown.text), "note": "no"}
        )
        assert refuse.status_code == 303
        again = await carl.post(
            f"/admin/requests/{doc.id}/approve",
            data={**hidden_fields(shown.text), "apps": ["orders"], "until": "2099-01-01"},
        )
        assert again.status_code == 409 and "decided meanwhile" in again.text
        last_day = await carl.post(
            f"/admin/requests/{doc.id}/approve",
            data={**hidden_fields(shown.text), "apps": ["orders"], "until": "9999-12-31"},
        )
        assert last_day.status_code == 422 and "Enter a date" in last_day.text
        assert 'id="approve-form"' not in again.text
        assert (await carl.get("/signup/" + doc.id + "/domain?t=x")).status_code == 404


async def test_two_approvals_at_once_make_one_partner_and_one_grant(
    hub: Hub, mail: Mailbox
) -> None:
    """Two clicks (or two replicas) approving the same request at the same moment: one
    wins, the other is told the request was decided; one partner, one grant."""
    signup_id = await pending(hub, mail)
    hub.documents = YieldingStore(hub.documents)  # type: ignore[assignment]
    before = kinds(hub)
    results = await asyncio.gather(
        approve(hub, mail, signup_id), approve(hub, mail, signup_id), return_exceptions=True
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], (AlreadyDecided, VersionConflict)), lost
    after = kinds(hub)
    assert after.get("grant", 0) == before.get("grant", 0) + 1
    assert after.get("partner", 0) == before.get("partner", 0) + 1

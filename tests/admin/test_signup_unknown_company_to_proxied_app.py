"""Flow: a person from an unknown company asks for access on /signup, confirms by the
mailed link, their sponsor approves in the console, the company's domain passes its DNS
proof (a real dnsmasq), the person signs in with a one-time code mailed through a real
SMTP server, and forward-auth lets them into the granted app — and not into the other.

And the other way an approval goes: a person whose domain an existing partner owns is
granted access in that partner, and signs in through its identity provider at once.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from connectors.mock import MockConnector
from connectors.otp import OtpConnector
from connectors.registry import ConnectorRegistry
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import PartnerStatus, Settings
from federation.web.app import create_app
from tests.broker.test_mock_partner_to_hub_session import hidden_fields, sign_in
from tests.peers.dns import DnsServer
from tests.peers.smtp import SmtpSink

pytestmark = pytest.mark.integration

BASE = "http://127.0.0.1:8080"
EDGE = ("10.0.0.5", 40000)  # a trusted proxy asking forward-auth
GRANTED = {"rules": [{"name": "on-grant", "effect": "allow", "when": {"grant": "valid"}}]}


def _user(subject: str, domain: str, *roles: str) -> dict[str, Any]:
    return {"subject": subject, "email": f"{subject}@{domain}", "name": subject.title(),
            "roles": list(roles)}  # fmt: skip


def settings(smtp: SmtpSink, dns: DnsServer) -> Settings:
    return Settings(
        issuer=BASE,
        allow_insecure_http=True,
        allow_mock_connections=True,
        trusted_proxies=["10.0.0.0/8"],
        smtp={"host": smtp.host, "port": smtp.port, "from_address": "hub@isthmus.test"},
        dns=dns.settings(timeout_seconds=2.0),
        signup={"enabled": True, "apps": ["orders", "billing"]},
        partners=[
            {"id": "corp", "name": "Corp", "kind": "internal", "status": "active",
             "domains": ["corp.example"],
             "connections": [{"type": "mock", "id": "corp-mock", "users": [
                 _user("carl", "corp.example"), _user("dana", "corp.example")]}]},
            {"id": "acme", "name": "Acme Inc", "kind": "supplier", "status": "active",
             "domains": ["acme.example"],
             "connections": [{"type": "mock", "id": "acme-mock", "users": [
                 _user("bea", "acme.example")]}]},
        ],
        apps=[
            {"id": "orders", "name": "Orders", "path_prefix": "/orders",
             "upstreams": ["http://127.0.0.1:9"], "policy": GRANTED},
            {"id": "billing", "name": "Billing", "path_prefix": "/billing",
             "upstreams": ["http://127.0.0.1:9"], "policy": GRANTED},
        ],
    )  # fmt: skip


@pytest.fixture
async def hub(
    smtp_sink: SmtpSink, dns_server: DnsServer, events: list[dict[str, Any]]
) -> AsyncIterator[Hub]:
    types = ConnectorRegistry(
        {"mock": MockConnector.from_settings, "otp": OtpConnector.from_settings}
    )
    built = build_hub(
        settings(smtp_sink, dns_server), audit=Audit([events.append]), connector_types=types
    )
    yield built
    await built.aclose()


@pytest.fixture
def app(hub: Hub) -> Starlette:
    return create_app(hub=hub)


def browser(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def mailed_link(sink: SmtpSink, to: str, path: str) -> str:
    bodies = "\n".join(str(m.get_content()) for m in sink.to(to))
    found = re.findall(rf"{re.escape(BASE)}({re.escape(path)}[^\s]*)", bodies)
    assert found, bodies
    return str(found[-1])


async def ask_for_access(
    http: httpx.AsyncClient, sink: SmtpSink, email: str, company: str, *apps: str
) -> None:
    """Fill /signup, then confirm by the mailed link."""
    form = await http.get("/signup")
    assert form.status_code == 200
    assert "Orders" in form.text and "Billing" in form.text  # apps shown by name
    data = {**hidden_fields(form.text), "name": "Zoe Newman", "email": email,
            "company": company, "sponsor": "carl@corp.example", "apps": list(apps),
            "message": "Spring project"}  # fmt: skip
    sent = await http.post("/signup", data=data)
    assert sent.status_code == 200 and "Check your email" in sent.text
    link = mailed_link(sink, email, "/signup/confirm")
    page = await http.get(link)
    assert page.status_code == 200 and company in page.text
    done = await http.post("/signup/confirm", data=hidden_fields(page.text))
    assert done.status_code == 200 and "waiting for your sponsor" in done.text


async def sponsor_approves(
    app: Starlette, sink: SmtpSink, apps: list[str]
) -> tuple[str, httpx.Response]:
    """Carl follows the mailed link into the console and approves ``apps``."""
    link = mailed_link(sink, "carl@corp.example", "/admin/requests/")
    signup_id = link.rsplit("/", 1)[1]
    async with browser(app) as carl:
        assert (await sign_in(carl, "carl@corp.example", "carl")).status_code == 303
        page = await carl.get(link)
        assert page.status_code == 200 and "Approve" in page.text
        until = re.search(r'id="f-until"[^>]*value="([0-9-]+)"', page.text)
        assert until
        data = {**hidden_fields(page.text), "apps": apps, "until": until.group(1),
                "note": "ok for spring"}  # fmt: skip
        approved = await carl.post(f"/admin/requests/{signup_id}/approve", data=data)
        assert approved.status_code == 303, approved.text
        return signup_id, await carl.get(approved.headers["location"])


async def otp_sign_in(http: httpx.AsyncClient, sink: SmtpSink, email: str) -> None:
    page = await http.get("/login")
    to_otp = await http.post("/login", data={**hidden_fields(page.text), "email": email})
    assert to_otp.status_code == 303, to_otp.text
    location = urlsplit(to_otp.headers["location"])
    email_page = await http.get(f"{location.path}?{location.query}")
    code_page = await http.post(
        f"{location.path}/send", data={**hidden_fields(email_page.text), "email": email}
    )
    assert code_page.status_code == 200, code_page.text
    [message] = [m for m in sink.to(email) if "code is" in str(m.get_content())]
    code = re.search(r"code is (\d{6})", str(message.get_content()))
    assert code
    back = await http.post(
        f"{location.path}/verify", data={**hidden_fields(code_page.text), "code": code.group(1)}
    )
    assert back.status_code == 303, back.text
    done = await http.get(back.headers["location"])
    assert done.status_code == 303, done.text


async def forward_auth(app: Starlette, http: httpx.AsyncClient, path: str) -> int:
    cookie = http.cookies.get("isthmus_session")
    assert cookie
    headers = {"X-Original-URI": path, "X-Original-Method": "GET",
               "X-Forwarded-Host": "127.0.0.1:8080", "X-Forwarded-Proto": "http",
               "Cookie": f"isthmus_session={cookie}"}  # fmt: skip
    transport = httpx.ASGITransport(app=app, client=EDGE)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as edge:
        return (await edge.get("/forward-auth", headers=headers)).status_code


async def test_unknown_company_signs_up_proves_its_domain_and_reaches_the_granted_app(
    app: Starlette,
    hub: Hub,
    smtp_sink: SmtpSink,
    dns_server: DnsServer,
    events: list[dict[str, Any]],
) -> None:
    async with browser(app) as zoe:
        await ask_for_access(zoe, smtp_sink, "zoe@newco.example", "NewCo", "orders", "billing")
        # nothing is granted before approval: no partner, the domain routes nobody
        assert hub.registry.partner("newco") is None
        login = await zoe.get("/login")
        unknown = await zoe.post(
            "/login", data={**hidden_fields(login.text), "email": "zoe@newco.example"}
        )
        assert unknown.status_code != 303

        # someone else from the staff cannot approve it
        signup_id = mailed_link(smtp_sink, "carl@corp.example", "/admin/requests/").rsplit("/")[-1]
        async with browser(app) as dana:
            assert (await sign_in(dana, "dana@corp.example", "dana")).status_code == 303
            seen = await dana.get(f"/admin/requests/{signup_id}")
            assert seen.status_code == 403
            listing = await dana.get("/admin/requests")
            token = hidden_fields(listing.text).get("csrf") or dana.cookies["isthmus_csrf"]
            forged = await dana.post(
                f"/admin/requests/{signup_id}/approve",
                data={"csrf": token, "apps": ["orders"], "until": "2099-01-01"},
            )
            assert forged.status_code == 403
        assert hub.registry.partner("newco") is None

        signup_id, shown = await sponsor_approves(app, smtp_sink, ["orders"])
        assert "Approved." in shown.text and "waiting for its DNS proof" in shown.text
        newco = hub.registry.partner("newco")
        assert newco is not None and newco.settings.status is PartnerStatus.invited

        # the domain step: the TXT record to publish, checked against the real DNS
        link = mailed_link(smtp_sink, "zoe@newco.example", f"/signup/{signup_id}/domain")
        step = await zoe.get(link)
        assert step.status_code == 200
        name = re.search(r'id="record-name">([^<]+)<', step.text)
        value = re.search(r'id="record-value">([^<]+)<', step.text)
        assert name and value and name.group(1) == "_isthmus-challenge.newco.example"
        not_yet = await zoe.post(link.split("?")[0], data=hidden_fields(step.text))
        assert not_yet.status_code == 422 and "Not yet" in not_yet.text
        dns_server.set_records({name.group(1): [value.group(1)]})
        checked = await zoe.post(link.split("?")[0], data=hidden_fields(step.text))
        assert checked.status_code == 200 and "You can sign in" in checked.text
        newco = hub.registry.partner("newco")
        assert newco is not None and newco.settings.status is PartnerStatus.active
        assert newco.settings.domains == ("newco.example",)
        assert "you can sign in now" in str(smtp_sink.to("zoe@newco.example")[-1].get_content())

        await otp_sign_in(zoe, smtp_sink, "zoe@newco.example")
        assert await forward_auth(app, zoe, "/orders/x") == 200
        assert await forward_auth(app, zoe, "/billing/x") == 403  # asked, not approved

    flow = [e["event"] for e in events if e["event"].startswith("signup.")]
    assert flow == [
        "signup.confirmation_sent",
        "signup.requested",
        "signup.refused_actor",
        "signup.approved",
        "signup.domain_verified",
    ]


async def test_a_person_of_a_known_partner_is_granted_access_in_it(
    app: Starlette, hub: Hub, smtp_sink: SmtpSink
) -> None:
    async with browser(app) as bea:
        await ask_for_access(bea, smtp_sink, "bea@acme.example", "Acme", "orders")
        assert (await sign_in(bea, "bea@acme.example", "bea")).status_code == 303
        assert await forward_auth(app, bea, "/orders/x") == 403  # not before approval

        _, shown = await sponsor_approves(app, smtp_sink, ["orders"])
        assert "Approved." in shown.text
        acme = hub.registry.partner("acme")
        assert acme is not None and "carl@corp.example" not in acme.settings.sponsors
        assert sorted(p.id for p in hub.registry.partners()) == ["acme", "corp"]
        assert "sign in now" in str(smtp_sink.to("bea@acme.example")[-1].get_content())
        assert await forward_auth(app, bea, "/orders/x") == 200
        assert await forward_auth(app, bea, "/billing/x") == 403

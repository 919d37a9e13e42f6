"""Flow: a partner without SSO signs in with a code mailed through a real SMTP server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from connectors.mock import MockConnector
from connectors.otp import OtpConnector
from connectors.registry import ConnectorRegistry
from federation.audit import Audit
from federation.hub import Hub, build_hub
from tests.broker.conftest import BASE, hub_settings, mock_partner
from tests.broker.test_mock_partner_to_hub_session import hidden_fields
from tests.peers.common import free_port
from tests.peers.smtp import SmtpSink


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def otp_hub(audit_log: list[dict[str, Any]], smtp_sink: SmtpSink, clock: Clock) -> Hub:
    partner = {
        **mock_partner("acme", "supplier", "acme.example"),
        "connections": [
            {
                "type": "otp",
                "id": "acme-otp",
                "max_wrong_codes": 3,
                "sends_per_address": 3,
                "attempts_per_ip": 12,
            }
        ],
    }
    settings = hub_settings(
        partners=[partner, mock_partner("globex", "customer", "globex.example")],
        smtp={"host": smtp_sink.host, "port": smtp_sink.port, "from_address": "hub@isthmus.test"},
    )
    types = ConnectorRegistry(
        {"mock": MockConnector.from_settings, "otp": OtpConnector.from_settings}
    )
    return build_hub(settings, audit=Audit([audit_log.append]), connector_types=types, clock=clock)


@pytest.fixture
async def client(otp_hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    from federation.web.app import create_app

    transport = httpx.ASGITransport(app=create_app(hub=otp_hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


async def to_email_page(client: httpx.AsyncClient, email: str, rd: str = "/") -> httpx.Response:
    page = await client.get("/login", params={"rd": rd})
    to_otp = await client.post("/login", data={**hidden_fields(page.text), "email": email})
    assert to_otp.status_code == 303, to_otp.text
    location = urlsplit(to_otp.headers["location"])
    assert location.path == "/otp/acme-otp"
    return await client.get(f"{location.path}?{location.query}")


async def ask_code(client: httpx.AsyncClient, email: str) -> httpx.Response:
    page = await to_email_page(client, email)
    assert page.status_code == 200, page.text
    return await client.post(
        "/otp/acme-otp/send", data={**hidden_fields(page.text), "email": email}
    )


def mailed_code(sink: SmtpSink, to: str) -> str:
    messages = sink.to(to)
    assert len(messages) == 1
    match = re.search(r"code is (\d{6})", str(messages[0].get_content()))
    assert match
    assert messages[0]["From"] == "hub@isthmus.test"
    return match.group(1)


async def enter(client: httpx.AsyncClient, page: httpx.Response, code: str) -> httpx.Response:
    return await client.post(
        "/otp/acme-otp/verify", data={**hidden_fields(page.text), "code": code}
    )


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_a_mailed_code_opens_a_session(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, audit_log: list[dict[str, Any]]
) -> None:
    page = await client.get("/login", params={"rd": "/after"})
    to_otp = await client.post(
        "/login", data={**hidden_fields(page.text), "email": "Bob@ACME.example"}
    )
    email_page = await client.get(to_otp.headers["location"])
    assert 'value="Bob@ACME.example"' in email_page.text
    code_page = await client.post(
        "/otp/acme-otp/send", data={**hidden_fields(email_page.text), "email": "Bob@ACME.example"}
    )
    assert code_page.status_code == 200 and "Check your email" in code_page.text

    back = await enter(client, code_page, mailed_code(smtp_sink, "bob@acme.example"))
    assert back.status_code == 303
    callback = urlsplit(back.headers["location"])
    assert callback.path == "/callback/acme-otp"
    done = await client.get(back.headers["location"])
    assert done.status_code == 303 and done.headers["location"] == "/after"
    home = await client.get("/")
    assert "bob@acme.example" in home.text and "Acme Inc" in home.text
    succeeded = [e for e in audit_log if e["event"] == "login.succeeded"]
    assert succeeded[-1]["issuer"] == "otp:acme-otp"
    assert succeeded[-1]["email"] == "bob@acme.example"
    assert [e["event"] for e in audit_log if e["event"].startswith("otp.")] == [
        "otp.sent",
        "otp.verified",
    ]


async def test_a_used_code_does_not_sign_in_again(
    client: httpx.AsyncClient, smtp_sink: SmtpSink
) -> None:
    code_page = await ask_code(client, "bob@acme.example")
    code = mailed_code(smtp_sink, "bob@acme.example")
    assert (await enter(client, code_page, code)).status_code == 303
    again = await enter(client, code_page, code)
    assert again.status_code in (400, 404)  # the flow is spent or the code is gone
    assert "/callback/" not in again.headers.get("location", "")


async def test_an_expired_code_is_refused(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, clock: Clock
) -> None:
    code_page = await ask_code(client, "bob@acme.example")
    clock.now += 301
    refused = await enter(client, code_page, mailed_code(smtp_sink, "bob@acme.example"))
    assert refused.status_code == 400
    assert "expired" in refused.text


async def test_an_address_outside_the_domains_sees_the_same_page_and_gets_no_mail(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, audit_log: list[dict[str, Any]]
) -> None:
    allowed = await ask_code(client, "bob@acme.example")
    page = await to_email_page(client, "bob@acme.example")
    outside = await client.post(
        "/otp/acme-otp/send", data={**hidden_fields(page.text), "email": "eve@globex.example"}
    )
    assert outside.status_code == allowed.status_code == 200

    def strip(html: str) -> str:
        # Only the flow's own values differ: its state, the address typed, the request id.
        noise = r'(value|href)="[^"]*"|<code id="request-id">\w+</code>|\w+@\w+\.example'
        return re.sub(noise, "", html)

    assert strip(outside.text) == strip(allowed.text)
    assert smtp_sink.to("eve@globex.example") == []
    refused = [e for e in audit_log if e["event"] == "otp.refused"]
    assert refused[-1]["reason"] == "outside_domains"
    assert refused[-1]["email"] == "eve@globex.example"
    no_code = await enter(client, outside, "123456")
    assert no_code.status_code == 400


async def test_wrong_codes_burn_the_code(client: httpx.AsyncClient, smtp_sink: SmtpSink) -> None:
    code_page = await ask_code(client, "bob@acme.example")
    code = mailed_code(smtp_sink, "bob@acme.example")
    for _ in range(2):
        refused = await enter(client, code_page, wrong(code))
        assert refused.status_code == 400 and "wrong code" in refused.text
    burnt = await enter(client, code_page, wrong(code))
    assert "burnt" in burnt.text
    too_late = await enter(client, code_page, code)
    assert too_late.status_code == 400 and "/callback/" not in too_late.headers.get("location", "")


async def test_brute_force_beyond_the_ip_limit_is_refused(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, audit_log: list[dict[str, Any]]
) -> None:
    """One source IP, many addresses and guesses: 12 sends and guesses, then 429."""
    statuses = []
    for i in range(8):
        code_page = await ask_code(client, f"bob{i}@acme.example")
        statuses.append(code_page.status_code)
        if code_page.status_code != 200:
            break
        statuses.append((await enter(client, code_page, "000000")).status_code)
    assert statuses == [200, 400] * 6 + [429]
    assert "too many attempts from this network" in code_page.text
    assert len(smtp_sink.messages) == 6
    limited = [e for e in audit_log if e.get("reason") == "rate_limited"]
    assert limited[-1]["email"] == "bob6@acme.example"


async def test_sends_beyond_the_address_limit_are_refused(
    client: httpx.AsyncClient, smtp_sink: SmtpSink
) -> None:
    for _ in range(3):
        assert (await ask_code(client, "bob@acme.example")).status_code == 200
    refused = await ask_code(client, "bob@acme.example")
    assert refused.status_code == 429
    assert "too many codes sent to this address" in refused.text
    assert len(smtp_sink.to("bob@acme.example")) == 3


async def test_a_code_from_another_flow_is_refused(
    client: httpx.AsyncClient, smtp_sink: SmtpSink
) -> None:
    await ask_code(client, "bob@acme.example")
    code = mailed_code(smtp_sink, "bob@acme.example")
    other_page = await to_email_page(client, "bob@acme.example")  # a second flow, no code sent
    other = hidden_fields(other_page.text)
    refused = await client.post(
        "/otp/acme-otp/verify", data={**other, "email": "bob@acme.example", "code": code}
    )
    assert refused.status_code == 400


async def test_forms_need_the_csrf_token(client: httpx.AsyncClient, smtp_sink: SmtpSink) -> None:
    page = await to_email_page(client, "bob@acme.example")
    fields = {**hidden_fields(page.text), "email": "bob@acme.example", "csrf": "x" * 43}
    refused = await client.post("/otp/acme-otp/send", data=fields)
    assert refused.status_code == 403
    assert smtp_sink.messages == []


async def test_pages_belong_to_the_browser_that_started_the_flow(
    client: httpx.AsyncClient, otp_hub: Hub
) -> None:
    page = await to_email_page(client, "bob@acme.example")
    state = hidden_fields(page.text)["state"]
    from federation.web.app import create_app

    transport = httpx.ASGITransport(app=create_app(hub=otp_hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as stranger:
        refused = await stranger.get("/otp/acme-otp", params={"state": state})
    assert refused.status_code == 400
    unknown = await client.get("/otp/acme-otp", params={"state": "nope"})
    assert unknown.status_code == 400


async def test_an_unreachable_smtp_server_is_an_upstream_error(
    otp_hub: Hub, audit_log: list[dict[str, Any]]
) -> None:
    from federation.web.app import create_app

    closed = free_port()  # nothing listens there
    settings = otp_hub.settings.model_copy(
        update={"smtp": otp_hub.settings.smtp.model_copy(update={"port": closed})}
    )
    types = ConnectorRegistry(
        {"mock": MockConnector.from_settings, "otp": OtpConnector.from_settings}
    )
    hub = build_hub(settings, audit=Audit([audit_log.append]), connector_types=types)
    transport = httpx.ASGITransport(app=create_app(hub=hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        page = await to_email_page(http, "bob@acme.example")
        failed = await http.post(
            "/otp/acme-otp/send",
            data={**hidden_fields(page.text), "email": "bob@acme.example"},
            headers={"accept": "application/json"},
        )
    assert failed.status_code == 502
    assert failed.json()["error"] == "upstream_error"

"""Flow: a partner without SSO signs in with the link mailed (through a real SMTP server)
beside the one-time code — only in the browser that started the sign-in, once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connectors.mock import MockConnector
from connectors.otp import OtpConnector
from connectors.registry import ConnectorRegistry
from federation.audit import Audit
from federation.hub import Hub, build_hub
from tests.broker.conftest import BASE, hub_settings, mock_partner
from tests.broker.test_mock_partner_to_hub_session import hidden_fields
from tests.broker.test_otp_partner_to_hub_session import Clock, ask_code, enter, mailed_code
from tests.peers.smtp import SmtpSink


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def otp_hub(audit_log: list[dict[str, Any]], smtp_sink: SmtpSink, clock: Clock) -> Hub:
    partner = {
        **mock_partner("acme", "supplier", "acme.example"),
        "connections": [{"type": "otp", "id": "acme-otp", "max_wrong_codes": 3}],
    }
    settings = hub_settings(
        partners=[partner],
        smtp={"host": smtp_sink.host, "port": smtp_sink.port, "from_address": "hub@isthmus.test"},
    )
    types = ConnectorRegistry(
        {"mock": MockConnector.from_settings, "otp": OtpConnector.from_settings}
    )
    return build_hub(settings, audit=Audit([audit_log.append]), connector_types=types, clock=clock)


@pytest.fixture
async def client(otp_hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(otp_hub) as http:
        yield http


def browser(hub: Hub) -> httpx.AsyncClient:
    """Another browser: its own cookie jar, the same hub."""
    from federation.web.app import create_app

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub=hub)), base_url=BASE)


def mailed_link(sink: SmtpSink, to: str) -> str:
    """The link in the mail, as a path and query on the hub."""
    [message] = sink.to(to)
    match = re.search(r"(http\S+/link\?\S+)", str(message.get_content()))
    assert match
    url = urlsplit(match.group(1))
    assert f"{url.scheme}://{url.netloc}" == BASE and url.path == "/otp/acme-otp/link"
    assert set(parse_qs(url.query)) == {"state", "t"}
    return f"{url.path}?{url.query}"


def with_token(link: str, token: str) -> str:
    return re.sub(r"t=[^&]+", f"t={token}", link)


async def follow_to_session(client: httpx.AsyncClient, back: httpx.Response) -> str:
    """Follow the verified page's redirect through the callback; the home page's text."""
    assert back.status_code == 303, back.text
    assert urlsplit(back.headers["location"]).path == "/callback/acme-otp"
    done = await client.get(back.headers["location"])
    assert done.status_code == 303, done.text
    return (await client.get("/")).text


def otp_events(audit_log: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [
        (e["event"], e.get("method"), e.get("reason"))
        for e in audit_log
        if e["event"].startswith("otp.")
    ]


async def test_the_mailed_link_signs_in_after_continue(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, audit_log: list[dict[str, Any]]
) -> None:
    await ask_code(client, "bob@acme.example")
    page = await client.get(mailed_link(smtp_sink, "bob@acme.example"))
    assert page.status_code == 200
    assert "Continue signing in as bob@acme.example" in page.text
    assert page.headers["cache-control"] == "no-store"
    fields = hidden_fields(page.text)
    assert set(fields) == {"csrf", "state", "t"}
    home = await follow_to_session(client, await client.post("/otp/acme-otp/link", data=fields))
    assert "bob@acme.example" in home and "Acme Inc" in home
    succeeded = [e for e in audit_log if e["event"] == "login.succeeded"]
    assert succeeded[-1]["issuer"] == "otp:acme-otp"
    assert otp_events(audit_log) == [("otp.sent", None, None), ("otp.verified", "link", None)]
    verified = [e for e in audit_log if e["event"] == "otp.verified"]
    assert verified[-1]["email"] == "bob@acme.example"


async def test_opening_the_link_does_not_use_it_up(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, audit_log: list[dict[str, Any]]
) -> None:
    """Mail scanners and previews open links: a GET, however often, uses nothing."""
    code_page = await ask_code(client, "bob@acme.example")
    link = mailed_link(smtp_sink, "bob@acme.example")
    for _ in range(3):
        assert (await client.get(link)).status_code == 200
    # Neither the link nor the code is spent: the code still signs in (and then the link
    # is spent with it).
    back = await enter(client, code_page, mailed_code(smtp_sink, "bob@acme.example"))
    assert "bob@acme.example" in await follow_to_session(client, back)
    assert ("otp.verified", "code", None) in otp_events(audit_log)
    assert (await client.get(link)).status_code == 400


async def test_a_used_link_is_refused_with_a_way_to_start_again(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, audit_log: list[dict[str, Any]]
) -> None:
    await ask_code(client, "bob@acme.example")
    link = mailed_link(smtp_sink, "bob@acme.example")
    fields = hidden_fields((await client.get(link)).text)
    await follow_to_session(client, await client.post("/otp/acme-otp/link", data=fields))

    again = await client.get(link)
    assert again.status_code == 400
    assert "This sign-in link cannot be used" in again.text
    assert "expired or was already used" in again.text
    assert 'href="/login" id="start-again"' in again.text
    request_id = again.headers["x-request-id"]
    assert f'<code id="request-id">{request_id}</code>' in again.text
    replayed = await client.post("/otp/acme-otp/link", data=fields)
    assert replayed.status_code == 400 and "location" not in replayed.headers
    assert otp_events(audit_log)[-2:] == [
        ("otp.refused", "link", "expired_or_used"),
        ("otp.refused", "link", "expired_or_used"),
    ]


async def test_the_link_is_refused_once_the_code_was_used(
    client: httpx.AsyncClient, smtp_sink: SmtpSink
) -> None:
    code_page = await ask_code(client, "bob@acme.example")
    link = mailed_link(smtp_sink, "bob@acme.example")
    back = await enter(client, code_page, mailed_code(smtp_sink, "bob@acme.example"))
    assert back.status_code == 303  # verified; the callback has not even run yet
    refused = await client.get(link)
    assert refused.status_code == 400 and "already used" in refused.text


async def test_an_expired_link_is_refused(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, clock: Clock, audit_log: list[dict[str, Any]]
) -> None:
    await ask_code(client, "bob@acme.example")
    link = mailed_link(smtp_sink, "bob@acme.example")
    fields = hidden_fields((await client.get(link)).text)
    clock.now += 301  # the code's TTL (300 s); the sign-in itself lasts longer
    expired = await client.get(link)
    assert expired.status_code == 400 and "expired" in expired.text
    # The sign-in is still on: starting again asks for a new code in the same flow.
    state = parse_qs(urlsplit(link).query)["state"][0]
    assert f'href="/otp/acme-otp?state={state}" id="start-again"' in expired.text
    late = await client.post("/otp/acme-otp/link", data=fields)
    assert late.status_code == 400 and "location" not in late.headers
    assert otp_events(audit_log)[-1] == ("otp.refused", "link", "expired_or_used")


async def test_another_browser_cannot_use_the_link_and_gets_no_session(
    client: httpx.AsyncClient,
    otp_hub: Hub,
    smtp_sink: SmtpSink,
    audit_log: list[dict[str, Any]],
) -> None:
    """Login CSRF: a link mailed for one sign-in, opened anywhere else (another device, a
    victim sent the attacker's link), signs nobody in there."""
    await ask_code(client, "bob@acme.example")
    link = mailed_link(smtp_sink, "bob@acme.example")
    fields = hidden_fields((await client.get(link)).text)
    async with browser(otp_hub) as other:
        shown = await other.get(link)
        assert shown.status_code == 403
        assert "Open this link where you started signing in" in shown.text
        assert "bob@acme.example" not in shown.text and 'name="t"' not in shown.text
        # Even with every field of the real page and a CSRF pair of its own, no session.
        own = hidden_fields((await other.get("/login")).text)["csrf"]
        posted = await other.post("/otp/acme-otp/link", data={**fields, "csrf": own})
        assert posted.status_code == 403 and "location" not in posted.headers
        # A browser in a sign-in of its own is no better.
        await ask_code(other, "bob@acme.example")
        assert (await other.get(link)).status_code == 403
        assert "bob@acme.example" not in (await other.get("/")).text
        assert otp_hub.settings.session.cookie_name not in other.cookies
    assert [e for e in otp_events(audit_log) if e[2] == "other_browser"] == [
        ("otp.refused", "link", "other_browser")
    ] * 3
    # The strangers burnt nothing: in the browser that asked for it the link still works.
    back = await client.post("/otp/acme-otp/link", data=fields)
    assert "bob@acme.example" in await follow_to_session(client, back)


async def test_wrong_tokens_burn_the_link_and_the_code(
    client: httpx.AsyncClient, smtp_sink: SmtpSink, audit_log: list[dict[str, Any]]
) -> None:
    code_page = await ask_code(client, "bob@acme.example")
    link = mailed_link(smtp_sink, "bob@acme.example")
    fields = hidden_fields((await client.get(link)).text)
    for _ in range(2):
        refused = await client.get(with_token(link, "A" * 43))
        assert refused.status_code == 400 and "not valid" in refused.text
    burnt = await client.post("/otp/acme-otp/link", data={**fields, "t": "B" * 43})
    assert burnt.status_code == 400 and "burnt" in burnt.text
    state = fields["state"]
    assert f'href="/otp/acme-otp?state={state}&amp;email=bob%40acme.example"' in burnt.text
    assert [e[2] for e in otp_events(audit_log) if e[0] == "otp.refused"] == [
        "wrong",
        "wrong",
        "burnt",
    ]
    assert (await client.get(link)).status_code == 400
    too_late = await client.post("/otp/acme-otp/link", data=fields)
    assert too_late.status_code == 400 and "location" not in too_late.headers
    code = await enter(client, code_page, mailed_code(smtp_sink, "bob@acme.example"))
    assert code.status_code == 400 and "location" not in code.headers


async def test_continue_needs_the_csrf_token(
    client: httpx.AsyncClient, smtp_sink: SmtpSink
) -> None:
    await ask_code(client, "bob@acme.example")
    fields = hidden_fields((await client.get(mailed_link(smtp_sink, "bob@acme.example"))).text)
    forged = await client.post("/otp/acme-otp/link", data={**fields, "csrf": "x" * 43})
    assert forged.status_code == 403
    back = await client.post("/otp/acme-otp/link", data=fields)  # the link survived
    assert "bob@acme.example" in await follow_to_session(client, back)


async def test_the_code_page_mentions_the_link(
    client: httpx.AsyncClient, smtp_sink: SmtpSink
) -> None:
    code_page = await ask_code(client, "bob@acme.example")
    assert "The email also holds a sign-in link" in code_page.text
    [message] = smtp_sink.to("bob@acme.example")
    assert "in the browser where you asked for the code" in str(message.get_content())

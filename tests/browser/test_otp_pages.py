"""The one-time-code pages in chromium: email, the mailed code (a real SMTP server), refusal."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.mock import MockConnector
from connectors.otp import OtpConnector
from connectors.registry import ConnectorRegistry
from federation.hub import build_hub
from federation.web.app import create_app
from tests.broker.conftest import hub_settings, mock_partner
from tests.peers.asgi import serving
from tests.peers.common import free_port
from tests.peers.smtp import SmtpSink

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def hub_url(smtp_server: SmtpSink) -> Iterator[str]:
    port = free_port()
    partner = {
        **mock_partner("acme", "supplier", "acme.example"),
        "connections": [{"type": "otp", "id": "acme-otp", "display_name": "Acme by email"}],
    }
    settings = hub_settings(
        issuer=f"http://127.0.0.1:{port}",
        partners=[partner],
        smtp={"host": smtp_server.host, "port": smtp_server.port},
    )
    types = ConnectorRegistry(
        {"mock": MockConnector.from_settings, "otp": OtpConnector.from_settings}
    )
    with serving(create_app(hub=build_hub(settings, connector_types=types)), port=port) as url:
        yield url


def code_for(sink: SmtpSink, to: str) -> str:
    [message] = sink.to(to)
    match = re.search(r"code is (\d{6})", str(message.get_content()))
    assert match
    return match.group(1)


def ask_for_a_code(page: Any, hub_url: str, email: str) -> None:
    page.goto(f"{hub_url}/login")
    page.get_by_label("Work email").fill(email)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Sign in with a one-time code").wait_for()
    assert page.get_by_label("Work email").input_value() == email  # carried over
    page.get_by_role("button", name="Email me a code").click()
    page.get_by_role("heading", name="Check your email").wait_for()


def test_sign_in_with_a_mailed_code(page: Any, hub_url: str, smtp_sink: SmtpSink) -> None:
    ask_for_a_code(page, hub_url, "carol@acme.example")
    code = page.get_by_label("Code")
    assert code.get_attribute("autocomplete") == "one-time-code"
    code.fill(code_for(smtp_sink, "carol@acme.example"))
    code.press("Enter")
    page.get_by_role("heading", name="You are signed in").wait_for()
    assert page.locator("#email").inner_text() == "carol@acme.example"
    assert page.locator("#partner").inner_text() == "Acme Inc"


def test_a_wrong_code_is_explained_next_to_the_field(
    page: Any, hub_url: str, smtp_sink: SmtpSink
) -> None:
    ask_for_a_code(page, hub_url, "dan@acme.example")
    right = code_for(smtp_sink, "dan@acme.example")
    page.get_by_label("Code").fill(f"{(int(right) + 1) % 1_000_000:06d}")
    page.get_by_role("button", name="Sign in").click()
    assert "wrong code" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Code").get_attribute("aria-invalid") == "true"
    page.get_by_label("Code").fill(right)  # the code survives one wrong guess
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="You are signed in").wait_for()


def test_an_address_outside_the_domains_gets_the_same_page_and_no_mail(
    page: Any, hub_url: str, smtp_sink: SmtpSink
) -> None:
    page.goto(f"{hub_url}/login")
    page.get_by_label("Work email").fill("frank@acme.example")
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Work email").fill("frank@elsewhere.example")
    page.get_by_role("button", name="Email me a code").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    assert "frank@elsewhere.example" in page.locator("#sent").inner_text()
    assert smtp_sink.messages == []


def link_for(sink: SmtpSink, to: str) -> str:
    [message] = sink.to(to)
    match = re.search(r"(http\S+/otp/acme-otp/link\?\S+)", str(message.get_content()))
    assert match
    return match.group(1)


def test_sign_in_with_the_mailed_link(page: Any, hub_url: str, smtp_sink: SmtpSink) -> None:
    ask_for_a_code(page, hub_url, "gina@acme.example")
    page.goto(link_for(smtp_sink, "gina@acme.example"))  # the mail opened in this browser
    page.get_by_role("heading", name="Continue signing in as gina@acme.example").wait_for()
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="You are signed in").wait_for()
    assert page.locator("#email").inner_text() == "gina@acme.example"
    assert page.locator("#partner").inner_text() == "Acme Inc"


def test_the_link_in_another_browser_signs_nobody_in(
    page: Any, browser: Any, hub_url: str, smtp_sink: SmtpSink
) -> None:
    ask_for_a_code(page, hub_url, "hal@acme.example")
    link = link_for(smtp_sink, "hal@acme.example")
    other = browser.new_context().new_page()
    try:
        other.goto(link)
        other.get_by_role("heading", name="Open this link where you started signing in").wait_for()
        assert other.get_by_role("button", name="Continue").count() == 0
        other.goto(f"{hub_url}/")
        other.get_by_role("heading", name="Welcome to the extranet").wait_for()
        assert other.get_by_role("heading", name="You are signed in").count() == 0
    finally:
        other.context.close()
    page.goto(link)  # where the sign-in started, it still works
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="You are signed in").wait_for()

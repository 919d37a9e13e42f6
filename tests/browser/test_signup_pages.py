"""The sign-up pages and the console's request pages in chromium: the form and its
field-level problems, the mailed confirmation link (a real SMTP server), the sponsor
approving in the console, the domain step, and another staff member's 403."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.mock import MockConnector
from connectors.otp import OtpConnector
from connectors.registry import ConnectorRegistry
from federation.hub import build_hub
from federation.settings import Settings
from federation.web.app import create_app
from tests.browser.test_console import browser_sign_in
from tests.peers.asgi import serving
from tests.peers.common import free_port
from tests.peers.smtp import SmtpSink

pytestmark = pytest.mark.browser


def _user(subject: str) -> dict[str, Any]:
    return {"subject": subject, "email": f"{subject}@corp.example", "name": subject.title()}


@pytest.fixture(scope="module")
def hub_url(smtp_server: SmtpSink) -> Iterator[str]:
    port = free_port()
    settings = Settings(
        issuer=f"http://127.0.0.1:{port}",
        allow_insecure_http=True,
        allow_mock_connections=True,
        smtp={"host": smtp_server.host, "port": smtp_server.port},
        signup={"enabled": True, "apps": ["orders", "billing"]},
        partners=[
            {"id": "corp", "name": "Corp", "kind": "internal", "status": "active",
             "domains": ["corp.example"],
             "connections": [{"type": "mock", "id": "corp-mock",
                              "users": [_user("carl"), _user("dana")]}]},
        ],
        apps=[
            {"id": "orders", "name": "Orders", "path_prefix": "/orders",
             "upstreams": ["http://127.0.0.1:9"]},
            {"id": "billing", "name": "Billing", "path_prefix": "/billing",
             "upstreams": ["http://127.0.0.1:9"]},
        ],
    )  # fmt: skip
    types = ConnectorRegistry(
        {"mock": MockConnector.from_settings, "otp": OtpConnector.from_settings}
    )
    with serving(create_app(hub=build_hub(settings, connector_types=types)), port=port) as url:
        yield url


def link_in(sink: SmtpSink, to: str, path: str) -> str:
    bodies = "\n".join(str(m.get_content()) for m in sink.to(to))
    found = re.findall(rf"http://[^\s]+{re.escape(path)}[^\s]*", bodies)
    assert found, bodies
    return str(found[-1])


def fill_the_form(page: Any, hub_url: str, email: str, sponsor: str) -> None:
    page.goto(f"{hub_url}/signup")
    page.get_by_role("heading", name="Ask for access").wait_for()
    page.get_by_label("Your name").fill("Zoe Newman")
    page.get_by_label("Work email").fill(email)
    page.get_by_label("Company").fill("NewCo")
    page.get_by_label("Sponsor's email").fill(sponsor)
    page.get_by_label("Orders").check()
    page.get_by_label("Message to your sponsor (optional)").fill("Spring project")
    page.get_by_role("button", name="Ask for access").click()


def test_a_problem_is_shown_next_to_its_field_and_the_input_kept(
    page: Any, hub_url: str, smtp_sink: SmtpSink
) -> None:
    fill_the_form(page, hub_url, "zoe@gmail.com", "someone@elsewhere.example")
    page.get_by_role("alert").wait_for()
    email = page.get_by_label("Work email")
    assert email.get_attribute("aria-invalid") == "true"
    assert "cannot be used" in page.locator("#f-email-error").inner_text()
    assert "one of our staff" in page.locator("#f-sponsor-error").inner_text()
    assert email.input_value() == "zoe@gmail.com"
    assert page.get_by_label("Orders").is_checked()
    assert smtp_sink.messages == []


def test_sign_up_then_the_sponsor_approves_in_the_console(
    browser: Any, page: Any, hub_url: str, smtp_sink: SmtpSink
) -> None:
    fill_the_form(page, hub_url, "zoe@newco.example", "carl@corp.example")
    page.get_by_role("heading", name="Check your email").wait_for()
    assert "zoe@newco.example" in page.locator("#sent").inner_text()

    page.goto(link_in(smtp_sink, "zoe@newco.example", "/signup/confirm"))
    assert "NewCo" in page.locator("#request").inner_text()
    page.get_by_role("button", name="Send my request to carl@corp.example").click()
    page.get_by_role("heading", name="Your request is waiting for your sponsor").wait_for()

    request_url = link_in(smtp_sink, "carl@corp.example", "/admin/requests/")
    # another member of staff: the request is not theirs to see or decide
    other = browser.new_context().new_page()
    browser_sign_in(other, request_url, "dana@corp.example", "Dana")
    other.get_by_role("heading", name="Access denied").wait_for()
    assert "Only the sponsor" in other.locator("#error-message").inner_text()
    other.goto(f"{hub_url}/admin/requests")
    assert other.locator("#request-count").inner_text() == "0 requests."
    other.context.close()

    sponsor = browser.new_context().new_page()
    browser_sign_in(sponsor, request_url, "carl@corp.example", "Carl")
    sponsor.get_by_role("heading", name="Zoe Newman").wait_for()
    assert sponsor.locator("#request-sponsor").inner_text() == "carl@corp.example"
    assert sponsor.get_by_label("Orders").is_checked()
    assert not sponsor.get_by_label("Billing").is_visible()  # not asked for
    sponsor.get_by_label("Note (optional)").fill("for the spring project")
    sponsor.get_by_role("button", name="Approve").click()
    sponsor.get_by_role("status").filter(has_text="Approved.").wait_for()
    assert "approved" in sponsor.locator("#request-status").inner_text()
    assert "waiting for its DNS proof" in sponsor.locator("#request-partner").inner_text()
    assert sponsor.get_by_role("button", name="Approve").count() == 0  # decided: no form
    sponsor.goto(f"{hub_url}/admin/requests")
    assert sponsor.locator("#requests tbody tr").count() == 1
    sponsor.context.close()

    page.goto(link_in(smtp_sink, "zoe@newco.example", "/domain"))
    page.get_by_role("heading", name="Prove your company's domain").wait_for()
    assert page.locator("#record-name").inner_text() == "_isthmus-challenge.newco.example"
    assert page.locator("#record-value").inner_text().startswith("isthmus-domain-verification=")
    page.get_by_role("button", name="Check now").wait_for()

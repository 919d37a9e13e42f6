"""The login pages in a real browser: keyboard only, messages, choice, error page, sign-out."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.hub import build_hub
from federation.web.app import create_app
from tests.broker.conftest import hub_settings
from tests.peers.asgi import serving
from tests.peers.common import free_port

pytestmark = pytest.mark.browser
# ISTHMUS_SCREENSHOTS=docs/screenshots refreshes the pictures in the docs.
SHOTS = Path(os.environ.get("ISTHMUS_SCREENSHOTS", Path(tempfile.gettempdir()) / "isthmus-shots"))


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    port = free_port()
    settings = hub_settings(issuer=f"http://127.0.0.1:{port}")
    with serving(create_app(hub=build_hub(settings)), port=port) as url:
        yield url


def test_sign_in_with_the_keyboard_and_sign_out(page: Any, hub_url: str) -> None:
    page.goto(f"{hub_url}/login")
    email = page.get_by_label("Work email")
    email.fill("alice@acme.example")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "login.png"))
    email.press("Enter")
    page.get_by_role("button", name="Alice <alice@acme.example>").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="You are signed in").wait_for()
    assert page.locator("#email").inner_text() == "alice@acme.example"
    assert page.locator("#partner").inner_text() == "Acme Inc"
    page.get_by_role("link", name="Sign out").click()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="You are signed out").wait_for()
    page.goto(hub_url)
    page.get_by_role("heading", name="Welcome to the extranet").wait_for()


def test_unknown_domain_is_explained_next_to_the_field(page: Any, hub_url: str) -> None:
    page.goto(f"{hub_url}/login")
    page.get_by_label("Work email").fill("bob@nowhere.example")
    page.get_by_role("button", name="Continue").click()
    alert = page.get_by_role("alert")
    assert "nowhere.example" in alert.inner_text()
    assert page.get_by_label("Work email").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Work email").input_value() == "bob@nowhere.example"


def test_partner_with_two_connections_offers_a_choice(page: Any, hub_url: str) -> None:
    page.goto(f"{hub_url}/login")
    page.get_by_label("Work email").fill("alice@globex.example")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Choose how to sign in").wait_for()
    page.screenshot(path=str(SHOTS / "choose.png"))
    page.get_by_role("button", name="Globex sign-in 2").click()
    page.get_by_role("heading", name="Globex Inc — demo sign-in").wait_for()
    assert "/mock/globex-mock1" in page.url


def test_error_page_shows_a_message_and_the_request_id(page: Any, hub_url: str) -> None:
    response = page.goto(f"{hub_url}/callback/acme-mock?state=forged&user=alice")
    assert response is not None and response.status == 400
    assert "expired or was already used" in page.get_by_role("alert").inner_text()
    assert page.locator("#request-id").inner_text() == response.headers["x-request-id"]
    page.screenshot(path=str(SHOTS / "error.png"))
    page.get_by_role("link", name="Start again").click()
    page.get_by_label("Work email").wait_for()

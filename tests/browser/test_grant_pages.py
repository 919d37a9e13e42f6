"""The grant pages of the console in chromium, as a sponsor: sign in, grant a person named
by email an app until a date, see it listed (and on the partner's page), revoke it; a date
in the past is refused next to its field.

``ISTHMUS_SCREENSHOTS`` saves ``console-grants.png`` and ``console-grant-form.png`` (see
tests/browser/test_console.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from federation.hub import build_hub
from federation.settings import Settings
from federation.web.app import create_app
from tests.browser.test_console import browser_sign_in, shot
from tests.peers.asgi import serving
from tests.peers.common import free_port

pytestmark = pytest.mark.browser
GRANTED = {"rules": [{"name": "project", "effect": "allow", "when": {"grant": "valid"}}]}


def _partner(pid: str, name: str, kind: str, users: list[dict[str, Any]], **extra: Any) -> Any:
    return {"id": pid, "name": name, "kind": kind, "status": "active",
            "domains": [f"{pid}.example"],
            "connections": [{"type": "mock", "id": f"{pid}-mock", "users": users}],
            **extra}  # fmt: skip


def grant_settings(issuer: str) -> Settings:
    initech = [
        {"subject": "erin", "email": "erin@initech.example", "name": "Erin",
         "roles": ["isthmus-admin"]},
        {"subject": "ian", "email": "ian@initech.example", "name": "Ian"},
    ]  # fmt: skip
    acme = [{"subject": "alice", "email": "alice@acme.example", "name": "Alice"}]
    globex = [{"subject": "carol", "email": "carol@globex.example", "name": "Carol"}]
    return Settings(
        issuer=issuer,
        allow_insecure_http=True,
        allow_mock_connections=True,
        partners=[
            _partner("initech", "Initech", "internal", initech),
            _partner("acme", "ACME Supplies", "supplier", acme, sponsors=["ian@initech.example"]),
            _partner("globex", "Globex", "customer", globex),
        ],
        apps=[_app("orders", "Orders"), _app("billing", "Billing")],
    )


def _app(app_id: str, name: str) -> dict[str, Any]:
    return {"id": app_id, "name": name, "path_prefix": f"/{app_id}",
            "upstreams": ["http://127.0.0.1:9"], "policy": GRANTED}  # fmt: skip


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    port = free_port()
    settings = grant_settings(f"http://127.0.0.1:{port}")
    with serving(create_app(hub=build_hub(settings)), port=port) as url:
        yield url


def day(days: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


def test_a_sponsor_grants_an_app_until_a_date_and_revokes_it(page: Any, hub_url: str) -> None:
    browser_sign_in(page, f"{hub_url}/admin/", "ian@initech.example", "Ian")
    assert page.locator("#actor-role").inner_text() == "sponsor"
    assert page.locator("#partners tbody tr").count() == 1  # the partner naming them
    page.get_by_role("link", name="ACME Supplies").click()
    page.get_by_role("heading", name="ACME Supplies (acme)", level=1).wait_for()
    assert page.locator("#grant-count").inner_text() == "0 active grants."
    page.get_by_role("link", name="Grant access to apps").click()
    page.get_by_role("heading", name="Grant access", level=1).wait_for()

    partner = page.get_by_label("Partner", exact=True)
    assert partner.input_value() == "acme"  # chosen from the partner page
    assert partner.locator("option").all_inner_texts() == ["Choose a partner", "ACME Supplies"]
    assert page.get_by_label("One person, by email").is_checked()
    page.get_by_label("Person's work email").fill("alice@acme.example")
    page.get_by_label("Orders").check()
    page.get_by_label("Access ends on").fill(day(-1))
    page.get_by_label("Reason").fill("tender 42")
    page.get_by_role("button", name="Grant access").click()

    # The date in the past: refused by its field, the input kept.
    summary = page.get_by_role("alert")
    assert "Access ends on:" in summary.inner_text() and "has passed" in summary.inner_text()
    until = page.get_by_label("Access ends on")
    assert until.get_attribute("aria-invalid") == "true"
    assert "has passed" in page.locator("#f-until-error").inner_text()
    assert page.get_by_label("Person's work email").input_value() == "alice@acme.example"
    assert page.get_by_label("Orders").is_checked()
    shot(page, "grant-form")

    until.fill(day(14))
    page.get_by_role("button", name="Grant access").click()
    page.get_by_role("heading", name="Grants", level=1).wait_for()
    assert page.locator("#notice").inner_text().startswith("Access granted (grant g-")
    rows = page.locator("#grants tbody tr")
    assert rows.count() == 1
    cells = rows.first.locator("td").all_inner_texts()
    assert rows.first.locator("th").inner_text().startswith("alice@acme.example")
    assert cells[:6] == ["ACME Supplies", "orders", day(0), day(14), "active",
                         "ian@initech.example (initech)"]  # fmt: skip
    shot(page, "grants")

    page.get_by_role("link", name="ACME Supplies").click()
    assert page.locator("#grant-count").inner_text() == "1 active grant."
    page.get_by_role("link", name="Grants of ACME Supplies").click()
    page.get_by_role("button", name="Revoke the grant of alice@acme.example (orders)").click()
    assert "was revoked" in page.locator("#notice").inner_text()
    assert page.locator("#grant-count").inner_text() == "0 grants of acme."


def test_an_admin_grants_everyone_at_a_partner(page: Any, hub_url: str) -> None:
    """Admins grant for any partner; 'everyone at' is a choice, never an empty field."""
    browser_sign_in(page, f"{hub_url}/admin/grants/new", "erin@initech.example", "Erin")
    partner = page.get_by_label("Partner", exact=True)
    assert partner.locator("option").all_inner_texts() == [
        "Choose a partner", "ACME Supplies", "Globex", "Initech"]  # fmt: skip
    partner.select_option("globex")
    page.get_by_role("button", name="Grant access").click()  # no email, no app, no date
    errors = page.locator(".field-error").all_inner_texts()
    assert len(errors) == 3
    page.get_by_label("Everyone at the partner").check()
    page.get_by_label("Orders").check()
    page.get_by_label("Billing").check()
    page.get_by_label("Access ends on").fill(day(400))  # admins are not held to 365 days
    page.get_by_role("button", name="Grant access").click()
    row = page.locator("#grants tbody tr").first
    assert row.locator("th").inner_text() == "everyone at Globex"
    assert row.locator("td").nth(1).inner_text().split() == ["billing", "orders"]
    revoke = "Revoke the grant of everyone at Globex (billing, orders)"
    row.get_by_role("button", name=revoke).click()
    assert page.locator("#grant-count").inner_text() == "0 grants of globex."

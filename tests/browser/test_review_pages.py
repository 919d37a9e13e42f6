"""The access-review pages in chromium: a sponsor signs in, opens the review from the
list, confirms one line, then the rest.

The review is opened before the hub is served, by the lifecycle job against the same
SQLite registry file the served hub then reads (its lines: two personal grants).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from federation.admin import review_service
from federation.admin.service import SYSTEM, AdminService
from federation.hub import build_hub
from federation.settings import Settings
from federation.web.app import create_app
from tests.browser.test_console import browser_sign_in
from tests.peers.asgi import serving
from tests.peers.common import free_port

pytestmark = pytest.mark.browser

EVERY = 30


class Outbox:
    async def send(self, to: str, subject: str, body: str) -> None:
        pass


def review_settings(issuer: str, registry: Path) -> Settings:
    def user(subject: str, domain: str, name: str, **extra: Any) -> dict[str, Any]:
        return {"subject": subject, "email": f"{subject}@{domain}", "name": name, **extra}

    def partner(pid: str, name: str, kind: str, *users: dict[str, Any], **extra: Any) -> Any:
        return {"id": pid, "name": name, "kind": kind, "status": "active",
                "domains": [f"{pid}.example"],
                "connections": [{"type": "mock", "id": f"{pid}-mock", "users": list(users)}],
                **extra}  # fmt: skip

    return Settings(
        issuer=issuer,
        allow_insecure_http=True,
        allow_mock_connections=True,
        registry={"backend": "sqlite", "path": str(registry)},
        lifecycle={"enabled": False},  # the test runs the job itself
        partners=[
            partner(
                "initech",
                "Initech",
                "internal",
                user("erin", "initech.example", "Erin", roles=["isthmus-admin"]),
                user("sam", "initech.example", "Sam"),
            ),
            partner(
                "acme",
                "ACME Supplies",
                "supplier",
                user("alice", "acme.example", "Alice"),
                user("bob", "acme.example", "Bob"),
                sponsors=["sam@initech.example"],
                review={"every_days": EVERY, "window_days": 7},
            ),
        ],
        apps=[
            {
                "id": "orders",
                "name": "Orders",
                "path_prefix": "/orders",
                "upstreams": ["http://127.0.0.1:9"],
                "policy": {
                    "rules": [{"name": "acme", "effect": "allow", "when": {"partner": "acme"}}]
                },
            }
        ],
    )


async def open_review(settings: Settings) -> str:
    hub = build_hub(settings)
    try:
        await hub.ready()
        service = AdminService(hub)
        until = datetime.now(UTC) + timedelta(days=90)
        for subject in ("alice", "bob"):
            spec = {"partner_id": "acme", "connection_id": "acme-mock", "subject": subject,
                    "apps": ["orders"], "valid_until": until.isoformat()}  # fmt: skip
            await service.grant(SYSTEM, spec)
        history = await hub.documents.history(kind="partner", doc_id="acme")
        due = datetime.fromtimestamp(min(c.at for c in history), UTC) + timedelta(days=EVERY)
        await review_service.run_reviews(service, due, Outbox())
        return f"r-acme-{due:%Y%m%d}"
    finally:
        await hub.aclose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    port = free_port()
    settings = review_settings(
        f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("reviews") / "registry.db"
    )
    # Its own thread and event loop: Playwright's sync API holds this thread's.
    with ThreadPoolExecutor(1) as pool:
        review_id = pool.submit(asyncio.run, open_review(settings)).result()
    with serving(create_app(hub=build_hub(settings)), port=port) as url:
        yield url, review_id


def test_a_sponsor_confirms_a_line_of_the_review(page: Any, served: tuple[str, str]) -> None:
    url, review_id = served
    browser_sign_in(page, f"{url}/admin/reviews", "sam@initech.example", "Sam")
    page.get_by_role("heading", name="Access reviews", level=1).wait_for()
    assert page.locator("#actor-role").inner_text() == "sponsor"
    page.get_by_role("link", name=review_id).click()
    page.get_by_role("heading", name="Access review of ACME Supplies").wait_for()
    assert "Access nobody confirms by" in page.locator("#review-state").inner_text()

    page.get_by_label("Confirm bob for orders").check()
    page.get_by_role("button", name="Confirm selected").click()
    assert page.get_by_role("status").inner_text() == "Confirmed: 1 line."
    rows = page.locator("#lines tbody tr")
    decisions = {
        rows.nth(i).get_by_role("rowheader").inner_text(): rows.nth(i)
        .locator(".badge")
        .inner_text()
        for i in range(rows.count())
    }
    assert decisions == {"alice": "pending", "bob": "confirmed"}
    assert page.get_by_label("Confirm bob for orders").count() == 0  # decided: no checkbox

    page.get_by_role("button", name="Confirm all").click()
    assert page.get_by_role("status").inner_text() == "Confirmed: 1 line."
    assert page.locator("#lines .decision-pending").count() == 0
    assert page.get_by_role("button", name="Confirm all").count() == 0

    # The list says so too.
    page.get_by_role("link", name="All access reviews").click()
    row = page.locator(f"#review-{review_id}")
    assert row.locator("td").nth(4).inner_text() == "0"  # nothing left to confirm
    assert row.locator("td").nth(5).inner_text() == "2"

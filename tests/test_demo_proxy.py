"""The demo's proxied app: ``/orders/`` on the hub's host → the orders app on its own port,
guarded by the per-partner ``orders`` policy of the packaged demo configuration.

The demo ASGI app (hub + demo app + the orders server it starts with its lifespan) runs
under uvicorn on a real port, as ``isthmus demo`` runs it: the orders app listens on a
second port in the same event loop and verifies the proxy's assertion against the hub's
JWKS over HTTP. The "browser" is an httpx client with a cookie jar.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from federation import cli
from tests.peers.asgi import serving
from tests.peers.common import free_port
from tests.test_demo import drive_sign_in


@dataclass(frozen=True)
class Demo:
    base: str  # the hub, as the browser reaches it
    orders: str  # the orders app itself (the proxy's upstream)


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    hub_port, orders_port = free_port(), free_port()
    settings = cli.demo_settings("127.0.0.1", hub_port, orders_port)
    with serving(cli.build_demo_app(settings), port=hub_port) as base:
        yield Demo(base, f"http://127.0.0.1:{orders_port}")


@pytest.fixture
async def browser(demo: Demo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=demo.base, follow_redirects=True, timeout=30) as client:
        yield client


def field(page: str, kind: str, name: str) -> str:
    found = re.search(rf'<dd id="{kind}-{re.escape(name)}">([^<]*)</dd>', page)
    assert found, f"no {kind} {name} on page:\n{page}"
    return html.unescape(found.group(1))


async def signed_in(
    browser: httpx.AsyncClient, email: str, start: str, connection: str | None = None
) -> httpx.Response:
    page = await drive_sign_in(browser, email, connection=connection, start=start)
    assert page.status_code == 200, page.text
    return page


def test_the_packaged_demo_configuration_passes_check_config(tmp_path: Path) -> None:
    text = resources.files("federation.demo").joinpath("demo.yaml").read_text(encoding="utf-8")
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli.app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("configuration OK")
    (orders,) = cli.demo_settings("127.0.0.1", 9125, 9126).apps
    assert orders.upstreams == ("http://127.0.0.1:9126",)
    assert orders.path_prefix == "/orders" and orders.hosts == () and orders.policy


def test_the_orders_port_never_moves_the_hub() -> None:
    settings = cli.demo_settings("127.0.0.1", 8081, 8080)  # the packaged ports, swapped
    assert settings.issuer == "http://127.0.0.1:8081"
    assert settings.apps[0].upstreams == ("http://127.0.0.1:8080",)


def test_the_banner_says_what_to_try() -> None:
    banner = cli.demo_banner(cli.demo_settings("127.0.0.1", 8080, 8081))
    assert "http://127.0.0.1:8080/orders/" in banner
    assert "http://127.0.0.1:8080/orders/admin" in banner
    assert "http://127.0.0.1:8080/orders/reports" in banner
    assert "http://127.0.0.1:8081" in banner


async def test_without_a_session_the_browser_signs_in_and_comes_back(
    demo: Demo, browser: httpx.AsyncClient
) -> None:
    first = await browser.get("/orders/?view=open", follow_redirects=False)
    assert first.status_code == 303
    location = urlsplit(first.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{demo.base}/login"
    assert parse_qs(location.query)["rd"] == [f"{demo.base}/orders/?view=open"]

    page = await signed_in(browser, "alice@acme.example", "/orders/?view=open")

    assert str(page.url) == f"{demo.base}/orders/?view=open"
    assert 'id="order-form"' in page.text  # the orders app's page, through the proxy


async def test_an_acme_user_reaches_the_app_which_sees_the_identity(
    demo: Demo, browser: httpx.AsyncClient
) -> None:
    page = await signed_in(browser, "alice@acme.example", "/orders/")

    assert "<title>Orders</title>" in page.text
    assert "<code>GET\n/orders/</code>" in page.text  # the full path: no strip_prefix
    # The assertion, verified by the app with the SDK against the hub's JWKS.
    assert field(page.text, "claim", "email") == "alice@acme.example"
    assert field(page.text, "claim", "partner") == "acme"
    assert field(page.text, "claim", "partner_kind") == "supplier"
    assert field(page.text, "claim", "aud") == "orders"
    assert field(page.text, "claim", "iss") == demo.base
    # The identity headers the proxy added.
    assert field(page.text, "header", "x-isthmus-email") == "alice@acme.example"
    assert field(page.text, "header", "x-isthmus-partner") == "acme"
    assert field(page.text, "header", "x-isthmus-name") == "Alice Martin"
    assert field(page.text, "header", "x-isthmus-groups") == "purchasing,extranet-users"
    assert field(page.text, "header", "x-isthmus-user") == field(page.text, "claim", "sub")
    assert field(page.text, "header", "x-request-id") == page.headers["x-request-id"]

    posted = await browser.post("/orders/", data={})
    assert posted.status_code == 200 and 'id="posted"' in posted.text
    reports = await browser.get("/orders/reports")
    assert reports.status_code == 200 and "<title>Orders — reports</title>" in reports.text


async def test_the_admin_area_is_denied_to_acme_with_the_public_reason(
    browser: httpx.AsyncClient,
) -> None:
    await signed_in(browser, "alice@acme.example", "/orders/")

    page = await browser.get("/orders/admin")
    assert page.status_code == 403
    text = html.unescape(page.text)
    assert "The orders admin area is for Initech staff only." in text
    assert "<h1>Access denied</h1>" in text and "only.." not in text
    assert 'href="/logout">Sign in as someone else' in text
    assert 'id="order-form"' not in page.text  # the hub answered; the app was not asked

    refused = await browser.get("/orders/admin/users", headers={"Accept": "application/json"})
    assert refused.status_code == 403
    body = refused.json()
    assert body["error"] == "access_denied"
    assert body["reasons"] == ["The orders admin area is for Initech staff only."]

    deleted = await browser.delete("/orders/7", headers={"Accept": "application/json"})
    assert deleted.status_code == 403
    assert deleted.json()["reasons"] == [
        "Suppliers may read and place orders, not change or delete them."
    ]


async def test_a_globex_user_may_only_read_the_reports(browser: httpx.AsyncClient) -> None:
    page = await drive_sign_in(
        browser, "carol@globex.example", connection="globex-sso", start="/orders/"
    )
    assert page.status_code == 403  # back from the sign-in to /orders/: refused
    assert "Customers may only see the reports, under /orders/reports." in html.unescape(page.text)

    reports = await browser.get("/orders/reports/2026")
    assert reports.status_code == 200, reports.text
    assert field(reports.text, "claim", "partner") == "globex"
    assert field(reports.text, "header", "x-isthmus-partner-kind") == "customer"

    posted = await browser.post("/orders/reports", headers={"Accept": "application/json"})
    assert posted.status_code == 403
    assert posted.json()["reasons"] == ["Customers may read the reports, not change them."]
    admin = await browser.get("/orders/admin", headers={"Accept": "application/json"})
    assert admin.json()["reasons"] == ["Customers may only see the reports, under /orders/reports."]


async def test_initech_staff_may_do_everything(browser: httpx.AsyncClient) -> None:
    page = await signed_in(browser, "erin@initech.example", "/orders/admin")
    assert "<title>Orders — admin</title>" in page.text
    assert field(page.text, "claim", "partner_kind") == "internal"
    deleted = await browser.delete("/orders/7")
    assert deleted.status_code == 200 and 'id="posted"' in deleted.text


async def test_the_app_refuses_requests_that_skip_the_hub(demo: Demo) -> None:
    async with httpx.AsyncClient(base_url=demo.orders) as direct:
        plain = await direct.get("/orders/")
        forged = await direct.get(
            "/orders/admin",
            headers={
                "Accept": "application/json",
                "X-Isthmus-Email": "erin@initech.example",
                "X-Isthmus-Assertion": "not.a.token",
            },
        )
    assert plain.status_code == 401 and "did not come through the hub" in plain.text
    assert forged.status_code == 401
    assert forged.json()["error"] == "not_from_the_hub"

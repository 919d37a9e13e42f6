"""The demo end to end: demo app → hub's OIDC provider → login page → mock IdP → back, and out.

Everything runs in-process: the "browser" and the demo app's back-channel both reach the
demo ASGI app through ``httpx.ASGITransport``, so the real routes, cookies and tokens are
exercised without a socket. ``drive_sign_in`` is reused against a live ``isthmus demo``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import jwt
import pytest

from federation import cli
from federation.demo.app import DemoAppConfig, SignedCookie

ORIGIN = "http://127.0.0.1:8080"


def form_fields(page: str, form_id: str) -> tuple[str, str, dict[str, str]]:
    match = re.search(
        rf'<form method="(\w+)" action="([^"]*)" id="{form_id}">(.*?)</form>', page, re.S
    )
    assert match, f"no form {form_id} in page:\n{page}"
    method, action, body = match.groups()
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body))
    return method.upper(), html.unescape(action), {k: html.unescape(v) for k, v in fields.items()}


async def drive_sign_in(
    browser: httpx.AsyncClient,
    email: str,
    *,
    connection: str | None = None,
    start: str = "/demo-app/login",
) -> httpx.Response:
    """Sign in like a person would, from the demo app (or from ``start``: any page that
    leads to the hub's sign-in page); returns the last page. Follows redirects."""
    page = await browser.get(start)
    assert page.status_code == 200 and 'id="login-form"' in page.text, page.text
    _, action, fields = form_fields(page.text, "login-form")
    page = await browser.post(action, data={**fields, "email": email})
    if 'id="choose-form"' in page.text:
        assert connection, "this partner offers several connections: say which"
        _, action, fields = form_fields(page.text, "choose-form")
        page = await browser.post(action, data={**fields, "connection": connection})
    if 'id="mock-form"' not in page.text:
        return page  # refused before the IdP (unknown domain, suspended partner...)
    _, action, fields = form_fields(page.text, "mock-form")
    user = re.search(
        rf'name="user" value="([^"]+)"[^>]*>\s*[^<]*&lt;{re.escape(email)}&gt;', page.text
    )
    assert user, page.text
    return await browser.get(action, params={**fields, "user": html.unescape(user.group(1))})


@pytest.fixture
def demo_asgi() -> Any:
    return cli.build_demo_app(cli.demo_settings())


@pytest.fixture
async def browser(demo_asgi: Any) -> Any:
    transport = httpx.ASGITransport(app=demo_asgi)
    # The demo app reaches the hub through the same in-process transport.
    demo_app = demo_asgi.mount.app
    demo_app.state.oidc.config = _with_transport(demo_app.state.oidc.config, transport)
    async with httpx.AsyncClient(
        transport=transport, base_url=ORIGIN, follow_redirects=True
    ) as client:
        yield client


def _with_transport(config: DemoAppConfig, transport: httpx.AsyncBaseTransport) -> DemoAppConfig:
    from dataclasses import replace

    return replace(config, transport=transport)


def claim(page: str, name: str) -> str:
    found = re.search(rf'<dd id="claim-{name}">([^<]*)</dd>', page)
    assert found, f"no claim {name} on page:\n{page}"
    return html.unescape(found.group(1))


async def test_sign_in_shows_partner_claims_and_sign_out_ends_the_hub_session(
    browser: httpx.AsyncClient,
) -> None:
    page = await drive_sign_in(browser, "alice@acme.example")

    assert page.status_code == 200, page.text
    assert str(page.url) == f"{ORIGIN}/demo-app/"
    assert claim(page.text, "partner_id") == "acme"
    assert claim(page.text, "partner_kind") == "supplier"
    assert claim(page.text, "email") == "alice@acme.example"
    assert claim(page.text, "groups") == "purchasing, extranet-users"
    assert claim(page.text, "iss") == ORIGIN
    assert claim(page.text, "aud") == "demo-app"
    assert '"partner_id": "acme"' in html.unescape(page.text)  # userinfo agrees
    assert 'href="/orders/"' in page.text  # next: the proxied app
    assert (await browser.get("/")).text.count("alice@acme.example") >= 1  # hub session

    page = await browser.get("/demo-app/logout")

    assert page.status_code == 200
    assert str(page.url).startswith(f"{ORIGIN}/demo-app/?state=")
    assert 'id="signed-out"' in page.text and 'id="sign-in"' in page.text
    assert "You are signed in" not in (await browser.get("/")).text  # hub session ended too


async def test_a_partner_with_two_connections_gets_the_choice(browser: httpx.AsyncClient) -> None:
    page = await drive_sign_in(browser, "dan@globex.example", connection="globex-contractors")
    assert claim(page.text, "partner_id") == "globex"
    assert claim(page.text, "partner_kind") == "customer"
    assert claim(page.text, "groups") == "contractors"


async def test_the_suspended_partner_is_refused(browser: httpx.AsyncClient) -> None:
    page = await drive_sign_in(browser, "frank@umbrella.example")
    assert page.status_code == 403
    assert "not active" in page.text
    assert "claim-partner_id" not in page.text


async def test_an_unknown_domain_is_explained(browser: httpx.AsyncClient) -> None:
    page = await drive_sign_in(browser, "someone@unknown.example")
    assert page.status_code == 404
    assert "unknown.example" in page.text


async def test_a_forged_callback_is_refused(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/demo-app/callback", params={"code": "x", "state": "forged"})
    assert page.status_code == 400
    assert "not started here" in page.text
    page = await browser.get(
        "/demo-app/callback", params={"error": "access_denied", "error_description": "no"}
    )
    assert page.status_code == 400


async def test_the_id_token_is_checked_against_the_hub_keys(demo_asgi: Any) -> None:
    """A token signed by another key, or for another audience, never reaches the page."""
    transport = httpx.ASGITransport(app=demo_asgi)
    demo_app = demo_asgi.mount.app
    oidc = demo_app.state.oidc
    oidc.config = _with_transport(oidc.config, transport)
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = await httpx.AsyncClient(transport=transport, base_url=ORIGIN).get("/oauth2/jwks")
    kid = jwks.json()["keys"][0]["kid"]
    claims = {"iss": ORIGIN, "sub": "x", "aud": "demo-app", "exp": 2**31, "iat": 1, "nonce": "n"}
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": kid})
    from federation.demo.app import DemoError

    with pytest.raises(DemoError, match="did not validate"):
        await oidc.verify_id_token(forged, "n")
    hs = jwt.encode(claims, "secret-that-is-long-enough-for-hs256!!", algorithm="HS256")
    with pytest.raises(DemoError, match="algorithm"):
        await oidc.verify_id_token(hs, "n")


def test_signed_cookie_refuses_tampering_and_expiry() -> None:
    from starlette.requests import Request
    from starlette.responses import Response

    cookie = SignedCookie("s", "secret", "/", max_age=60, secure=False)
    response = Response()
    cookie.save(response, {"user": {"sub": "a"}})
    value = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]

    def request_with(raw: str) -> Request:
        return Request({"type": "http", "headers": [(b"cookie", f"s={raw}".encode())]})

    assert cookie.load(request_with(value)) == {"user": {"sub": "a"}}
    payload, signature = value.split(".")
    assert cookie.load(request_with(payload + "x." + signature)) == {}
    assert cookie.load(request_with(payload + "." + signature[:-2] + "AA")) == {}
    other = SignedCookie("s", "another-secret", "/", max_age=60, secure=False)
    assert other.load(request_with(value)) == {}
    expired = SignedCookie("s", "secret", "/", max_age=-1, secure=False)
    response = Response()
    expired.save(response, {"user": 1})
    stale = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    assert cookie.load(request_with(stale)) == {}

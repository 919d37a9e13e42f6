"""examples/oidc_app does its own OIDC login against the hub (real ports both): code flow
with PKCE, tokens validated with the SDK; when the hub session ends, the hub's logout
token reaches the example's back-channel endpoint and the example's session is gone."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from examples.oidc_app.app import SESSION_COOKIE, Config, Sessions, create_app
from federation.hub import Hub
from federation.settings import ClientSettings
from federation.web.app import create_app as create_hub_app
from tests.broker.test_mock_partner_to_hub_session import sign_in
from tests.peers.asgi import ServeApp
from tests.peers.common import free_port
from tests.proxy.support import make_hub, proxy_settings, serve_hub

CLIENT_ID = "example-app"
CLIENT_SECRET = "example-secret-0123456789"


@dataclass
class Running:
    hub: Hub
    hub_base: str
    app_base: str
    example: Starlette
    audit: list[dict[str, Any]]

    @property
    def sessions(self) -> Sessions:
        sessions: Sessions = self.example.state.sessions
        return sessions

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.audit if e["event"] == name]


@pytest.fixture
def running(asgi_server: ServeApp) -> Iterator[Running]:
    hub_port, app_port = free_port(), free_port()
    hub_base, app_base = f"http://127.0.0.1:{hub_port}", f"http://127.0.0.1:{app_port}"
    client = ClientSettings(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=(f"{app_base}/callback",),
        post_logout_redirect_uris=(f"{app_base}/",),
        backchannel_logout_uri=f"{app_base}/backchannel-logout",
        backchannel_logout_session_required=True,
    )
    settings = proxy_settings(hub_port, "http://127.0.0.1:9", apps=[], clients=[client])
    audit: list[dict[str, Any]] = []
    hub = make_hub(settings, audit)
    config = Config(hub_base, app_base, CLIENT_ID, CLIENT_SECRET, secure_cookies=False)
    example = create_app(config)
    asgi_server(example, port=app_port)
    with serve_hub(create_hub_app(hub=hub), hub_port):
        yield Running(hub, hub_base, app_base, example, audit)


@pytest.fixture
async def browser(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    # One cookie jar for both origins (cookies ignore ports; the names differ).
    async with httpx.AsyncClient(base_url=running.hub_base, timeout=30) as client:
        yield client


async def login(running: Running, browser: httpx.AsyncClient) -> None:
    """app /login → hub authorize → hub login + mock IdP → authorize → app /callback."""
    start = await browser.get(f"{running.app_base}/login")
    assert start.status_code == 303
    authorize = start.headers["location"]
    assert authorize.startswith(f"{running.hub_base}/oauth2/authorize?")
    assert "code_challenge=" in authorize and "code_challenge_method=S256" in authorize
    to_login = await browser.get(authorize)
    assert to_login.status_code == 303 and to_login.headers["location"].startswith("/login?")
    rd = httpx.URL(to_login.headers["location"]).params["rd"]
    back = await sign_in(browser, "alice@acme.example", "alice", rd=rd)
    assert back.status_code == 303, back.text
    to_app = await browser.get(back.headers["location"])
    assert to_app.status_code == 303
    callback = to_app.headers["location"]
    assert callback.startswith(f"{running.app_base}/callback?")
    done = await browser.get(callback)
    assert done.status_code == 303, done.text
    assert urlsplit(done.headers["location"]).path == "/"


async def signed_in(running: Running, browser: httpx.AsyncClient) -> bool:
    response = await browser.get(f"{running.app_base}/me")
    return response.status_code == 200 and bool(response.json()["signed_in"])


async def until(predicate: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def hub_logout(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/logout")
    csrf = re.search(r'name="csrf" value="([^"]*)"', page.text)
    assert csrf, page.text
    done = await browser.post("/logout", data={"csrf": csrf.group(1)})
    assert done.status_code == 200, done.text


async def test_login_then_hub_logout_ends_the_example_session(
    running: Running, browser: httpx.AsyncClient
) -> None:
    await login(running, browser)
    me = (await browser.get(f"{running.app_base}/me")).json()
    assert me["partner_id"] == "acme" and me["groups"] == ["buyers"]
    assert me["email"] == "alice@acme.example" and me["sid"]
    home = await browser.get(f"{running.app_base}/")
    assert "Alice" in home.text and "acme" in home.text
    assert len(running.sessions) == 1

    await hub_logout(browser)  # at the hub, not at the app

    async def gone() -> bool:
        return len(running.sessions) == 0

    await until(gone)
    assert not await signed_in(running, browser)  # the app's cookie is still there: unused
    assert browser.cookies.get(SESSION_COOKIE)
    (event,) = running.events("oidc.backchannel_logout")
    assert event["outcome"] == "success" and event["client"] == CLIENT_ID
    assert event["sid"] == me["sid"]


async def test_app_logout_goes_through_the_hub(
    running: Running, browser: httpx.AsyncClient
) -> None:
    await login(running, browser)
    leave = await browser.get(f"{running.app_base}/logout")
    assert leave.status_code == 303
    end_session = leave.headers["location"]
    assert end_session.startswith(f"{running.hub_base}/oauth2/logout?")
    back = await browser.get(end_session)  # valid id_token_hint: no question asked
    assert back.status_code == 303 and back.headers["location"] == f"{running.app_base}/"
    assert "isthmus_session" not in browser.cookies
    assert not await signed_in(running, browser)

    async def told() -> bool:
        return bool(running.events("oidc.backchannel_logout"))

    await until(told)
    assert running.events("oidc.backchannel_logout")[0]["outcome"] == "success"


async def test_the_back_channel_endpoint_refuses_forgeries_and_replays(
    running: Running, browser: httpx.AsyncClient
) -> None:
    endpoint = f"{running.app_base}/backchannel-logout"
    async with httpx.AsyncClient(timeout=10) as other:
        empty = await other.post(endpoint, data={})
        assert empty.status_code == 400
        forged = await other.post(endpoint, data={"logout_token": "a.b.c"})
        assert forged.status_code == 400
        # a real logout token of the hub, sent twice: the second is a replay
        await login(running, browser)
        sid = (await browser.get(f"{running.app_base}/me")).json()["sid"]
        from federation.sessions import EndedSession

        identity = await running.hub.sessions.identity_for_sid(sid)
        assert identity is not None
        token = running.hub.backchannel.logout_token(CLIENT_ID, EndedSession(sid, identity))
        first = await other.post(endpoint, data={"logout_token": token})
        assert first.status_code == 200
        assert not await signed_in(running, browser)
        again = await other.post(endpoint, data={"logout_token": token})
        assert again.status_code == 400 and again.json()["error_description"] == "replayed"
        # a logout token for another client is not for this one
        other_id = running.hub.backchannel.logout_token("someone-else", EndedSession(sid, identity))
        wrong_aud = await other.post(endpoint, data={"logout_token": other_id})
        assert wrong_aud.status_code == 400

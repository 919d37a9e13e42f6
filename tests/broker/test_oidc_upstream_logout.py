"""Flow: hub session through a partner OIDC IdP (in-process fake) → /logout → the IdP's
end_session_endpoint (RP-Initiated Logout 1.0) → /logout/{connection}/done.

The hub session ends first whatever the IdP does; the return is accepted once, in the
browser that started the logout, for the connection it was started for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from connectors.oidc import METADATA_TTL
from connectors.registry import ConnectorContext
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.sessions import digest
from federation.settings import Settings
from federation.web.app import create_app
from tests.broker.conftest import BASE
from tests.broker.test_mock_partner_to_hub_session import hidden_fields, start_login
from tests.fakes.clock import FakeClock
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser

SESSION = "isthmus_session"
LOGOUT = "isthmus_logout"
DONE = f"{BASE}/logout/acme-oidc/done"
APP_CB = "https://orders.app.test/callback"
APP_BYE = "https://orders.app.test/bye"
APP_SECRET = "orders-secret-0123456789"


def partner(idp: FakeOidcProvider, **connection: Any) -> dict[str, Any]:
    return {
        "id": "acme",
        "name": "Acme",
        "kind": "supplier",
        "status": "active",
        "domains": ["acme.example"],
        "connections": [idp.connection_settings(id="acme-oidc", **connection).model_dump()],
    }


class Env:
    def __init__(self, end_session: bool = True, **connection: Any) -> None:
        self.idp = FakeOidcProvider(
            "https://idp.acme.test",
            users=[FakeUser("a-1", email="alice@acme.example", name="Alice")],
            end_session=end_session,
            post_logout_redirect_uris=[DONE],
        )
        self.audit: list[dict[str, Any]] = []
        app = {"client_id": "orders", "client_secret": APP_SECRET, "redirect_uris": [APP_CB],
               "post_logout_redirect_uris": [APP_BYE]}  # fmt: skip
        settings = Settings(
            issuer=BASE,
            allow_insecure_http=True,
            partners=[partner(self.idp, **connection)],
            clients=[app],
        )
        self.clock = FakeClock()  # the connectors' (discovery cache)
        context = ConnectorContext(hub_base_url=BASE, mounts=self.idp.mounts(), clock=self.clock)
        self.hub: Hub = build_hub(settings, context=context, audit=Audit([self.audit.append]))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.audit if e["event"] == name]

    async def kept(self, cookie: str) -> Any:
        """What is stored beside the session for logout upstream."""
        return await self.hub.store.get(f"session-upstream:{digest(cookie)}")


@pytest.fixture
def env() -> Env:
    return Env()


@pytest.fixture
async def client(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(hub=env.hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


async def sign_in(client: httpx.AsyncClient, env: Env) -> str:
    to_idp = await start_login(client, "alice@acme.example")
    assert to_idp.status_code == 303, to_idp.text
    back = await env.idp.authorize_redirect(to_idp.headers["location"])
    landed = await client.get(back)
    assert landed.status_code == 303, landed.text
    return client.cookies[SESSION]


async def log_out(client: httpx.AsyncClient, rd: str | None = None) -> httpx.Response:
    page = await client.get("/logout", params={"rd": rd} if rd else None)
    assert page.status_code == 200
    return await client.post("/logout", data=hidden_fields(page.text))


async def at_idp(env: Env, response: httpx.Response) -> str:
    """The browser at the IdP's end-session endpoint; where it is sent back."""
    assert response.status_code == 303, response.text
    return await env.idp.authorize_redirect(response.headers["location"])


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_logout_ends_the_hub_session_then_the_idp_session(
    client: httpx.AsyncClient, env: Env
) -> None:
    cookie = await sign_in(client, env)
    session = await env.hub.sessions.get(cookie)
    assert session is not None and env.idp.signed_in == {"a-1"}
    # the ID token is kept beside the session, not in the record every request reads
    assert session.upstream == {} and "id_token" not in repr(session.identity.to_dict())
    kept = await env.kept(cookie)
    assert kept is not None and set(kept) == {"id_token"}

    leaving = await log_out(client)

    # the hub session is over before the browser leaves for the IdP
    assert await env.hub.sessions.get(cookie) is None and SESSION not in client.cookies
    location = leaving.headers["location"]
    assert location.startswith("https://idp.acme.test/end_session?")
    params = query(location)
    assert params["client_id"] == "isthmus" and params["post_logout_redirect_uri"] == DONE
    hint = jwt.decode(params["id_token_hint"], options={"verify_signature": False})
    assert hint["sub"] == "a-1" and hint["aud"] == "isthmus"
    assert client.cookies[LOGOUT] == params["state"] and len(params["state"]) >= 32
    (started,) = env.events("logout.upstream.started")
    assert started["connection"] == "acme-oidc" and started["subject"] == "a-1"
    assert params["id_token_hint"] == kept["id_token"]
    assert await env.kept(cookie) is None  # taken with the session

    back = await at_idp(env, leaving)
    assert env.idp.signed_in == set()  # the IdP session ended
    assert back == f"{DONE}?state={params['state']}"

    done = await client.get(back)
    assert done.status_code == 200, done.text
    assert "You are signed out" in done.text and 'id="upstream-logout"' in done.text
    assert LOGOUT not in client.cookies
    (completed,) = env.events("logout.upstream.completed")
    assert completed["connection"] == "acme-oidc" and completed["outcome"] == "success"

    # the state was one-time: the same return again is refused (replay)
    client.cookies.set(LOGOUT, params["state"])
    replay = await client.get(back)
    assert replay.status_code == 400 and "invalid_state" in replay.text
    failed = env.events("logout.upstream.completed")[-1]
    assert failed["outcome"] == "failure" and failed["reason"] == "invalid_state"


async def test_the_return_url_allowed_at_logout_is_where_the_browser_ends(
    client: httpx.AsyncClient, env: Env
) -> None:
    await sign_in(client, env)
    back = await at_idp(env, await log_out(client, rd="/goodbye"))
    done = await client.get(back)
    assert done.status_code == 303 and done.headers["location"] == "/goodbye"


async def test_a_return_url_the_hub_does_not_allow_is_dropped(
    client: httpx.AsyncClient, env: Env
) -> None:
    await sign_in(client, env)
    page = await client.get("/logout", params={"rd": "https://evil.test/"})
    assert "evil.test" not in page.text
    back = await at_idp(env, await client.post("/logout", data=hidden_fields(page.text)))
    done = await client.get(back)
    assert done.status_code == 200 and "You are signed out" in done.text


async def test_a_forged_state_is_refused(client: httpx.AsyncClient, env: Env) -> None:
    await sign_in(client, env)
    await at_idp(env, await log_out(client))
    forged = await client.get(DONE, params={"state": "forged-state"})
    assert forged.status_code == 400 and "invalid_state" in forged.text
    assert "You are signed out here" in forged.text
    missing = await client.get(DONE)
    assert missing.status_code == 400


async def test_a_state_returned_to_another_browser_is_refused(
    client: httpx.AsyncClient, env: Env
) -> None:
    await sign_in(client, env)
    back = await at_idp(env, await log_out(client))
    transport = httpx.ASGITransport(app=create_app(hub=env.hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as other:
        refused = await other.get(back)
    assert refused.status_code == 400 and "invalid_state" in refused.text
    # and it was spent: the browser that started the logout cannot use it afterwards either
    assert (await client.get(back)).status_code == 400


async def test_a_state_returned_for_another_connection_is_refused(
    client: httpx.AsyncClient, env: Env
) -> None:
    await sign_in(client, env)
    back = await at_idp(env, await log_out(client))
    other = back.replace("/logout/acme-oidc/done", "/logout/globex-oidc/done")
    refused = await client.get(other)
    assert refused.status_code == 400 and "invalid_state" in refused.text


async def test_an_idp_that_is_down_does_not_keep_anyone_signed_in(
    client: httpx.AsyncClient, env: Env
) -> None:
    cookie = await sign_in(client, env)
    env.idp.network_error = httpx.ConnectError("down")
    env.clock.advance(METADATA_TTL)  # the discovery document must be fetched again

    response = await log_out(client)

    assert response.status_code == 200 and "You are signed out" in response.text
    assert 'id="upstream-logout"' not in response.text
    assert await env.hub.sessions.get(cookie) is None and SESSION not in client.cookies
    (failed,) = env.events("logout.upstream.started")
    assert failed["outcome"] == "failure" and failed["reason"] == "upstream_error"
    assert [e["event"] for e in env.audit].count("logout") == 1
    assert await env.kept(cookie) is None


@pytest.mark.parametrize(
    "make", [lambda: Env(end_session=False), lambda: Env(upstream_logout=False)]
)
async def test_without_end_session_or_when_opted_out_only_the_hub_signs_out(make: Any) -> None:
    env: Env = make()
    transport = httpx.ASGITransport(app=create_app(hub=env.hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        cookie = await sign_in(client, env)
        assert await env.kept(cookie) is None  # nothing kept: nothing to hint
        response = await log_out(client)
        assert response.status_code == 200 and "You are signed out" in response.text
        assert await env.hub.sessions.get(cookie) is None
        assert LOGOUT not in client.cookies
    assert env.idp.hits["end_session"] == 0 and env.idp.signed_in == {"a-1"}
    assert env.events("logout.upstream.started") == []


async def app_id_token(client: httpx.AsyncClient) -> str:
    """The ``orders`` app's code flow on the browser's hub session: its ID token."""
    asked = await client.get(
        "/oauth2/authorize",
        params={"response_type": "code", "client_id": "orders", "redirect_uri": APP_CB,
                "scope": "openid", "state": "s-1", "nonce": "n-1"},
    )  # fmt: skip
    assert asked.status_code in (302, 303), asked.text
    code = query(asked.headers["location"])["code"]
    tokens = await client.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB},
        auth=("orders", APP_SECRET),
    )
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["id_token"])


async def test_an_apps_rp_initiated_logout_goes_through_the_idp_too(
    client: httpx.AsyncClient, env: Env
) -> None:
    """An app's /oauth2/logout ends the hub session, then the partner IdP's, then lands
    on the app's registered post-logout URI with the app's state — like /logout."""
    cookie = await sign_in(client, env)
    hint = await app_id_token(client)
    leaving = await client.get(
        "/oauth2/logout",
        params={"id_token_hint": hint, "post_logout_redirect_uri": APP_BYE, "state": "app-1"},
    )
    assert await env.hub.sessions.get(cookie) is None  # the hub session first
    assert leaving.headers["location"].startswith("https://idp.acme.test/end_session?")
    back = await at_idp(env, leaving)
    assert env.idp.signed_in == set()
    done = await client.get(back)
    assert done.status_code == 303 and done.headers["location"] == f"{APP_BYE}?state=app-1"
    (completed,) = env.events("logout.upstream.completed")
    assert completed["outcome"] == "success"

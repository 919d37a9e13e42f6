"""OIDC Back-Channel Logout 1.0, hub side: when a hub session ends (sign-out, RP-initiated
logout, SAML IdP-initiated logout, partner suspension) every client that registered a
back-channel URI and got tokens in that session receives a logout token, verified here
the way a relying party would (pyjwt, keys from /oauth2/jwks). Receivers run in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from federation.oidc.backchannel import EVENT, RETRY_DELAYS, BackchannelSender
from federation.settings import ClientSettings, SamlConnectionSettings, Settings
from federation.web.app import create_app
from tests.fakes.clock import FakeClock
from tests.fakes.saml_idp import FakeSamlIdP, SamlUser
from tests.oidc.support import (
    ISSUER,
    SECRET,
    Browser,
    Env,
    confidential_tokens,
    make_env,
    make_settings,
    public_tokens,
    secret_post_token_response,
    validate_id_token,
    verify_hub_jwt,
)

ORDERS_BC = "https://orders.app.test/backchannel-logout"
REPORTS_CB = "https://reports.app.test/callback"
REPORTS_BC = "https://reports.app.test/backchannel-logout"
SPA_BC = "http://127.0.0.1:5173/backchannel-logout"
SPA_CB = "http://127.0.0.1:5173/cb"
TIMEOUT = 0.5  # the sender's per-delivery bound in these tests


@dataclass
class Receiver:
    """Every back-channel URI of the test clients, in one in-process app."""

    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # URL → behaviour: "ok" (200), "error" (503), "refuse" (400), "hang" (no answer in time)
    behaviour: dict[str, str] = field(default_factory=dict)

    def app(self) -> Starlette:
        async def logout(request: Request) -> Response:
            form = await request.form()
            self.received.append(
                {
                    "url": str(request.url),
                    "content_type": request.headers.get("content-type", ""),
                    "form": {k: v for k, v in form.items() if isinstance(v, str)},
                }
            )
            mode = self.behaviour.get(str(request.url), "ok")
            if mode == "hang":
                await asyncio.sleep(30)
            self.arrived.set()
            return Response(status_code={"error": 503, "refuse": 400}.get(mode, 200))

        return Starlette(routes=[Route("/{path:path}", logout, methods=["POST"])])

    def tokens_for(self, url: str) -> list[str]:
        return [r["form"]["logout_token"] for r in self.received if r["url"] == url]


def backchannel_settings(**saml: Any) -> Settings:
    base = make_settings()
    clients = [
        c.model_copy(update={"backchannel_logout_uri": ORDERS_BC}) if c.client_id == "orders" else c
        for c in base.clients
        if c.client_id != "spa"
    ]
    clients += [
        ClientSettings(
            client_id="reports",
            client_secret=SECRET,
            redirect_uris=(REPORTS_CB,),
            backchannel_logout_uri=REPORTS_BC,
            backchannel_logout_session_required=True,
        ),
        ClientSettings(
            client_id="spa",
            token_endpoint_auth_method="none",
            redirect_uris=(SPA_CB,),
            backchannel_logout_uri=SPA_BC,
        ),
    ]
    partners = base.partners
    if saml:
        acme = partners[0]
        extra = SamlConnectionSettings(type="saml", id="acme-saml", **saml)
        acme = acme.model_copy(update={"connections": (*acme.connections, extra)})
        partners = (acme,)
    return base.model_copy(update={"clients": tuple(clients), "partners": partners})


@pytest.fixture
async def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def env(receiver: Receiver) -> AsyncIterator[Env]:
    made = make_env(backchannel_settings())
    _mount(made, receiver)
    async with made.http:
        yield made
    await made.hub.aclose()


def _mount(env: Env, receiver: Receiver, clock: Callable[[], float] | None = None) -> None:
    hub = env.hub
    hub.backchannel = BackchannelSender(
        hub.issuer,
        hub.registry,
        hub.store,
        hub.keys,
        hub.audit,
        clock=clock or hub.clock,
        timeout=TIMEOUT,
        transport=httpx.ASGITransport(app=receiver.app()),
    )


async def hub_logout(env: Env) -> httpx.Response:
    await env.http.get("/logout")
    response = await env.http.post("/logout", data={"csrf": env.http.cookies["isthmus_csrf"]})
    assert response.status_code == 200, response.text
    return response


async def verify_logout_token(http: httpx.AsyncClient, token: str, audience: str) -> dict[str, Any]:
    """A relying party's checks (Back-Channel Logout 1.0 §2.6), keys from /oauth2/jwks."""
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    claims = await verify_hub_jwt(
        http, token, audience, ["iss", "aud", "iat", "exp", "jti", "events"]
    )
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims
    assert claims["exp"] - claims["iat"] <= 300
    return claims


async def reports_tokens(browser: Browser) -> dict[str, Any]:
    return await confidential_tokens(browser, client_id="reports", redirect_uri=REPORTS_CB)


def backchannel_events(env: Env) -> list[dict[str, Any]]:
    return [e for e in env.events if e["event"] == "oidc.backchannel_logout"]


# --- the hub's sign-out -------------------------------------------------------------------


async def test_discovery_advertises_backchannel_logout(env: Env) -> None:
    meta = (await env.http.get("/.well-known/openid-configuration")).json()
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True


async def test_logout_sends_a_valid_logout_token(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    tokens = await confidential_tokens(browser)
    id_claims = await validate_id_token(env.http, tokens["id_token"], "orders")

    await hub_logout(env)
    await env.hub.backchannel.drain()

    (sent,) = receiver.received
    assert sent["url"] == ORDERS_BC
    assert sent["content_type"].startswith("application/x-www-form-urlencoded")
    claims = await verify_logout_token(env.http, sent["form"]["logout_token"], "orders")
    assert claims["sid"] == id_claims["sid"]
    assert claims["sub"] == id_claims["sub"]
    (event,) = backchannel_events(env)
    assert event["outcome"] == "success" and event["client"] == "orders"
    assert event["sid"] == id_claims["sid"] and event["status"] == 200


async def test_every_client_with_tokens_in_the_session_is_told(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    orders = await confidential_tokens(browser)
    reports = await reports_tokens(browser)  # same browser, same hub session
    await hub_logout(env)
    await env.hub.backchannel.drain()

    assert {r["url"] for r in receiver.received} == {ORDERS_BC, REPORTS_BC}
    sid = jwt.decode(orders["id_token"], options={"verify_signature": False})["sid"]
    for url, audience, issued in ((ORDERS_BC, "orders", orders), (REPORTS_BC, "reports", reports)):
        (token,) = receiver.tokens_for(url)
        claims = await verify_logout_token(env.http, token, audience)
        assert claims["sid"] == sid
        assert jwt.decode(issued["id_token"], options={"verify_signature": False})["sid"] == sid
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in _all(receiver)}
    assert len(jtis) == 2


def _all(receiver: Receiver) -> list[str]:
    return [r["form"]["logout_token"] for r in receiver.received]


async def test_clients_without_uri_or_without_tokens_get_nothing(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    # orders-post has no back-channel URI; reports and spa have one but got no tokens here
    response = await secret_post_token_response(browser)
    assert response.status_code == 200
    await browser.code("reports", REPORTS_CB)  # a code, never exchanged: no tokens
    await hub_logout(env)
    await env.hub.backchannel.drain()
    assert receiver.received == []
    assert backchannel_events(env) == []


async def test_another_sessions_clients_are_not_told(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    await confidential_tokens(browser)
    # a second browser on the same hub signs in and out: the first session's clients
    # hear nothing (the first session lives on)
    transport = httpx.ASGITransport(app=create_app(hub=env.hub))
    second = httpx.AsyncClient(transport=transport, base_url=ISSUER)
    async with second:
        second_env = Env(env.hub, second, env.events)
        await Browser(second_env).sign_in("bob", "bob@acme.test")
        await hub_logout(second_env)
    await env.hub.backchannel.drain()
    assert receiver.received == []
    assert (
        await env.http.get("/oauth2/userinfo", headers={"Authorization": "Bearer x"})
    ).status_code == 401
    assert "isthmus_session" in env.http.cookies


async def test_rp_initiated_logout_sends_logout_tokens(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    tokens = await confidential_tokens(browser)
    response = await env.http.get("/oauth2/logout", params={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200  # no redirect URI: the signed-out page
    await env.hub.backchannel.drain()
    (token,) = receiver.tokens_for(ORDERS_BC)
    claims = await verify_logout_token(env.http, token, "orders")
    id_sid = jwt.decode(tokens["id_token"], options={"verify_signature": False})["sid"]
    assert claims["sid"] == id_sid


async def test_public_client_with_pkce_is_told_too(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    await public_tokens(browser)  # asserts a 200 token response
    await hub_logout(env)
    await env.hub.backchannel.drain()
    (token,) = receiver.tokens_for(SPA_BC)
    await verify_logout_token(env.http, token, "spa")


# --- receivers that fail ------------------------------------------------------------------


async def test_a_receiver_that_hangs_does_not_delay_logout(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    receiver.behaviour[ORDERS_BC] = "hang"
    await confidential_tokens(browser)
    await reports_tokens(browser)

    started = time.monotonic()
    await hub_logout(env)
    assert time.monotonic() - started < TIMEOUT  # the response did not wait for delivery
    assert "isthmus_session" not in env.http.cookies

    started = time.monotonic()
    await env.hub.backchannel.drain()
    assert time.monotonic() - started < TIMEOUT + 1  # and the delivery gave up in time
    by_client = {e["client"]: e for e in backchannel_events(env)}
    assert by_client["orders"]["outcome"] == "failure"
    assert "within" in by_client["orders"]["reason"]
    assert by_client["reports"]["outcome"] == "success"  # the other client still told


async def test_a_receiver_that_is_down_is_audited_not_fatal(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    # No in-process mount: the real network, to a port where nothing listens.
    from tests.peers.common import free_port

    down = f"http://127.0.0.1:{free_port()}/backchannel"
    settings = backchannel_settings()
    clients = tuple(
        c.model_copy(update={"backchannel_logout_uri": down}) if c.client_id == "orders" else c
        for c in settings.clients
    )
    made = make_env(settings.model_copy(update={"clients": clients}))
    made.hub.backchannel.timeout = TIMEOUT
    async with made.http:
        await confidential_tokens(Browser(made))
        response = await hub_logout(made)
        assert "signed out" in response.text.lower() or response.status_code == 200
        await made.hub.backchannel.drain()
    await made.hub.aclose()
    (event,) = backchannel_events(made)
    assert event["outcome"] == "failure" and event["client"] == "orders"
    assert "ConnectError" in event["reason"]


async def test_a_receiver_error_status_is_a_failure(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    await logout_while_down(browser, env, receiver)
    (event,) = backchannel_events(env)
    assert event["outcome"] == "failure" and event["status"] == 503


async def test_the_sid_record_is_used_once(browser: Browser, env: Env, receiver: Receiver) -> None:
    tokens = await confidential_tokens(browser)
    sid = jwt.decode(tokens["id_token"], options={"verify_signature": False})["sid"]
    assert await env.hub.store.set_members(f"oidc:sid-clients:{sid}") == {"orders"}
    await hub_logout(env)
    await env.hub.backchannel.drain()
    assert await env.hub.store.set_members(f"oidc:sid-clients:{sid}") == set()


# --- other ways a session ends ------------------------------------------------------------


async def test_end_partner_tells_the_clients_of_every_session(
    browser: Browser, env: Env, receiver: Receiver
) -> None:
    tokens = await confidential_tokens(browser)
    assert await env.hub.sessions.end_partner("acme") == 1
    await env.hub.backchannel.drain()
    (token,) = receiver.tokens_for(ORDERS_BC)
    claims = await verify_logout_token(env.http, token, "orders")
    id_claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert (claims["sid"], claims["sub"]) == (id_claims["sid"], id_claims["sub"])


@pytest.fixture
def saml_idp() -> FakeSamlIdP:
    return FakeSamlIdP(users=[SamlUser("u-1", email="u1@acme.test")], sign_response=False)


async def test_saml_idp_initiated_logout_sends_logout_tokens(
    saml_idp: FakeSamlIdP, receiver: Receiver
) -> None:
    from federation.identity import FederatedIdentity

    settings = backchannel_settings(idp_metadata_xml=saml_idp.metadata_xml(slo=True))
    made = make_env(settings)
    _mount(made, receiver)
    hub = made.hub
    found = hub.connector("acme-saml")
    assert found is not None
    sp = found[1]
    # A hub session of the SAML connection's user, as the ACS would have made it.
    identity = FederatedIdentity(
        partner_id="acme",
        connection_id="acme-saml",
        issuer=saml_idp.entity_id,
        subject="u-1",
        email="u1@acme.test",
        email_verified=True,
        raw_claims={"session_index": "idx-1"},
    )
    session = await hub.sessions.create(identity)
    async with made.http:
        made.http.cookies.set("isthmus_session", session.id)
        tokens = await confidential_tokens(Browser(made))

        slo = f"{ISSUER}/saml/acme-saml/slo"
        request = saml_idp.logout_request(
            destination=slo,
            name_id="u-1",
            sp_entity_id=sp.endpoints.entity_id,  # type: ignore[attr-defined]
            session_index="idx-1",
            sign=False,
        )
        url = saml_idp.redirect_url(slo, request, relay_state="rs")
        response = await made.http.get(
            "/saml/acme-saml/slo", params=dict(parse_qsl(urlsplit(url).query))
        )
        assert response.status_code in (200, 303), response.text
        await hub.backchannel.drain()
        (token,) = receiver.tokens_for(ORDERS_BC)
        claims = await verify_logout_token(made.http, token, "orders")
    await hub.aclose()
    assert claims["sid"] == session.sid
    id_sid = jwt.decode(tokens["id_token"], options={"verify_signature": False})["sid"]
    assert claims["sid"] == id_sid and claims["sub"] == identity.hub_subject
    assert [e for e in made.events if e["event"] == "logout.upstream"]


# --- units --------------------------------------------------------------------------------


def test_backchannel_uri_is_checked_like_other_uris() -> None:
    from federation.settings import semantic_problems

    settings = backchannel_settings().model_copy(update={"allow_insecure_http": False})
    bad = settings.clients[0].model_copy(
        update={"backchannel_logout_uri": "http://orders.app.test/bc#frag"}
    )
    problems = dict(
        semantic_problems(settings.model_copy(update={"clients": (bad, *settings.clients[1:])}))
    )
    assert "clients.0.backchannel_logout_uri" in problems


async def test_no_event_loop_means_no_crash(caplog: pytest.LogCaptureFixture) -> None:
    made = make_env(backchannel_settings())
    await made.http.aclose()
    await made.hub.aclose()
    # called outside a running loop (a synchronous tool ending sessions): logged, skipped
    await asyncio.to_thread(made.hub.backchannel.sessions_ended, [])
    assert "no event loop" in caplog.text


# --- retries --------------------------------------------------------------------------------


@pytest.fixture
def clock(env: Env, receiver: Receiver) -> FakeClock:
    """The sender on a clock the tests move (the retry schedule is in seconds of it)."""
    made = FakeClock(time.time())
    _mount(env, receiver, made)
    return made


async def logout_while_down(browser: Browser, env: Env, receiver: Receiver) -> None:
    """A session with tokens for orders ends while orders' receiver answers 503."""
    receiver.behaviour[ORDERS_BC] = "error"
    await confidential_tokens(browser)
    await hub_logout(env)
    await env.hub.backchannel.drain()


async def test_a_receiver_that_is_down_is_told_again_later(
    browser: Browser, env: Env, receiver: Receiver, clock: FakeClock
) -> None:
    clock.advance(-RETRY_DELAYS[0])  # so that the retry's token is issued "now" (verified below)
    await logout_while_down(browser, env, receiver)
    (failed,) = backchannel_events(env)
    assert (failed["outcome"], failed["attempt"], failed["retry_in"]) == ("failure", 1, 10.0)

    assert await env.hub.backchannel.retry_due() == []  # not due yet
    receiver.behaviour[ORDERS_BC] = "ok"
    clock.advance(RETRY_DELAYS[0])
    (retried,) = await env.hub.backchannel.retry_due()
    assert (retried["outcome"], retried["attempt"], retried["status"]) == ("success", 2, 200)
    first, second = receiver.tokens_for(ORDERS_BC)
    claims = [await verify_logout_token(env.http, t, "orders") for t in (first, second)]
    assert claims[0]["sid"] == claims[1]["sid"] and claims[0]["sub"] == claims[1]["sub"]
    assert claims[0]["jti"] != claims[1]["jti"]  # a fresh token, not a replay
    clock.advance(max(RETRY_DELAYS))
    assert await env.hub.backchannel.retry_due() == []  # delivered: nothing left


async def test_retries_give_up_after_the_schedule(
    browser: Browser, env: Env, receiver: Receiver, clock: FakeClock
) -> None:
    await logout_while_down(browser, env, receiver)
    for delay in RETRY_DELAYS:
        clock.advance(delay)
        (event,) = await env.hub.backchannel.retry_due()
        assert event["outcome"] == "failure"
    assert event["gave_up"] is True and "retry_in" not in event
    assert event["attempt"] == len(RETRY_DELAYS) + 1
    clock.advance(max(RETRY_DELAYS))
    assert await env.hub.backchannel.retry_due() == []
    assert len(receiver.tokens_for(ORDERS_BC)) == len(RETRY_DELAYS) + 1


async def test_a_receiver_that_refuses_the_token_is_not_asked_again(
    browser: Browser, env: Env, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.behaviour[ORDERS_BC] = "refuse"  # 400: it read the token and said no
    await confidential_tokens(browser)
    await hub_logout(env)
    await env.hub.backchannel.drain()
    (event,) = backchannel_events(env)
    assert event["status"] == 400 and event["gave_up"] is True
    clock.advance(max(RETRY_DELAYS))
    assert await env.hub.backchannel.retry_due() == []


async def test_one_replica_sends_each_retry(
    browser: Browser, env: Env, receiver: Receiver, clock: FakeClock
) -> None:
    await logout_while_down(browser, env, receiver)
    receiver.behaviour[ORDERS_BC] = "ok"
    other = BackchannelSender(  # a second replica on the same store
        env.hub.issuer, env.hub.registry, env.hub.store, env.hub.keys, env.hub.audit,
        clock=clock, timeout=TIMEOUT, transport=httpx.ASGITransport(app=receiver.app()),
    )  # fmt: skip
    clock.advance(RETRY_DELAYS[0])
    done = await asyncio.gather(env.hub.backchannel.retry_due(), other.retry_due())
    assert sorted(len(d) for d in done) == [0, 1]
    assert len(receiver.tokens_for(ORDERS_BC)) == 2  # the first try and one retry
    await other.aclose()


async def test_the_hub_runs_the_retries_itself(
    browser: Browser, env: Env, receiver: Receiver, clock: FakeClock
) -> None:
    await logout_while_down(browser, env, receiver)
    receiver.behaviour[ORDERS_BC] = "ok"
    receiver.arrived.clear()
    clock.advance(RETRY_DELAYS[0])
    loop = asyncio.create_task(env.hub.backchannel.run_retries(interval=0))
    try:
        await asyncio.wait_for(receiver.arrived.wait(), timeout=10)
    finally:
        loop.cancel()
    assert len(receiver.tokens_for(ORDERS_BC)) == 2

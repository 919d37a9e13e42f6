"""Integration: signing out at the hub signs out at the partner's OIDC IdP too (OpenID
Connect RP-Initiated Logout 1.0), against a real node ``oidc-provider`` and a hub on Redis.

The partner registered the hub's ``/logout/{connection}/done`` as a post-logout redirect
URI of the hub's client. Proven here: sign in → /logout → the hub session is gone (Redis)
before the browser reaches the IdP's end_session_endpoint (with id_token_hint, client_id,
post_logout_redirect_uri, state) → the IdP ends its session (the next sign-in shows its
password form again) → back at the hub's done page; a forged or replayed state refused.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import jwt
import pytest

from tests.integration.support import SESSION_COOKIE, Ports, RunningHub, ServeHub, query_of
from tests.integration.test_oidc_partner_to_oidc_app import (
    PartnerSpec,
    assert_error_page,
    hub_login,
    partner_entry,
    to_partner_idp,
)
from tests.peers.browser import Browser
from tests.peers.common import free_port
from tests.peers.oidc_provider import Peer, StartPeer

pytestmark = pytest.mark.integration

SPEC = PartnerSpec("hooli", "supplier", "hooli.example", "hooli-oidc", trust_acr=False)
LOGOUT_COOKIE = "isthmus_logout"


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports(hub=free_port(), app=free_port())


def done_url(ports: Ports) -> str:
    return f"{ports.hub_url}/logout/{SPEC.connection_id}/done"


@pytest.fixture(scope="module")
def hooli(oidc_provider_peer: StartPeer, ports: Ports) -> Iterator[Peer]:
    peer = oidc_provider_peer(
        "hooli-idp",
        email_domain=SPEC.domain,
        client_id="isthmus-hooli",
        client_secret=f"secret-{secrets.token_hex(8)}",
        redirect_uris=[ports.hub_callback(SPEC.connection_id)],
        post_logout_redirect_uris=[done_url(ports)],
    )
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def hub(hub_server: ServeHub, hooli: Peer) -> RunningHub:
    return hub_server(partners=[partner_entry(SPEC, hooli)], clients=[])


def test_logout_at_the_hub_ends_the_partner_idp_session(
    hub: RunningHub, hooli: Peer, browser: Browser, ports: Ports
) -> None:
    email = f"alice@{SPEC.domain}"
    landing = hub_login(browser, hub.url, email, hooli)
    assert "You are signed in" in landing.text
    cookie = browser.cookies.get(SESSION_COOKIE)
    assert cookie and hub.stored_session(cookie) is not None
    assert hub.keys("session-upstream:*") != []  # the ID token, beside the session
    assert "id_token" not in str(hub.stored_session(cookie))

    page = browser.get(f"{hub.url}/logout")
    leaving = browser.submit(page, form_id="logout-form", stop_at=hooli.issuer)

    # 1. the hub session is over before the browser reaches the IdP
    assert leaving.status_code == 303, leaving.text
    assert hub.stored_session(cookie) is None and hub.keys("session:*") == []
    assert hub.keys("session-upstream:*") == []
    assert browser.cookies.get(SESSION_COOKIE) is None
    to_idp = browser.location(leaving)
    assert to_idp.startswith(hooli.discovery()["end_session_endpoint"] + "?")
    params = query_of(to_idp)
    assert params["client_id"] == hooli.client_id
    assert params["post_logout_redirect_uri"] == done_url(ports)
    assert params["state"] == browser.cookies.get(LOGOUT_COOKIE)
    hint = jwt.decode(params["id_token_hint"], options={"verify_signature": False})
    assert hint["iss"] == hooli.issuer and hint["sub"] == "alice"
    assert hint["aud"] == hooli.client_id

    # 2. the IdP asks; the user confirms; the IdP sends the browser back with the state
    confirm = browser.get(to_idp)
    assert confirm.status_code == 200 and "sign-out" in confirm.text, confirm.text
    done = browser.submit(confirm, {"logout": "yes"}, form_id="op.logoutForm")
    back = next(r for r in browser.history if r.url.path.endswith("/done"))
    assert str(back.url) == f"{done_url(ports)}?state={params['state']}"
    assert done.status_code == 200 and str(done.url).startswith(hub.url), done.text
    assert "You are signed out" in done.text and 'id="upstream-logout"' in done.text
    assert browser.cookies.get(LOGOUT_COOKIE) is None
    (started,) = hub.events_named("logout.upstream.started")
    assert started["partner"] == SPEC.id and started["subject"] == "alice"
    (completed,) = hub.events_named("logout.upstream.completed")
    assert completed["connection"] == SPEC.connection_id and completed["outcome"] == "success"

    # 3. replayed: refused (one-time), even in the same browser with its cookie back
    browser.cookies.set(LOGOUT_COOKIE, params["state"])
    assert_error_page(browser.get(str(back.url)), 400, "invalid_state")
    # forged: refused
    forged = browser.get(done_url(ports), params={"state": secrets.token_urlsafe(24)})
    assert_error_page(forged, 400, "invalid_state")
    assert [e["outcome"] for e in hub.events_named("logout.upstream.completed")][1:] == [
        "failure",
        "failure",
    ]

    # 4. the IdP session is gone: signing in again asks for the password
    again = to_partner_idp(browser, browser.get(f"{hub.url}/login"), email, hooli)
    assert again.status_code == 200
    relanded = browser.login(again, "alice", "alice-password")
    assert "You are signed in" in relanded.text

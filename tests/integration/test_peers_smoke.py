"""Smoke test of the peer tooling: two real node oidc-provider partners, a plain RP logs in.

No hub involved: this proves the fixtures (tests/peers/oidc_provider.py), the scripted browser
and the RP helper before the hub's own integration tests rely on them.
"""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.peers.asgi import ServeApp
from tests.peers.browser import Browser, find_form
from tests.peers.common import free_port
from tests.peers.oidc_provider import Peer, StartPeer
from tests.peers.oidc_rp import OidcRP

pytestmark = pytest.mark.integration

ACME_CB = "http://127.0.0.1:8000/oidc/callback/acme"
GLOBEX_CB = "http://127.0.0.1:8000/oidc/callback/globex"


@pytest.fixture(scope="module")
def acme(oidc_provider_peer: StartPeer) -> Peer:
    return oidc_provider_peer(
        "acme",
        email_domain="acme.example",
        client_id="hub",
        client_secret="hub-secret-acme",
        redirect_uris=[ACME_CB],
    )


@pytest.fixture(scope="module")
def globex(oidc_provider_peer: StartPeer) -> Peer:
    return oidc_provider_peer(
        "globex",
        email_domain="globex.example",
        client_id="hub-at-globex",
        client_secret="hub-secret-globex",
        redirect_uris=[GLOBEX_CB],
        id_token_alg="ES256",
        auth_method="client_secret_post",
        pkce_required=True,
        users=[
            {
                "sub": "g-0001",
                "username": "gina",
                "password": "gina-password",
                "given_name": "Gina",
                "family_name": "Green",
                "groups": ["buyers"],
            }
        ],
    )


def rp_for(peer: Peer) -> OidcRP:
    return OidcRP(
        peer.issuer,
        client_id=peer.client_id,
        client_secret=peer.client_secret,
        redirect_uri=peer.redirect_uris[0],
        auth_method=peer.auth_method,
    )


def test_two_partners_are_distinct_issuers(acme: Peer, globex: Peer) -> None:
    assert acme.port != globex.port
    assert acme.discovery()["issuer"] == acme.issuer == f"http://127.0.0.1:{acme.port}"
    assert globex.discovery()["issuer"] == globex.issuer
    acme_kids = {k["kid"] for k in acme.jwks()["keys"]}
    globex_kids = {k["kid"] for k in globex.jwks()["keys"]}
    assert acme_kids and globex_kids and not acme_kids & globex_kids


def test_acme_rs256_client_secret_basic(acme: Peer, browser: Browser) -> None:
    with rp_for(acme) as rp:
        result = rp.login(browser, "alice", "alice-password")
    assert result.header["alg"] == "RS256"
    assert result.claims["iss"] == acme.issuer
    assert result.claims["aud"] == "hub"
    assert result.claims["sub"] == "alice"
    assert result.claims["email"] == "alice@acme.example"
    assert result.claims["email_verified"] is True
    assert result.claims["groups"] == ["engineering", "admins"]
    assert result.callback["iss"] == acme.issuer


def test_globex_es256_client_secret_post(globex: Peer, browser: Browser) -> None:
    with rp_for(globex) as rp:
        result = rp.login(browser, "gina@globex.example", "gina-password")
    assert result.header["alg"] == "ES256"
    assert result.claims["iss"] == globex.issuer
    assert result.claims["aud"] == "hub-at-globex"
    assert result.claims["sub"] == "g-0001"
    assert result.claims["email"] == "gina@globex.example"
    assert result.claims["name"] == "Gina Green"
    assert result.claims["groups"] == ["buyers"]


def test_wrong_password_shows_the_form_again(acme: Peer, browser: Browser) -> None:
    with rp_for(acme) as rp:
        url, _flow = rp.authorization_url()
    page = browser.get(url, stop_at=ACME_CB)
    assert page.status_code == 200
    again = browser.login(page, "alice", "not-the-password", stop_at=ACME_CB)
    assert again.status_code == 200
    assert "Invalid username or password" in again.text
    assert find_form(again, form_id="login").has_password()


def test_one_browser_two_partners_keeps_sessions_apart(
    acme: Peer, globex: Peer, browser: Browser
) -> None:
    """Same host, different ports: cookies are shared per host, names keep sessions apart."""
    with rp_for(acme) as acme_rp, rp_for(globex) as globex_rp:
        first = acme_rp.login(browser, "bob", "bob-password")
        second = globex_rp.login(browser, "gina", "gina-password")
        # acme's session survives globex's login: no login form the second time
        url, flow = acme_rp.authorization_url()
        again = browser.get(url, stop_at=ACME_CB)
        third = acme_rp.finish(browser.location(again), flow)
    assert first.claims["sub"] == third.claims["sub"] == "bob"
    assert second.claims["sub"] == "g-0001"


def test_browser_crosses_hosts_into_a_real_rp(
    oidc_provider_peer: StartPeer, asgi_server: ServeApp
) -> None:
    """The shape of a hub test: an RP app on a real port, a peer redirecting the browser to it."""
    rp_port = free_port()
    rp_url = f"http://127.0.0.1:{rp_port}"
    peer = oidc_provider_peer(
        "initech",
        email_domain="initech.example",
        client_id="rp",
        client_secret="rp-secret",
        redirect_uris=[f"{rp_url}/callback"],
    )
    flows: dict[str, dict[str, str]] = {}
    rp = OidcRP(
        peer.issuer, client_id="rp", client_secret="rp-secret", redirect_uri=f"{rp_url}/callback"
    )

    def login(request: Request) -> Response:
        url, flow = rp.authorization_url()
        flows[flow["state"]] = flow
        return RedirectResponse(url, status_code=303)

    def callback(request: Request) -> Response:
        flow = flows.pop(request.query_params["state"])
        result = rp.finish(str(request.url), flow)
        response = JSONResponse(result.claims)
        response.set_cookie("rp_session", result.claims["sub"], httponly=True)
        return response

    app = Starlette(routes=[Route("/login", login), Route("/callback", callback)])
    try:
        assert asgi_server(app, port=rp_port) == rp_url
        with Browser() as browser:
            page = browser.get(f"{rp_url}/login")
            assert str(page.url).startswith(f"{peer.issuer}/interaction/")
            done = browser.login(page, "carol@initech.example", "carol-password")
            assert done.status_code == 200, done.text
            assert str(done.url).startswith(f"{rp_url}/callback?")
            assert done.json()["email"] == "carol@initech.example"
            assert [r.url.port for r in browser.history] == [peer.port, peer.port, rp_port]
            assert browser.cookies.get("rp_session") == "carol"
    finally:
        rp.close()

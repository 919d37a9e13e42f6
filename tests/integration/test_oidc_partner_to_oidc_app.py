"""Integration: partner OIDC IdPs (real node oidc-provider) → the hub (real Redis) → apps.

Two partner companies sign in through their own IdP processes:

* ``acme`` — supplier, acme.example, RS256 ID tokens, ``client_secret_basic``, its acr/amr
  trusted by the hub;
* ``globex`` — customer, globex.example, ES256 ID tokens, ``client_secret_post``, PKCE
  required by the IdP, acr/amr not trusted (the hub drops them).

The hub is served by uvicorn on a real port (reserved once per module so the IdPs can
register its callback URLs) with ``store.backend: redis`` on a private redis-server, a fresh
key prefix per test. A scripted browser (``tests.peers.browser``) does what a user does; an
app that is an OIDC client of the hub uses authlib's client (code + PKCE S256) and checks
the hub's ID token with PyJWT against the hub's JWKS.

Covered: hub session through each partner (stored in Redis, groups kept); an OIDC app's
login through each partner (ID token, userinfo); a partner IdP asserting an email of
another partner's domain (403 partner_mismatch, audited, no session, no code); logout
(session gone from Redis, the old cookie is anonymous, the app's token dies with it); an
IdP that is down before the redirect and at the callback (502 page, audited).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.support import (
    ALICE_GROUPS,
    CLIENT_SECRET,
    FLOW_COOKIE,
    SCOPE,
    SESSION_COOKIE,
    OAuth2Client,
    Ports,
    RunningHub,
    ServeHub,
    finish_app_login,
    query_of,
    start_app_login,
)
from tests.integration.support import app_client as oauth2_client
from tests.peers.browser import Browser, find_form
from tests.peers.common import free_port
from tests.peers.oidc_provider import Peer, StartPeer

pytestmark = pytest.mark.integration

# --- module-wide: ports, partner IdPs -------------------------------------------------------


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports(hub=free_port(), app=free_port())


def partner_idp(
    start: StartPeer, ports: Ports, name: str, connection_id: str, **kwargs: Any
) -> Peer:
    """A partner IdP whose one client is the hub, calling back to ``connection_id``."""
    return start(
        name,
        client_id=f"isthmus-{connection_id}",
        client_secret=f"secret-{connection_id}-{secrets.token_hex(8)}",
        redirect_uris=[ports.hub_callback(connection_id)],
        **kwargs,
    )


def _running(peer: Peer) -> Iterator[Peer]:
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def acme(oidc_provider_peer: StartPeer, ports: Ports) -> Iterator[Peer]:
    yield from _running(
        partner_idp(oidc_provider_peer, ports, "acme-idp", "acme-oidc", email_domain="acme.example")
    )


@pytest.fixture(scope="module")
def globex(oidc_provider_peer: StartPeer, ports: Ports) -> Iterator[Peer]:
    yield from _running(
        partner_idp(
            oidc_provider_peer,
            ports,
            "globex-idp",
            "globex-oidc",
            email_domain="globex.example",
            id_token_alg="ES256",
            auth_method="client_secret_post",
            pkce_required=True,
        )
    )


@pytest.fixture(scope="module")
def globex_rogue(oidc_provider_peer: StartPeer, ports: Ports) -> Iterator[Peer]:
    """A globex IdP whose user carries an acme.example email (a partner speaking for another)."""
    yield from _running(
        partner_idp(
            oidc_provider_peer,
            ports,
            "globex-rogue",
            "globex-rogue",
            email_domain="globex.example",
            id_token_alg="ES256",
            auth_method="client_secret_post",
            users=[
                {
                    "sub": "g-spoof-1",
                    "username": "alice",
                    "password": "alice-password",
                    "given_name": "Alice",
                    "family_name": "Anderson",
                    "email": "alice@acme.example",
                    "email_verified": True,
                    "groups": ALICE_GROUPS,
                }
            ],
        )
    )


# --- partners, clients, the hub -----------------------------------------------------------


@dataclass(frozen=True)
class PartnerSpec:
    id: str
    kind: str
    domain: str
    connection_id: str
    trust_acr: bool


ACME = PartnerSpec("acme", "supplier", "acme.example", "acme-oidc", trust_acr=True)
GLOBEX = PartnerSpec("globex", "customer", "globex.example", "globex-oidc", trust_acr=False)
PARTNERS = {p.id: p for p in (ACME, GLOBEX)}
# One confidential app per client authentication method.
CLIENTS = {
    "acme": ("portal", "client_secret_basic"),
    "globex": ("portal-post", "client_secret_post"),
}


def partner_entry(
    spec: PartnerSpec, peer: Peer, connection_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": spec.id,
        "name": f"{spec.id.capitalize()} Corp",
        "kind": spec.kind,
        "status": "active",
        "domains": [spec.domain],
        "connections": [
            {
                "type": "oidc",
                "id": connection_id or spec.connection_id,
                "issuer": peer.issuer,
                "client_id": peer.client_id,
                "client_secret": peer.client_secret,
                "token_endpoint_auth_method": peer.auth_method,
                "algorithms": [peer.id_token_alg],
                "scopes": SCOPE.split(),
                "trust_acr": spec.trust_acr,
            }
        ],
    }


StartHub = Callable[[list[dict[str, Any]]], RunningHub]


@pytest.fixture
def start_hub(ports: Ports, hub_server: ServeHub) -> StartHub:
    """Write a settings file, load it like ``isthmus serve`` does, serve the hub on its port."""

    def start(partners: list[dict[str, Any]]) -> RunningHub:
        return hub_server(
            partners=partners,
            clients=[
                {
                    "client_id": client_id,
                    "name": f"Partner portal ({method})",
                    "client_secret": CLIENT_SECRET,
                    "token_endpoint_auth_method": method,
                    "redirect_uris": [ports.app_callback],
                }
                for client_id, method in CLIENTS.values()
            ],
        )

    return start


@pytest.fixture
def two_partner_hub(start_hub: StartHub, acme: Peer, globex: Peer) -> RunningHub:
    return start_hub([partner_entry(ACME, acme), partner_entry(GLOBEX, globex)])


def peer_of(partner_id: str, acme: Peer, globex: Peer) -> Peer:
    return {"acme": acme, "globex": globex}[partner_id]


# --- helpers ----------------------------------------------------------------------------------


def to_partner_idp(
    browser: Browser, email_page: httpx.Response, email: str, peer: Peer
) -> httpx.Response:
    """Type the email on the hub's form; land on the partner IdP's login form."""
    assert email_page.status_code == 200, email_page.text
    idp_page = browser.submit(email_page, {"email": email}, form_id="login-form")
    assert idp_page.status_code == 200, idp_page.text
    assert str(idp_page.url).startswith(f"{peer.issuer}/interaction/"), idp_page.url
    assert find_form(idp_page, form_id="login").has_password()
    return idp_page


def upstream_request(browser: Browser, peer: Peer) -> dict[str, str]:
    """The authentication request the hub sent to the partner IdP (from the last navigation)."""
    hop = next(r for r in browser.history if str(r.url).startswith(f"{peer.issuer}/auth?"))
    return query_of(str(hop.url))


def hub_login(browser: Browser, hub_url: str, email: str, peer: Peer) -> httpx.Response:
    """/login → email → partner IdP → alice's password → hub callback → landing page."""
    idp_page = to_partner_idp(browser, browser.get(f"{hub_url}/login"), email, peer)
    upstream = upstream_request(browser, peer)
    assert upstream["code_challenge_method"] == "S256" and upstream["code_challenge"]
    assert upstream["nonce"] and upstream["state"]
    assert upstream["scope"] == SCOPE and upstream["client_id"] == peer.client_id
    return browser.login(idp_page, "alice", "alice-password")


def assert_error_page(response: httpx.Response, status: int, code: str) -> str:
    """A clear HTML error page: status, code, request id shown and echoed; no internals."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    shown = re.search(r'<code id="error-code">([^<]*)</code>', response.text)
    assert shown is not None and shown.group(1) == code, response.text
    request_id = response.headers["x-request-id"]
    assert f'<code id="request-id">{request_id}</code>' in response.text
    for leak in ("Traceback", "Exception", "connection ", "127.0.0.1"):
        assert leak not in response.text, f"{leak!r} leaked into the page:\n{response.text}"
    return request_id


def mapped_acr_amr(spec: PartnerSpec, upstream: dict[str, Any]) -> tuple[str | None, list[str]]:
    """acr/amr as the hub maps them: the partner's values when trusted, else dropped.

    The node peer signs users in with ``acr: urn:partner:pwd`` and ``amr: ["pwd"]``
    (tests/peers/oidc_provider/server.mjs), and puts both in its ID tokens.
    """
    assert upstream.get("acr") == "urn:partner:pwd" and upstream.get("amr") == ["pwd"], upstream
    if not spec.trust_acr:
        return None, []
    return "urn:partner:pwd", ["pwd"]


# --- 1. partner user → hub session ------------------------------------------------------------


@pytest.mark.parametrize("partner_id", ["acme", "globex"])
def test_partner_login_opens_a_hub_session_in_redis(
    partner_id: str, two_partner_hub: RunningHub, acme: Peer, globex: Peer, browser: Browser
) -> None:
    hub, spec, peer = two_partner_hub, PARTNERS[partner_id], peer_of(partner_id, acme, globex)
    email = f"alice@{spec.domain}"

    landing = hub_login(browser, hub.url, email, peer)

    # back through the hub's callback (with RFC 9207 iss) to the landing page
    callback = next(r for r in browser.history if r.url.path.startswith("/callback/"))
    assert str(callback.url).startswith(hub.url + f"/callback/{spec.connection_id}?")
    assert query_of(str(callback.url))["iss"] == peer.issuer
    assert callback.status_code == 303 and callback.headers["location"] == "/"
    assert landing.status_code == 200 and str(landing.url) == f"{hub.url}/"
    assert "You are signed in" in landing.text
    assert f'<dd id="email">{email}</dd>' in landing.text
    assert f'<dd id="partner">{spec.id.capitalize()} Corp</dd>' in landing.text
    assert "engineering, admins" in landing.text

    cookie = browser.cookies.get(SESSION_COOKIE)
    assert cookie and browser.cookies.get(FLOW_COOKIE) is None
    stored = hub.stored_session(cookie)
    assert stored is not None, hub.keys("*")
    identity = stored["identity"]
    assert identity["partner_id"] == spec.id
    assert identity["connection_id"] == spec.connection_id
    assert identity["issuer"] == peer.issuer and identity["subject"] == "alice"
    assert identity["email"] == email and identity["email_verified"] is True
    assert identity["name"] == "Alice Anderson"
    assert identity["groups"] == ALICE_GROUPS
    acr, amr = mapped_acr_amr(spec, identity["raw_claims"])
    assert identity["acr"] == acr and identity["amr"] == amr
    ttl_ms = hub.redis.pttl(hub.session_key(cookie))
    assert 0 < ttl_ms <= hub.hub.settings.session.ttl_seconds * 1000
    digest = hashlib.sha256(cookie.encode()).hexdigest()
    assert hub.partner_sessions(spec.id) == {digest}
    assert cookie not in "".join(hub.keys("*"))  # the store holds a hash, never the cookie
    assert hub.keys("flow:*") == []  # the login flow was single use

    (started,) = hub.events_named("login.started")
    (succeeded,) = hub.events_named("login.succeeded")
    assert started["partner"] == succeeded["partner"] == spec.id
    assert succeeded["connection"] == spec.connection_id and succeeded["issuer"] == peer.issuer
    assert succeeded["subject"] == "alice" and succeeded["email"] == email
    assert succeeded["request_id"] == callback.headers["x-request-id"]

    # the session is read back from Redis on the next request too
    again = browser.get(f"{hub.url}/")
    assert "You are signed in" in again.text


# --- 2. an OIDC app logs in against the hub, through each partner -----------------------------


def app_client(partner_id: str, ports: Ports) -> OAuth2Client:
    client_id, method = CLIENTS[partner_id]
    return oauth2_client(ports, client_id, token_endpoint_auth_method=method)


@dataclass
class AppLogin:
    tokens: dict[str, Any]
    claims: dict[str, Any]
    nonce: str


def app_login(
    hub: RunningHub,
    client: OAuth2Client,
    browser: Browser,
    email: str,
    peer: Peer,
    ports: Ports,
) -> AppLogin:
    """app → hub /oauth2/authorize → hub login → partner IdP → hub → app callback → tokens."""
    authorization = start_app_login(hub, client, browser, ports)
    idp_page = to_partner_idp(browser, authorization.email_page, email, peer)
    done = browser.login(idp_page, "alice", "alice-password", stop_at=ports.app_callback)
    # the IdP → the hub's callback → back to /oauth2/authorize → a code for the app
    assert any(r.url.path.startswith("/callback/") for r in browser.history)
    tokens, claims = finish_app_login(authorization, hub, client, browser, done, ports)
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    assert tokens["scope"] == SCOPE
    return AppLogin(tokens, claims, authorization.nonce)


@pytest.mark.parametrize("partner_id", ["acme", "globex"])
def test_oidc_app_login_through_partner_idp(
    partner_id: str,
    two_partner_hub: RunningHub,
    acme: Peer,
    globex: Peer,
    browser: Browser,
    ports: Ports,
) -> None:
    hub, spec, peer = two_partner_hub, PARTNERS[partner_id], peer_of(partner_id, acme, globex)
    email = f"alice@{spec.domain}"
    with app_client(partner_id, ports) as client:
        login = app_login(hub, client, browser, email, peer, ports)
        claims = login.claims
        assert claims["azp"] == client.client_id and claims["at_hash"] and claims["sid"]
        assert "@" not in claims["sub"] and claims["sub"] != "alice"  # opaque hub subject
        assert claims["partner_id"] == spec.id and claims["partner_kind"] == spec.kind
        assert claims["groups"] == ALICE_GROUPS
        assert claims["email"] == email and claims["email_verified"] is True
        assert claims["name"] == "Alice Anderson"
        cookie = browser.cookies.get(SESSION_COOKIE)
        stored = hub.stored_session(cookie) if cookie else None
        assert stored is not None  # the hub's own session, opened on the way, is in Redis
        acr, amr = mapped_acr_amr(spec, stored["identity"]["raw_claims"])
        assert claims["amr"] == amr and claims.get("acr") == acr

        response = client.get(hub.discovery()["userinfo_endpoint"])
        assert response.status_code == 200, response.text
        userinfo = response.json()
        assert userinfo["sub"] == claims["sub"]
        for name in ("partner_id", "partner_kind", "groups", "amr", "email", "name"):
            assert userinfo[name] == claims[name], name
        assert userinfo.get("acr") == claims.get("acr")

    assert hub.keys("oidc:code:*") == []  # the code was redeemed
    (issued,) = hub.events_named("oidc.code_issued")
    assert issued["client"] == client.client_id and issued["partner"] == spec.id
    assert hub.events_named("oidc.token_issued")


# --- 3. a partner IdP speaking for another partner's domain -------------------------------------


def test_partner_idp_asserting_another_partners_domain_is_refused(
    start_hub: StartHub, acme: Peer, globex_rogue: Peer, browser: Browser, ports: Ports
) -> None:
    hub = start_hub(
        [
            partner_entry(ACME, acme),
            partner_entry(GLOBEX, globex_rogue, connection_id="globex-rogue"),
        ]
    )
    with app_client("acme", ports) as client:
        meta = hub.discovery()
        url, _state = client.create_authorization_url(
            meta["authorization_endpoint"],
            code_verifier=secrets.token_urlsafe(48),
            nonce="n-spoof",
        )
    email_page = browser.get(url, stop_at=ports.app_callback)
    idp_page = to_partner_idp(browser, email_page, "alice@globex.example", globex_rogue)
    refused = browser.login(idp_page, "alice", "alice-password", stop_at=ports.app_callback)

    request_id = assert_error_page(refused, 403, "partner_mismatch")
    assert "not allowed to sign in this email address" in refused.text
    assert str(refused.url).startswith(f"{hub.url}/callback/globex-rogue?")
    # no session: no cookie set on any hop, nothing in Redis, no code for the app
    assert all(
        SESSION_COOKIE not in h for r in browser.history for h in r.headers.get_list("set-cookie")
    )
    assert browser.cookies.get(SESSION_COOKIE) is None
    assert not any(str(r.url).startswith(ports.app_callback) for r in browser.history)
    assert hub.keys("session:*") == [] and hub.keys("partner-sessions:*") == []
    assert hub.keys("oidc:*") == []
    assert hub.events_named("login.succeeded") == []
    (failed,) = hub.events_named("login.failed")
    assert failed["outcome"] == "failure" and failed["reason"] == "partner_mismatch"
    assert failed["partner"] == "globex" and failed["connection"] == "globex-rogue"
    assert failed["request_id"] == request_id
    assert "alice@acme.example" in failed["detail"] and "acme" in failed["detail"]

    # the flow was consumed: replaying the callback finds nothing
    replay = browser.get(str(refused.url))
    assert_error_page(replay, 400, "invalid_state")
    assert hub.keys("session:*") == []


# --- 4. logout ----------------------------------------------------------------------------------


def test_logout_ends_the_session_in_redis(
    two_partner_hub: RunningHub, acme: Peer, browser: Browser, ports: Ports
) -> None:
    hub = two_partner_hub
    with app_client("acme", ports) as client:
        login = app_login(hub, client, browser, "alice@acme.example", acme, ports)
        cookie = browser.cookies.get(SESSION_COOKIE)
        assert cookie and hub.stored_session(cookie) is not None
        userinfo_url = hub.discovery()["userinfo_endpoint"]
        assert client.get(userinfo_url).status_code == 200

        page = browser.get(f"{hub.url}/logout")
        assert page.status_code == 200 and "alice@acme.example" in page.text
        # the hub session ends here, then the browser goes on to acme's end_session_endpoint
        # (RP-initiated logout: tests/integration/test_oidc_upstream_logout.py)
        done = browser.submit(page, form_id="logout-form", stop_at=acme.issuer)
        assert done.status_code == 303, done.text
        cleared = [h for h in done.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)]
        assert cleared and ("Max-Age=0" in cleared[0] or "expires=" in cleared[0].lower())

        assert hub.stored_session(cookie) is None
        assert hub.keys("session:*") == [] and hub.partner_sessions("acme") == set()
        (logout,) = hub.events_named("logout")
        assert logout["partner"] == "acme" and logout["sid"] == login.claims["sid"]

        # the app's access token died with the session
        after = client.get(userinfo_url)
        assert after.status_code == 401 and after.json()["error"] == "invalid_token"

    # a request with the old cookie is anonymous, and /oauth2/authorize asks to sign in again
    with httpx.Client(base_url=hub.url, cookies={SESSION_COOKIE: cookie}, timeout=5) as old:
        home = old.get("/")
        assert home.status_code == 200 and "Welcome to the extranet" in home.text
        assert "alice@acme.example" not in home.text
        authorize = old.get(
            "/oauth2/authorize",
            params={
                "client_id": "portal",
                "redirect_uri": ports.app_callback,
                "response_type": "code",
                "scope": "openid",
                "state": "s",
                "nonce": "n",
            },
        )
        assert authorize.status_code == 303
        assert authorize.headers["location"].startswith("/login?rd=")


# --- 5. the partner IdP is down ------------------------------------------------------------------


@contextlib.contextmanager
def lone_partner(
    start_hub: StartHub, start: StartPeer, ports: Ports, partner_id: str, kind: str
) -> Iterator[tuple[Peer, RunningHub]]:
    """A hub whose only partner is ``partner_id`` (acr/amr not trusted) with its own IdP,
    stopped afterwards."""
    domain, connection_id = f"{partner_id}.example", f"{partner_id}-oidc"
    peer = partner_idp(start, ports, f"{partner_id}-idp", connection_id, email_domain=domain)
    try:
        spec = PartnerSpec(partner_id, kind, domain, connection_id, False)
        yield peer, start_hub([partner_entry(spec, peer)])
    finally:
        peer.stop()


def test_partner_idp_down_before_the_redirect(
    start_hub: StartHub, oidc_provider_peer: StartPeer, ports: Ports, browser: Browser
) -> None:
    partner = lone_partner(start_hub, oidc_provider_peer, ports, "initech", "subcontractor")
    with partner as (peer, hub):
        peer.stop()  # before the hub ever fetched its discovery document

        email_page = browser.get(f"{hub.url}/login")
        failed_page = browser.submit(
            email_page, {"email": "alice@initech.example"}, form_id="login-form"
        )
        request_id = assert_error_page(failed_page, 502, "upstream_error")
        assert "sign-in service did not complete the sign-in" in failed_page.text
        assert browser.cookies.get(SESSION_COOKIE) is None
        assert hub.keys("session:*") == []
        (failed,) = hub.events_named("login.failed")
        assert failed["reason"] == "upstream_error" and failed["partner"] == "initech"
        assert failed["connection"] == "initech-oidc" and failed["request_id"] == request_id
        assert hub.events_named("login.started") == []


def test_partner_idp_down_at_the_callback(
    start_hub: StartHub, oidc_provider_peer: StartPeer, ports: Ports, browser: Browser
) -> None:
    partner = lone_partner(start_hub, oidc_provider_peer, ports, "umbrella", "distributor")
    with partner as (peer, hub):
        idp_page = to_partner_idp(
            browser, browser.get(f"{hub.url}/login"), "alice@umbrella.example", peer
        )
        back = browser.login(idp_page, "alice", "alice-password", stop_at=f"{hub.url}/callback/")
        peer.stop()  # the user authenticated; the IdP dies before the code is redeemed

        failed_page = browser.get(browser.location(back))
        request_id = assert_error_page(failed_page, 502, "upstream_error")
        assert browser.cookies.get(SESSION_COOKIE) is None
        assert hub.keys("session:*") == [] and hub.keys("flow:*") == []
        (failed,) = hub.events_named("login.failed")
        assert failed["outcome"] == "failure" and failed["reason"] == "upstream_error"
        assert failed["partner"] == "umbrella" and failed["request_id"] == request_id
        assert "token endpoint unreachable" in failed["detail"]

"""Integration: a partner SAML IdP (real SimpleSAMLphp) → the hub (real Redis) → an OIDC app.

Partner ``initech`` (supplier, initech.example) signs in through its own SimpleSAMLphp 1.19
IdP (``tests/peers/simplesamlphp.py``); the hub's ``saml`` connection ``initech-saml`` reads
the IdP from its metadata URL. The hub is served by uvicorn on a port reserved once per
module, with ``store.backend: redis`` on a private redis-server and a fresh key prefix per
test. The IdP learns about the hub the way a partner does: from the hub's SP metadata
(``GET /saml/initech-saml/metadata``: entityID, ACS, SLO, certificate), registered on the
running IdP after each hub start (the hub generates its SP key pair at start-up).

A scripted browser (``tests.peers.browser``) does what a user does: app → hub
``/oauth2/authorize`` → hub ``/login`` (email) → SimpleSAMLphp's login form → its auto-POST
form to the hub's ACS (``POST /callback/initech-saml``, answered 303 to a GET that completes
the login) → code → the app (authlib client, PKCE S256) redeems it and checks the hub's ID
token with PyJWT against the hub's JWKS.

Covered: the hub's SP metadata; a full app login (identity from the SAML NameID and
attributes, session in Redis); SP-initiated single logout (hub session and IdP session both
gone); IdP-initiated single logout (the IdP's LogoutRequest ends the hub session); IdP-
initiated SSO refused without the opt-in; signed AuthnRequests required by the IdP;
an encrypted assertion.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration import support
from tests.integration.support import (
    ALICE_GROUPS,
    FLOW_COOKIE,
    SESSION_COOKIE,
    OAuth2Client,
    RunningHub,
    ServeHub,
    finish_app_login,
    start_app_login,
)
from tests.peers.browser import Browser, find_form
from tests.peers.common import free_port
from tests.peers.simplesamlphp import SamlPeer, StartSamlPeer, redirect_message

pytestmark = pytest.mark.integration

ALICE_EMAIL = "alice@initech.example"
PARTNER = "initech"
CONNECTION = "initech-saml"
CLIENT_ID = "portal"
EMAIL_NAMEID = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
PASSWORD_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"


# --- module-wide: ports, the partner IdP ---------------------------------------------------


@dataclass(frozen=True)
class Ports(support.Ports):
    @property
    def acs_url(self) -> str:
        return self.hub_callback(CONNECTION)

    @property
    def sp_entity_id(self) -> str:
        return f"{self.hub_url}/saml/{CONNECTION}/metadata"

    @property
    def slo_url(self) -> str:
        return f"{self.hub_url}/saml/{CONNECTION}/slo"


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports(hub=free_port(), app=free_port())


@pytest.fixture(scope="module")
def initech(simplesamlphp_peer: StartSamlPeer) -> Iterator[SamlPeer]:
    """initech's IdP; the hub is registered as its SP by each test's hub (its metadata)."""
    peer = simplesamlphp_peer("initech-idp", email_domain="initech.example")
    yield peer
    peer.stop()


# --- the hub ---------------------------------------------------------------------------------


@dataclass
class SamlHub(RunningHub):
    sp_metadata: str = ""


StartHub = Callable[..., SamlHub]


@pytest.fixture
def start_hub(ports: Ports, hub_server: ServeHub, initech: SamlPeer) -> StartHub:
    """Serve the hub with initech's ``saml`` connection, then register it with the IdP."""

    def start(
        *,
        connection: dict[str, Any] | None = None,
        require_signed_authnrequest: bool = False,
        encrypt_assertion: bool = False,
    ) -> SamlHub:
        running = hub_server(
            partners=[
                {
                    "id": PARTNER,
                    "name": "Initech",
                    "kind": "supplier",
                    "status": "active",
                    "domains": ["initech.example"],
                    "connections": [
                        {
                            "type": "saml",
                            "id": CONNECTION,
                            "idp_metadata_url": initech.metadata_url,
                            **(connection or {}),
                        }
                    ],
                }
            ],
            clients=[
                {
                    "client_id": CLIENT_ID,
                    "name": "Partner portal",
                    "client_secret": support.CLIENT_SECRET,
                    "redirect_uris": [ports.app_callback],
                }
            ],
        )
        metadata = httpx.get(f"{ports.hub_url}/saml/{CONNECTION}/metadata", timeout=10)
        assert metadata.status_code == 200, metadata.text
        initech.register_sp(
            sp_metadata_xml=metadata.text,
            require_signed_authnrequest=require_signed_authnrequest,
            encrypt_assertion=encrypt_assertion,
        )
        return SamlHub(**vars(running), sp_metadata=metadata.text)

    return start


# --- helpers ---------------------------------------------------------------------------------


def to_idp_login_form(
    browser: Browser, email_page: httpx.Response, idp: SamlPeer
) -> httpx.Response:
    """Type the email on the hub's form; land on SimpleSAMLphp's login form."""
    assert email_page.status_code == 200, email_page.text
    idp_page = browser.submit(email_page, {"email": ALICE_EMAIL}, form_id="login-form")
    assert idp_page.status_code == 200, f"{idp_page.text[:1500]}\n{idp.log()[-3000:]}"
    assert str(idp_page.url).startswith(idp.login_form_url + "?AuthState="), idp_page.url
    assert find_form(idp_page, with_field="password").fields.keys() >= {"AuthState"}
    return idp_page


def authn_request_hop(browser: Browser, idp: SamlPeer) -> str:
    """The URL of the hub's AuthnRequest to the IdP (HTTP-Redirect) in the last navigation."""
    return next(str(r.url) for r in browser.history if str(r.url).startswith(idp.sso_url + "?"))


def to_hub_acs(
    browser: Browser, idp_page: httpx.Response, ports: Ports, idp: SamlPeer
) -> tuple[httpx.Response, dict[str, str]]:
    """alice's password at the IdP → its auto-POST form: (the form page, its fields)."""
    posted = browser.login(idp_page, "alice", "alice-password")
    assert posted.status_code == 200, f"{posted.text[:1500]}\n{idp.log()[-3000:]}"
    form = find_form(posted, with_field="SAMLResponse")
    assert form.method == "POST" and form.action == ports.acs_url, form
    assert form.fields["RelayState"]  # the hub's flow
    return posted, form.fields


def response_xml(fields: dict[str, str]) -> str:
    return base64.b64decode(fields["SAMLResponse"]).decode()


def app_client(ports: Ports) -> OAuth2Client:
    return support.app_client(ports, CLIENT_ID)


@dataclass
class AppLogin:
    tokens: dict[str, Any]
    claims: dict[str, Any]
    saml_response: str  # the XML the IdP posted to the hub
    authn_request_url: str


def app_login(
    hub: RunningHub, client: OAuth2Client, browser: Browser, idp: SamlPeer, ports: Ports
) -> AppLogin:
    """app → /oauth2/authorize → /login → IdP → ACS → /oauth2/authorize → app → tokens."""
    authorization = start_app_login(hub, client, browser, ports)
    idp_page = to_idp_login_form(browser, authorization.email_page, idp)
    authn_request = authn_request_hop(browser, idp)
    posted, fields = to_hub_acs(browser, idp_page, ports, idp)

    done = browser.submit(posted, with_field="SAMLResponse", stop_at=ports.app_callback)
    acs = browser.history[0]
    assert acs.request.method == "POST" and str(acs.url) == ports.acs_url
    assert acs.status_code == 303, acs.text
    resumed = browser.history[1]
    assert str(resumed.url).startswith(f"{ports.acs_url}?resume=")
    assert resumed.status_code == 303, resumed.text
    tokens, claims = finish_app_login(authorization, hub, client, browser, done, ports)
    return AppLogin(tokens, claims, response_xml(fields), authn_request)


def assert_alice(claims: dict[str, Any]) -> None:
    assert claims["partner_id"] == PARTNER and claims["partner_kind"] == "supplier"
    assert claims["email"] == ALICE_EMAIL and claims["email_verified"] is True
    assert claims["groups"] == ALICE_GROUPS
    assert claims["name"] == "Alice Anderson"
    assert "@" not in claims["sub"] and claims["sub"] != "alice"  # opaque hub subject


# --- 1. the hub's SP metadata -----------------------------------------------------------------


def test_hub_sp_metadata_names_entity_acs_slo_and_certificate(
    start_hub: StartHub, ports: Ports
) -> None:
    xml = start_hub().sp_metadata
    assert f'entityID="{ports.sp_entity_id}"' in xml
    acs = re.search(r"<[^>]*AssertionConsumerService\b[^>]*>", xml)
    assert acs is not None and f'Location="{ports.acs_url}"' in acs.group(0)
    assert "HTTP-POST" in acs.group(0)
    slo = re.findall(r"<[^>]*SingleLogoutService\b[^>]*>", xml)
    assert slo and all(f'Location="{ports.slo_url}"' in s for s in slo)
    assert "X509Certificate" in xml


# --- 2. an OIDC app logs in through the SAML partner -------------------------------------------


def test_oidc_app_login_through_saml_partner(
    start_hub: StartHub, initech: SamlPeer, browser: Browser, ports: Ports
) -> None:
    hub = start_hub()
    with app_client(ports) as client:
        login = app_login(hub, client, browser, initech, ports)
        assert_alice(login.claims)
        assert login.claims["azp"] == CLIENT_ID and login.claims["sid"]

        response = client.get(hub.discovery()["userinfo_endpoint"])
        assert response.status_code == 200, response.text
        assert response.json()["email"] == ALICE_EMAIL
        assert response.json()["groups"] == ALICE_GROUPS

    xml = login.saml_response
    assert len(re.findall(r"<ds:Signature[\s>]", xml)) == 2  # Response and Assertion
    assert "EncryptedAssertion" not in xml

    cookie = browser.cookies.get(SESSION_COOKIE)
    assert cookie and browser.cookies.get(FLOW_COOKIE) is None
    stored = hub.stored_session(cookie)
    assert stored is not None, hub.keys("*")
    identity = stored["identity"]
    assert identity["partner_id"] == PARTNER and identity["connection_id"] == CONNECTION
    assert identity["issuer"] == initech.entity_id
    assert identity["subject"] == ALICE_EMAIL  # the NameID (emailAddress)
    assert identity["email"] == ALICE_EMAIL and identity["groups"] == ALICE_GROUPS
    assert identity["name"] == "Alice Anderson"
    assert identity["raw_claims"]["name_id_format"] == EMAIL_NAMEID
    assert identity["raw_claims"]["session_index"]
    assert hub.keys("flow:*") == [] and hub.keys("parked:*") == []
    assert hub.keys("oidc:code:*") == []  # the code was redeemed

    (succeeded,) = hub.events_named("login.succeeded")
    assert succeeded["partner"] == PARTNER and succeeded["connection"] == CONNECTION
    assert succeeded["email"] == ALICE_EMAIL
    assert hub.events_named("login.failed") == []


# --- 3. single logout ------------------------------------------------------------------------


def test_sp_initiated_single_logout_ends_hub_and_idp_sessions(
    start_hub: StartHub, initech: SamlPeer, browser: Browser, ports: Ports
) -> None:
    hub = start_hub()
    with app_client(ports) as client:
        app_login(hub, client, browser, initech, ports)
    cookie = browser.cookies.get(SESSION_COOKIE)
    assert cookie and hub.stored_session(cookie) is not None

    page = browser.get(f"{hub.url}/logout")
    assert page.status_code == 200 and ALICE_EMAIL in page.text
    done = browser.submit(page, form_id="logout-form")
    # hub → the IdP's SLO (signed LogoutRequest) → back to the hub's SLO (LogoutResponse)
    to_idp = next(r for r in browser.history if str(r.url).startswith(initech.slo_url + "?"))
    request = redirect_message(str(to_idp.url), hub_sp_cert(hub.sp_metadata))
    assert request.kind == "SAMLRequest" and request.signed
    back = next(r for r in browser.history if str(r.url).startswith(ports.slo_url + "?"))
    answer = redirect_message(str(back.url), initech.cert_pem)
    assert answer.kind == "SAMLResponse" and answer.signed
    assert done.status_code == 200, done.text
    assert str(done.url).startswith(hub.url)

    assert hub.stored_session(cookie) is None and hub.keys("session:*") == []
    assert browser.cookies.get(SESSION_COOKIE) is None
    (logout,) = hub.events_named("logout")
    assert logout["partner"] == PARTNER

    # the IdP session is gone too: a new login shows the IdP's login form again
    to_idp_login_form(browser, browser.get(f"{hub.url}/login"), initech)


def test_idp_initiated_single_logout_ends_the_hub_session(
    start_hub: StartHub, initech: SamlPeer, browser: Browser, ports: Ports
) -> None:
    hub = start_hub()
    with app_client(ports) as client:
        login = app_login(hub, client, browser, initech, ports)
        cookie = browser.cookies.get(SESSION_COOKIE)
        assert cookie and hub.stored_session(cookie) is not None
        userinfo_url = hub.discovery()["userinfo_endpoint"]
        assert client.get(userinfo_url).status_code == 200

        done = browser.get(initech.init_slo_url(f"{hub.url}/"))
        into_hub = next(r for r in browser.history if str(r.url).startswith(ports.slo_url + "?"))
        request = redirect_message(str(into_hub.url), initech.cert_pem)
        assert request.kind == "SAMLRequest" and request.signed
        assert done.status_code == 200, done.text
        assert str(done.url) == f"{hub.url}/"

        assert hub.stored_session(cookie) is None and hub.keys("session:*") == []
        (ended,) = hub.events_named("logout.upstream")
        assert ended["connection"] == CONNECTION and ended["sessions"] == 1
        assert ended["subject"] == ALICE_EMAIL
        # the app's access token died with the session
        after = client.get(userinfo_url)
        assert after.status_code == 401, after.text
    assert login.claims["sid"]
    home = browser.get(f"{hub.url}/")
    assert ALICE_EMAIL not in home.text


# --- 4. IdP-initiated SSO is refused without the opt-in ---------------------------------------


def test_idp_initiated_sso_refused_without_opt_in(
    start_hub: StartHub, initech: SamlPeer, browser: Browser, ports: Ports
) -> None:
    hub = start_hub()
    form_page = browser.get(initech.idp_initiated_url(ports.sp_entity_id, f"{hub.url}/"))
    assert str(form_page.url).startswith(initech.login_form_url + "?AuthState=")
    posted = browser.login(form_page, "alice", "alice-password")
    assert find_form(posted, with_field="SAMLResponse").action == ports.acs_url
    assert "InResponseTo" not in response_xml(find_form(posted, with_field="SAMLResponse").fields)

    refused = browser.submit(posted, with_field="SAMLResponse")
    assert refused.status_code == 400, refused.text
    assert '<code id="error-code">invalid_state</code>' in refused.text
    assert browser.cookies.get(SESSION_COOKIE) is None
    assert hub.keys("session:*") == [] and hub.keys("parked:*") == []
    (failed,) = hub.events_named("login.failed")
    assert failed["connection"] == CONNECTION and failed["reason"] == "invalid_state"
    assert "unsolicited" in failed["detail"]
    assert hub.events_named("login.succeeded") == []


# --- 5. variants: signed AuthnRequests, encrypted assertion ------------------------------------


def test_signed_authnrequests_required_by_the_idp(
    start_hub: StartHub, initech: SamlPeer, browser: Browser, ports: Ports
) -> None:
    hub = start_hub(connection={"sign_authn_requests": True}, require_signed_authnrequest=True)
    with app_client(ports) as client:
        login = app_login(hub, client, browser, initech, ports)
    request = redirect_message(login.authn_request_url, hub_sp_cert(hub.sp_metadata))
    assert request.kind == "SAMLRequest" and request.signed
    assert_alice(login.claims)


def test_encrypted_assertion(
    start_hub: StartHub, initech: SamlPeer, browser: Browser, ports: Ports
) -> None:
    hub = start_hub(encrypt_assertion=True)
    with app_client(ports) as client:
        login = app_login(hub, client, browser, initech, ports)
    assert "<saml:EncryptedAssertion" in login.saml_response
    assert ALICE_EMAIL not in login.saml_response
    assert_alice(login.claims)


def hub_sp_cert(sp_metadata: str) -> str:
    """The first certificate of the hub's SP metadata, as PEM."""
    found = re.search(r"<(?:\w+:)?X509Certificate>([^<]+)</", sp_metadata)
    assert found is not None, sp_metadata
    body = re.sub(r"\s+", "", found.group(1))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"

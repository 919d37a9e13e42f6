"""Integration: partners that run Keycloak (real Keycloak 26) → the hub (real Redis) → an app.

Two partner companies sign in through their own Keycloak realm (the session's one Keycloak,
``tests/peers/keycloak.py``; realms ``tests/peers/keycloak/realms/partner-*.json``):

* ``kc-partner`` — supplier, kc-partner.example: an ``oidc`` connection to the realm
  ``partner-oidc`` (issuer ``{keycloak}/realms/partner-oidc``, discovery). The partner's
  Keycloak admin registered the hub as a confidential OpenID Connect client (client
  authentication on, standard flow only, PKCE S256, the hub's exact callback URL as its only
  redirect URI); the realm's ``groups`` client scope (Group Membership mapper, full path
  off) is a default scope, so ``groups`` is in the ID token; ``email_verified`` comes from
  the built-in ``email`` scope.
* ``kc-saml-partner`` — customer, kc-saml-partner.example: a ``saml`` connection reading
  the realm ``partner-saml``'s IdP metadata from its descriptor URL. The partner's admin
  imported the hub's SP metadata as a SAML client (Keycloak's "import client" =
  ``POST /admin/realms/{realm}/client-description-converter``), then set: sign documents
  and assertions (RSA-SHA256), client signature required (the hub's certificate from its
  metadata), Name ID format persistent, no encryption. The realm's ``partner-attributes``
  client scope maps email, givenName, sn, displayName and groups to attributes.

Both clients are created through the admin API by the tests, with the hub's real URLs (its
port is only known at run time); the SAML one after each hub start, since the hub makes a
new SP key pair at start-up.

A scripted browser (``tests.peers.browser``) fills Keycloak's real login form; the app is an
OIDC client of the hub (authlib, code + PKCE S256) whose ID token is checked against the
hub's JWKS (``tests.integration.support``).

Covered: an app login through each partner's Keycloak (partner_id, partner_kind, groups,
email, name in the hub's ID token; the hub session keyed on Keycloak's subject); invariant 1
— a Keycloak user whose email is outside the partner's verified domains (another partner's
domain, or nobody's) is refused with partner_mismatch and gets no session; logout at the
hub (for SAML also at Keycloak, by single logout; for OIDC Keycloak's session stays);
the fixture's async ``keycloak_form_login``; Keycloak's encrypted assertions (its import's
default for the hub's metadata): AES-256-GCM under RSA-OAEP (XML Encryption 1.1, SHA-256 and
MGF1-SHA-256) as imported, and AES-256-CBC under rsa-oaep-mgf1p (SHA-256 digest) when chosen
— neither of which Debian's xmlsec1 1.2.37 decrypts (connectors/saml/xmlenc.py does).
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.integration import support
from tests.integration.support import (
    SESSION_COOKIE,
    OAuth2Client,
    Ports,
    RunningHub,
    ServeHub,
    finish_app_login,
    query_of,
    start_app_login,
)
from tests.peers.browser import Browser, find_form
from tests.peers.common import free_port
from tests.peers.keycloak import (
    KeycloakPeer,
    admin_request,
    keycloak_form_login,
    login_form_data,
    trust_loopback,
)

pytestmark = pytest.mark.integration

OIDC_REALM = "partner-oidc"
SAML_REALM = "partner-saml"
CLIENT_ID = "portal"
ALICE_GROUPS = {"engineering", "admins"}
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"


@dataclass(frozen=True)
class PartnerSpec:
    id: str
    name: str
    kind: str
    domain: str
    connection_id: str
    realm: str


OIDC_PARTNER = PartnerSpec(
    "kc-partner", "KC Partner Inc", "supplier", "kc-partner.example", "kc-partner-oidc", OIDC_REALM
)
SAML_PARTNER = PartnerSpec(
    "kc-saml-partner",
    "KC SAML Partner Ltd",
    "customer",
    "kc-saml-partner.example",
    "kc-saml-partner-saml",
    SAML_REALM,
)
PARTNERS = {p.id: p for p in (OIDC_PARTNER, SAML_PARTNER)}


# --- module-wide: ports, the hub's OIDC client in the partner-oidc realm -----------------------


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports(hub=free_port(), app=free_port())


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    secret: str


@pytest.fixture(scope="module")
def oidc_client(keycloak_peer: KeycloakPeer, ports: Ports) -> Iterator[OidcClient]:
    """The hub as a confidential client of the partner-oidc realm, as the partner's Keycloak
    admin registers it: standard flow only, PKCE S256, the hub's exact callback URL."""
    admin = keycloak_peer.admin(OIDC_REALM)
    client = OidcClient("isthmus-hub", "kc-" + secrets.token_urlsafe(24))
    internal_id = admin.create_client(
        {
            "clientId": client.client_id,
            "name": "Isthmus extranet hub",
            "protocol": "openid-connect",
            "enabled": True,
            "publicClient": False,
            "clientAuthenticatorType": "client-secret",
            "secret": client.secret,
            "standardFlowEnabled": True,
            "implicitFlowEnabled": False,
            "directAccessGrantsEnabled": False,
            "serviceAccountsEnabled": False,
            "redirectUris": [ports.hub_callback(OIDC_PARTNER.connection_id)],
            "webOrigins": [],
            "attributes": {
                "pkce.code.challenge.method": "S256",
                # RP-initiated logout: Keycloak sends the browser back to the hub
                "post.logout.redirect.uris": (
                    f"{ports.hub_url}/logout/{OIDC_PARTNER.connection_id}/done"
                ),
            },
        }
    )
    try:
        yield client
    finally:
        admin.delete_client(internal_id)


# --- the hub, and its SAML client in the partner-saml realm -------------------------------------


@dataclass
class KeycloakHub(RunningHub):
    sp_metadata: str = ""


@pytest.fixture
def hub(
    hub_server: ServeHub,
    ports: Ports,
    keycloak_peer: KeycloakPeer,
    oidc_client: OidcClient,
) -> Iterator[KeycloakHub]:
    """The hub with both partners; its SP metadata imported into the partner-saml realm."""
    running = hub_server(
        partners=[
            partner_entry(
                OIDC_PARTNER,
                {
                    "type": "oidc",
                    "issuer": keycloak_peer.issuer(OIDC_REALM),
                    "client_id": oidc_client.client_id,
                    "client_secret": oidc_client.secret,
                },
            ),
            partner_entry(
                SAML_PARTNER,
                {
                    "type": "saml",
                    "idp_metadata_url": keycloak_peer.saml_descriptor_url(SAML_REALM),
                    "name_id_format": PERSISTENT,
                },
            ),
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
    metadata = httpx.get(f"{running.url}/saml/{SAML_PARTNER.connection_id}/metadata", timeout=10)
    assert metadata.status_code == 200, metadata.text
    import_saml_client(keycloak_peer, metadata.text)
    try:
        yield KeycloakHub(**vars(running), sp_metadata=metadata.text)
    finally:
        admin = keycloak_peer.admin(SAML_REALM)
        internal_id = admin.get_client_id(
            f"{running.url}/saml/{SAML_PARTNER.connection_id}/metadata"
        )
        assert internal_id, "the hub's SAML client is gone"
        admin.delete_client(internal_id)


def partner_entry(spec: PartnerSpec, connection: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": spec.id,
        "name": spec.name,
        "kind": spec.kind,
        "status": "active",
        "domains": [spec.domain],
        "connections": [{"id": spec.connection_id, **connection}],
    }


def import_saml_client(
    keycloak: KeycloakPeer,
    sp_metadata: str,
    *,
    encrypt: bool = False,
    encryption: dict[str, str] | None = None,
) -> str:
    """What the partner's admin does in Keycloak: Clients → Import client (the hub's SP
    metadata), then signatures, the NameID format and encryption (which the import turns on,
    the hub's metadata offering an encryption key; ``encryption``: the client's
    ``saml.encryption.*`` attributes, Keycloak's choices of algorithms). Returns the
    client's internal id."""
    client: dict[str, Any] = admin_request(
        keycloak,
        SAML_REALM,
        "POST",
        "/client-description-converter",
        content=sp_metadata,
        headers={"Content-Type": "application/xml"},
    )
    attributes = client.setdefault("attributes", {})
    # what the metadata said: entityID, ACS, SLO, the hub's certificate
    assert client["protocol"] == "saml" and client["clientId"].endswith("/metadata"), client
    assert attributes.get("saml.signing.certificate"), attributes
    assert attributes.get("saml.encrypt") == "true", attributes
    attributes.update(
        {
            "saml.server.signature": "true",  # sign documents (the Response)
            "saml.assertion.signature": "true",  # sign assertions
            "saml.signature.algorithm": "RSA_SHA256",
            "saml.client.signature": "true",  # the hub signs its AuthnRequests
            "saml_name_id_format": "persistent",
            "saml.force.name.id.format": "false",
            "saml.encrypt": "true" if encrypt else "false",
            **(encryption or {}),
        }
    )
    client.update({"enabled": True, "frontchannelLogout": True, "name": "Isthmus extranet hub"})
    admin = keycloak.admin(SAML_REALM)
    existing = admin.get_client_id(client["clientId"])
    if existing:  # a previous test's hub on the same port
        admin.delete_client(existing)
    return str(admin.create_client(client))


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def browser_kc(browser: Browser) -> Browser:
    """The scripted browser, sending Keycloak's Secure cookies to 127.0.0.1 like browsers do."""
    trust_loopback(browser.client)
    return browser


def to_keycloak(
    browser: Browser, email_page: httpx.Response, email: str, spec: PartnerSpec, kc: KeycloakPeer
) -> httpx.Response:
    """Type the email on the hub's form; land on the partner realm's Keycloak login form."""
    assert email_page.status_code == 200, email_page.text
    page = browser.submit(email_page, {"email": email}, form_id="login-form")
    assert page.status_code == 200, f"{page.text[:1500]}\n{kc.log()[-3000:]}"
    endpoint = "openid-connect/auth?" if spec.realm == OIDC_REALM else "saml?"
    assert str(page.url).startswith(f"{kc.issuer(spec.realm)}/protocol/{endpoint}"), page.url
    find_form(page, form_id="kc-form-login")
    return page


def upstream_request(browser: Browser, kc: KeycloakPeer, spec: PartnerSpec) -> dict[str, str]:
    """The query of the hub's request to Keycloak (in the last navigation)."""
    prefix = f"{kc.issuer(spec.realm)}/protocol/"
    return next(query_of(str(r.url)) for r in browser.history if str(r.url).startswith(prefix))


def keycloak_login(
    browser: Browser, page: httpx.Response, username: str, stop_at: str
) -> httpx.Response:
    """Fill Keycloak's login form; for SAML also post its auto-submitted SAMLResponse."""
    action, data = login_form_data(page, username, f"{username}-password")
    answer = browser.post(action, data=data, stop_at=stop_at)
    if answer.status_code == 200 and "SAMLResponse" in answer.text:
        return browser.submit(answer, with_field="SAMLResponse", stop_at=stop_at)
    return answer


def saml_response_of(browser: Browser) -> str | None:
    """The XML of the SAMLResponse posted in the last navigation (None for OIDC)."""
    post = browser.history[0].request
    if post.method != "POST":
        return None
    fields = query_of("?" + post.content.decode())
    return base64.b64decode(fields["SAMLResponse"]).decode() if "SAMLResponse" in fields else None


@dataclass
class AppLogin:
    tokens: dict[str, Any]
    claims: dict[str, Any]
    upstream_request: dict[str, str]  # the hub's authentication request to Keycloak
    saml_response: str | None


def app_login(
    hub: RunningHub,
    client: OAuth2Client,
    browser: Browser,
    kc: KeycloakPeer,
    spec: PartnerSpec,
    ports: Ports,
) -> AppLogin:
    """app → hub /oauth2/authorize → /login → Keycloak's form → hub → app → tokens."""
    authorization = start_app_login(hub, client, browser, ports)
    page = to_keycloak(browser, authorization.email_page, f"alice@{spec.domain}", spec, kc)
    upstream = upstream_request(browser, kc, spec)
    done = keycloak_login(browser, page, "alice", ports.app_callback)
    assert str(done.url).startswith(f"{hub.url}/oauth2/authorize?"), (
        f"{[(r.status_code, str(r.url)) for r in browser.history]}\n{done.text[:2000]}\n"
        f"{kc.log()[-3000:]}"
    )
    saml_response = saml_response_of(browser)
    tokens, claims = finish_app_login(authorization, hub, client, browser, done, ports)
    return AppLogin(tokens, claims, upstream, saml_response)


def assert_error_page(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    shown = re.search(r'<code id="error-code">([^<]*)</code>', response.text)
    assert shown is not None and shown.group(1) == code, response.text
    return response.headers["x-request-id"]


AppClient = Callable[[], OAuth2Client]


@pytest.fixture
def app_client(ports: Ports) -> AppClient:
    return lambda: support.app_client(ports, CLIENT_ID)


# --- 1. an OIDC app logs in through each partner's Keycloak -----------------------------------


def test_app_login_through_keycloak_oidc_partner(
    hub: KeycloakHub,
    keycloak_peer: KeycloakPeer,
    browser_kc: Browser,
    app_client: AppClient,
    ports: Ports,
) -> None:
    spec, browser = OIDC_PARTNER, browser_kc
    with app_client() as client:
        login = app_login(hub, client, browser, keycloak_peer, spec, ports)
        userinfo = client.get(hub.discovery()["userinfo_endpoint"])
    claims = login.claims
    assert claims["partner_id"] == spec.id and claims["partner_kind"] == spec.kind
    assert set(claims["groups"]) == ALICE_GROUPS and len(claims["groups"]) == 2
    assert claims["email"] == "alice@kc-partner.example" and claims["email_verified"] is True
    assert claims["name"] == "Alice Anderson"
    assert "@" not in claims["sub"] and claims["azp"] == CLIENT_ID
    assert userinfo.status_code == 200 and userinfo.json()["partner_id"] == spec.id

    # the hub asked with PKCE for its exact callback; Keycloak sent the browser back there,
    # naming itself (RFC 9207);
    # the hub keyed the session on Keycloak's (issuer, subject): the user's id in the realm
    upstream = login.upstream_request
    assert upstream["client_id"] == "isthmus-hub" and upstream["code_challenge_method"] == "S256"
    assert upstream["redirect_uri"] == ports.hub_callback(spec.connection_id)
    callback = next(r for r in browser.history if r.url.path.startswith("/callback/"))
    assert str(callback.url).startswith(f"{ports.hub_callback(spec.connection_id)}?")
    assert query_of(str(callback.url))["iss"] == keycloak_peer.issuer(OIDC_REALM)
    cookie = browser.cookies.get(SESSION_COOKIE)
    stored = hub.stored_session(cookie) if cookie else None
    assert stored is not None, hub.keys("*")
    identity = stored["identity"]
    alice_id = keycloak_peer.admin(OIDC_REALM).get_user_id("alice")
    assert identity["issuer"] == keycloak_peer.issuer(OIDC_REALM)
    assert identity["subject"] == alice_id
    assert identity["connection_id"] == spec.connection_id
    assert identity["raw_claims"]["preferred_username"] == "alice"
    (succeeded,) = hub.events_named("login.succeeded")
    assert succeeded["partner"] == spec.id and succeeded["issuer"] == identity["issuer"]


def test_app_login_through_keycloak_saml_partner(
    hub: KeycloakHub,
    keycloak_peer: KeycloakPeer,
    browser_kc: Browser,
    app_client: AppClient,
    ports: Ports,
) -> None:
    spec, browser = SAML_PARTNER, browser_kc
    with app_client() as client:
        login = app_login(hub, client, browser, keycloak_peer, spec, ports)
    claims = login.claims
    assert claims["partner_id"] == spec.id and claims["partner_kind"] == spec.kind
    assert claims["email"] == "alice@kc-saml-partner.example" and claims["email_verified"] is True
    assert claims["name"] == "Alice Anderson"
    assert set(claims["groups"]) == ALICE_GROUPS and len(claims["groups"]) == 2

    # the hub signed its AuthnRequest (Keycloak's metadata wants it; the client requires it)
    assert login.upstream_request["SAMLRequest"] and login.upstream_request["Signature"]
    assert login.upstream_request["SigAlg"].endswith("rsa-sha256")
    # what Keycloak posted: a signed Response around a signed assertion, a persistent NameID
    xml = login.saml_response
    assert xml is not None
    assert len(re.findall(r"<(?:ds|dsig):Signature[\s>]", xml)) == 2, xml
    assert f'Format="{PERSISTENT}"' in xml
    cookie = browser.cookies.get(SESSION_COOKIE)
    stored = hub.stored_session(cookie) if cookie else None
    assert stored is not None, hub.keys("*")
    identity = stored["identity"]
    assert identity["issuer"] == keycloak_peer.issuer(SAML_REALM)  # the IdP's entityID
    assert identity["raw_claims"]["name_id_format"] == PERSISTENT
    assert identity["subject"].startswith("G-")  # Keycloak's persistent pairwise id


XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
# Keycloak's choices → (data algorithm, key transport, OAEP digest, MGF) it then sends
KEYCLOAK_ENCRYPTION: dict[str, tuple[dict[str, str], tuple[str, str, str, str | None]]] = {
    "as-imported": (
        {},
        (XENC11 + "aes256-gcm", XENC11 + "rsa-oaep", XENC + "sha256", XENC11 + "mgf1sha256"),
    ),
    "aes256-cbc-rsa-oaep-mgf1p": (
        {
            "saml.encryption.algorithm": XENC + "aes256-cbc",
            "saml.encryption.keyAlgorithm": XENC + "rsa-oaep-mgf1p",
        },
        (XENC + "aes256-cbc", XENC + "rsa-oaep-mgf1p", XENC + "sha256", None),
    ),
}


@pytest.mark.parametrize("choice", list(KEYCLOAK_ENCRYPTION))
def test_app_login_through_keycloak_saml_partner_with_encrypted_assertions(
    choice: str,
    hub: KeycloakHub,
    keycloak_peer: KeycloakPeer,
    browser_kc: Browser,
    app_client: AppClient,
    ports: Ports,
) -> None:
    attributes, (data_alg, key_alg, digest, mgf) = KEYCLOAK_ENCRYPTION[choice]
    import_saml_client(keycloak_peer, hub.sp_metadata, encrypt=True, encryption=attributes)
    with app_client() as client:
        login = app_login(hub, client, browser_kc, keycloak_peer, SAML_PARTNER, ports)
    claims = login.claims
    assert claims["partner_id"] == SAML_PARTNER.id
    assert claims["email"] == "alice@kc-saml-partner.example" and claims["email_verified"] is True
    assert set(claims["groups"]) == ALICE_GROUPS

    # what Keycloak posted: a signed Response around an EncryptedAssertion (nothing in the
    # clear), its EncryptedKey inside the EncryptedData's KeyInfo, with these algorithms
    xml = login.saml_response
    assert xml is not None and "<saml:EncryptedAssertion>" in xml, xml
    assert "alice@kc-saml-partner.example" not in xml and "<saml:Assertion" not in xml
    root = etree.fromstring(xml.encode())
    (data,) = root.findall(f"{{{SAML_NS}}}EncryptedAssertion/{{{XENC}}}EncryptedData")
    assert data.find(f"{{{XENC}}}EncryptionMethod").get("Algorithm") == data_alg
    (key,) = data.findall(f"{{{DS}}}KeyInfo/{{{XENC}}}EncryptedKey")
    method = key.find(f"{{{XENC}}}EncryptionMethod")
    assert method.get("Algorithm") == key_alg
    assert method.find(f"{{{DS}}}DigestMethod").get("Algorithm") == digest
    found_mgf = method.find(f"{{{XENC11}}}MGF")
    assert (None if found_mgf is None else found_mgf.get("Algorithm")) == mgf
    cookie = browser_kc.cookies.get(SESSION_COOKIE)
    stored = hub.stored_session(cookie) if cookie else None
    assert stored is not None, hub.keys("*")
    assert stored["identity"]["subject"].startswith("G-")  # the decrypted, verified NameID


# --- 2. invariant 1: a Keycloak user outside the partner's verified domains --------------------


@pytest.mark.parametrize(
    ("partner_id", "username", "asserted"),
    [
        # the OIDC partner's realm holds a user with the other partner's domain
        ("kc-partner", "eve", "eve@kc-saml-partner.example"),
        # the SAML partner's realm holds a user with a domain of nobody
        ("kc-saml-partner", "mallory", "mallory@freemail.example"),
    ],
)
def test_keycloak_user_outside_the_partners_domains_is_refused(
    partner_id: str,
    username: str,
    asserted: str,
    hub: KeycloakHub,
    keycloak_peer: KeycloakPeer,
    browser_kc: Browser,
    app_client: AppClient,
    ports: Ports,
) -> None:
    spec, browser = PARTNERS[partner_id], browser_kc
    with app_client() as client:
        authorization = start_app_login(hub, client, browser, ports)
    # routed by the typed address (the partner's domain) to the partner's Keycloak...
    page = to_keycloak(
        browser, authorization.email_page, f"{username}@{spec.domain}", spec, keycloak_peer
    )
    # ...which signs in a user whose email is elsewhere
    refused = keycloak_login(browser, page, username, ports.app_callback)

    request_id = assert_error_page(refused, 403, "partner_mismatch")
    assert "not allowed to sign in this email address" in refused.text
    assert browser.cookies.get(SESSION_COOKIE) is None
    assert not any(str(r.url).startswith(ports.app_callback) for r in browser.history)
    assert hub.keys("session:*") == [] and hub.keys("oidc:*") == []
    assert hub.events_named("login.succeeded") == []
    (failed,) = hub.events_named("login.failed")
    assert failed["reason"] == "partner_mismatch" and failed["partner"] == spec.id
    assert failed["connection"] == spec.connection_id and failed["request_id"] == request_id
    assert asserted in failed["detail"]


# --- 3. logout at the hub -----------------------------------------------------------------------


@pytest.mark.parametrize("partner_id", ["kc-partner", "kc-saml-partner"])
def test_logout_at_the_hub(
    partner_id: str,
    hub: KeycloakHub,
    keycloak_peer: KeycloakPeer,
    browser_kc: Browser,
    app_client: AppClient,
    ports: Ports,
) -> None:
    spec, browser = PARTNERS[partner_id], browser_kc
    with app_client() as client:
        login = app_login(hub, client, browser, keycloak_peer, spec, ports)
        cookie = browser.cookies.get(SESSION_COOKIE)
        assert cookie and hub.stored_session(cookie) is not None
        userinfo_url = hub.discovery()["userinfo_endpoint"]
        assert client.get(userinfo_url).status_code == 200
        realm_admin = keycloak_peer.admin(spec.realm)
        alice_id = realm_admin.get_user_id("alice")
        assert alice_id
        stored = hub.stored_session(cookie)
        assert stored is not None
        kc_session = keycloak_session_of(stored["identity"])
        assert kc_session in {s["id"] for s in realm_admin.get_sessions(alice_id)}

        page = browser.get(f"{hub.url}/logout")
        assert page.status_code == 200 and f"alice@{spec.domain}" in page.text
        done = browser.submit(page, form_id="logout-form")
        hops = list(browser.history)
        if done.status_code == 200 and "SAMLResponse" in done.text:
            done = browser.submit(done, with_field="SAMLResponse")  # Keycloak's POST binding
            hops += browser.history
        assert done.status_code == 200, done.text
        assert str(done.url).startswith(hub.url), [(r.status_code, str(r.url)) for r in hops]

        assert hub.stored_session(cookie) is None and hub.keys("session:*") == []
        assert browser.cookies.get(SESSION_COOKIE) is None
        (logout,) = hub.events_named("logout")
        assert logout["partner"] == spec.id and logout["sid"] == login.claims["sid"]
        after = client.get(userinfo_url)  # the app's access token died with the session
        assert after.status_code == 401 and after.json()["error"] == "invalid_token"

    kc_sessions = {s["id"] for s in realm_admin.get_sessions(alice_id)}
    if spec is SAML_PARTNER:
        # single logout: the hub's signed LogoutRequest ended Keycloak's session too
        to_kc = next(r for r in hops if "/protocol/saml" in str(r.url))
        assert "SAMLRequest=" in str(to_kc.url) and "Signature=" in str(to_kc.url)
        assert kc_session not in kc_sessions, hops
        again = browser.get(f"{hub.url}/login")
        to_keycloak(browser, again, f"alice@{spec.domain}", spec, keycloak_peer)
    else:
        # OIDC partners: RP-initiated logout (id_token_hint) ended Keycloak's session too,
        # and Keycloak sent the browser back to the hub's done page
        to_kc = next(r for r in hops if "/protocol/openid-connect/logout" in str(r.url))
        assert "id_token_hint=" in str(to_kc.url) and "state=" in str(to_kc.url)
        assert any(r.url.path.endswith(f"/logout/{spec.connection_id}/done") for r in hops)
        assert kc_session not in kc_sessions, hops
        again = browser.get(f"{hub.url}/login")
        to_keycloak(browser, again, f"alice@{spec.domain}", spec, keycloak_peer)


def keycloak_session_of(identity: dict[str, Any]) -> str:
    """Keycloak's user session behind a hub session: the ID token's ``sid`` (OIDC), or the
    user session part of the SAML SessionIndex (``<user session>::<client session>``)."""
    raw = identity["raw_claims"]
    if "sid" in raw:
        return str(raw["sid"])
    return str(raw["session_index"]).split("::")[0]


# --- 4. the fixture's async login helper, on the same realm ----------------------------------


async def test_keycloak_form_login_helper(
    keycloak_peer: KeycloakPeer, oidc_client: OidcClient, ports: Ports
) -> None:
    """keycloak_form_login: a wrong password gets the form again; the right one the
    redirect to the client with a code (not followed)."""
    callback = ports.hub_callback(OIDC_PARTNER.connection_id)
    params = {
        "client_id": oidc_client.client_id,
        "response_type": "code",
        "scope": "openid",
        "redirect_uri": callback,
        "state": "s-1",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    auth_url = f"{keycloak_peer.issuer(OIDC_REALM)}/protocol/openid-connect/auth"
    async with httpx.AsyncClient(timeout=30) as http:
        page = await http.get(auth_url, params=params)
        wrong = await keycloak_form_login(http, page, "alice", "not-her-password")
        assert wrong.status_code == 200 and 'id="kc-form-login"' in wrong.text
        answer = await keycloak_form_login(http, wrong, "alice", "alice-password")
    assert answer.status_code == 302, answer.text[:1000]
    back = query_of(answer.headers["location"])
    assert answer.headers["location"].startswith(callback + "?")
    assert back["state"] == "s-1" and back["code"]
    assert back["iss"] == keycloak_peer.issuer(OIDC_REALM)

"""Integration: the company's staff sign in through its Keycloak (real Keycloak 26) with the
``keycloak`` connector, and the hub's admin API recognizes its administrators.

The realm ``corp`` (``tests/peers/keycloak/realms/corp.json``, imported at the session
Keycloak's start, ``tests/peers/keycloak.py``) holds:

* staff: alice (realm role ``isthmus-admin``, client role ``orders-app:approver``, member of
  ``/staff/engineering``), bob (member of ``/staff/sales``); the group ``/staff`` grants the
  realm role ``staff`` and ``/staff/engineering`` the client role ``orders-app:viewer``,
  both inherited by the members of the subgroups;
* ``isthmus-hub``: the hub's confidential client whose mappers put realm roles, client
  roles and groups (full paths) into the ID token;
* ``isthmus-hub-plain``: the same client with Keycloak's default scopes only: roles and
  groups reach the access token alone, which the hub does not read, so the connector asks
  the admin API;
* ``isthmus-directory``: a service account with realm-management ``view-users``,
  ``query-groups``, ``view-realm``; ``isthmus-directory-clients`` adds ``view-clients``,
  which the admin API needs before it names a client's roles.

The hub runs in-process at ``http://hub.corp.test`` (the redirect URIs registered in the
realm); the test's HTTP client is the browser: the hub through an ASGI transport, Keycloak
over the network, its real login form filled by ``keycloak_form_login``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.identity import FederatedIdentity
from federation.settings import Settings
from federation.web.app import create_app
from tests.peers.browser import find_form
from tests.peers.keycloak import KeycloakPeer, keycloak_form_login, trust_loopback

pytestmark = pytest.mark.integration

HUB = "http://hub.corp.test"
SESSION_COOKIE = "isthmus_session"
PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
MAPPED_CLIENT = {"client_id": "isthmus-hub", "client_secret": "hub-secret-0123456789"}
PLAIN_CLIENT = {"client_id": "isthmus-hub-plain", "client_secret": "plain-secret-0123456789"}
DIRECTORY = {"client_id": "isthmus-directory", "client_secret": "directory-secret-0123456789"}
DIRECTORY_WITH_CLIENTS = {
    "client_id": "isthmus-directory-clients",
    "client_secret": "directory-clients-secret-0123456789",
}
# Keycloak's effective roles of alice: direct, through /staff (inherited by its subgroups),
# through /staff/engineering, and the realm's default roles.
ALICE_ROLES = {
    "isthmus-admin",
    "staff",
    "default-roles-corp",
    "offline_access",
    "uma_authorization",
    "orders-app:approver",
    "orders-app:viewer",
}


def connection(peer: KeycloakPeer, client: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "type": "keycloak",
        "id": "corp-staff",
        "display_name": "Corp staff",
        "server_url": peer.base_url,
        "realm": "corp",
        "client_roles_from": ["orders-app"],
        **client,
        **extra,
    }


@dataclass
class Outcome:
    hub: Hub
    events: list[dict[str, Any]]
    callback: httpx.Response  # the hub's answer to Keycloak's redirect back
    identity: FederatedIdentity | None  # the hub session's, when one was made
    me: httpx.Response | None  # GET /admin/api/v1/me with that session


@asynccontextmanager
async def staff_browser(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    app = httpx.ASGITransport(app=create_app(hub=hub))
    async with httpx.AsyncClient(base_url=HUB, mounts={HUB: app}, timeout=30) as http:
        trust_loopback(http)  # Keycloak's Secure cookies, over http on 127.0.0.1
        yield http


async def sign_in(peer: KeycloakPeer, conn: dict[str, Any], username: str) -> Outcome:
    """Email at the hub → Keycloak's login form → the hub's callback → session → /me."""
    events: list[dict[str, Any]] = []
    partner = {
        "id": "corp",
        "name": "Corp",
        "kind": "internal",
        "status": "active",
        "domains": ["corp.example"],
        "connections": [conn],
    }
    data: dict[str, Any] = {"issuer": HUB, "allow_insecure_http": True, "partners": [partner]}
    settings = Settings(**data)
    hub = build_hub(settings, audit=Audit([events.append]))
    async with staff_browser(hub) as http:
        email_page = await http.get("/login", params={"rd": "/"})
        form = find_form(email_page, with_field="email")
        to_keycloak = await http.post(
            form.action, data={**form.fields, "email": f"{username}@corp.example"}
        )
        assert to_keycloak.status_code == 303, to_keycloak.text
        login_url = to_keycloak.headers["location"]
        assert login_url.startswith(f"{peer.issuer('corp')}/protocol/openid-connect/auth?")
        login_page = await http.get(login_url)
        back = await keycloak_form_login(http, login_page, username, PASSWORDS[username])
        assert back.status_code == 302, (
            f"{back.status_code}: {back.text[:500]}\n{peer.log()[-3000:]}"
        )
        assert back.headers["location"].startswith(f"{HUB}/callback/corp-staff?")
        callback = await http.get(back.headers["location"])
        cookie = http.cookies.get(SESSION_COOKIE)
        session = await hub.sessions.get(cookie) if cookie else None
        me = await http.get("/admin/api/v1/me", headers={"Accept": "application/json"})
    await hub.aclose()
    return Outcome(
        hub, events, callback, session.identity if session else None, me if cookie else None
    )


async def test_staff_roles_and_groups_come_from_the_id_token(keycloak_peer: KeycloakPeer) -> None:
    outcome = await sign_in(keycloak_peer, connection(keycloak_peer, MAPPED_CLIENT), "alice")

    assert outcome.callback.status_code == 303, outcome.callback.text
    identity = outcome.identity
    assert identity is not None
    assert identity.key[:3] == ("corp", "corp-staff", keycloak_peer.issuer("corp"))
    assert identity.email == "alice@corp.example" and identity.email_verified
    assert identity.name == "Alice Martin"
    assert set(identity.roles) == ALICE_ROLES
    assert identity.groups == ("/staff/engineering",)
    assert identity.raw_claims["groups"] == ["/staff/engineering"]  # the mapper's work
    assert outcome.events[-1]["event"] == "login.succeeded"


async def test_the_isthmus_admin_realm_role_makes_a_hub_admin(keycloak_peer: KeycloakPeer) -> None:
    alice = await sign_in(keycloak_peer, connection(keycloak_peer, MAPPED_CLIENT), "alice")
    bob = await sign_in(keycloak_peer, connection(keycloak_peer, MAPPED_CLIENT), "bob")

    assert alice.me is not None and alice.me.status_code == 200, alice.me
    me = alice.me.json()
    assert me["role"] == "admin" and me["partner_id"] is None
    assert "alice@corp.example" in me["name"]
    assert bob.identity is not None and "isthmus-admin" not in bob.identity.roles
    assert "staff" in bob.identity.roles and bob.identity.groups == ("/staff/sales",)
    # Staff without the role are sponsors: the console's own views, no admin rights.
    assert bob.me is not None and bob.me.status_code == 200, bob.me
    assert bob.me.json()["role"] == "sponsor"


async def test_a_mapperless_client_gets_the_same_roles_through_the_admin_api(
    keycloak_peer: KeycloakPeer,
) -> None:
    mapped = await sign_in(keycloak_peer, connection(keycloak_peer, MAPPED_CLIENT), "alice")
    plain_connection = connection(keycloak_peer, PLAIN_CLIENT, admin=DIRECTORY_WITH_CLIENTS)
    plain = await sign_in(keycloak_peer, plain_connection, "alice")

    assert plain.callback.status_code == 303, plain.callback.text
    assert mapped.identity is not None and plain.identity is not None
    claims = plain.identity.raw_claims
    assert "realm_access" not in claims and "resource_access" not in claims
    assert "groups" not in claims  # nothing in the ID token or userinfo: the admin API said it
    assert plain.identity.subject == mapped.identity.subject
    assert set(plain.identity.roles) == set(mapped.identity.roles) == ALICE_ROLES
    assert plain.identity.groups == mapped.identity.groups == ("/staff/engineering",)
    assert plain.me is not None and plain.me.json()["role"] == "admin"


async def test_a_service_account_that_cannot_see_the_client_fails_the_login_closed(
    keycloak_peer: KeycloakPeer,
) -> None:
    # view-users but not view-clients: realm roles and groups are readable, the client's
    # roles are not, and the login is refused rather than made without them.
    refused = await sign_in(
        keycloak_peer, connection(keycloak_peer, PLAIN_CLIENT, admin=DIRECTORY), "alice"
    )

    assert refused.callback.status_code == 502
    assert refused.identity is None and refused.me is None
    failure = refused.events[-1]
    assert (failure["event"], failure["reason"]) == ("login.failed", "upstream_error")
    assert "'orders-app'" in failure["detail"] and "view-clients" in failure["detail"]
    assert refused.callback.headers["x-request-id"] in refused.callback.text

    without_client_roles = connection(
        keycloak_peer, PLAIN_CLIENT, admin=DIRECTORY, client_roles_from=[]
    )
    allowed = await sign_in(keycloak_peer, without_client_roles, "alice")
    assert allowed.identity is not None
    assert set(allowed.identity.roles) == {r for r in ALICE_ROLES if ":" not in r}
    assert allowed.identity.groups == ("/staff/engineering",)

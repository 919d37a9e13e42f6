"""Logout at the partner's OIDC IdP (OpenID Connect RP-Initiated Logout 1.0), connector side,
against the in-process fake IdP: what the callback keeps, the end-session request, the
return, and when nothing happens (opted out, no end_session_endpoint)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from connectors.base import CallbackRequest, LoginRedirect, LoginRequest, LogoutConnector
from connectors.keycloak import KeycloakConnector
from connectors.oidc import MAX_ID_TOKEN_HINT, OidcConnector
from connectors.registry import ConnectorContext
from federation.errors import InvalidState, InvalidUpstreamResponse, UpstreamError
from federation.identity import FederatedIdentity
from federation.settings import KeycloakConnectionSettings
from tests.fakes.clock import FakeClock
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser

CALLBACK = "https://hub.test/callback/acme-oidc"
DONE = "https://hub.test/logout/acme-oidc/done"
ALICE = FakeUser("alice-123", email="alice@acme.test", name="Alice")


class Rig:
    def __init__(self, idp: FakeOidcProvider | None = None, **settings: Any) -> None:
        self.idp = idp or FakeOidcProvider(
            users=[ALICE], end_session=True, post_logout_redirect_uris=[DONE]
        )
        self.context = ConnectorContext(
            hub_base_url="https://hub.test", transport=self.idp.transport, clock=FakeClock()
        )
        self.connector = OidcConnector(
            "acme", self.idp.connection_settings(**settings), self.context
        )

    async def sign_in(self) -> tuple[FederatedIdentity, dict[str, Any]]:
        """A login; the identity and what the connector asked the hub to keep."""
        redirect = await self.connector.login_url(LoginRequest(CALLBACK, "flow-1"))
        params = await self.idp.authorize(redirect.url)
        callback = CallbackRequest(CALLBACK, params)
        identity = await self.connector.handle_callback(callback, redirect.flow_state)
        return identity, callback.session_state

    async def follow(self, redirect: LoginRedirect) -> httpx.Response:
        async with httpx.AsyncClient(transport=self.idp.transport) as client:
            return await client.get(redirect.url)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_the_oidc_and_keycloak_connectors_are_logout_connectors() -> None:
    assert isinstance(Rig().connector, LogoutConnector)
    keycloak = KeycloakConnectionSettings(
        type="keycloak",
        id="corp-staff",
        server_url="https://sso.corp.test",
        realm="corp",
        client_id="isthmus",
        client_secret="s3cret",
    )
    context = ConnectorContext(hub_base_url="https://hub.test")
    assert isinstance(KeycloakConnector("corp", keycloak, context), LogoutConnector)


async def test_the_callback_keeps_the_id_token_outside_the_identity() -> None:
    rig = Rig()
    identity, kept = await rig.sign_in()

    token = kept["id_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == identity.subject == "alice-123" and claims["aud"] == "isthmus"
    assert claims["iss"] == rig.idp.issuer
    # the identity stays neutral: the token is in no field of it
    assert token not in repr(identity.to_dict())


async def test_logout_url_is_an_end_session_request_with_the_id_token_hint() -> None:
    rig = Rig()
    identity, kept = await rig.sign_in()

    redirect = await rig.connector.logout_url(identity, DONE, "st-1", kept)

    assert redirect is not None and redirect.form is None
    assert redirect.url.startswith(f"{rig.idp.issuer}/end_session?")
    assert query(redirect.url) == {
        "id_token_hint": kept["id_token"],
        "client_id": "isthmus",
        "post_logout_redirect_uri": DONE,
        "state": "st-1",
    }
    assert redirect.flow_state == {"state": "st-1", "post_logout_redirect_uri": DONE}

    # the IdP ends alice's session and sends the browser back with the state
    assert rig.idp.signed_in == {"alice-123"}
    back = await rig.follow(redirect)
    assert back.status_code == 302 and back.headers["location"] == f"{DONE}?state=st-1"
    assert rig.idp.signed_in == set()

    outcome = await rig.connector.handle_logout(CallbackRequest(DONE, {"state": "st-1"}))
    assert outcome.end_subject is None and outcome.redirect is None


async def test_an_end_session_endpoint_with_a_query_keeps_it() -> None:
    idp = FakeOidcProvider(users=[ALICE], end_session=True)
    idp.metadata_overrides["end_session_endpoint"] = f"{idp.issuer}/end_session?tenant=acme"
    rig = Rig(idp)
    identity, kept = await rig.sign_in()
    redirect = await rig.connector.logout_url(identity, DONE, "st-2", kept)
    assert redirect is not None
    assert query(redirect.url)["tenant"] == "acme" and query(redirect.url)["state"] == "st-2"


async def test_without_a_kept_token_the_request_names_the_client_only() -> None:
    """A session opened before the token was kept (or whose token was too long)."""
    rig = Rig()
    identity, _ = await rig.sign_in()
    redirect = await rig.connector.logout_url(identity, DONE, "st-3", None)
    assert redirect is not None
    params = query(redirect.url)
    assert "id_token_hint" not in params and params["client_id"] == "isthmus"
    back = await rig.follow(redirect)
    assert back.headers["location"] == f"{DONE}?state=st-3"


async def test_an_oversized_id_token_is_not_kept() -> None:
    big = FakeUser("alice-123", email="alice@acme.test", extra={"blob": "x" * MAX_ID_TOKEN_HINT})
    rig = Rig(FakeOidcProvider(users=[big], end_session=True))
    _, kept = await rig.sign_in()
    assert kept == {}


async def test_a_connection_that_opted_out_keeps_nothing_and_has_no_logout_url() -> None:
    rig = Rig(upstream_logout=False)
    identity, kept = await rig.sign_in()
    assert kept == {}
    hits = rig.idp.hits["discovery"]
    assert await rig.connector.logout_url(identity, DONE, "st", {"id_token": "x"}) is None
    assert rig.idp.hits["discovery"] == hits  # not even asked


async def test_an_idp_without_end_session_endpoint_changes_nothing() -> None:
    rig = Rig(FakeOidcProvider(users=[ALICE]))  # end_session not advertised
    identity, kept = await rig.sign_in()
    assert kept == {}
    assert await rig.connector.logout_url(identity, DONE, "st", None) is None


async def test_an_end_session_endpoint_that_is_not_a_url_is_refused() -> None:
    idp = FakeOidcProvider(users=[ALICE])
    idp.metadata_overrides["end_session_endpoint"] = "javascript:alert(1)"
    rig = Rig(idp)
    with pytest.raises(InvalidUpstreamResponse, match="end_session_endpoint"):
        await rig.connector.metadata()


async def test_an_unreachable_idp_is_an_upstream_error_at_logout() -> None:
    rig = Rig()
    identity = FederatedIdentity("acme", "acme-oidc", rig.idp.issuer, "alice-123")
    rig.idp.network_error = httpx.ConnectError("down")
    with pytest.raises(UpstreamError):
        await rig.connector.logout_url(identity, DONE, "st", None)


async def test_the_return_needs_a_state_and_sane_parameters() -> None:
    connector = Rig().connector
    with pytest.raises(InvalidState):
        await connector.handle_logout(CallbackRequest(DONE, {}))
    with pytest.raises(InvalidUpstreamResponse):
        await connector.handle_logout(CallbackRequest(DONE, {"state": "s" * 5000}))


async def test_the_fake_refuses_an_unregistered_post_logout_redirect_uri() -> None:
    """The fake behaves like a real OP here: the hub's done URL must be registered."""
    rig = Rig()
    identity, kept = await rig.sign_in()
    elsewhere = await rig.connector.logout_url(identity, "https://evil.test/", "st", kept)
    assert elsewhere is not None
    refused = await rig.follow(elsewhere)
    assert refused.status_code == 400 and rig.idp.signed_in == {"alice-123"}


@pytest.mark.parametrize("opted_out", [False, True])
async def test_the_keycloak_connector_logs_out_at_keycloak(opted_out: bool) -> None:
    issuer = "https://sso.corp.test/realms/corp"
    idp = FakeOidcProvider(issuer, users=[ALICE], end_session=True)
    settings = KeycloakConnectionSettings(
        type="keycloak",
        id="corp-staff",
        server_url="https://sso.corp.test",
        realm="corp",
        client_id="isthmus",
        client_secret="s3cret",
        upstream_logout=not opted_out,
    )
    context = ConnectorContext(hub_base_url="https://hub.test", transport=idp.transport)
    connector = KeycloakConnector("corp", settings, context)
    redirect = await connector.login_url(LoginRequest(CALLBACK, "flow-1"))
    callback = CallbackRequest(CALLBACK, await idp.authorize(redirect.url))
    identity = await connector.handle_callback(callback, redirect.flow_state)

    logout = await connector.logout_url(identity, DONE, "st-k", callback.session_state)
    if opted_out:
        assert callback.session_state == {} and logout is None
        return
    assert logout is not None and logout.url.startswith(f"{issuer}/end_session?")
    assert query(logout.url)["id_token_hint"] == callback.session_state["id_token"]
    outcome = await connector.handle_logout(CallbackRequest(DONE, {"state": "st-k"}))
    assert outcome.end_subject is None

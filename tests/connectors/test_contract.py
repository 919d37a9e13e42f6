"""The contract every ``CallbackConnector`` honours, run against each registered type.

A new connector type joins by adding a harness to ``HARNESSES``: a test below fails until
every type of ``default_registry()`` has one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.base import CallbackConnector, CallbackRequest, LoginRedirect, LoginRequest
from connectors.otp import VERIFIED_EMAIL, OtpConnector
from connectors.registry import ConnectorContext, default_registry
from connectors.saml import SamlConnector
from federation.errors import IsthmusError
from federation.settings import (
    ConnectionSettings,
    KeycloakConnectionSettings,
    MockConnectionSettings,
    MockUser,
    OtpConnectionSettings,
    PartnerKind,
    PartnerSettings,
    SamlConnectionSettings,
)
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser
from tests.fakes.saml_idp import FakeSamlIdP, SamlUser

CALLBACK = "https://hub.test/callback/conn-1"


@dataclass
class Harness:
    """A connector built through the registry, and a stand-in for the user's browser."""

    connector: CallbackConnector
    partner: PartnerSettings
    connection: ConnectionSettings
    answer: Callable[[LoginRedirect], Awaitable[dict[str, str]]]
    # Where the login request carries the hub's flow id (SAML: RelayState), and which
    # HTTP method brings the answer back (SAML: the HTTP-POST binding).
    state_param: str = "state"
    method: str = "GET"
    # What the hub adds to the flow state before the callback (otp: the proven address),
    # and the subject the connector derives for the user "u-1".
    hub_adds: dict[str, str] = field(default_factory=dict)
    subject: str = "u-1"


def partner_with(connection: ConnectionSettings) -> PartnerSettings:
    return PartnerSettings(
        id="acme",
        name="Acme",
        kind=PartnerKind.supplier,
        domains=("acme.test",),
        connections=(connection,),
    )


def build(
    connection: ConnectionSettings, context: ConnectorContext
) -> tuple[PartnerSettings, CallbackConnector]:
    partner = partner_with(connection)
    return partner, default_registry().build(partner, connection, context)


def mock_harness() -> Harness:
    connection = MockConnectionSettings(
        type="mock", id="conn-1", users=(MockUser(subject="u-1", email="u1@acme.test"),)
    )
    partner, connector = build(connection, ConnectorContext(hub_base_url="https://hub.test"))

    async def answer(redirect: LoginRedirect) -> dict[str, str]:
        state = parse_qs(urlsplit(redirect.url).query)["state"][0]
        return {"state": state, "user": "u-1"}  # what the hub's user picker posts back

    return Harness(connector, partner, connection, answer)


def oidc_harness() -> Harness:
    idp = FakeOidcProvider(users=[FakeUser("u-1", email="u1@acme.test")])
    connection = idp.connection_settings(id="conn-1")
    context = ConnectorContext(hub_base_url="https://hub.test", transport=idp.transport)
    partner, connector = build(connection, context)
    return Harness(connector, partner, connection, lambda redirect: idp.authorize(redirect.url))


def keycloak_harness() -> Harness:
    # A Keycloak realm is an OIDC issuer at {server_url}/realms/{realm}; staff only.
    realm = FakeOidcProvider(
        "https://sso.acme.test/realms/staff",
        users=[FakeUser("u-1", email="u1@acme.test", extra={"realm_access": {"roles": []}})],
    )
    connection = KeycloakConnectionSettings(
        type="keycloak",
        id="conn-1",
        server_url="https://sso.acme.test",
        realm="staff",
        client_id=realm.client_id,
        client_secret=str(realm.client_secret),
    )
    partner = partner_with(connection).model_copy(update={"kind": PartnerKind.internal})
    context = ConnectorContext(hub_base_url="https://hub.test", transport=realm.transport)
    connector = default_registry().build(partner, connection, context)
    return Harness(connector, partner, connection, lambda redirect: realm.authorize(redirect.url))


def saml_harness() -> Harness:
    idp = FakeSamlIdP(users=[SamlUser("u-1", email="u1@acme.test")], sign_response=False)
    connection = SamlConnectionSettings(
        type="saml", id="conn-1", idp_metadata_xml=idp.metadata_xml()
    )
    replay = MemoryReplay()
    partner, connector = build(connection, ConnectorContext("https://hub.test", replay=replay))
    assert isinstance(connector, SamlConnector)

    async def answer(redirect: LoginRedirect) -> dict[str, str]:
        request = idp.read_authn_request(redirect.url)  # what the browser carries to the IdP
        assert request.acs_url is not None and request.issuer is not None
        xml = idp.response(
            acs_url=request.acs_url, sp_entity_id=request.issuer, in_response_to=request.id
        )
        return idp.post_params(xml, request.relay_state)

    return Harness(connector, partner, connection, answer, "RelayState", "POST")


def otp_harness() -> Harness:
    connection = OtpConnectionSettings(type="otp", id="conn-1")
    partner, connector = build(connection, ConnectorContext(hub_base_url="https://hub.test"))
    assert isinstance(connector, OtpConnector)

    async def answer(redirect: LoginRedirect) -> dict[str, str]:
        # The hub's code page, once the code is right, sends the browser on with the state.
        return {"state": parse_qs(urlsplit(redirect.url).query)["state"][0]}

    subject = connector.subject_of("u1@acme.test")
    return Harness(
        connector,
        partner,
        connection,
        answer,
        hub_adds={VERIFIED_EMAIL: "u1@acme.test"},
        subject=subject,
    )


class MemoryReplay:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def first_use(self, key: str, ttl: float) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


HARNESSES: dict[str, Callable[[], Harness]] = {
    "mock": mock_harness,
    "oidc": oidc_harness,
    "saml": saml_harness,
    "keycloak": keycloak_harness,
    "otp": otp_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Harness:
    return HARNESSES[request.param]()


def test_every_registered_connector_type_runs_the_contract() -> None:
    assert default_registry().types == set(HARNESSES)


async def test_it_claims_the_callback_capability(harness: Harness) -> None:
    assert isinstance(harness.connector, CallbackConnector)
    assert harness.connector.id == harness.connection.id
    assert harness.connector.partner_id == harness.partner.id


async def test_login_url_carries_the_state_and_a_json_flow_state(harness: Harness) -> None:
    redirect = await harness.connector.login_url(LoginRequest(CALLBACK, "flow-xyz"))

    assert parse_qs(urlsplit(redirect.url).query)[harness.state_param] == ["flow-xyz"]
    assert json.loads(json.dumps(redirect.flow_state)) == redirect.flow_state


async def test_handle_callback_returns_an_identity_of_this_connection(harness: Harness) -> None:
    redirect = await harness.connector.login_url(LoginRequest(CALLBACK, "flow-1"))
    params = await harness.answer(redirect)

    identity = await harness.connector.handle_callback(
        CallbackRequest(CALLBACK, params, harness.method),
        {**redirect.flow_state, **harness.hub_adds},
    )

    assert identity.partner_id == harness.partner.id
    assert identity.connection_id == harness.connection.id
    assert identity.issuer
    assert identity.subject == harness.subject


@pytest.mark.parametrize(
    "params",
    [{}, {"garbage": "x"}, {"state": "flow-1", "user": "nobody", "code": "nothing"}],
    ids=["empty", "garbage", "unknown"],
)
async def test_a_garbage_callback_raises_an_isthmus_error(
    harness: Harness, params: dict[str, str]
) -> None:
    redirect = await harness.connector.login_url(LoginRequest(CALLBACK, "flow-1"))

    with pytest.raises(IsthmusError):
        await harness.connector.handle_callback(
            CallbackRequest(CALLBACK, params, harness.method), redirect.flow_state
        )

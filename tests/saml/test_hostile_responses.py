"""Flow: partner user -> hub -> partner SAML IdP (in-process fake) -> hub, under attack.

Every variant of the hostile corpus (tests/saml/corpus.py) answers a login the hub really
started, through the whole app: POST to the ACS, follow the 303. Each must be refused with
a clear page and a request id, audited as ``login.failed`` with a reason, and leave no
session behind (no cookie, nothing in the store). The valid response, in the same
harness, signs the user in (the controls).
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from lxml import etree

from connectors.registry import ConnectorContext
from federation import errors
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import Settings
from federation.stores.memory import MemoryStore
from federation.web.app import create_app
from tests.broker.conftest import BASE
from tests.broker.test_mock_partner_to_hub_session import start_login
from tests.fakes.saml_idp import (
    DS,
    MD,
    AuthnRequestInfo,
    FakeSamlIdP,
    SamlKeyPair,
    SamlUser,
)
from tests.saml.corpus import (
    VARIANTS,
    Attempt,
    Solicitation,
    Variant,
    acs_path_of,
    form_fields,
    post_response,
)

CONNECTION = "acme-saml"
USER_EMAIL = "mallory@acme.example"  # the attacker's own, genuine account at Acme's IdP
VICTIM_EMAIL = "ceo@acme.example"
MAX_RESPONSE_BYTES = 64 * 1024
PUBLIC_MESSAGES = {
    cls.public_message
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.IsthmusError)
}


@pytest.fixture(scope="module")
def other_key() -> SamlKeyPair:
    return SamlKeyPair.generate(common_name="not-the-idp")


@pytest.fixture
def idp() -> FakeSamlIdP:
    return FakeSamlIdP(
        "https://idp.acme.test/saml",
        users=[
            SamlUser("mallory", email=USER_EMAIL, name="Mallory", groups=("buyers",)),
        ],
    )


@dataclass
class Harness:
    idp: FakeSamlIdP
    hub: Hub
    store: MemoryStore
    audit_log: list[dict[str, Any]]
    app: Any

    def client(self) -> httpx.AsyncClient:
        """A browser of its own (its own cookie jar)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)

    def session_keys(self) -> list[str]:
        # The memory store's entries: every session record and sid index the hub wrote.
        return sorted(k for k in self.store._entries if k.startswith("session"))


@pytest.fixture
async def make_harness() -> AsyncIterator[Callable[..., Harness]]:
    built: list[Hub] = []

    def make(idp: FakeSamlIdP, **connection: Any) -> Harness:
        audit_log: list[dict[str, Any]] = []
        settings = Settings(
            issuer=BASE,
            allow_insecure_http=True,
            partners=[
                {
                    "id": "acme",
                    "name": "Acme",
                    "kind": "supplier",
                    "status": "active",
                    "domains": ["acme.example"],
                    "connections": [
                        {
                            "type": "saml",
                            "id": CONNECTION,
                            "idp_metadata_xml": idp.metadata_xml(),
                            "max_response_bytes": MAX_RESPONSE_BYTES,
                            **connection,
                        }
                    ],
                }
            ],
        )
        store = MemoryStore()
        hub = build_hub(
            settings,
            store=store,
            audit=Audit([audit_log.append]),
            context=ConnectorContext(hub_base_url=BASE),
        )
        built.append(hub)
        return Harness(idp, hub, store, audit_log, create_app(hub=hub))

    yield make
    for hub in built:
        await hub.aclose()


async def solicit(client: httpx.AsyncClient, idp: FakeSamlIdP) -> AuthnRequestInfo:
    """Start a login at the hub; return the AuthnRequest it sent the browser off with."""
    to_idp = await start_login(client, USER_EMAIL)
    if to_idp.status_code == 303:  # HTTP-Redirect binding
        location = to_idp.headers["location"]
        assert location.startswith(idp.sso_redirect_url), location
        return idp.read_authn_request(location)
    assert to_idp.status_code == 200, to_idp.text  # HTTP-POST binding: a self-posting form
    action, fields = form_fields(to_idp.text)
    assert action == idp.sso_post_url
    return idp.read_authn_request(fields)


def solicitation(
    h: Harness, request: AuthnRequestInfo | None, other_key: SamlKeyPair
) -> Solicitation:
    acs_url = f"{BASE}/callback/{CONNECTION}"
    return Solicitation(
        idp=h.idp,
        acs_url=request.acs_url or acs_url if request else acs_url,
        sp_entity_id=request.issuer or "" if request else sp_entity_id(),
        in_response_to=request.id if request else None,
        user="mallory",
        victim_email=VICTIM_EMAIL,
        max_response_bytes=MAX_RESPONSE_BYTES,
        other_key=other_key,
    )


def sp_entity_id() -> str:
    return f"{BASE}/saml/{CONNECTION}/metadata"


def assert_signed_in(h: Harness, client: httpx.AsyncClient, attempt: Attempt) -> None:
    assert attempt.post.status_code == 303, attempt.post.text
    assert attempt.final.status_code == 303, attempt.final.text
    assert "isthmus_session=" in attempt.final.headers.get("set-cookie", "")
    assert "isthmus_session" in client.cookies
    assert h.audit_log[-1]["event"] == "login.succeeded", h.audit_log[-1]


async def assert_refused(
    h: Harness,
    client: httpx.AsyncClient,
    attempt: Attempt,
    sessions_before: list[str],
) -> None:
    final = attempt.final
    assert 400 <= final.status_code < 500, (final.status_code, final.text[:500])
    for response in (attempt.post, final):
        assert "isthmus_session" not in response.headers.get("set-cookie", "")
    assert "isthmus_session" not in client.cookies
    text = html.unescape(final.text)
    assert "Traceback" not in text and "xmlsec" not in text.lower()
    assert final.headers["x-request-id"] in text
    assert any(message in text for message in PUBLIC_MESSAGES), text[:500]
    failures = [e for e in h.audit_log if e["event"] == "login.failed"]
    assert failures, h.audit_log
    assert failures[-1]["reason"] and failures[-1]["request_id"] == final.headers["x-request-id"]
    assert h.audit_log[-1]["event"] != "login.succeeded"
    assert h.session_keys() == sessions_before


# --- the controls ----------------------------------------------------------------------


async def sp_encryption_cert(client: httpx.AsyncClient) -> str:
    metadata = await client.get(f"/saml/{CONNECTION}/metadata")
    assert metadata.status_code == 200, metadata.text
    root = etree.fromstring(metadata.content)
    for descriptor in root.iter(f"{{{MD}}}KeyDescriptor"):
        if descriptor.get("use") in (None, "encryption"):
            b64 = descriptor.findtext(f".//{{{DS}}}X509Certificate")
            assert b64 is not None
            body = "".join(b64.split())
            lines = [body[i : i + 64] for i in range(0, len(body), 64)]
            return (
                "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
            )
    raise AssertionError("no encryption certificate in the SP metadata")


CONTROLS: Mapping[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "response_and_assertion_signed": ({}, {}),
    "assertion_signed_only": ({}, {"sign_response": False}),
    "response_signed_only": ({"want_assertions_signed": False}, {"sign_assertion": False}),
    "post_binding_request": ({"authn_request_binding": "post"}, {}),
    "encrypted_assertion": ({}, {"encrypt_to": "SP"}),
    "uri_attribute_names": ({}, {"attribute_names": "uri"}),
    "basic_attribute_names": ({}, {"attribute_names": "basic"}),
}


@pytest.mark.parametrize("name", list(CONTROLS))
async def test_valid_response_signs_in(
    name: str, idp: FakeSamlIdP, make_harness: Callable[..., Harness], other_key: SamlKeyPair
) -> None:
    connection, response = CONTROLS[name]
    h = make_harness(idp, **connection)
    async with h.client() as client:
        if response.get("encrypt_to") == "SP":
            response = response | {"encrypt_to": await sp_encryption_cert(client)}
        request = await solicit(client, idp)
        s = solicitation(h, request, other_key)
        xml = s.valid("both", **response)
        attempt = await post_response(client, acs_path_of(s.acs_url), xml, request.relay_state, idp)
        assert_signed_in(h, client, attempt)
        session = await h.hub.sessions.get(client.cookies["isthmus_session"])
        assert session is not None
        identity = session.identity
        assert (identity.partner_id, identity.connection_id) == ("acme", CONNECTION)
        assert identity.subject == "mallory" and identity.email == USER_EMAIL


async def test_idp_certificate_rollover_overlap(
    idp: FakeSamlIdP, make_harness: Callable[..., Harness], other_key: SamlKeyPair
) -> None:
    idp.add_next_key()  # metadata lists old and new
    h = make_harness(idp)
    idp.rotate()  # the IdP signs with the new key from now on
    async with h.client() as client:
        request = await solicit(client, idp)
        s = solicitation(h, request, other_key)
        attempt = await post_response(
            client, acs_path_of(s.acs_url), s.valid("both"), request.relay_state, idp
        )
        assert_signed_in(h, client, attempt)


# --- the corpus -----------------------------------------------------------------------------


def _ids(variant: Variant) -> str:
    return variant.name


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.replay is None], ids=_ids)
async def test_hostile_response_is_refused(
    variant: Variant,
    idp: FakeSamlIdP,
    make_harness: Callable[..., Harness],
    other_key: SamlKeyPair,
) -> None:
    h = make_harness(idp, **variant.connection)
    async with h.client() as client:
        request = await solicit(client, idp)
        s = solicitation(h, request, other_key)
        xml = variant.build(s)
        attempt = await post_response(client, acs_path_of(s.acs_url), xml, request.relay_state, idp)
        await assert_refused(h, client, attempt, [])


async def test_replay_in_the_same_flow_is_refused(
    idp: FakeSamlIdP, make_harness: Callable[..., Harness], other_key: SamlKeyPair
) -> None:
    h = make_harness(idp)
    async with h.client() as client:
        request = await solicit(client, idp)
        s = solicitation(h, request, other_key)
        xml = s.valid("both")
        acs = acs_path_of(s.acs_url)
        assert_signed_in(h, client, await post_response(client, acs, xml, request.relay_state, idp))
        sessions = h.session_keys()
        client.cookies.delete("isthmus_session")  # the replay must not mint another one
        again = await post_response(client, acs, xml, request.relay_state, idp)
        await assert_refused(h, client, again, sessions)


async def test_replay_into_a_new_flow_is_refused(
    idp: FakeSamlIdP, make_harness: Callable[..., Harness], other_key: SamlKeyPair
) -> None:
    h = make_harness(idp)
    async with h.client() as victim:
        request = await solicit(victim, idp)
        s = solicitation(h, request, other_key)
        xml = s.valid("both")
        acs = acs_path_of(s.acs_url)
        assert_signed_in(h, victim, await post_response(victim, acs, xml, request.relay_state, idp))
    sessions = h.session_keys()
    async with h.client() as attacker:  # another browser, its own login flow
        own = await solicit(attacker, idp)
        again = await post_response(attacker, acs, xml, own.relay_state, idp)
        await assert_refused(h, attacker, again, sessions)


async def test_unsolicited_replay_is_refused_by_the_assertion_id_cache(
    idp: FakeSamlIdP, make_harness: Callable[..., Harness], other_key: SamlKeyPair
) -> None:
    h = make_harness(idp, allow_idp_initiated=True)
    s = solicitation(h, None, other_key)
    xml = s.valid("both")
    acs = acs_path_of(s.acs_url)
    async with h.client() as first:
        assert_signed_in(h, first, await post_response(first, acs, xml, None, idp))
    sessions = h.session_keys()
    async with h.client() as second:
        again = await post_response(second, acs, xml, None, idp)
        await assert_refused(h, second, again, sessions)


async def test_unsolicited_response_is_refused_without_opt_in(
    idp: FakeSamlIdP, make_harness: Callable[..., Harness], other_key: SamlKeyPair
) -> None:
    h = make_harness(idp)
    s = solicitation(h, None, other_key)
    async with h.client() as client:
        attempt = await post_response(client, acs_path_of(s.acs_url), s.valid("both"), None, idp)
        await assert_refused(h, client, attempt, [])

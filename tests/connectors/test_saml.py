"""The SAML connector against an in-process pysaml2 IdP: happy paths, then every refusal
of the assertion consumer (security invariant 3), SLO and the certificate report."""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connectors.base import (
    CallbackRequest,
    LoginRedirect,
    LoginRequest,
    LogoutConnector,
    MetadataConnector,
)
from connectors.registry import ConnectorContext
from connectors.saml import SamlConnector, certificates
from connectors.saml._pysaml2 import BINDING_HTTP_REDIRECT, saml2
from federation.errors import InvalidState, InvalidUpstreamResponse, UpstreamError
from federation.settings import SamlConnectionSettings
from tests.connectors.test_contract import MemoryReplay
from tests.connectors.test_saml_fakeidp import (
    ENTITY,
    PASSWORD,
    SSO_POST,
    SSO_REDIRECT,
    FakeIdp,
    attribute,
    new_keys,
    redirect_message,
)
from tests.fakes.clock import FakeClock

HUB = "https://hub.test"
ACS = f"{HUB}/callback/conn-1"
MFA = "http://schemas.microsoft.com/claims/multipleauthn"


def connector(
    connection: SamlConnectionSettings,
    *,
    wall_clock: Any = time.time,
    **context: Any,
) -> SamlConnector:
    context.setdefault("replay", MemoryReplay())
    return SamlConnector(
        "acme", connection, ConnectorContext(HUB, **context), wall_clock=wall_clock
    )


async def login(sp: SamlConnector, state: str = "flow-1") -> LoginRedirect:
    return await sp.login_url(LoginRequest(ACS, state))


async def consume(sp: SamlConnector, xml: str, flow_state: Any, method: str = "POST") -> Any:
    return await sp.handle_callback(CallbackRequest(ACS, FakeIdp.post(xml), method), flow_state)


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp()


@pytest.fixture
def sp(idp: FakeIdp) -> SamlConnector:
    return connector(idp.connection())


# --- happy paths ------------------------------------------------------------------------


async def test_redirect_binding_login_and_a_signed_assertion(
    idp: FakeIdp, sp: SamlConnector
) -> None:
    redirect = await login(sp)
    xml, query = redirect_message(redirect.url)

    assert redirect.url.startswith(SSO_REDIRECT + "?")
    assert redirect.form is None
    assert query["RelayState"] == "flow-1"
    assert "Signature" not in query  # the IdP does not ask for signed requests
    assert f'ID="{redirect.flow_state["request_id"]}"' in xml
    assert ACS in xml

    response = await idp.response(
        sp, redirect.flow_state["request_id"], attributes=[attribute("mail", "u1@acme.test")]
    )
    identity = await consume(sp, response, redirect.flow_state)

    assert (identity.partner_id, identity.connection_id) == ("acme", "conn-1")
    assert (identity.issuer, identity.subject) == (ENTITY, "u-1")
    assert identity.email == "u1@acme.test" and identity.email_verified
    assert identity.amr == () and identity.acr is None
    assert identity.auth_time is not None and abs(identity.auth_time - time.time()) < 60
    raw = identity.raw_claims
    assert raw["name_id"] == "u-1"
    assert raw["name_id_format"] == saml2.saml.NAMEID_FORMAT_PERSISTENT
    assert raw["session_index"] and raw["assertion_id"]
    assert raw["attributes"] == {"mail": ["u1@acme.test"]}


async def test_post_binding_login_is_a_form(idp: FakeIdp) -> None:
    sp = connector(idp.connection(authn_request_binding="post"))
    redirect = await login(sp, "flow-9")

    assert redirect.url == SSO_POST
    assert redirect.form is not None and redirect.form["RelayState"] == "flow-9"
    xml = base64.b64decode(redirect.form["SAMLRequest"]).decode()
    assert "AuthnRequest" in xml and redirect.flow_state["request_id"] in xml
    assert "Signature" not in xml


async def test_authn_requests_are_signed_when_the_idp_wants_it() -> None:
    idp = FakeIdp(want_authn_requests_signed=True)
    sp = connector(idp.connection())
    _, query = redirect_message((await login(sp)).url)
    assert query["SigAlg"].endswith("rsa-sha256") and query["Signature"]

    post = connector(idp.connection(id="conn-2", authn_request_binding="post"))
    redirect = await login(post)
    assert redirect.form is not None
    assert "SignatureValue" in base64.b64decode(redirect.form["SAMLRequest"]).decode()

    unsigned = connector(idp.connection(id="conn-3", sign_authn_requests=False))
    assert "Signature" not in redirect_message((await login(unsigned)).url)[1]


async def test_name_id_policy_from_the_connection(idp: FakeIdp) -> None:
    email_format = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    sp = connector(idp.connection(name_id_format=email_format))
    xml, _ = redirect_message((await login(sp)).url)
    assert f'Format="{email_format}"' in xml


async def test_a_signed_response_over_an_unsigned_assertion_needs_the_opt_out(
    idp: FakeIdp,
) -> None:
    strict = connector(idp.connection())
    redirect = await login(strict)
    xml = await idp.response(
        strict, redirect.flow_state["request_id"], sign_assertion=False, sign_response=True
    )
    with pytest.raises(InvalidUpstreamResponse):
        await consume(strict, xml, redirect.flow_state)

    lenient = connector(idp.connection(id="conn-2", want_assertions_signed=False))
    redirect = await login(lenient)
    xml = await idp.response(
        lenient, redirect.flow_state["request_id"], sign_assertion=False, sign_response=True
    )
    assert (await consume(lenient, xml, redirect.flow_state)).subject == "u-1"


async def test_a_signed_response_with_a_signed_assertion(idp: FakeIdp, sp: SamlConnector) -> None:
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"], sign_response=True)
    assert (await consume(sp, xml, redirect.flow_state)).subject == "u-1"


async def test_an_encrypted_assertion_is_decrypted_with_the_sp_key(
    idp: FakeIdp, sp: SamlConnector
) -> None:
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"], encrypt=True)
    assert "EncryptedAssertion" in xml and "u-1" not in xml

    identity = await consume(sp, xml, redirect.flow_state)
    assert identity.subject == "u-1"


async def test_rollover_both_published_certificates_verify() -> None:
    old, new = new_keys("old"), new_keys("new")
    signer = FakeIdp(keys=old, published=[old, new])
    sp = connector(signer.connection())
    for key in (old, new):
        redirect = await login(sp)
        xml = await signer.response(sp, redirect.flow_state["request_id"], signer=key)
        assert (await consume(sp, xml, redirect.flow_state)).subject == "u-1"

    redirect = await login(sp)
    xml = await signer.response(sp, redirect.flow_state["request_id"], signer=new_keys("x"))
    with pytest.raises(InvalidUpstreamResponse):
        await consume(sp, xml, redirect.flow_state)


async def test_attributes_map_by_friendly_name_uri_and_oid(idp: FakeIdp, sp: SamlConnector) -> None:
    redirect = await login(sp)
    attributes = [
        attribute("urn:oid:0.9.2342.19200300.100.1.3", "ann@acme.test", friendly="mail"),
        attribute("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "Ann Smith"),
        attribute("urn:oid:1.3.6.1.4.1.5923.1.5.1.1", "buyers", "admins"),
        attribute("http://schemas.microsoft.com/ws/2008/06/identity/claims/role"),  # no value
        attribute("urn:oid:2.5.4.42", "Ann", friendly="givenName"),
    ]
    xml = await idp.response(sp, redirect.flow_state["request_id"], attributes=attributes)
    identity = await consume(sp, xml, redirect.flow_state)

    assert identity.email == "ann@acme.test"
    assert identity.name == "Ann Smith"
    assert identity.groups == ("buyers", "admins")
    assert identity.roles == ()
    assert identity.raw_claims["attributes"]["urn:oid:2.5.4.42"] == ["Ann"]


async def test_subject_from_an_attribute_and_no_email_when_not_vouched(idp: FakeIdp) -> None:
    mapping = {"subject": ("employeeNumber",)}
    sp = connector(idp.connection(attributes=mapping, email_verified=False))
    redirect = await login(sp)
    attributes = [attribute("employeeNumber", "E-42"), attribute("mail", "a@acme.test")]
    xml = await idp.response(sp, redirect.flow_state["request_id"], attributes=attributes)
    identity = await consume(sp, xml, redirect.flow_state)
    assert identity.subject == "E-42"
    assert identity.email is None and not identity.email_verified


@pytest.mark.parametrize("trust", [True, False])
async def test_authn_context_class_becomes_acr_only_when_trusted(idp: FakeIdp, trust: bool) -> None:
    sp = connector(idp.connection(trust_acr=trust))
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"], class_ref=MFA)
    identity = await consume(sp, xml, redirect.flow_state)
    assert identity.acr == (MFA if trust else None)
    assert identity.raw_claims["authn_context_class_ref"] == MFA


async def test_idp_initiated_sso_only_with_the_opt_in(idp: FakeIdp, sp: SamlConnector) -> None:
    xml = await idp.response(sp, None)
    with pytest.raises(InvalidState):
        await consume(sp, xml, None)

    opted = connector(idp.connection(id="conn-2", allow_idp_initiated=True))
    unsolicited = await idp.response(opted, None)
    got = await opted.handle_callback(
        CallbackRequest(f"{HUB}/callback/conn-2", FakeIdp.post(unsolicited), "POST"), None
    )
    assert got.subject == "u-1"

    # An unsolicited response must not answer some request.
    redirect = await login(opted)
    solicited = await idp.response(opted, redirect.flow_state["request_id"])
    with pytest.raises(InvalidState):
        await opted.handle_callback(
            CallbackRequest(f"{HUB}/callback/conn-2", FakeIdp.post(solicited), "POST"), None
        )


async def test_metadata_from_a_url_is_refreshed_and_survives_a_failed_refresh(
    idp: FakeIdp,
) -> None:
    calls: list[str] = []
    answers = [idp.metadata_xml]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        answer = answers[-1]
        return httpx.Response(200, text=answer) if answer else httpx.Response(503)

    clock = FakeClock()
    url = "https://idp.test/metadata.xml"
    connection = SamlConnectionSettings(
        type="saml", id="conn-1", idp_metadata_url=url, metadata_refresh_seconds=600
    )
    sp = connector(connection, transport=httpx.MockTransport(handler), clock=clock)

    assert (await sp.idp()).entity_id == ENTITY
    await sp.idp()
    assert len(calls) == 1

    rolled = FakeIdp(keys=idp.keys, published=[idp.keys, new_keys("next")])
    answers.append(rolled.metadata_xml)
    clock.advance(601)
    assert len((await sp.idp()).signing_certs) == 2
    assert len(calls) == 2

    answers.append("")  # the IdP's metadata endpoint fails: the last good copy stays
    clock.advance(601)
    assert len((await sp.idp()).signing_certs) == 2
    assert len(calls) == 3
    await sp.aclose()


async def test_metadata_that_cannot_be_had_is_an_upstream_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    connection = SamlConnectionSettings(
        type="saml", id="conn-1", idp_metadata_url="https://idp.test/md"
    )
    sp = connector(connection, transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError):
        await login(sp)
    await sp.aclose()


async def test_sp_metadata(sp: SamlConnector) -> None:
    assert isinstance(sp, MetadataConnector) and isinstance(sp, LogoutConnector)
    xml = await sp.sp_metadata()

    assert f'entityID="{HUB}/saml/conn-1/metadata"' in xml
    assert f'Location="{ACS}"' in xml and "HTTP-POST" in xml
    assert f'Location="{HUB}/saml/conn-1/slo"' in xml
    assert 'use="signing"' in xml and 'use="encryption"' in xml
    assert 'WantAssertionsSigned="true"' in xml
    assert sp.keys.cert_base64 in xml


async def test_sp_keys_from_files(tmp_path: Any, idp: FakeIdp) -> None:
    keys = new_keys("configured sp")
    sp = connector(
        idp.connection(sp_key_file=keys.key_file, sp_cert_file=keys.cert_file, sp_entity_id="urn:x")
    )
    xml = await sp.sp_metadata()
    assert keys.cert_base64 in xml and 'entityID="urn:x"' in xml


# --- refusals ---------------------------------------------------------------------------


def _assertion(response: Any) -> Any:
    return response.assertion[0]


def _confirmation(response: Any) -> Any:
    return _assertion(response).subject.subject_confirmation[0].subject_confirmation_data


def _set(path: str, value: Any) -> Any:
    def mutate(response: Any) -> None:
        target = {
            "response": response,
            "assertion": _assertion(response),
            "conditions": _assertion(response).conditions,
            "confirmation": _confirmation(response),
        }[path.split(".")[0]]
        setattr(target, path.split(".")[1], value)

    return mutate


def _audience(value: str) -> Any:
    def mutate(response: Any) -> None:
        _assertion(response).conditions.audience_restriction[0].audience[0].text = value

    return mutate


def _no_audience(response: Any) -> None:
    _assertion(response).conditions.audience_restriction = []


def _issuer(value: str) -> Any:
    def mutate(response: Any) -> None:
        _assertion(response).issuer.text = value

    return mutate


def _status(response: Any) -> None:
    response.status.status_code.value = "urn:oasis:names:tc:SAML:2.0:status:Responder"


REFUSED: dict[str, tuple[Any, type[Exception]]] = {
    "no Destination": (_set("response.destination", None), InvalidUpstreamResponse),
    "wrong Destination": (
        _set("response.destination", "https://evil.test/acs"),
        InvalidUpstreamResponse,
    ),
    "wrong Recipient": (
        _set("confirmation.recipient", "https://evil.test/acs"),
        InvalidUpstreamResponse,
    ),
    "no Recipient": (_set("confirmation.recipient", None), InvalidUpstreamResponse),
    "no AudienceRestriction": (_no_audience, InvalidUpstreamResponse),
    "wrong Audience": (_audience("https://other-sp.test"), InvalidUpstreamResponse),
    "no Conditions NotOnOrAfter": (
        _set("conditions.not_on_or_after", None),
        InvalidUpstreamResponse,
    ),
    "no Conditions NotBefore": (_set("conditions.not_before", None), InvalidUpstreamResponse),
    "no confirmation NotOnOrAfter": (
        _set("confirmation.not_on_or_after", None),
        InvalidUpstreamResponse,
    ),
    "expired": (
        _set("conditions.not_on_or_after", "2001-01-01T00:00:00Z"),
        InvalidUpstreamResponse,
    ),
    "not yet valid": (
        _set("conditions.not_before", "2099-01-01T00:00:00Z"),
        InvalidUpstreamResponse,
    ),
    "wrong InResponseTo": (_set("response.in_response_to", "id-someone-else"), InvalidState),
    "no InResponseTo": (_set("response.in_response_to", None), InvalidState),
    "wrong confirmation InResponseTo": (_set("confirmation.in_response_to", "id-x"), InvalidState),
    "wrong Issuer": (_issuer("https://other-idp.test"), InvalidUpstreamResponse),
    "IdP status not Success": (_status, UpstreamError),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_the_consumer_refuses(idp: FakeIdp, sp: SamlConnector, case: str) -> None:
    mutate, error = REFUSED[case]
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"], mutate=mutate)
    with pytest.raises(error) as caught:
        await consume(sp, xml, redirect.flow_state)
    assert caught.value.detail  # the precise reason, for the log


async def test_a_replayed_assertion_is_refused(idp: FakeIdp, sp: SamlConnector) -> None:
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"])
    await consume(sp, xml, redirect.flow_state)
    with pytest.raises(InvalidUpstreamResponse, match="replay"):
        await consume(sp, xml, redirect.flow_state)


async def test_the_replay_ttl_runs_to_not_on_or_after_plus_skew(idp: FakeIdp) -> None:
    ttls: list[tuple[str, float]] = []

    class Recording(MemoryReplay):
        async def first_use(self, key: str, ttl: float) -> bool:
            ttls.append((key, ttl))
            return await super().first_use(key, ttl)

    sp = connector(idp.connection(), replay=Recording())
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"])
    identity = await consume(sp, xml, redirect.flow_state)
    key, ttl = ttls[0]
    assert key == f"saml:conn-1:{identity.raw_claims['assertion_id']}"
    assert 5 * 60 < ttl <= 5 * 60 + 120 + 1  # lifetime 5 min + 120 s skew


async def test_the_consumer_checks_time_with_its_own_clock(idp: FakeIdp) -> None:
    later = connector(idp.connection(), wall_clock=lambda: time.time() + 3600)
    redirect = await login(later)
    xml = await idp.response(later, redirect.flow_state["request_id"])
    with pytest.raises(InvalidUpstreamResponse, match="expired"):
        await consume(later, xml, redirect.flow_state)


async def test_no_replay_cache_fails_closed(idp: FakeIdp) -> None:
    sp = SamlConnector("acme", idp.connection(), ConnectorContext(HUB))
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"])
    with pytest.raises(UpstreamError):
        await consume(sp, xml, redirect.flow_state)


async def test_unsigned_and_foreign_signatures_are_refused(idp: FakeIdp, sp: SamlConnector) -> None:
    redirect = await login(sp)
    request_id = redirect.flow_state["request_id"]
    for xml in (
        await idp.response(sp, request_id, sign_assertion=False),
        await idp.response(sp, request_id, signer=new_keys("attacker")),
    ):
        with pytest.raises(InvalidUpstreamResponse):
            await consume(sp, xml, redirect.flow_state)


async def test_a_tampered_signed_assertion_is_refused(idp: FakeIdp, sp: SamlConnector) -> None:
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"], name_id="alice")
    with pytest.raises(InvalidUpstreamResponse):
        await consume(sp, xml.replace(">alice<", ">admin<"), redirect.flow_state)


async def test_a_second_assertion_is_refused(idp: FakeIdp, sp: SamlConnector) -> None:
    redirect = await login(sp)

    def twice(response: Any) -> None:
        copy = saml2.saml.assertion_from_string(str(response.assertion[0]))
        copy.id = "id-second"
        response.assertion.append(copy)

    xml = await idp.response(sp, redirect.flow_state["request_id"], mutate=twice)
    with pytest.raises(InvalidUpstreamResponse, match=r"assertions|twice"):
        await consume(sp, xml, redirect.flow_state)


async def test_an_oversized_response_is_refused_before_decoding(sp: SamlConnector) -> None:
    redirect = await login(sp)
    huge = "A" * (400 * 1024)
    with pytest.raises(InvalidUpstreamResponse, match="size cap"):
        await sp.handle_callback(
            CallbackRequest(ACS, {"SAMLResponse": huge}, "POST"), redirect.flow_state
        )


@pytest.mark.parametrize(
    "prefix",
    [
        '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>',
        "<!DOCTYPE r>",
        "<?evil stuff?>",
    ],
    ids=["xxe", "entity-expansion", "doctype", "processing-instruction"],
)
async def test_dtds_entities_and_pis_are_refused_before_pysaml2(
    idp: FakeIdp, sp: SamlConnector, prefix: str
) -> None:
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"])
    body = xml.split("?>", 1)[1] if xml.startswith("<?xml") else xml
    with pytest.raises(InvalidUpstreamResponse, match="before parsing"):
        await consume(sp, prefix + body, redirect.flow_state)


async def test_a_comment_splitting_the_name_id_is_refused(idp: FakeIdp, sp: SamlConnector) -> None:
    redirect = await login(sp)
    xml = await idp.response(
        sp, redirect.flow_state["request_id"], name_id="user@partner.example.evil.example"
    )
    split = xml.replace(
        "user@partner.example.evil.example", "user@partner.example<!---->.evil.example"
    )
    with pytest.raises(InvalidUpstreamResponse, match="comment"):
        await consume(sp, split, redirect.flow_state)


async def test_a_wrapped_assertion_is_refused(idp: FakeIdp, sp: SamlConnector) -> None:
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"])

    def wrap(response: Any) -> None:
        evil = saml2.saml.assertion_from_string(str(response.assertion[0]))
        evil.id = "id-evil"
        response.extensions = saml2.samlp.Extensions(
            extension_elements=[saml2.element_to_extension_element(evil)]
        )

    wrapped = await idp.response(sp, redirect.flow_state["request_id"], mutate=wrap)
    with pytest.raises(InvalidUpstreamResponse, match=r"wrapping|assertion"):
        await consume(sp, wrapped, redirect.flow_state)
    assert xml  # the unwrapped original is fine (not consumed here)


async def test_a_response_by_get_or_without_saml_response_is_refused(
    idp: FakeIdp, sp: SamlConnector
) -> None:
    redirect = await login(sp)
    xml = await idp.response(sp, redirect.flow_state["request_id"])
    with pytest.raises(InvalidUpstreamResponse):
        await consume(sp, xml, redirect.flow_state, method="GET")
    with pytest.raises(InvalidUpstreamResponse):
        await sp.handle_callback(CallbackRequest(ACS, {}, "POST"), redirect.flow_state)
    with pytest.raises(InvalidState):
        await consume(sp, xml, {})


# --- single logout ---------------------------------------------------------------------


async def _signed_in(idp: FakeIdp, sp: SamlConnector) -> Any:
    redirect = await login(sp)
    return await consume(
        sp, await idp.response(sp, redirect.flow_state["request_id"]), redirect.flow_state
    )


async def test_sp_initiated_logout_is_a_signed_request_with_name_id_and_session(
    idp: FakeIdp, sp: SamlConnector
) -> None:
    identity = await _signed_in(idp, sp)
    redirect = await sp.logout_url(identity, f"{HUB}/logged-out", "st-1")
    assert redirect is not None and redirect.url.startswith("https://idp.test/slo?")
    xml, query = redirect_message(redirect.url)
    assert "LogoutRequest" in xml and ">u-1<" in xml
    assert identity.raw_claims["session_index"] in xml
    assert query["RelayState"] == "st-1" and query["Signature"]

    # The IdP's answer (signed over the query string) is accepted.
    server = await idp.server(sp)
    request = saml2.samlp.logout_request_from_string(xml)
    answer = server.create_logout_response(request, [BINDING_HTTP_REDIRECT])
    info = server.apply_binding(
        BINDING_HTTP_REDIRECT,
        str(answer),
        f"{HUB}/saml/conn-1/slo",
        "st-1",
        response=True,
        sign=True,
        sigalg="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    )
    location = dict(info["headers"])["Location"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    outcome = await sp.handle_logout(CallbackRequest(f"{HUB}/saml/conn-1/slo", params, "GET"))
    assert outcome.end_subject is None and outcome.redirect is None

    params["Signature"] = base64.b64encode(b"forged" * 40).decode()
    with pytest.raises(InvalidUpstreamResponse):
        await sp.handle_logout(CallbackRequest(f"{HUB}/saml/conn-1/slo", params, "GET"))


async def test_no_logout_url_without_an_idp_slo_endpoint() -> None:
    idp = FakeIdp(slo=False)
    sp = connector(idp.connection())
    identity = await _signed_in(idp, sp)
    assert await sp.logout_url(identity, "/", "st") is None


async def test_idp_initiated_logout_ends_the_subject_and_answers_signed(
    idp: FakeIdp, sp: SamlConnector
) -> None:
    identity = await _signed_in(idp, sp)
    server = await idp.server(sp)
    _, request = server.create_logout_request(
        f"{HUB}/saml/conn-1/slo",
        sp.endpoints.entity_id,
        name_id=saml2.saml.NameID(text="u-1", format=saml2.saml.NAMEID_FORMAT_PERSISTENT),
        session_indexes=[identity.raw_claims["session_index"]],
        sign=False,
    )
    info = server.apply_binding(
        BINDING_HTTP_REDIRECT,
        str(request),
        f"{HUB}/saml/conn-1/slo",
        "rs",
        sign=True,
        sigalg="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    )
    location = dict(info["headers"])["Location"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    outcome = await sp.handle_logout(CallbackRequest(f"{HUB}/saml/conn-1/slo", params, "GET"))

    assert outcome.end_subject == "u-1"
    assert outcome.session_index == identity.raw_claims["session_index"]
    assert outcome.redirect is not None and outcome.redirect.url.startswith("https://idp.test/slo?")
    xml, query = redirect_message(outcome.redirect.url)
    assert "LogoutResponse" in xml and query["Signature"] and query["RelayState"] == "rs"

    unsigned = {k: v for k, v in params.items() if k not in ("Signature", "SigAlg")}
    with pytest.raises(InvalidUpstreamResponse, match="not signed"):
        await sp.handle_logout(CallbackRequest(f"{HUB}/saml/conn-1/slo", unsigned, "GET"))


# --- certificates ----------------------------------------------------------------------


def test_certificates_lists_every_idp_signing_cert_and_the_sp_cert() -> None:
    old, new = new_keys("old idp"), new_keys("new idp")
    sp_keys = new_keys("the sp")
    idp = FakeIdp(keys=old, published=[old, new])
    found = certificates(
        idp.connection(sp_key_file=sp_keys.key_file, sp_cert_file=sp_keys.cert_file)
    )
    assert [(c.whose, c.subject) for c in found] == [
        ("IdP", "CN=old idp"),
        ("IdP", "CN=new idp"),
        ("SP", "CN=the sp"),
    ]
    assert all(c.connection_id == "conn-1" for c in found)


def test_a_password_class_is_the_default_context() -> None:
    assert PASSWORD.endswith("PasswordProtectedTransport")

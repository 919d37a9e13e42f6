"""The SAML connector against the shared in-process fake IdP (tests/fakes/saml_idp.py):
happy paths, then every refusal of the assertion consumer (security invariant 3), SLO and
the certificate report."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

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
from connectors.saml.keys import generate_key_pair
from federation.errors import InvalidState, InvalidUpstreamResponse, UpstreamError
from federation.settings import SamlConnectionSettings
from tests.connectors.test_contract import MemoryReplay
from tests.fakes.clock import FakeClock
from tests.fakes.saml_idp import (
    AC_PASSWORD_PROTECTED,
    NAMEID_PERSISTENT,
    STATUS_RESPONDER,
    FakeSamlIdP,
    SamlAttribute,
    SamlKeyPair,
    SamlUser,
)
from tests.saml.corpus import BY_NAME, Solicitation

HUB = "https://hub.test"
ACS = f"{HUB}/callback/conn-1"
SLO = f"{HUB}/saml/conn-1/slo"
MFA = "http://schemas.microsoft.com/claims/multipleauthn"
THE_REQUEST = "<the AuthnRequest id>"  # stands for the id of the login under test


def new_idp() -> FakeSamlIdP:
    """An IdP signing the assertion only (the common default of ADFS, Entra, Keycloak)."""
    return FakeSamlIdP(users=[SamlUser("u-1", email="u1@acme.test")], sign_response=False)


def connection(
    idp: FakeSamlIdP,
    id: str = "conn-1",
    *,
    want_authn_requests_signed: bool = False,
    slo: bool = True,
    **overrides: Any,
) -> SamlConnectionSettings:
    metadata = idp.metadata_xml(want_authn_requests_signed=want_authn_requests_signed, slo=slo)
    return SamlConnectionSettings(type="saml", id=id, idp_metadata_xml=metadata, **overrides)


def connector(connection: SamlConnectionSettings, **context: Any) -> SamlConnector:
    context.setdefault("replay", MemoryReplay())
    return SamlConnector("acme", connection, ConnectorContext(HUB, **context))


def respond(idp: FakeSamlIdP, sp: SamlConnector, request_id: str | None, **overrides: Any) -> bytes:
    """The IdP's Response to ``sp``'s ACS, answering ``request_id`` (None: unsolicited)."""
    values = {
        "acs_url": sp.endpoints.acs_url,
        "sp_entity_id": sp.endpoints.entity_id,
        "in_response_to": request_id,
    }
    return idp.response(**(values | overrides))


async def login(sp: SamlConnector, state: str = "flow-1") -> LoginRedirect:
    return await sp.login_url(LoginRequest(sp.endpoints.acs_url, state))


async def login_and_respond(
    idp: FakeSamlIdP, sp: SamlConnector, **overrides: Any
) -> tuple[bytes, dict[str, Any]]:
    """A login started at ``sp`` and the IdP's Response to it, with its flow state."""
    redirect = await login(sp)
    return respond(idp, sp, redirect.flow_state["request_id"], **overrides), redirect.flow_state


async def consume(sp: SamlConnector, xml: bytes, flow_state: Any, method: str = "POST") -> Any:
    params = FakeSamlIdP.post_params(xml, "flow-1")
    request = CallbackRequest(sp.endpoints.acs_url, params, method)
    return await sp.handle_callback(request, flow_state)


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
def idp() -> FakeSamlIdP:
    return new_idp()


@pytest.fixture
def sp(idp: FakeSamlIdP) -> SamlConnector:
    return connector(connection(idp))


# --- happy paths ------------------------------------------------------------------------


async def test_redirect_binding_login_and_a_signed_assertion(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    redirect = await login(sp)
    request = idp.read_authn_request(redirect.url)

    assert redirect.url.startswith(idp.sso_redirect_url + "?")
    assert redirect.form is None
    assert request.relay_state == "flow-1"
    assert not request.signed  # the IdP does not ask for signed requests
    assert request.id == redirect.flow_state["request_id"]
    assert request.acs_url == ACS

    response = respond(idp, sp, request.id, attributes={"mail": ["u1@acme.test"]})
    identity = await consume(sp, response, redirect.flow_state)

    assert (identity.partner_id, identity.connection_id) == ("acme", "conn-1")
    assert (identity.issuer, identity.subject) == (idp.entity_id, "u-1")
    assert identity.email == "u1@acme.test" and identity.email_verified
    assert identity.amr == () and identity.acr is None
    assert identity.auth_time is not None and abs(identity.auth_time - time.time()) < 60
    raw = identity.raw_claims
    assert raw["name_id"] == "u-1"
    assert raw["name_id_format"] == NAMEID_PERSISTENT
    assert raw["session_index"] and raw["assertion_id"]
    assert raw["attributes"] == {"mail": ["u1@acme.test"]}


async def test_post_binding_login_is_a_form(idp: FakeSamlIdP) -> None:
    sp = connector(connection(idp, authn_request_binding="post"))
    redirect = await login(sp, "flow-9")

    assert redirect.url == idp.sso_post_url
    assert redirect.form is not None and redirect.form["RelayState"] == "flow-9"
    request = idp.read_authn_request(redirect.form)
    assert request.binding == "post" and request.relay_state == "flow-9"
    assert request.id == redirect.flow_state["request_id"]
    assert not request.signed


async def test_authn_requests_are_signed_when_the_idp_wants_it(idp: FakeSamlIdP) -> None:
    sp = connector(connection(idp, want_authn_requests_signed=True))
    url = (await login(sp)).url
    query = query_of(url)
    assert query["SigAlg"].endswith("rsa-sha256") and query["Signature"]
    assert idp.read_authn_request(url, sp_cert=sp.keys.cert_pem).signed  # and it verifies

    post = connector(
        connection(idp, "conn-2", want_authn_requests_signed=True, authn_request_binding="post")
    )
    redirect = await login(post)
    assert redirect.form is not None
    assert idp.read_authn_request(redirect.form, sp_cert=post.keys.cert_pem).signed

    unsigned = connector(
        connection(idp, "conn-3", want_authn_requests_signed=True, sign_authn_requests=False)
    )
    assert "Signature" not in query_of((await login(unsigned)).url)


async def test_name_id_policy_from_the_connection(idp: FakeSamlIdP) -> None:
    email_format = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    sp = connector(connection(idp, name_id_format=email_format))
    assert idp.read_authn_request((await login(sp)).url).name_id_format == email_format


async def test_a_signed_response_over_an_unsigned_assertion_needs_the_opt_out(
    idp: FakeSamlIdP,
) -> None:
    strict = connector(connection(idp))
    xml, flow_state = await login_and_respond(idp, strict, sign_assertion=False, sign_response=True)
    with pytest.raises(InvalidUpstreamResponse):
        await consume(strict, xml, flow_state)

    lenient = connector(connection(idp, "conn-2", want_assertions_signed=False))
    xml, flow_state = await login_and_respond(
        idp, lenient, sign_assertion=False, sign_response=True
    )
    assert (await consume(lenient, xml, flow_state)).subject == "u-1"


async def test_a_signed_response_with_a_signed_assertion(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    xml, flow_state = await login_and_respond(idp, sp, sign_response=True)
    assert (await consume(sp, xml, flow_state)).subject == "u-1"


async def test_an_encrypted_assertion_is_decrypted_with_the_sp_key(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    xml, flow_state = await login_and_respond(idp, sp, encrypt_to=sp.keys.cert_pem)
    assert b"EncryptedAssertion" in xml and b"u-1" not in xml

    identity = await consume(sp, xml, flow_state)
    assert identity.subject == "u-1"


async def test_rollover_both_published_certificates_verify(idp: FakeSamlIdP) -> None:
    idp.add_next_key()  # the metadata lists the old and the new certificate
    sp = connector(connection(idp))
    for key in idp.keys:
        xml, flow_state = await login_and_respond(idp, sp, signer=key)
        assert (await consume(sp, xml, flow_state)).subject == "u-1"

    xml, flow_state = await login_and_respond(idp, sp, signer=SamlKeyPair.generate())
    with pytest.raises(InvalidUpstreamResponse):
        await consume(sp, xml, flow_state)


async def test_attributes_map_by_friendly_name_uri_and_oid(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    attributes = [
        SamlAttribute("urn:oid:0.9.2342.19200300.100.1.3", ("ann@acme.test",), "mail"),
        SamlAttribute("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", ("Ann Smith",)),
        SamlAttribute("urn:oid:1.3.6.1.4.1.5923.1.5.1.1", ("buyers", "admins")),
        SamlAttribute("http://schemas.microsoft.com/ws/2008/06/identity/claims/role", ()),
        SamlAttribute("urn:oid:2.5.4.42", ("Ann",), "givenName"),
    ]
    xml, flow_state = await login_and_respond(idp, sp, attributes=attributes)
    identity = await consume(sp, xml, flow_state)

    assert identity.email == "ann@acme.test"
    assert identity.name == "Ann Smith"
    assert identity.groups == ("buyers", "admins")
    assert identity.roles == ()  # no value
    assert identity.raw_claims["attributes"]["urn:oid:2.5.4.42"] == ["Ann"]


async def test_subject_from_an_attribute_and_no_email_when_not_vouched(
    idp: FakeSamlIdP,
) -> None:
    mapping = {"subject": ("employeeNumber",)}
    sp = connector(connection(idp, attributes=mapping, email_verified=False))
    attributes = {"employeeNumber": ["E-42"], "mail": ["a@acme.test"]}
    xml, flow_state = await login_and_respond(idp, sp, attributes=attributes)
    identity = await consume(sp, xml, flow_state)
    assert identity.subject == "E-42"
    assert identity.email is None and not identity.email_verified


@pytest.mark.parametrize("trust", [True, False])
async def test_authn_context_class_becomes_acr_only_when_trusted(
    idp: FakeSamlIdP, trust: bool
) -> None:
    sp = connector(connection(idp, trust_acr=trust))
    xml, flow_state = await login_and_respond(idp, sp, authn_context=MFA)
    identity = await consume(sp, xml, flow_state)
    assert identity.acr == (MFA if trust else None)
    assert identity.raw_claims["authn_context_class_ref"] == MFA


async def test_a_password_class_is_the_default_context(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    xml, flow_state = await login_and_respond(idp, sp)
    identity = await consume(sp, xml, flow_state)
    assert identity.raw_claims["authn_context_class_ref"] == AC_PASSWORD_PROTECTED
    assert AC_PASSWORD_PROTECTED.endswith("PasswordProtectedTransport")


async def test_idp_initiated_sso_only_with_the_opt_in(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    with pytest.raises(InvalidState):
        await consume(sp, respond(idp, sp, None), None)

    opted = connector(connection(idp, "conn-2", allow_idp_initiated=True))
    assert (await consume(opted, respond(idp, opted, None), None)).subject == "u-1"

    # An unsolicited response must not answer some request.
    solicited, _ = await login_and_respond(idp, opted)
    with pytest.raises(InvalidState):
        await consume(opted, solicited, None)


async def test_metadata_from_a_url_is_refreshed_and_survives_a_failed_refresh(
    idp: FakeSamlIdP,
) -> None:
    calls: list[str] = []
    answers = [idp.metadata_xml()]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        answer = answers[-1]
        return httpx.Response(200, text=answer) if answer else httpx.Response(503)

    clock = FakeClock()
    url = "https://idp.test/metadata.xml"
    settings = SamlConnectionSettings(
        type="saml", id="conn-1", idp_metadata_url=url, metadata_refresh_seconds=600
    )
    sp = connector(settings, transport=httpx.MockTransport(handler), clock=clock)

    assert (await sp.idp()).entity_id == idp.entity_id
    await sp.idp()
    assert len(calls) == 1

    idp.add_next_key()
    answers.append(idp.metadata_xml())
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

    settings = SamlConnectionSettings(
        type="saml", id="conn-1", idp_metadata_url="https://idp.test/md"
    )
    sp = connector(settings, transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError):
        await login(sp)
    await sp.aclose()


async def test_sp_metadata(sp: SamlConnector) -> None:
    assert isinstance(sp, MetadataConnector) and isinstance(sp, LogoutConnector)
    xml = await sp.sp_metadata()

    assert f'entityID="{HUB}/saml/conn-1/metadata"' in xml
    assert f'Location="{ACS}"' in xml and "HTTP-POST" in xml
    assert f'Location="{SLO}"' in xml
    assert 'use="signing"' in xml and 'use="encryption"' in xml
    assert 'WantAssertionsSigned="true"' in xml
    assert sp.keys.cert_base64 in xml


async def test_sp_keys_from_files(tmp_path: Any, idp: FakeSamlIdP) -> None:
    keys = generate_key_pair("configured sp", tmp_path)
    sp = connector(
        connection(
            idp, sp_key_file=keys.key_file, sp_cert_file=keys.cert_file, sp_entity_id="urn:x"
        )
    )
    xml = await sp.sp_metadata()
    assert keys.cert_base64 in xml and 'entityID="urn:x"' in xml


# --- refusals ---------------------------------------------------------------------------

# Each response is signed correctly AFTER the override: only the consumer's own checks can
# refuse it. THE_REQUEST stands for the id of the AuthnRequest the test sent.
REFUSED: dict[str, tuple[dict[str, Any], type[Exception]]] = {
    "no Destination": ({"destination": None}, InvalidUpstreamResponse),
    "wrong Destination": ({"destination": "https://evil.test/acs"}, InvalidUpstreamResponse),
    "wrong Recipient": ({"recipient": "https://evil.test/acs"}, InvalidUpstreamResponse),
    "no Recipient": ({"recipient": None}, InvalidUpstreamResponse),
    "no AudienceRestriction": ({"audience": None}, InvalidUpstreamResponse),
    "wrong Audience": ({"audience": "https://other-sp.test"}, InvalidUpstreamResponse),
    "no Conditions NotOnOrAfter": ({"not_on_or_after": None}, InvalidUpstreamResponse),
    "no Conditions NotBefore": ({"not_before": None}, InvalidUpstreamResponse),
    "no confirmation NotOnOrAfter": (
        {"confirmation_not_on_or_after": None},
        InvalidUpstreamResponse,
    ),
    "expired": ({"not_on_or_after": -3600}, InvalidUpstreamResponse),
    "not yet valid": ({"not_before": 3600}, InvalidUpstreamResponse),
    "wrong InResponseTo": (
        {"in_response_to": "id-someone-else", "confirmation_in_response_to": THE_REQUEST},
        InvalidState,
    ),
    "no InResponseTo": (
        {"in_response_to": None, "confirmation_in_response_to": THE_REQUEST},
        InvalidState,
    ),
    "wrong confirmation InResponseTo": ({"confirmation_in_response_to": "id-x"}, InvalidState),
    "wrong Issuer": ({"issuer": "https://other-idp.test"}, InvalidUpstreamResponse),
    "IdP status not Success": ({"status": STATUS_RESPONDER}, UpstreamError),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_the_consumer_refuses(idp: FakeSamlIdP, sp: SamlConnector, case: str) -> None:
    overrides, error = REFUSED[case]
    redirect = await login(sp)
    request_id = redirect.flow_state["request_id"]
    overrides = {k: request_id if v == THE_REQUEST else v for k, v in overrides.items()}
    xml = respond(idp, sp, request_id, **overrides)
    with pytest.raises(error) as caught:
        await consume(sp, xml, redirect.flow_state)
    assert caught.value.detail  # the precise reason, for the log


async def test_a_replayed_assertion_is_refused(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    xml, flow_state = await login_and_respond(idp, sp)
    await consume(sp, xml, flow_state)
    with pytest.raises(InvalidUpstreamResponse, match="replay"):
        await consume(sp, xml, flow_state)


async def test_the_replay_ttl_runs_to_not_on_or_after_plus_skew(idp: FakeSamlIdP) -> None:
    ttls: list[tuple[str, float]] = []

    class Recording(MemoryReplay):
        async def first_use(self, key: str, ttl: float) -> bool:
            ttls.append((key, ttl))
            return await super().first_use(key, ttl)

    sp = connector(connection(idp), replay=Recording())
    xml, flow_state = await login_and_respond(idp, sp)
    identity = await consume(sp, xml, flow_state)
    key, ttl = ttls[0]
    assert key == f"saml:conn-1:{identity.raw_claims['assertion_id']}"
    assert 5 * 60 < ttl <= 5 * 60 + 120 + 1  # lifetime 5 min + 120 s skew


async def test_the_consumer_checks_time_with_the_context_wall_clock(idp: FakeSamlIdP) -> None:
    later = connector(connection(idp), wall_clock=lambda: time.time() + 3600)
    xml, flow_state = await login_and_respond(idp, later)
    with pytest.raises(InvalidUpstreamResponse, match="expired"):
        await consume(later, xml, flow_state)


async def test_validity_windows_ignore_the_monotonic_clock(idp: FakeSamlIdP) -> None:
    sp = connector(connection(idp), clock=FakeClock(start=1000.0))  # not a wall time
    xml, flow_state = await login_and_respond(idp, sp)
    assert (await consume(sp, xml, flow_state)).subject == "u-1"


async def test_no_replay_cache_fails_closed(idp: FakeSamlIdP) -> None:
    sp = SamlConnector("acme", connection(idp), ConnectorContext(HUB))
    xml, flow_state = await login_and_respond(idp, sp)
    with pytest.raises(UpstreamError):
        await consume(sp, xml, flow_state)


def solicitation(idp: FakeSamlIdP, sp: SamlConnector, request_id: str) -> Solicitation:
    """What the hostile corpus (tests/saml/corpus.py) builds its variants from."""
    return Solicitation(
        idp=idp,
        acs_url=sp.endpoints.acs_url,
        sp_entity_id=sp.endpoints.entity_id,
        in_response_to=request_id,
        user="u-1",
        victim_email="user@partner.example",
        other_key=SamlKeyPair.generate(common_name="attacker"),
    )


async def hostile(idp: FakeSamlIdP, sp: SamlConnector, variant: str) -> tuple[bytes, Any]:
    """A login started at ``sp`` and the corpus variant answering it."""
    redirect = await login(sp)
    s = solicitation(idp, sp, redirect.flow_state["request_id"])
    return BY_NAME[variant].build(s), redirect.flow_state


async def test_unsigned_and_foreign_signatures_are_refused(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    for variant in ("signature_removed", "another_key"):
        xml, flow_state = await hostile(idp, sp, variant)
        with pytest.raises(InvalidUpstreamResponse):
            await consume(sp, xml, flow_state)


async def test_a_tampered_signed_assertion_is_refused(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    xml, flow_state = await hostile(idp, sp, "tampered_after_signing")  # NameID -> "ceo"
    with pytest.raises(InvalidUpstreamResponse):
        await consume(sp, xml, flow_state)


async def test_a_second_assertion_is_refused(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    xml, flow_state = await hostile(idp, sp, "two_signed_assertions")
    with pytest.raises(InvalidUpstreamResponse, match=r"assertions|twice"):
        await consume(sp, xml, flow_state)


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
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
        b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>',
        b"<!DOCTYPE r>",
        b"<?evil stuff?>",
    ],
    ids=["xxe", "entity-expansion", "doctype", "processing-instruction"],
)
async def test_dtds_entities_and_pis_are_refused_before_pysaml2(
    idp: FakeSamlIdP, sp: SamlConnector, prefix: bytes
) -> None:
    xml, flow_state = await login_and_respond(idp, sp)
    body = xml.split(b"?>", 1)[1] if xml.startswith(b"<?xml") else xml
    with pytest.raises(InvalidUpstreamResponse, match="before parsing"):
        await consume(sp, prefix + body, flow_state)


async def test_a_comment_splitting_the_name_id_is_refused(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    split, flow_state = await hostile(idp, sp, "comment_in_name_id")
    # user@partner.example<!---->.evil.example
    with pytest.raises(InvalidUpstreamResponse, match="comment"):
        await consume(sp, split, flow_state)


async def test_a_wrapped_assertion_is_refused(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    # The signed assertion stays in place; an unsigned evil copy rides in samlp:Extensions.
    wrapped, flow_state = await hostile(idp, sp, "evil_assertion_in_extensions")
    with pytest.raises(InvalidUpstreamResponse, match=r"wrapping|assertion"):
        await consume(sp, wrapped, flow_state)


async def test_a_response_by_get_or_without_saml_response_is_refused(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    xml, flow_state = await login_and_respond(idp, sp)
    with pytest.raises(InvalidUpstreamResponse):
        await consume(sp, xml, flow_state, method="GET")
    with pytest.raises(InvalidUpstreamResponse):
        await sp.handle_callback(CallbackRequest(ACS, {}, "POST"), flow_state)
    with pytest.raises(InvalidState):
        await consume(sp, xml, {})


# --- single logout ---------------------------------------------------------------------


async def _signed_in(idp: FakeSamlIdP, sp: SamlConnector) -> Any:
    xml, flow_state = await login_and_respond(idp, sp)
    return await consume(sp, xml, flow_state)


async def test_sp_initiated_logout_is_a_signed_request_with_name_id_and_session(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    identity = await _signed_in(idp, sp)
    redirect = await sp.logout_url(identity, f"{HUB}/logged-out", "st-1")
    assert redirect is not None and redirect.url.startswith(idp.slo_redirect_url + "?")
    request = idp.read_logout_request(redirect.url, sp_cert=sp.keys.cert_pem)  # verifies
    assert request.name_id == "u-1"
    assert request.session_index == identity.raw_claims["session_index"]
    assert request.relay_state == "st-1" and request.signed

    # The IdP's answer (signed over the query string) is accepted.
    answer = idp.logout_response(destination=SLO, in_response_to=request.id, sign=False)
    params = query_of(idp.redirect_url(SLO, answer, kind="SAMLResponse", relay_state="st-1"))
    outcome = await sp.handle_logout(CallbackRequest(SLO, params, "GET"))
    assert outcome.end_subject is None and outcome.redirect is None

    params["Signature"] = FakeSamlIdP.post_params(b"forged" * 40)["SAMLResponse"]
    with pytest.raises(InvalidUpstreamResponse):
        await sp.handle_logout(CallbackRequest(SLO, params, "GET"))


async def test_no_logout_url_without_an_idp_slo_endpoint(idp: FakeSamlIdP) -> None:
    sp = connector(connection(idp, slo=False))
    identity = await _signed_in(idp, sp)
    assert await sp.logout_url(identity, "/", "st") is None


async def test_idp_initiated_logout_ends_the_subject_and_answers_signed(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    identity = await _signed_in(idp, sp)
    request = idp.logout_request(
        destination=SLO,
        name_id="u-1",
        sp_entity_id=sp.endpoints.entity_id,
        session_index=identity.raw_claims["session_index"],
        sign=False,
    )
    params = query_of(idp.redirect_url(SLO, request, relay_state="rs"))

    outcome = await sp.handle_logout(CallbackRequest(SLO, params, "GET"))

    assert outcome.end_subject == "u-1"
    assert outcome.session_index == identity.raw_claims["session_index"]
    assert outcome.redirect is not None
    assert outcome.redirect.url.startswith(idp.slo_redirect_url + "?")
    answer = idp.read_logout_response(outcome.redirect.url, sp_cert=sp.keys.cert_pem)
    assert answer.signed and answer.relay_state == "rs"

    later = connector(connection(idp), wall_clock=lambda: time.time() + 3600)
    with pytest.raises(InvalidUpstreamResponse, match="expired"):  # NotOnOrAfter: 5 min
        await later.handle_logout(CallbackRequest(SLO, params, "GET"))

    unsigned = {k: v for k, v in params.items() if k not in ("Signature", "SigAlg")}
    with pytest.raises(InvalidUpstreamResponse, match="not signed"):
        await sp.handle_logout(CallbackRequest(SLO, unsigned, "GET"))


# --- certificates ----------------------------------------------------------------------


def test_certificates_lists_every_idp_signing_cert_and_the_sp_cert(
    idp: FakeSamlIdP, tmp_path: Any
) -> None:
    idp.add_next_key(common_name="new idp")
    sp_keys = generate_key_pair("the sp", tmp_path)
    found = certificates(
        connection(idp, sp_key_file=sp_keys.key_file, sp_cert_file=sp_keys.cert_file)
    )
    assert [(c.whose, c.subject) for c in found] == [
        ("IdP", "CN=fake-saml-idp"),
        ("IdP", "CN=new idp"),
        ("SP", "CN=the sp"),
    ]
    assert all(c.connection_id == "conn-1" for c in found)


def test_the_fake_idp_publishes_its_signing_certificate(idp: FakeSamlIdP) -> None:
    assert idp.signing_key.cert_b64 in idp.metadata_xml()

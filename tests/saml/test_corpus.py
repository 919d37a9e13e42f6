"""The hostile corpus is what it says it is (checked with xmlsec1, not by eye)."""

from __future__ import annotations

import base64

import pytest

from tests.fakes.saml_idp import (
    DS,
    NS,
    FakeSamlIdP,
    SamlKeyPair,
    SamlUser,
    parse_xml,
    verify,
)
from tests.saml.corpus import BY_NAME, EVIL_NAME_ID, VARIANTS, Solicitation, signed_parts_intact

ACS = "https://hub.test/callback/acme-saml"
SP = "https://hub.test/saml/acme-saml/metadata"


@pytest.fixture(scope="module")
def idp() -> FakeSamlIdP:
    return FakeSamlIdP(users=[SamlUser("mallory", email="mallory@acme.example")])


@pytest.fixture(scope="module")
def other_key() -> SamlKeyPair:
    return SamlKeyPair.generate()


def solicitation(idp: FakeSamlIdP, other_key: SamlKeyPair) -> Solicitation:
    return Solicitation(
        idp=idp,
        acs_url=ACS,
        sp_entity_id=SP,
        in_response_to="_request-1",
        user="mallory",
        victim_email="ceo@acme.example",
        max_response_bytes=16 * 1024,
        other_key=other_key,
    )


def every_signature_verifies(xml: bytes, key: SamlKeyPair) -> bool:
    root = parse_xml(xml)
    signatures = list(root.iter(f"{{{DS}}}Signature"))
    owners = [sig.getparent() for sig in signatures]
    return bool(signatures) and all(owner is not None and verify(owner, key) for owner in owners)


def test_names_are_unique_and_described() -> None:
    assert len(BY_NAME) == len(VARIANTS)
    assert all(v.description and "\n" not in v.description for v in VARIANTS)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.xsw], ids=lambda v: v.name)
def test_wrapping_keeps_the_genuine_signature_and_adds_the_evil_identity(
    variant, idp: FakeSamlIdP, other_key: SamlKeyPair
) -> None:
    s = solicitation(idp, other_key)
    xml = variant.build(s)
    original = s.produced[0]
    assert signed_parts_intact(xml, original, idp.signing_key)
    assert not signed_parts_intact(xml, original, other_key)
    names = [el.text for el in parse_xml(xml).iter("{*}NameID")]
    assert EVIL_NAME_ID in names  # the evil assertion is there, unsigned
    assert b"ceo@acme.example" in xml


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.signed_validly], ids=lambda v: v.name)
def test_valid_signatures_leave_refusal_to_the_hub(
    variant, idp: FakeSamlIdP, other_key: SamlKeyPair
) -> None:
    xml = variant.build(solicitation(idp, other_key))
    assert every_signature_verifies(xml, idp.signing_key)


def test_another_key_verifies_only_with_that_key(idp: FakeSamlIdP, other_key: SamlKeyPair) -> None:
    xml = BY_NAME["another_key"].build(solicitation(idp, other_key))
    assert every_signature_verifies(xml, other_key)
    assert not every_signature_verifies(xml, idp.signing_key)


def test_tampered_and_stripped_do_not_verify(idp: FakeSamlIdP, other_key: SamlKeyPair) -> None:
    tampered = BY_NAME["tampered_after_signing"].build(solicitation(idp, other_key))
    assert not every_signature_verifies(tampered, idp.signing_key)
    stripped = BY_NAME["signature_removed"].build(solicitation(idp, other_key))
    assert b"Signature" not in stripped


def test_comment_splits_the_signed_name_id(idp: FakeSamlIdP, other_key: SamlKeyPair) -> None:
    xml = BY_NAME["comment_in_name_id"].build(solicitation(idp, other_key))
    name_id = parse_xml(xml).find("saml:Assertion/saml:Subject/saml:NameID", NS)
    assert name_id is not None
    assert name_id.text == "ceo@acme.example"  # what a first-text-node reader sees
    assert "".join(name_id.itertext()) == "ceo@acme.example.evil.example"
    assert every_signature_verifies(xml, idp.signing_key)  # comments are not signed


def test_xpath_transform_signature_does_not_cover_the_subject(
    idp: FakeSamlIdP, other_key: SamlKeyPair
) -> None:
    xml = BY_NAME["xpath_transform"].build(solicitation(idp, other_key))
    assert b"REC-xpath-19991116" in xml
    root = parse_xml(xml)
    assert root.findtext("saml:Assertion/saml:Subject/saml:NameID", namespaces=NS) == "ceo"


@pytest.mark.parametrize("name", ["xxe", "billion_laughs", "dtd"])
def test_doctype_variants(name: str, idp: FakeSamlIdP, other_key: SamlKeyPair) -> None:
    xml = BY_NAME[name].build(solicitation(idp, other_key))
    assert b"<!DOCTYPE" in xml
    reference = {"xxe": b"&xxe;", "billion_laughs": b"&lol9;", "dtd": b"<!ELEMENT"}[name]
    assert reference in xml


def test_oversized_is_over_the_cap(idp: FakeSamlIdP, other_key: SamlKeyPair) -> None:
    s = solicitation(idp, other_key)
    xml = BY_NAME["oversized"].build(s)
    assert len(xml) > s.max_response_bytes
    assert len(base64.b64encode(xml)) > s.max_response_bytes


@pytest.mark.parametrize(
    ("name", "xpath", "expected"),
    [
        (
            "wrong_audience",
            "saml:Assertion/saml:Conditions/saml:AudienceRestriction/saml:Audience",
            "https://other-sp.example",
        ),
        ("missing_audience", "saml:Assertion/saml:Conditions/saml:AudienceRestriction", None),
        (
            "wrong_recipient",
            "saml:Assertion/saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData/@Recipient",
            "https://wrong.example/callback/acme-saml",
        ),
        ("wrong_destination", "@Destination", "https://wrong.example/callback/acme-saml"),
        ("missing_destination", "@Destination", None),
        ("wrong_in_response_to", "@InResponseTo", "_not-the-request"),
        ("no_in_response_to", "@InResponseTo", None),
    ],
)
def test_value_variants_carry_the_wrong_value(
    name: str, xpath: str, expected: str | None, idp: FakeSamlIdP, other_key: SamlKeyPair
) -> None:
    root = parse_xml(BY_NAME[name].build(solicitation(idp, other_key)))
    found = root.xpath(xpath, namespaces=NS)
    if expected is None:
        assert found == []
    else:
        value = found[0] if isinstance(found[0], str) else found[0].text
        assert value == expected


def test_fake_idp_round_trip_and_rollover(idp: FakeSamlIdP) -> None:
    """The fake itself: redirect-binding messages signed and read back; rollover keys."""
    request = idp.logout_request(destination=ACS, name_id="mallory", sign=False)
    url = idp.redirect_url("https://hub.test/saml/acme-saml/slo", request, relay_state="r")
    info = idp.read_logout_request(url, sp_cert=idp.signing_key.cert_pem)
    assert (info.name_id, info.signed, info.binding, info.relay_state) == (
        "mallory",
        True,
        "redirect",
        "r",
    )
    fresh = FakeSamlIdP("https://idp.roll.test/saml")
    old = fresh.signing_key
    new = fresh.add_next_key()
    assert fresh.metadata_xml().count("X509Certificate>") == 4  # two certificates listed
    fresh.rotate()
    xml = fresh.response(acs_url=ACS, sp_entity_id=SP, in_response_to=None)
    assert every_signature_verifies(xml, new) and not every_signature_verifies(xml, old)
    fresh.drop_old_keys()
    assert old.cert_b64 not in fresh.metadata_xml()
    fresh.close()

"""Trusted IdP metadata: with ``metadata_signing_certs`` every load and every refresh of a
SAML connection's metadata must carry a signature on the document's root that verifies
with one of them; expired metadata (validUntil) is refused in any case. A refused refresh
keeps the last good metadata in use (and logins keep working with the IdP's old key).

The metadata is signed here by xmlsec1 with a separate "metadata signing" key, as a
federation operator (pyFF) or the IdP itself (SimpleSAMLphp, Shibboleth) signs it."""

from __future__ import annotations

import copy
import logging
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from lxml import etree
from pydantic import ValidationError

from connectors.registry import ConnectorContext
from connectors.saml import SamlConnector
from connectors.saml.guard import verify_metadata_signature
from connectors.saml.keys import der_from_base64
from connectors.saml.metadata import MetadataRefused, MetadataTrust, parse_idp_metadata
from federation.admin.onboarding import Report, inspect_saml
from federation.errors import InvalidUpstreamResponse, UpstreamError
from federation.settings import SamlConnectionSettings
from tests.connectors.test_saml import connector, consume, login, login_and_respond, new_idp
from tests.fakes.clock import FakeClock
from tests.fakes.saml_idp import (
    DS,
    ENVELOPED,
    EXC_C14N,
    MD,
    RSA_SHA256,
    SHA256,
    FakeSamlIdP,
    SamlKeyPair,
    SamlUser,
)

URL = "https://idp.acme.test/metadata.xml"


def sign_metadata(xml: str | bytes, key: SamlKeyPair, element_id: str = "_md1") -> bytes:
    """An enveloped RSA-SHA256 signature (exclusive c14n) first in the document's root."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    root.set("ID", element_id)
    signature = etree.Element(f"{{{DS}}}Signature", nsmap={"ds": DS})
    info = etree.SubElement(signature, f"{{{DS}}}SignedInfo")
    etree.SubElement(info, f"{{{DS}}}CanonicalizationMethod", Algorithm=EXC_C14N)
    etree.SubElement(info, f"{{{DS}}}SignatureMethod", Algorithm=RSA_SHA256)
    reference = etree.SubElement(info, f"{{{DS}}}Reference", URI=f"#{element_id}")
    transforms = etree.SubElement(reference, f"{{{DS}}}Transforms")
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=ENVELOPED)
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=EXC_C14N)
    etree.SubElement(reference, f"{{{DS}}}DigestMethod", Algorithm=SHA256)
    etree.SubElement(reference, f"{{{DS}}}DigestValue")
    etree.SubElement(signature, f"{{{DS}}}SignatureValue")
    root.insert(0, signature)
    done = subprocess.run(
        [
            "xmlsec1", "--sign", "--privkey-pem", f"{key.key_path},{key.cert_path}",
            "--id-attr:ID", f"{MD}:{etree.QName(root).localname}",
            "--node-id", element_id, "-",
        ],
        input=etree.tostring(root),
        capture_output=True,
        check=True,
        timeout=30,
    )  # fmt: skip
    return done.stdout


def aggregate(*documents: bytes, element_id: str | None = None) -> etree._Element:
    root = etree.Element(f"{{{MD}}}EntitiesDescriptor", nsmap={"md": MD, "ds": DS})
    if element_id is not None:
        root.set("ID", element_id)
    for document in documents:
        root.append(etree.fromstring(document))
    return root


@pytest.fixture
def idp() -> Iterator[FakeSamlIdP]:
    idp = new_idp()
    yield idp
    idp.close()


@pytest.fixture
def evil(idp: FakeSamlIdP) -> Iterator[FakeSamlIdP]:
    """Someone who would like the hub to trust their key for the partner's entityID."""
    evil = FakeSamlIdP(idp.entity_id, users=[SamlUser("u-1", email="u1@acme.test")])
    evil.sign_response = False
    yield evil
    evil.close()


@pytest.fixture(scope="module")
def md_key() -> SamlKeyPair:
    """The key the metadata is signed with (not the IdP's message-signing key)."""
    return SamlKeyPair.generate(common_name="metadata-signer")


@pytest.fixture(scope="module")
def other_key() -> SamlKeyPair:
    return SamlKeyPair.generate(common_name="someone-else")


# --- the metadata a refresh might bring, bad in every way but one ----------------------

BadMetadata = Callable[[FakeSamlIdP, FakeSamlIdP, SamlKeyPair, SamlKeyPair], bytes]


def unsigned(idp: FakeSamlIdP, evil: FakeSamlIdP, md: SamlKeyPair, other: SamlKeyPair) -> bytes:
    return evil.metadata_xml().encode()


def another_key(idp: FakeSamlIdP, evil: FakeSamlIdP, md: SamlKeyPair, other: SamlKeyPair) -> bytes:
    return sign_metadata(evil.metadata_xml(), other)


def tampered(idp: FakeSamlIdP, evil: FakeSamlIdP, md: SamlKeyPair, other: SamlKeyPair) -> bytes:
    signed = sign_metadata(idp.metadata_xml(), md)
    swapped = signed.replace(idp.signing_key.cert_b64.encode(), evil.signing_key.cert_b64.encode())
    assert swapped != signed
    return swapped


def wrapped(idp: FakeSamlIdP, evil: FakeSamlIdP, md: SamlKeyPair, other: SamlKeyPair) -> bytes:
    """The genuine signed EntityDescriptor moved under an unsigned EntitiesDescriptor that
    puts the attacker's entity (same entityID) first."""
    genuine = sign_metadata(idp.metadata_xml(), md)
    return etree.tostring(aggregate(evil.metadata_xml().encode(), genuine))


def wrapped_reference(
    idp: FakeSamlIdP, evil: FakeSamlIdP, md: SamlKeyPair, other: SamlKeyPair
) -> bytes:
    """The genuine signature lifted onto a new root; its Reference still names the genuine
    EntityDescriptor (which verifies), not the root."""
    genuine = sign_metadata(idp.metadata_xml(), md)
    root = aggregate(evil.metadata_xml().encode(), genuine, element_id="_aggregate")
    signature = root[1].find(f"{{{DS}}}Signature")
    assert signature is not None
    root.insert(0, signature)
    document: bytes = etree.tostring(root)
    return document


def expired(idp: FakeSamlIdP, evil: FakeSamlIdP, md: SamlKeyPair, other: SamlKeyPair) -> bytes:
    return sign_metadata(idp.metadata_xml(valid_until=-60), md)


BAD: dict[str, tuple[BadMetadata, str]] = {
    "unsigned": (unsigned, "the metadata is not signed"),
    "another_key": (another_key, "does not verify with any trusted certificate"),
    "tampered": (tampered, "does not verify with any trusted certificate"),
    "wrapped": (wrapped, "only an inner element is signed"),
    "wrapped_reference": (wrapped_reference, "does not point at its enclosing element"),
    "expired": (expired, "expired at"),
}


def trusting(md: SamlKeyPair, **values: Any) -> SamlConnectionSettings:
    return SamlConnectionSettings(
        type="saml", id="conn-1", metadata_signing_certs=(md.cert_pem,), **values
    )


class MetadataServer:
    """The IdP's metadata URL: answers the last document it was given."""

    def __init__(self, document: bytes) -> None:
        self.documents = [document]
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(200, content=self.documents[-1])


async def signs_in(idp: FakeSamlIdP, sp: SamlConnector) -> bool:
    xml, flow_state = await login_and_respond(idp, sp)
    identity = await consume(sp, xml, flow_state)
    return bool(identity.subject == "u-1")


# --- first load -------------------------------------------------------------------------


async def test_signed_metadata_from_a_trusted_key_is_used(
    idp: FakeSamlIdP, md_key: SamlKeyPair
) -> None:
    signed = sign_metadata(idp.metadata_xml(), md_key)
    sp = connector(trusting(md_key, idp_metadata_xml=signed.decode()))
    assert (await sp.idp()).signature_verified
    assert await signs_in(idp, sp)
    assert sp.metadata_refusal is None
    await sp.aclose()


async def test_the_signature_is_checked_for_a_file_and_a_url(
    idp: FakeSamlIdP, md_key: SamlKeyPair, tmp_path: Any
) -> None:
    signed = sign_metadata(idp.metadata_xml(), md_key)
    path = tmp_path / "idp.xml"
    path.write_bytes(signed)
    from_file = connector(trusting(md_key, idp_metadata_file=path))
    assert (await from_file.idp()).signature_verified
    server = MetadataServer(signed)
    from_url = connector(
        trusting(md_key, idp_metadata_url=URL), transport=httpx.MockTransport(server)
    )
    assert (await from_url.idp()).signature_verified
    path.write_bytes(idp.metadata_xml().encode())
    server.documents.append(idp.metadata_xml().encode())
    for source in ({"idp_metadata_file": path}, {"idp_metadata_url": URL}):
        sp = connector(trusting(md_key, **source), transport=httpx.MockTransport(server))
        with pytest.raises(UpstreamError, match="the metadata is not signed"):
            await sp.idp()
        await sp.aclose()
    await from_url.aclose()


@pytest.mark.parametrize("case", list(BAD))
async def test_a_first_load_of_bad_metadata_fails_like_an_unreachable_idp(
    idp: FakeSamlIdP,
    evil: FakeSamlIdP,
    md_key: SamlKeyPair,
    other_key: SamlKeyPair,
    case: str,
) -> None:
    build, reason = BAD[case]
    sp = connector(trusting(md_key, idp_metadata_xml=build(idp, evil, md_key, other_key).decode()))
    with pytest.raises(UpstreamError) as refused:
        await login(sp)
    assert "IdP metadata refused" in refused.value.detail
    assert reason in refused.value.detail
    assert sp.metadata_refusal == refused.value.detail
    await sp.aclose()


# --- refresh ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD))
async def test_a_refresh_with_bad_metadata_keeps_the_last_good_one(
    idp: FakeSamlIdP,
    evil: FakeSamlIdP,
    md_key: SamlKeyPair,
    other_key: SamlKeyPair,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    build, reason = BAD[case]
    server = MetadataServer(sign_metadata(idp.metadata_xml(), md_key))
    clock = FakeClock()
    settings = trusting(md_key, idp_metadata_url=URL, metadata_refresh_seconds=600)
    sp = connector(settings, transport=httpx.MockTransport(server), clock=clock)
    assert await signs_in(idp, sp)

    server.documents.append(build(idp, evil, md_key, other_key))
    clock.advance(601)
    caplog.set_level(logging.WARNING, logger="connectors.saml.connector")
    assert await signs_in(idp, sp)  # the IdP's old key, from the metadata kept
    assert server.calls == 2
    assert sp.metadata_refusal is not None and reason in sp.metadata_refusal
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("connectors")
    ]
    assert len(errors) == 1 and reason in errors[0].getMessage()
    assert "conn-1" in errors[0].getMessage() and "last good metadata" in errors[0].getMessage()
    kept = [der_from_base64(cert) for cert in (await sp.idp()).signing_certs]
    assert kept == [der_from_base64(idp.signing_key.cert_b64)]
    if case != "expired":  # the attacker's key speaks for nobody
        xml, flow_state = await login_and_respond(evil, sp)
        with pytest.raises(InvalidUpstreamResponse):
            await consume(sp, xml, flow_state)

    idp.add_next_key()  # the partner publishes properly signed metadata again
    server.documents.append(sign_metadata(idp.metadata_xml(), md_key))
    clock.advance(601)
    assert len((await sp.idp()).signing_certs) == 2
    assert sp.metadata_refusal is None and server.calls == 3
    await sp.aclose()


async def test_a_signing_key_rollover_of_the_metadata_itself(
    idp: FakeSamlIdP, md_key: SamlKeyPair, other_key: SamlKeyPair
) -> None:
    """Both metadata signing certificates configured: either signature is accepted."""
    server = MetadataServer(sign_metadata(idp.metadata_xml(), md_key))
    clock = FakeClock()
    settings = SamlConnectionSettings(
        type="saml",
        id="conn-1",
        idp_metadata_url=URL,
        metadata_signing_certs=(md_key.cert_pem, other_key.cert_pem),
    )
    sp = connector(settings, transport=httpx.MockTransport(server), clock=clock)
    assert (await sp.idp()).signature_verified
    server.documents.append(sign_metadata(idp.metadata_xml(), other_key))
    clock.advance(settings.metadata_refresh_seconds)
    assert (await sp.idp()).signature_verified and server.calls == 2
    assert sp.metadata_refusal is None
    await sp.aclose()


# --- validUntil -------------------------------------------------------------------------


async def test_expired_metadata_is_refused_even_unsigned_and_says_why(idp: FakeSamlIdP) -> None:
    settings = SamlConnectionSettings(
        type="saml", id="conn-1", idp_metadata_xml=idp.metadata_xml(valid_until=-60)
    )
    sp = connector(settings)
    with pytest.raises(UpstreamError, match=r"metadata expired at .* \(validUntil\)"):
        await sp.idp()
    await sp.aclose()


async def test_metadata_in_use_stops_at_its_valid_until(
    idp: FakeSamlIdP, md_key: SamlKeyPair
) -> None:
    """The hub's wall clock decides (pysaml2's own check reads the system clock): metadata
    valid for another hour is refused once the hub's clock is two hours ahead."""
    signed = sign_metadata(idp.metadata_xml(valid_until=3600), md_key)
    wall = FakeClock(time.time())
    sp = connector(trusting(md_key, idp_metadata_xml=signed.decode()), wall_clock=wall)
    assert await signs_in(idp, sp)
    assert (await sp.idp()).valid_until == pytest.approx(time.time() + 3600, abs=5)
    wall.advance(7200)
    with pytest.raises(UpstreamError, match="expired at"):
        await login(sp)
    await sp.aclose()


async def test_an_expired_copy_is_not_kept_when_the_refresh_fails(
    idp: FakeSamlIdP, md_key: SamlKeyPair
) -> None:
    server = MetadataServer(sign_metadata(idp.metadata_xml(valid_until=3600), md_key))
    wall = FakeClock(time.time())
    sp = connector(
        trusting(md_key, idp_metadata_url=URL),
        transport=httpx.MockTransport(server),
        wall_clock=wall,
    )
    assert await signs_in(idp, sp)
    server.documents.append(idp.metadata_xml().encode())  # unsigned: refused
    wall.advance(7200)  # the copy in use has expired: refetched at once, not kept
    with pytest.raises(UpstreamError, match="the metadata is not signed"):
        await login(sp)
    assert server.calls == 2
    await sp.aclose()


def test_an_expired_entity_inside_an_aggregate_is_named() -> None:
    idp = FakeSamlIdP()
    document = etree.tostring(aggregate(idp.metadata_xml(valid_until=-60).encode()))
    with pytest.raises(
        MetadataRefused, match=re.escape("entity 'https://idp.acme.test/saml' expired")
    ):
        parse_idp_metadata(document)
    idp.close()


# --- without certificates, and the soft mode ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://idp.acme.test/metadata.xml", True),
        ("https://idp.acme.test/metadata.xml", False),
        ("http://127.0.0.1:9000/metadata.xml", False),
        ("http://localhost:9000/metadata.xml", False),
    ],
)
async def test_unsigned_metadata_over_plain_http_is_a_logged_warning(
    idp: FakeSamlIdP, caplog: pytest.LogCaptureFixture, url: str, warned: bool
) -> None:
    server = MetadataServer(idp.metadata_xml().encode())
    settings = SamlConnectionSettings(type="saml", id="conn-1", idp_metadata_url=url)
    sp = connector(settings, transport=httpx.MockTransport(server))
    caplog.set_level(logging.WARNING, logger="connectors.saml.connector")
    await sp.idp()
    found = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert len(found) == int(warned)
    assert not warned or ("conn-1" in found[0] and "metadata_signing_certs" in found[0])
    await sp.aclose()


async def test_signing_not_required_accepts_unsigned_but_never_a_bad_signature(
    idp: FakeSamlIdP,
    evil: FakeSamlIdP,
    md_key: SamlKeyPair,
    other_key: SamlKeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="connectors.saml.connector")
    soft = {"require_signed_metadata": False}
    sp = connector(trusting(md_key, idp_metadata_xml=idp.metadata_xml(), **soft))
    assert not (await sp.idp()).signature_verified
    assert "accepted unchecked" in caplog.text
    await sp.aclose()
    for case in ("another_key", "tampered", "wrapped_reference"):
        document = BAD[case][0](idp, evil, md_key, other_key).decode()
        sp = connector(trusting(md_key, idp_metadata_xml=document, **soft))
        with pytest.raises(UpstreamError, match="signature check failed"):
            await sp.idp()
        await sp.aclose()


# --- settings ---------------------------------------------------------------------------


def test_settings_want_pem_certificates(md_key: SamlKeyPair) -> None:
    base: dict[str, Any] = {"type": "saml", "id": "c", "idp_metadata_url": URL}
    assert not SamlConnectionSettings(**base).metadata_signature_required
    padded = {"metadata_signing_certs": [f"  {md_key.cert_pem}\n\n"]}  # as YAML gives it
    trusted = SamlConnectionSettings.model_validate(base | padded)
    assert trusted.metadata_signature_required
    assert trusted.metadata_signing_certs == (md_key.cert_pem,)
    soft = SamlConnectionSettings(
        **base, metadata_signing_certs=(md_key.cert_pem,), require_signed_metadata=False
    )
    assert not soft.metadata_signature_required
    cases = {
        "/etc/isthmus/federation-signer.pem": "exactly one PEM certificate",
        md_key.cert_pem * 2: "exactly one PEM certificate",
        "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----": "entry 0 is not",
    }
    for value, message in cases.items():
        with pytest.raises(ValidationError, match=message) as refused:
            SamlConnectionSettings(**base, metadata_signing_certs=(value,))
        assert [e["loc"] for e in refused.value.errors()] == [("metadata_signing_certs",)]
    with pytest.raises(ValidationError, match="needs metadata_signing_certs"):
        SamlConnectionSettings(**base, require_signed_metadata=True)


# --- the public check, as onboarding and the connector share it ---------------------------


def test_verify_metadata_signature_outcomes(
    idp: FakeSamlIdP, evil: FakeSamlIdP, md_key: SamlKeyPair, other_key: SamlKeyPair
) -> None:
    signed = sign_metadata(idp.metadata_xml(), md_key)
    trusted = [other_key.cert_pem, md_key.cert_pem]
    outcomes = {
        "good": verify_metadata_signature(signed, trusted),
        "no certificate": verify_metadata_signature(signed, []),
        "unsigned": verify_metadata_signature(idp.metadata_xml().encode(), trusted),
        "another key": verify_metadata_signature(signed, [other_key.cert_pem]),
        "not xml": verify_metadata_signature(b"<html><body>Sign in", trusted),
    }
    assert {name: (o.signed, o.verified, o.reason) for name, o in outcomes.items()} == {
        "good": (True, True, "verified"),
        "no certificate": (True, False, "untrusted"),
        "unsigned": (False, False, "unsigned"),
        "another key": (True, False, "mismatch"),
        "not xml": (False, False, "malformed"),
    }
    assert outcomes["good"].problem is None
    assert all(o.problem for name, o in outcomes.items() if name != "good")


def test_a_signature_hidden_after_a_verifying_inner_one_is_refused(
    idp: FakeSamlIdP, md_key: SamlKeyPair
) -> None:
    """xmlsec1 checks the first ds:Signature it meets: a genuine inner signature placed
    before a root signature must not stand in for it."""
    genuine = sign_metadata(idp.metadata_xml(), md_key)
    root = aggregate(genuine, element_id="_aggregate")
    lifted = copy.deepcopy(root[0].find(f"{{{DS}}}Signature"))
    assert lifted is not None
    reference = lifted.find(f".//{{{DS}}}Reference")
    assert reference is not None
    reference.set("URI", "#_aggregate")
    root.append(lifted)
    found = verify_metadata_signature(etree.tostring(root), [md_key.cert_pem])
    assert (found.signed, found.verified, found.reason) == (True, False, "unusable")
    assert found.problem is not None and "precedes" in found.problem


def test_parse_idp_metadata_without_trust_reads_signed_metadata(
    idp: FakeSamlIdP, md_key: SamlKeyPair
) -> None:
    signed = sign_metadata(idp.metadata_xml(), md_key)
    assert not parse_idp_metadata(signed).signature_verified
    trust = MetadataTrust((md_key.cert_pem,), required=True)
    assert parse_idp_metadata(signed, trust=trust).signature_verified
    with pytest.raises(MetadataRefused, match="not signed"):
        parse_idp_metadata(idp.metadata_xml(), trust=trust)


def statuses(report: Report) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


async def test_onboarding_suggests_the_certificate_that_verified(
    idp: FakeSamlIdP, md_key: SamlKeyPair
) -> None:
    signed = sign_metadata(idp.metadata_xml(), md_key).decode()
    report = await inspect_saml(
        ConnectorContext(),
        connection_id="conn-1",
        metadata_xml=signed,
        signing_cert_pem=md_key.cert_pem,
    )
    assert report.ok and statuses(report)["metadata_signature"] == "ok", report.to_dict()
    assert report.connection is not None
    assert report.connection["metadata_signing_certs"] == [md_key.cert_pem]
    sp = connector(SamlConnectionSettings(**report.connection))
    assert (await sp.idp()).signature_verified
    await sp.aclose()


async def test_onboarding_judges_unsigned_metadata_as_the_connection_would(
    idp: FakeSamlIdP, md_key: SamlKeyPair
) -> None:
    unsigned_xml = idp.metadata_xml()
    required = await inspect_saml(
        ConnectorContext(),
        connection_id="conn-1",
        metadata_xml=unsigned_xml,
        metadata_signing_certs=(md_key.cert_pem,),
    )
    assert not required.ok and statuses(required)["metadata_signature"] == "error"
    assert "the connection would refuse it" in next(
        c.detail for c in required.checks if c.name == "metadata_signature"
    )
    soft = await inspect_saml(
        ConnectorContext(),
        connection_id="conn-1",
        metadata_xml=unsigned_xml,
        metadata_signing_certs=(md_key.cert_pem,),
        require_signed_metadata=False,
    )
    assert soft.ok and statuses(soft)["metadata_signature"] == "ok"
    assert report_has_no_certs(soft)


def report_has_no_certs(report: Report) -> bool:
    return report.connection is not None and "metadata_signing_certs" not in report.connection

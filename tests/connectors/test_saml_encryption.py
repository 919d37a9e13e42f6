"""Encrypted assertions (connectors/saml/xmlenc.py): the layouts real IdPs send, and what
is refused, with the reason in the error detail (the log), never "0 assertions".

Keycloak 26.5.6's layout, as captured from a real response to the hub (the integration test
tests/integration/test_keycloak_partner_to_oidc_app.py logs in through it):

    <saml:EncryptedAssertion>
      <xenc:EncryptedData xmlns:xenc="…/xmlenc#" Type="…/xmlenc#Element">
        <xenc:EncryptionMethod Algorithm="…/xmlenc11#aes256-gcm"/>
        <ds:KeyInfo xmlns:ds="…/xmldsig#">
          <xenc:EncryptedKey>                       (inside the KeyInfo, no Id, no Recipient)
            <xenc:EncryptionMethod Algorithm="…/xmlenc11#rsa-oaep">
              <ds:DigestMethod Algorithm="…/xmlenc#sha256"/>
              <xenc11:MGF xmlns:xenc11="…/xmlenc11#" Algorithm="…/xmlenc11#mgf1sha256"/>
            </xenc:EncryptionMethod>
            <xenc:CipherData><xenc:CipherValue>RSA-OAEP(AES key)</xenc:CipherValue></…>
          </xenc:EncryptedKey>
        </ds:KeyInfo>
        <xenc:CipherData><xenc:CipherValue>IV(12) ‖ cipher text ‖ tag(16)</…></…>
      </xenc:EncryptedData>
    </saml:EncryptedAssertion>

in a Response signed after encryption, around an assertion signed before it (``dsig:``
prefix), which declares its own namespaces (``xmlns`` and ``xmlns:saml``), no XML
declaration. With "aes256-cbc" and "rsa-oaep-mgf1p" chosen: the same, with
``xmlenc#aes256-cbc`` (IV(16) ‖ cipher text, ISO 10126 padding: random bytes, then the
length), ``xmlenc#rsa-oaep-mgf1p``, the SHA-256 DigestMethod and no MGF. Debian's xmlsec1
1.2.37 decrypts neither ("xmlenc11#rsa-oaep" unknown; "digest algorithm sha256 is not
supported for rsa/oaep"). :func:`encrypt_assertion` below builds these with the test's own
keys; the fake IdP (tests/fakes/saml_idp.py) signs.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, replace
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from lxml import etree

from connectors.saml import xmlenc
from connectors.saml.connector import SamlConnector
from federation.errors import InvalidUpstreamResponse
from tests.connectors.test_saml import connection, connector, consume, login_and_respond
from tests.fakes.saml_idp import FakeSamlIdP, SamlKeyPair, SamlUser, verify

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
MORE = "http://www.w3.org/2001/04/xmldsig-more#"
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    DS + "sha1": hashes.SHA1,
    MORE + "sha224": hashes.SHA224,
    XENC + "sha256": hashes.SHA256,
    XENC + "sha384": hashes.SHA384,
    MORE + "sha384": hashes.SHA384,
    XENC + "sha512": hashes.SHA512,
    XENC11 + "mgf1sha1": hashes.SHA1,
    XENC11 + "mgf1sha224": hashes.SHA224,
    XENC11 + "mgf1sha256": hashes.SHA256,
    XENC11 + "mgf1sha384": hashes.SHA384,
    XENC11 + "mgf1sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class Layout:
    """How an IdP encrypts: algorithms, OAEP parameters and where the EncryptedKey goes."""

    data: str = XENC11 + "aes256-gcm"
    transport: str = XENC11 + "rsa-oaep"
    digest: str | None = XENC + "sha256"  # None: no DigestMethod (SHA-1 by default)
    mgf: str | None = XENC11 + "mgf1sha256"  # None: no MGF (MGF1-SHA-1 by default)
    label: bytes | None = None  # OAEPparams
    # key_info: inside EncryptedData/ds:KeyInfo (Keycloak, SimpleSAMLphp, Shibboleth);
    # by_reference: next to the EncryptedData, found by a ds:RetrievalMethod (SAML Core
    # §6.2's example); peer: next to it, with no KeyInfo at all
    placement: Literal["key_info", "by_reference", "peer"] = "key_info"
    data_type: str | None = XENC + "Element"


KEYCLOAK = Layout()  # Keycloak 26's default, as imported from the hub's SP metadata
KEYCLOAK_CBC = Layout(data=XENC + "aes256-cbc", transport=XENC + "rsa-oaep-mgf1p", mgf=None)
KEY_SIZES = {"128": 16, "192": 24, "256": 32}


def wrap_key(public_key: rsa.RSAPublicKey, session_key: bytes, layout: Layout) -> bytes:
    # a digest or MGF the test does not know: wrapped with SHA-1 (the hub must refuse by
    # name, before it unwraps anything)
    digest = HASHES.get(layout.digest or DS + "sha1", hashes.SHA1)()
    mgf = HASHES.get(layout.mgf or XENC11 + "mgf1sha1", hashes.SHA1)()
    if layout.transport == XENC + "rsa-1_5":
        return public_key.encrypt(session_key, padding.PKCS1v15())
    return public_key.encrypt(session_key, padding.OAEP(padding.MGF1(mgf), digest, layout.label))


def key_size(algorithm: str) -> int:
    name = algorithm.rsplit("#", 1)[-1]
    return next((size for bits, size in KEY_SIZES.items() if bits in name), 24)


def encrypt_data(session_key: bytes, plaintext: bytes, algorithm: str) -> bytes:
    if algorithm.endswith("-gcm"):
        iv = os.urandom(12)
        return iv + AESGCM(session_key).encrypt(iv, plaintext, None)
    if not algorithm.endswith(("aes128-cbc", "aes192-cbc", "aes256-cbc")):
        return os.urandom(64)  # one the test does not perform: the hub must refuse it by name
    # ISO 10126 (what Apache Santuario, in Keycloak, writes): random bytes, then the length
    pad = 16 - len(plaintext) % 16
    padded = plaintext + os.urandom(pad - 1) + bytes([pad])
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(session_key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(padded) + encryptor.finalize()


def _el(parent: Any, namespace: str, name: str, **attributes: str) -> Any:
    return etree.SubElement(parent, f"{{{namespace}}}{name}", **attributes)


def encrypted_key(public_key: rsa.RSAPublicKey, session_key: bytes, layout: Layout) -> Any:
    key = etree.Element(f"{{{XENC}}}EncryptedKey", nsmap={"xenc": XENC})
    method = _el(key, XENC, "EncryptionMethod", Algorithm=layout.transport)
    if layout.label is not None:  # first: the schema has OAEPparams before any other child
        _el(method, XENC, "OAEPparams").text = base64.b64encode(layout.label).decode()
    if layout.digest is not None:
        etree.SubElement(method, f"{{{DS}}}DigestMethod", nsmap={"ds": DS}).set(
            "Algorithm", layout.digest
        )
    if layout.mgf is not None:
        mgf = etree.SubElement(method, f"{{{XENC11}}}MGF", nsmap={"xenc11": XENC11})
        mgf.set("Algorithm", layout.mgf)
    wrapped = wrap_key(public_key, session_key, layout)
    _el(_el(key, XENC, "CipherData"), XENC, "CipherValue").text = base64.b64encode(wrapped).decode()
    return key


def encrypted_assertion(
    plaintext: bytes,
    cert_pem: bytes,
    layout: Layout = KEYCLOAK,
    *,
    other_recipients: tuple[rsa.RSAPublicKey, ...] = (),
) -> Any:
    """A saml:EncryptedAssertion of ``plaintext`` for the holder of ``cert_pem`` (and, as
    peer EncryptedKeys before ours, for ``other_recipients``)."""
    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    session_key = os.urandom(key_size(layout.data))
    container = etree.Element(f"{{{SAML}}}EncryptedAssertion", nsmap={"saml": SAML})
    data = etree.SubElement(container, f"{{{XENC}}}EncryptedData", nsmap={"xenc": XENC})
    if layout.data_type is not None:
        data.set("Type", layout.data_type)
    _el(data, XENC, "EncryptionMethod", Algorithm=layout.data)
    ours = encrypted_key(public_key, session_key, layout)
    others = [encrypted_key(other, session_key, layout) for other in other_recipients]
    if layout.placement == "key_info":
        key_info = etree.SubElement(data, f"{{{DS}}}KeyInfo", nsmap={"ds": DS})
        key_info.append(ours)
    elif layout.placement == "by_reference":
        data.set("Id", "ED-1")
        ours.set("Id", "EK-1")
        key_info = etree.SubElement(data, f"{{{DS}}}KeyInfo", nsmap={"ds": DS})
        _el(key_info, DS, "RetrievalMethod", Type=XENC + "EncryptedKey", URI="#EK-1")
        _el(_el(ours, XENC, "ReferenceList"), XENC, "DataReference", URI="#ED-1")
    ciphertext = encrypt_data(session_key, plaintext, layout.data)
    _el(_el(data, XENC, "CipherData"), XENC, "CipherValue").text = base64.b64encode(
        ciphertext
    ).decode()
    if layout.placement != "key_info":
        container.extend([*others, ours])
    return container


def encrypt_assertion(
    xml: bytes,
    cert_pem: bytes,
    layout: Layout = KEYCLOAK,
    *,
    plaintext: bytes | None = None,
    other_recipients: tuple[rsa.RSAPublicKey, ...] = (),
) -> bytes:
    """``xml`` (a Response) with its Assertion encrypted for ``cert_pem`` in ``layout``;
    ``plaintext`` replaces the assertion's own serialization (hostile tests)."""
    root = etree.fromstring(xml)
    assertion = root.find(f"{{{SAML}}}Assertion")
    assert assertion is not None
    if plaintext is None:
        # lxml writes the namespaces the assertion uses on it, as Keycloak does
        plaintext = etree.tostring(assertion)
    encrypted = encrypted_assertion(plaintext, cert_pem, layout, other_recipients=other_recipients)
    root.replace(assertion, encrypted)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def sign_response(idp: FakeSamlIdP, xml: bytes) -> bytes:
    """What Keycloak does after encrypting: sign the whole Response."""
    return idp.sign(xml, etree.fromstring(xml).get("ID"))


async def keycloak_like(
    idp: FakeSamlIdP,
    sp: SamlConnector,
    layout: Layout = KEYCLOAK,
    *,
    signed_response: bool = True,
    plaintext: Any = None,
    **overrides: Any,
) -> tuple[bytes, dict[str, Any]]:
    """A login at ``sp`` answered as Keycloak does: assertion signed, then encrypted for the
    SP's certificate in ``layout``, then the Response signed. ``plaintext`` (a function of
    the signed assertion's bytes) makes the IdP — or an attacker — encrypt something else."""
    xml, flow_state = await login_and_respond(idp, sp, sign_response=False, **overrides)
    assertion = etree.fromstring(xml).find(f"{{{SAML}}}Assertion")
    own = None if plaintext is None else plaintext(etree.tostring(assertion))
    xml = encrypt_assertion(xml, sp.keys.cert_pem, layout, plaintext=own)
    return (sign_response(idp, xml) if signed_response else xml), flow_state


async def refused(sp: SamlConnector, xml: bytes, flow_state: Any) -> str:
    with pytest.raises(InvalidUpstreamResponse) as caught:
        await consume(sp, xml, flow_state)
    detail = caught.value.detail
    assert "0 assertions" not in detail, detail
    return detail


@pytest.fixture
def idp() -> FakeSamlIdP:
    return FakeSamlIdP(users=[SamlUser("u-1", email="u1@acme.test")], sign_response=False)


@pytest.fixture
def sp(idp: FakeSamlIdP) -> SamlConnector:
    return connector(connection(idp))


# --- the layouts real IdPs send ----------------------------------------------------------


async def test_keycloak_default_layout_signs_in(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    xml, flow_state = await keycloak_like(idp, sp)
    assert b"xmlenc11#aes256-gcm" in xml and b"xmlenc11#rsa-oaep" in xml
    assert b"u1@acme.test" not in xml and b"<saml:Assertion" not in xml

    identity = await consume(sp, xml, flow_state)
    assert (identity.subject, identity.email) == ("u-1", "u1@acme.test")
    assert identity.raw_claims["assertion_id"]


LAYOUTS = {
    "keycloak-aes256-cbc-rsa-oaep-mgf1p-sha256": KEYCLOAK_CBC,
    "keycloak-unsigned-response": KEYCLOAK,
    "mgf1p-sha1-no-digest-method": Layout(
        data=XENC + "aes128-cbc", transport=XENC + "rsa-oaep-mgf1p", digest=None, mgf=None
    ),
    "rsa-oaep-defaults-sha1": Layout(data=XENC11 + "aes128-gcm", digest=None, mgf=None),
    "rsa-oaep-sha512-mgf1sha384": Layout(
        data=XENC11 + "aes192-gcm", digest=XENC + "sha512", mgf=XENC11 + "mgf1sha384"
    ),
    "oaep-label": Layout(label=b"isthmus-label"),
    "aes192-cbc-sha384": Layout(
        data=XENC + "aes192-cbc", digest=MORE + "sha384", mgf=XENC11 + "mgf1sha224"
    ),
    "key-by-retrieval-method": replace(KEYCLOAK, placement="by_reference"),
    "key-as-peer": replace(KEYCLOAK_CBC, placement="peer"),
    "no-type-attribute": replace(KEYCLOAK, data_type=None),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
async def test_layouts_sign_in(name: str, idp: FakeSamlIdP, sp: SamlConnector) -> None:
    layout = LAYOUTS[name]
    xml, flow_state = await keycloak_like(
        idp, sp, layout, signed_response=name != "keycloak-unsigned-response"
    )
    assert b"EncryptedAssertion" in xml and b"u1@acme.test" not in xml
    assert (await consume(sp, xml, flow_state)).subject == "u-1"


async def test_several_recipients_the_sps_key_is_found(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    others = tuple(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        for _ in range(2)
    )
    for placement in ("peer", "by_reference"):
        xml, flow_state = await login_and_respond(idp, sp)
        layout = replace(KEYCLOAK, placement=placement)
        encrypted = encrypt_assertion(xml, sp.keys.cert_pem, layout, other_recipients=others)
        assert encrypted.count(b"</xenc:EncryptedKey>") == 3  # ours last
        assert (await consume(sp, encrypted, flow_state)).subject == "u-1"


# --- what cannot be decrypted says why ------------------------------------------------------


UNSUPPORTED = {
    "rsa-1_5": (
        Layout(data=XENC + "aes128-cbc", transport=XENC + "rsa-1_5", digest=None, mgf=None),
        "key transport algorithm 'http://www.w3.org/2001/04/xmlenc#rsa-1_5' is not supported "
        "(RSA PKCS#1 v1.5 key transport is open to Bleichenbacher's attack)",
    ),
    "tripledes-cbc": (
        Layout(data=XENC + "tripledes-cbc"),
        "data encryption algorithm 'http://www.w3.org/2001/04/xmlenc#tripledes-cbc' is not "
        "supported (Triple DES is a legacy cipher)",
    ),
    "unknown-data": (
        Layout(data="urn:example:aes256-rot13"),
        "data encryption algorithm 'urn:example:aes256-rot13' is not supported; supported: "
        "aes128-cbc, aes128-gcm, aes192-cbc, aes192-gcm, aes256-cbc, aes256-gcm",
    ),
    "md5-digest": (
        Layout(digest="http://www.w3.org/2001/04/xmldsig-more#md5"),
        "RSA-OAEP digest algorithm 'http://www.w3.org/2001/04/xmldsig-more#md5' is not supported",
    ),
    "unknown-mgf": (
        Layout(mgf=XENC11 + "mgf1md5"),
        "RSA-OAEP mask generation algorithm 'http://www.w3.org/2009/xmlenc11#mgf1md5' is not "
        "supported",
    ),
    "content-type": (
        Layout(data_type=XENC + "Content"),
        "EncryptedData of Type 'http://www.w3.org/2001/04/xmlenc#Content'",
    ),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
async def test_unsupported_encryption_is_named_in_the_detail(
    name: str, idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    layout, expected = UNSUPPORTED[name]
    xml, flow_state = await keycloak_like(idp, sp, layout)

    detail = await refused(sp, xml, flow_state)
    assert detail.startswith("connection conn-1: encrypted element refused: cannot decrypt: ")
    assert expected in detail, detail


async def test_encrypted_for_another_certificate(idp: FakeSamlIdP, sp: SamlConnector) -> None:
    xml, flow_state = await login_and_respond(idp, sp)
    other = SamlKeyPair.generate()
    other_cert = other.certificate.public_bytes(serialization.Encoding.PEM)
    xml = sign_response(idp, encrypt_assertion(xml, other_cert))

    detail = await refused(sp, xml, flow_state)
    assert "encrypted element refused: cannot decrypt: the SP key unwraps none" in detail
    assert "the one in the hub's SP metadata" in detail


@pytest.mark.parametrize("mode", ["gcm", "cbc"])
async def test_tampered_cipher_text_is_refused(
    mode: str, idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    """An unsigned Response (the assertion alone is signed): whoever carries it can change
    the cipher text. GCM's tag catches it; CBC has no integrity — a flipped IV bit changes
    the first block of plaintext predictably — and what catches it is the plaintext check
    (or, for a change that stays well-formed, the assertion's signature)."""
    layout = KEYCLOAK if mode == "gcm" else KEYCLOAK_CBC
    xml, flow_state = await keycloak_like(idp, sp, layout, signed_response=False)
    root = etree.fromstring(xml)
    value = root.find(f".//{{{XENC}}}EncryptedData/{{{XENC}}}CipherData/{{{XENC}}}CipherValue")
    data = bytearray(base64.b64decode(value.text))
    # <saml:Assertion …: IV byte 14 (CBC) or a cipher text byte (GCM) → "<saml:Assertiom"
    data[14 if mode == "cbc" else 40] ^= ord("n") ^ ord("m")
    value.text = base64.b64encode(bytes(data)).decode()
    tampered = etree.tostring(root)

    detail = await refused(sp, tampered, flow_state)
    if mode == "gcm":
        assert "AES-GCM cipher text fails its integrity check" in detail
    else:  # <saml:Assertiom …>…</saml:Assertion>
        assert "decrypted Assertion: not well-formed XML: mismatched tag" in detail


# --- the plaintext gets the checks of a plain assertion ----------------------------------


def _comment_in_name_id(signed: bytes) -> bytes:
    return signed.replace(b"ceo@acme.test.evil.example<", b"ceo@acme.test<!---->.evil.example<")


async def test_comment_in_the_decrypted_name_id_is_refused(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    """The classic: canonicalization drops comments, so the IdP's signature still holds over
    ``ceo@acme.test<!---->.evil.example`` while a naive reader sees ``ceo@acme.test``. The
    attacker encrypts it to the SP's public certificate; the Response is not signed."""
    captured: list[bytes] = []

    def evil(signed: bytes) -> bytes:
        captured.append(_comment_in_name_id(signed))
        return captured[-1]

    xml, flow_state = await keycloak_like(
        idp, sp, signed_response=False, plaintext=evil, name_id="ceo@acme.test.evil.example"
    )
    assert b"<!---->" in captured[0] and verify(captured[0], idp.signing_key)

    detail = await refused(sp, xml, flow_state)
    assert "decrypted Assertion: XML comment" in detail


def _nested(signed: bytes) -> bytes:
    """The signed assertion, with an unsigned copy (another ID) in its Advice."""
    assertion = etree.fromstring(signed)
    copy = etree.fromstring(signed)
    copy.set("ID", "_evil")
    copy.remove(copy.find(f"{{{DS}}}Signature"))
    advice = etree.Element(f"{{{SAML}}}Advice")
    advice.append(copy)
    assertion.find(f"{{{SAML}}}Conditions").addnext(advice)
    return etree.tostring(assertion)


def _signature_moved(signed: bytes) -> bytes:
    assertion = etree.fromstring(signed)
    signature = assertion.find(f"{{{DS}}}Signature")
    assertion.find(f"{{{SAML}}}Subject").append(signature)
    return etree.tostring(assertion)


def _response_id_reused(signed: bytes) -> bytes:
    assertion = etree.fromstring(signed)
    assertion.find(f"{{{SAML}}}Subject").set("ID", "_the-response")
    return etree.tostring(assertion)


def _doctype(signed: bytes) -> bytes:
    return b'<!DOCTYPE a [<!ENTITY x "ceo@acme.test">]>' + signed


def _two_roots(signed: bytes) -> bytes:
    return signed + signed.replace(b'ID="', b'ID="x')


def _declaration(signed: bytes) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + signed


PLAINTEXTS = {
    "assertion_in_advice": (_nested, "assertion nested inside the decrypted assertion"),
    "signature_moved": (_signature_moved, "ds:Signature in an unexpected place"),
    "id_of_the_response": (_response_id_reused, "ID '_the-response' appears twice"),
    "doctype": (_doctype, "forbidden XML construct"),
    "two_roots": (_two_roots, "not well-formed XML"),
    "processing_instruction": (
        lambda signed: b"<?evil x?>" + signed,
        "XML processing instruction 'evil'",
    ),
    "name_id_not_assertion": (
        lambda signed: f'<saml:NameID xmlns:saml="{SAML}">ceo@acme.test</saml:NameID>'.encode(),
        "decrypted element is '{urn:oasis:names:tc:SAML:2.0:assertion}NameID', expected "
        "saml:Assertion",
    ),
    "unbound_prefix": (
        lambda signed: b"<saml:Assertion ID='_x'/>",
        "not well-formed XML: unbound prefix",
    ),
}


@pytest.mark.parametrize("name", list(PLAINTEXTS))
async def test_hostile_plaintexts_are_refused(
    name: str, idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    change, expected = PLAINTEXTS[name]
    xml, flow_state = await keycloak_like(
        idp, sp, signed_response=False, plaintext=change, response_id="_the-response"
    )
    detail = await refused(sp, xml, flow_state)
    assert "encrypted element refused: decrypted Assertion: " in detail
    assert expected in detail, detail


async def test_a_declaration_before_the_plaintext_is_dropped(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    xml, flow_state = await keycloak_like(idp, sp, plaintext=_declaration)
    assert (await consume(sp, xml, flow_state)).subject == "u-1"


async def test_a_forged_unsigned_assertion_encrypted_by_anyone_is_refused(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    """The SP's encryption certificate is public: encryption proves nothing about who wrote
    the assertion. Unsigned inside an unsigned Response: refused."""
    xml, flow_state = await keycloak_like(idp, sp, signed_response=False, sign_assertion=False)
    detail = await refused(sp, xml, flow_state)
    assert "Signature missing for assertion" in detail, detail


async def test_an_assertion_signed_by_another_key_is_refused(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    xml, flow_state = await keycloak_like(
        idp, sp, signed_response=False, signer=SamlKeyPair.generate()
    )
    detail = await refused(sp, xml, flow_state)
    assert "pysaml2 refused the response" in detail, detail


async def test_a_replayed_encrypted_assertion_is_refused(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    xml, flow_state = await keycloak_like(idp, sp)
    assert (await consume(sp, xml, flow_state)).subject == "u-1"
    detail = await refused(sp, xml, flow_state)
    assert "already used (replay)" in detail


# --- xmlenc on its own: the splice, EncryptedID, the edges ---------------------------------


@pytest.fixture(scope="module")
def sp_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    pair = SamlKeyPair.generate()
    return pair.private_key, pair.certificate.public_bytes(serialization.Encoding.PEM)


ASSERTION = (
    f'<saml:Assertion xmlns:saml="{SAML}" ID="_a1"><saml:Issuer>x</saml:Issuer></saml:Assertion>'
)


def response_with(encrypted: Any) -> bytes:
    root = etree.Element(f"{{{SAMLP}}}Response", nsmap={"samlp": SAMLP}, ID="_r1")
    _el(root, SAMLP, "Status")
    root.append(encrypted)
    return etree.tostring(root)


def test_the_plaintext_takes_the_place_of_the_encrypted_data(
    sp_key: tuple[rsa.RSAPrivateKey, bytes],
) -> None:
    key, cert = sp_key
    document = response_with(encrypted_assertion(ASSERTION.encode(), cert))
    start = document.index(b"<xenc:EncryptedData")
    end = document.index(b"</xenc:EncryptedData>") + len(b"</xenc:EncryptedData>")

    decrypted = xmlenc.decrypt_first(document, key)
    assert decrypted == document[:start] + ASSERTION.encode() + document[end:]


@pytest.mark.parametrize("bits", ["128", "192", "256"])
@pytest.mark.parametrize("mode", ["gcm", "cbc"])
def test_every_aes_size_and_mode(
    bits: str, mode: str, sp_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    key, cert = sp_key
    namespace = XENC11 if mode == "gcm" else XENC
    layout = Layout(data=f"{namespace}aes{bits}-{mode}")
    document = response_with(encrypted_assertion(ASSERTION.encode(), cert, layout))
    assert ASSERTION.encode() in xmlenc.decrypt_first(document, key)


def test_an_encrypted_name_id_alone(sp_key: tuple[rsa.RSAPrivateKey, bytes]) -> None:
    """pysaml2 hands an EncryptedID's EncryptedData alone; its plaintext must be a NameID."""
    key, cert = sp_key
    name_id = f'<saml:NameID xmlns:saml="{SAML}">u-1</saml:NameID>'.encode()
    data = encrypted_assertion(name_id, cert)[0]
    assert xmlenc.decrypt_first(etree.tostring(data), key) == name_id

    not_a_name = encrypted_assertion(ASSERTION.encode(), cert)[0]
    with pytest.raises(xmlenc.DecryptionError, match="expected saml:NameID"):
        xmlenc.decrypt_first(etree.tostring(not_a_name), key)


def _cbc_with_padding(key: bytes, plaintext: bytes, pad: bytes) -> bytes:
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(plaintext + pad) + encryptor.finalize()


def test_cbc_padding_bytes_are_arbitrary_and_the_last_one_counts() -> None:
    key, text = os.urandom(32), b"x" * 13
    assert xmlenc._aes_cbc(key, _cbc_with_padding(key, text, b"\xff\x00\x03")) == text
    assert xmlenc._aes_cbc(key, _cbc_with_padding(key, b"y" * 16, bytes(15) + b"\x10")) == (
        b"y" * 16
    )
    for bad_last in (b"\x00", b"\x11", b"\xff"):
        with pytest.raises(xmlenc.DecryptionError, match="invalid padding"):
            xmlenc._aes_cbc(key, _cbc_with_padding(key, b"z" * 15, bad_last))
    with pytest.raises(xmlenc.DecryptionError, match="not whole blocks"):
        xmlenc._aes_cbc(key, os.urandom(40))
    with pytest.raises(xmlenc.DecryptionError, match="shorter than its IV and tag"):
        xmlenc._aes_gcm(key, os.urandom(27))


def _mutated(cert: bytes, change: Any, layout: Layout = KEYCLOAK) -> bytes:
    encrypted = encrypted_assertion(ASSERTION.encode(), cert, layout)
    change(encrypted)
    return response_with(encrypted)


def _find(element: Any, path: str) -> Any:
    found = element.find(path, {"xenc": XENC, "ds": DS, "xenc11": XENC11})
    assert found is not None, path
    return found


def _cipher_reference(encrypted: Any) -> None:
    data = _find(encrypted, "xenc:EncryptedData/xenc:CipherData")
    data.remove(_find(data, "xenc:CipherValue"))
    _el(data, XENC, "CipherReference", URI="http://attacker.example/cipher")


def _retrieval_to_nowhere(encrypted: Any) -> None:
    _find(encrypted, ".//ds:RetrievalMethod").set("URI", "#nowhere")


def _retrieval_with_transforms(encrypted: Any) -> None:
    _el(_find(encrypted, ".//ds:RetrievalMethod"), DS, "Transforms")


def _mgf_on_mgf1p(encrypted: Any) -> None:
    method = _find(encrypted, ".//xenc:EncryptedKey/xenc:EncryptionMethod")
    _el(method, XENC11, "MGF", Algorithm=XENC11 + "mgf1sha256")


def _no_key(encrypted: Any) -> None:
    data = _find(encrypted, "xenc:EncryptedData")
    data.remove(_find(data, "ds:KeyInfo"))


def _cipher_not_base64(encrypted: Any) -> None:
    _find(encrypted, "xenc:EncryptedData/xenc:CipherData/xenc:CipherValue").text = "*not*"


def _no_method(encrypted: Any) -> None:
    data = _find(encrypted, "xenc:EncryptedData")
    data.remove(_find(data, "xenc:EncryptionMethod"))


def _inside_other(encrypted: Any) -> None:
    encrypted.tag = f"{{{SAML}}}EncryptedAttribute"


EDGES = {
    "cipher_reference": (_cipher_reference, KEYCLOAK, "carries a CipherReference"),
    "retrieval_to_nowhere": (
        _retrieval_to_nowhere,
        replace(KEYCLOAK, placement="by_reference"),
        "RetrievalMethod URI '#nowhere' names no EncryptedKey",
    ),
    "retrieval_with_transforms": (
        _retrieval_with_transforms,
        replace(KEYCLOAK, placement="by_reference"),
        "a RetrievalMethod with Transforms",
    ),
    "mgf_on_mgf1p": (_mgf_on_mgf1p, KEYCLOAK_CBC, "rsa-oaep-mgf1p with an xenc11:MGF"),
    "no_encrypted_key": (_no_key, KEYCLOAK, "no EncryptedKey for the EncryptedData"),
    "cipher_value_not_base64": (_cipher_not_base64, KEYCLOAK, "CipherValue is not base64"),
    "no_encryption_method": (_no_method, KEYCLOAK, "EncryptedData has no EncryptionMethod"),
    "encrypted_attribute": (_inside_other, KEYCLOAK, "an EncryptedData inside"),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_edges_are_refused_with_a_reason(
    name: str, sp_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    key, cert = sp_key
    change, layout, expected = EDGES[name]
    with pytest.raises(xmlenc.DecryptionError) as caught:
        xmlenc.decrypt_first(_mutated(cert, change, layout), key)
    assert expected in str(caught.value)
    assert not isinstance(caught.value, xmlenc.WrongKey)


def test_recipients_are_capped(sp_key: tuple[rsa.RSAPrivateKey, bytes]) -> None:
    """Each EncryptedKey costs an RSA decryption: a response cannot make the hub try 600."""
    key, cert = sp_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    layout = replace(KEYCLOAK, placement="peer")
    for count, accepted in ((xmlenc.MAX_ENCRYPTED_KEYS - 1, True), (8, False)):
        encrypted = encrypted_assertion(
            ASSERTION.encode(), cert, layout, other_recipients=(other,) * count
        )
        document = response_with(encrypted)
        if accepted:  # ours is the last one tried
            assert ASSERTION.encode() in xmlenc.decrypt_first(document, key)
        else:
            with pytest.raises(xmlenc.DecryptionError, match="more than 8 EncryptedKeys"):
                xmlenc.decrypt_first(document, key)


def test_the_first_encrypted_data_in_document_order(
    sp_key: tuple[rsa.RSAPrivateKey, bytes],
) -> None:
    """Like xmlsec1 --decrypt: one at a time, the first in document order (pysaml2 calls
    again while any is left)."""
    key, cert = sp_key
    deep = f'<saml:NameID xmlns:saml="{SAML}">first</saml:NameID>'.encode()
    shallow = f'<saml:NameID xmlns:saml="{SAML}">second</saml:NameID>'.encode()
    # <EncryptedID> <x> <EncryptedID> <EncryptedData>first… </x> <EncryptedData>second…
    root = encrypted_assertion(shallow, cert)
    root.tag = f"{{{SAML}}}EncryptedID"
    inner = encrypted_assertion(deep, cert)
    inner.tag = f"{{{SAML}}}EncryptedID"
    root.insert(0, etree.Element(f"{{{SAML}}}Wrapper"))
    root[0].append(inner)
    once = xmlenc.decrypt_first(etree.tostring(root), key)
    assert b">first<" in once and b">second<" not in once
    assert b">second<" in xmlenc.decrypt_first(once, key)


def test_the_sp_key_must_be_rsa(tmp_path: Any) -> None:
    path = tmp_path / "ec.key"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(xmlenc.UnsupportedEncryption, match="not an RSA key"):
        xmlenc.load_private_key(path)


def test_wrong_key_is_the_only_key_dependent_failure(
    sp_key: tuple[rsa.RSAPrivateKey, bytes],
) -> None:
    _, cert = sp_key
    document = response_with(encrypted_assertion(ASSERTION.encode(), cert))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(xmlenc.WrongKey, match="unwraps none of the 1 EncryptedKey"):
        xmlenc.decrypt_first(document, other)
    with pytest.raises(xmlenc.DecryptionError, match="has no xenc:EncryptedData"):
        xmlenc.decrypt_first(response_with(etree.fromstring(ASSERTION)), other)


# --- encrypted parts of a signed assertion --------------------------------------------------


async def signed_with(
    idp: FakeSamlIdP, sp: SamlConnector, change: Any
) -> tuple[bytes, dict[str, Any]]:
    """A login's Response whose assertion ``change`` edits before the IdP signs it."""
    xml, flow_state = await login_and_respond(idp, sp, sign_assertion=False)
    root = etree.fromstring(xml)
    assertion = root.find(f"{{{SAML}}}Assertion")
    change(assertion)
    return idp.sign(etree.tostring(root), assertion.get("ID")), flow_state


async def test_an_encrypted_name_id_in_a_signed_assertion(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    def encrypt_name_id(assertion: Any) -> None:
        name_id = assertion.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID")
        encrypted = encrypted_assertion(etree.tostring(name_id), sp.keys.cert_pem)
        encrypted.tag = f"{{{SAML}}}EncryptedID"
        name_id.getparent().replace(name_id, encrypted)

    xml, flow_state = await signed_with(idp, sp, encrypt_name_id)
    assert b"EncryptedID" in xml and b">u-1<" not in xml
    identity = await consume(sp, xml, flow_state)
    assert identity.subject == "u-1" and identity.raw_claims["name_id"] == "u-1"


async def test_encrypted_attributes_are_refused_with_a_reason(
    idp: FakeSamlIdP, sp: SamlConnector
) -> None:
    def encrypt_attribute(assertion: Any) -> None:
        statement = assertion.find(f"{{{SAML}}}AttributeStatement")
        attribute = statement[0]
        encrypted = encrypted_assertion(etree.tostring(attribute), sp.keys.cert_pem)
        encrypted.tag = f"{{{SAML}}}EncryptedAttribute"
        statement.replace(attribute, encrypted)

    xml, flow_state = await signed_with(idp, sp, encrypt_attribute)
    detail = await refused(sp, xml, flow_state)
    assert "encrypted element refused: cannot decrypt: " in detail
    assert "encrypted attributes are not supported" in detail

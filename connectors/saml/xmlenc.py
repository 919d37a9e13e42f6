"""XML Encryption, in-process: the SP decrypts what an IdP encrypted for it.

Specs: XML Encryption Syntax and Processing 1.1 (W3C Recommendation, 2013) §3.4
(EncryptedData; Type ``#Element``), §3.5 (EncryptedKey), §3.5.1 (ds:RetrievalMethod to an
EncryptedKey), §4.3 (decryption: the plaintext takes the EncryptedData's place), §5.2.2
(AES-CBC: the IV before the cipher text; padding whose last octet is its length), §5.2.4
(AES-GCM: a 96-bit IV before, a 128-bit tag after), §5.5.2 (RSA-OAEP key transport:
``rsa-oaep-mgf1p`` — MGF1 with SHA-1, digest from ``ds:DigestMethod``, SHA-1 by default;
``xmlenc11#rsa-oaep`` — digest and ``xenc11:MGF`` both named, SHA-1 by default), §5.5.1
(RSA-v1.5, "not recommended": refused here); SAML 2.0 Core §2.3.4 (EncryptedAssertion: its
EncryptedKey inside the EncryptedData's ds:KeyInfo, or next to the EncryptedData —
referenced by a ds:RetrievalMethod or not) and §6 (SAML and XML Encryption).

Why not xmlsec1 (which signs and verifies for pysaml2): Debian 12's xmlsec1 1.2.37 knows
neither ``xmlenc11#rsa-oaep`` nor a digest other than SHA-1 for ``rsa-oaep-mgf1p`` —
Keycloak 26 sends both (AES-256-GCM under ``xmlenc11#rsa-oaep``, SHA-256 and MGF1-SHA-256, by
default; ``rsa-oaep-mgf1p`` with a SHA-256 digest when chosen) — and when it cannot
decrypt, pysaml2 swallows the error: the hub saw an empty response. Here every algorithm
accepted is in the tables below, and every refusal says why (:class:`DecryptionError`).

:func:`decrypt_first` decrypts the first EncryptedData of a document (document order, like
``xmlsec1 --decrypt``, whose contract it keeps for pysaml2: :mod:`connectors.saml.sp` hands
it the whole Response and gets the Response back with the Assertion in place of the
EncryptedData). The plaintext passes :func:`connectors.saml.guard.inspect_decrypted` before
it is put back; pysaml2 then verifies the assertion's signature on that document exactly as
for one that was never encrypted. Decryption uses only the private key it is given (the
SP's). AES-CBC has no integrity of its own: what protects a CBC assertion is its signature,
checked after decryption, and the constant public error (no padding oracle in the answer).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree.ElementTree import Element

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connectors.saml import guard

XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
DS = "http://www.w3.org/2000/09/xmldsig#"
DSIG_MORE = "http://www.w3.org/2001/04/xmldsig-more#"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"

TYPE_ELEMENT = XENC + "Element"
TYPE_ENCRYPTED_KEY = XENC + "EncryptedKey"
RSA_OAEP_MGF1P = XENC + "rsa-oaep-mgf1p"
RSA_OAEP = XENC11 + "rsa-oaep"
RSA_1_5 = XENC + "rsa-1_5"


@dataclass(frozen=True, slots=True)
class BlockCipher:
    """A data encryption algorithm: AES in GCM or CBC mode, with its key size in bytes."""

    name: str
    key_size: int
    mode: Literal["gcm", "cbc"]


DATA_ALGORITHMS: dict[str, BlockCipher] = {
    XENC11 + "aes128-gcm": BlockCipher("aes128-gcm", 16, "gcm"),
    XENC11 + "aes192-gcm": BlockCipher("aes192-gcm", 24, "gcm"),
    XENC11 + "aes256-gcm": BlockCipher("aes256-gcm", 32, "gcm"),
    XENC + "aes128-cbc": BlockCipher("aes128-cbc", 16, "cbc"),
    XENC + "aes192-cbc": BlockCipher("aes192-cbc", 24, "cbc"),
    XENC + "aes256-cbc": BlockCipher("aes256-cbc", 32, "cbc"),
}
KEY_TRANSPORTS = (RSA_OAEP, RSA_OAEP_MGF1P)
# ds:DigestMethod of RSA-OAEP (XML Encryption 1.1 §5.7; RFC 6931 §2.1 for the -more ones)
OAEP_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    DS + "sha1": hashes.SHA1,
    DSIG_MORE + "sha224": hashes.SHA224,
    XENC + "sha256": hashes.SHA256,
    XENC + "sha384": hashes.SHA384,
    DSIG_MORE + "sha384": hashes.SHA384,
    XENC + "sha512": hashes.SHA512,
}
# xenc11:MGF of xmlenc11#rsa-oaep (XML Encryption 1.1 §5.5.2)
OAEP_MGFS: dict[str, type[hashes.HashAlgorithm]] = {
    XENC11 + "mgf1sha1": hashes.SHA1,
    XENC11 + "mgf1sha224": hashes.SHA224,
    XENC11 + "mgf1sha256": hashes.SHA256,
    XENC11 + "mgf1sha384": hashes.SHA384,
    XENC11 + "mgf1sha512": hashes.SHA512,
}
REFUSED: dict[str, str] = {
    RSA_1_5: "RSA PKCS#1 v1.5 key transport is open to Bleichenbacher's attack",
    XENC + "tripledes-cbc": "Triple DES is a legacy cipher",
}
GCM_IV, GCM_TAG, CBC_IV = 12, 16, 16
MAX_ENCRYPTED_KEYS = 8  # recipients of one EncryptedData worth trying
_DECLARATION = re.compile(rb"\s*<\?xml\s")
# What the plaintext of an EncryptedData must be, by the element around the EncryptedData;
# None: the EncryptedData is the document (pysaml2 hands an EncryptedID's alone).
PLAINTEXT_OF: dict[str | None, Literal["Assertion", "NameID"]] = {
    f"{{{SAML}}}EncryptedAssertion": "Assertion",
    f"{{{SAML}}}EncryptedID": "NameID",
    None: "NameID",
}


class DecryptionError(ValueError):
    """An EncryptedData the SP cannot or will not decrypt; the text says why (for logs)."""


class UnsupportedEncryption(DecryptionError):
    """An algorithm or a construct outside what this module accepts."""


class WrongKey(DecryptionError):
    """The key given unwraps none of the EncryptedKeys: encrypted for another certificate.
    The only failure that depends on the key (pysaml2 then tries its next one, if any)."""


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """The SP's private key (PEM, unencrypted), which must be RSA (key transport)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnsupportedEncryption("cannot decrypt: the SP key is not an RSA key")
    return key


def decrypt_first(document: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """``document`` with its first xenc:EncryptedData replaced by the plaintext (UTF-8
    bytes in, UTF-8 bytes out). Raises :class:`DecryptionError` (or a subclass)."""
    builder = guard.LocatingTreeBuilder()
    try:
        root = guard.parse_document(document, target=builder)
    except guard.UnsafeMessage as exc:
        raise DecryptionError(f"encrypted document: {exc}") from None
    found = _first_encrypted_data(root)
    if found is None:
        raise DecryptionError("the document has no xenc:EncryptedData")
    encrypted, container = found
    around = None if container is None else container.tag
    expected = PLAINTEXT_OF.get(around)
    if expected is None:
        raise UnsupportedEncryption(f"cannot decrypt: an EncryptedData inside {around}")
    try:
        start, end = builder.span(encrypted, document)
    except guard.UnsafeMessage as exc:
        raise DecryptionError(f"EncryptedData: {exc}") from None
    plaintext = _decrypt(encrypted, container, key)
    try:
        guard.inspect_decrypted(plaintext, expected=expected, taken_ids=guard.ids_of(root))
    except guard.UnsafeMessage as exc:
        raise DecryptionError(f"decrypted {expected}: {exc}") from None
    return document[:start] + plaintext + document[end:]


def _first_encrypted_data(root: Element) -> tuple[Element, Element | None] | None:
    """The first EncryptedData in document order, and the element around it (None: root)."""
    first = next(root.iter(_x("EncryptedData")), None)
    if first is None or first is root:
        return None if first is None else (first, None)
    parent = next(element for element in root.iter() if any(c is first for c in element))
    return first, parent


def _decrypt(encrypted: Element, container: Element | None, key: rsa.RSAPrivateKey) -> bytes:
    kind = encrypted.get("Type")
    if kind is not None and kind != TYPE_ELEMENT:  # SAML Core §6.1: Element, when present
        raise UnsupportedEncryption(f"cannot decrypt: EncryptedData of Type {kind!r}")
    cipher = _data_algorithm(encrypted)
    ciphertext = _cipher_value(encrypted, "EncryptedData")
    data_key = _unwrap(encrypted, container, key)
    if len(data_key) != cipher.key_size:
        raise DecryptionError(
            f"the data key has {len(data_key)} bytes, {cipher.name} takes {cipher.key_size}"
        )
    if cipher.mode == "gcm":
        plaintext = _aes_gcm(data_key, ciphertext)
    else:
        plaintext = _aes_cbc(data_key, ciphertext)
    return _without_declaration(plaintext)


def _data_algorithm(encrypted: Element) -> BlockCipher:
    algorithm = _algorithm(encrypted, "EncryptedData")
    if algorithm in DATA_ALGORITHMS:
        return DATA_ALGORITHMS[algorithm]
    raise _unsupported("data encryption", algorithm, DATA_ALGORITHMS)


def _algorithm(element: Element, what: str) -> str:
    method = element.find(_x("EncryptionMethod"))
    algorithm = None if method is None else method.get("Algorithm")
    if not algorithm:
        raise DecryptionError(f"{what} has no EncryptionMethod Algorithm")
    return algorithm


def _unsupported(what: str, algorithm: str, supported: Iterable[str]) -> UnsupportedEncryption:
    names = ", ".join(sorted({name.rsplit("#", 1)[-1] for name in supported}))
    why = REFUSED.get(algorithm)
    reason = f" ({why})" if why else ""
    return UnsupportedEncryption(
        f"cannot decrypt: {what} algorithm {algorithm!r} is not supported{reason}; "
        f"supported: {names}"
    )


def _cipher_value(element: Element, what: str) -> bytes:
    data = element.find(_x("CipherData"))
    if data is None:
        raise DecryptionError(f"{what} has no CipherData")
    if data.find(_x("CipherReference")) is not None:
        raise UnsupportedEncryption(f"cannot decrypt: {what} carries a CipherReference")
    value = data.find(_x("CipherValue"))
    if value is None or not (value.text or "").strip():
        raise DecryptionError(f"{what} has no CipherValue")
    try:
        return base64.b64decode("".join((value.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError(f"{what} CipherValue is not base64") from None


# --- the data key ---------------------------------------------------------------------------


def _unwrap(encrypted: Element, container: Element | None, key: rsa.RSAPrivateKey) -> bytes:
    """The data key, from the first EncryptedKey this private key unwraps."""
    candidates = list(_encrypted_keys(encrypted, container))
    if not candidates:
        raise DecryptionError(
            "no EncryptedKey for the EncryptedData (in its KeyInfo, by RetrievalMethod, or "
            "next to it)"
        )
    if len(candidates) > MAX_ENCRYPTED_KEYS:  # each costs an RSA decryption
        raise DecryptionError(f"more than {MAX_ENCRYPTED_KEYS} EncryptedKeys to try")
    unsupported: UnsupportedEncryption | None = None
    for encrypted_key in candidates:
        try:
            return _unwrap_one(encrypted_key, key)
        except UnsupportedEncryption as exc:
            unsupported = unsupported or exc
        except WrongKey:
            continue
    if unsupported is not None:
        raise unsupported
    raise WrongKey(
        f"cannot decrypt: the SP key unwraps none of the {len(candidates)} EncryptedKey(s) "
        "(encrypted for another certificate? the IdP must use the one in the hub's SP "
        "metadata)"
    )


def _encrypted_keys(encrypted: Element, container: Element | None) -> Iterator[Element]:
    """SAML Core §2.3.4: in the EncryptedData's KeyInfo, or referenced from there by a
    RetrievalMethod to a peer, or — when the KeyInfo names none — the peers themselves."""
    peers = [] if container is None else container.findall(_x("EncryptedKey"))
    key_info = encrypted.find(f"{{{DS}}}KeyInfo")
    named = False
    if key_info is not None:
        for child in key_info:
            if child.tag == _x("EncryptedKey"):
                named = True
                yield child
            elif child.tag == f"{{{DS}}}RetrievalMethod" and child.get("Type") in (
                None,
                TYPE_ENCRYPTED_KEY,
            ):
                named = True
                yield _retrieved(child, peers)
    if not named:
        yield from peers


def _retrieved(method: Element, peers: list[Element]) -> Element:
    if method.find(f"{{{DS}}}Transforms") is not None:
        raise UnsupportedEncryption("cannot decrypt: a RetrievalMethod with Transforms")
    uri = method.get("URI", "")
    target = uri[1:] if uri.startswith("#") else None
    for peer in peers:
        if target and peer.get("Id") == target:
            return peer
    raise DecryptionError(f"RetrievalMethod URI {uri!r} names no EncryptedKey next to it")


def _unwrap_one(encrypted_key: Element, key: rsa.RSAPrivateKey) -> bytes:
    algorithm = _algorithm(encrypted_key, "EncryptedKey")
    if algorithm not in KEY_TRANSPORTS:
        raise _unsupported("key transport", algorithm, KEY_TRANSPORTS)
    method = encrypted_key.find(_x("EncryptionMethod"))
    assert method is not None  # _algorithm found it
    oaep = padding.OAEP(
        mgf=padding.MGF1(_mgf_hash(method, algorithm)),
        algorithm=_digest(method),
        label=_label(method),
    )
    wrapped = _cipher_value(encrypted_key, "EncryptedKey")
    try:
        return key.decrypt(wrapped, oaep)
    except ValueError:
        raise WrongKey("the SP key does not unwrap this EncryptedKey") from None


def _digest(method: Element) -> hashes.HashAlgorithm:
    digest = method.find(f"{{{DS}}}DigestMethod")
    algorithm = DS + "sha1" if digest is None else digest.get("Algorithm", "")
    if algorithm not in OAEP_DIGESTS:
        raise _unsupported("RSA-OAEP digest", algorithm, OAEP_DIGESTS)
    return OAEP_DIGESTS[algorithm]()


def _mgf_hash(method: Element, algorithm: str) -> hashes.HashAlgorithm:
    mgf = method.find(f"{{{XENC11}}}MGF")
    if algorithm == RSA_OAEP_MGF1P:
        if mgf is not None:  # the name says MGF1 with SHA-1: a MGF element contradicts it
            raise DecryptionError("rsa-oaep-mgf1p with an xenc11:MGF (use xmlenc11#rsa-oaep)")
        return OAEP_MGFS[XENC11 + "mgf1sha1"]()
    name = XENC11 + "mgf1sha1" if mgf is None else mgf.get("Algorithm", "")
    if name not in OAEP_MGFS:
        raise _unsupported("RSA-OAEP mask generation", name, OAEP_MGFS)
    return OAEP_MGFS[name]()


def _label(method: Element) -> bytes | None:
    params = method.find(_x("OAEPparams"))
    if params is None or not (params.text or "").strip():
        return None
    try:
        return base64.b64decode("".join((params.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("OAEPparams is not base64") from None


# --- the data -------------------------------------------------------------------------------


def _aes_gcm(key: bytes, data: bytes) -> bytes:
    if len(data) < GCM_IV + GCM_TAG:
        raise DecryptionError("AES-GCM cipher text shorter than its IV and tag")
    try:
        return AESGCM(key).decrypt(data[:GCM_IV], data[GCM_IV:], None)
    except InvalidTag:
        raise DecryptionError("AES-GCM cipher text fails its integrity check") from None


def _aes_cbc(key: bytes, data: bytes) -> bytes:
    block = algorithms.AES.block_size // 8
    body = data[CBC_IV:]
    if len(data) < CBC_IV + block or len(body) % block:
        raise DecryptionError("AES-CBC cipher text is not whole blocks after its IV")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(data[:CBC_IV])).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    # §5.2: the last octet is the padding's length; the others are arbitrary (not PKCS#7).
    pad = padded[-1]
    if not 1 <= pad <= block:
        raise DecryptionError("AES-CBC plaintext has an invalid padding")
    return padded[:-pad]


def _without_declaration(plaintext: bytes) -> bytes:
    """The plaintext goes inside a document: a byte-order mark or an XML declaration at its
    start would not be well-formed there."""
    text = plaintext.removeprefix(b"\xef\xbb\xbf")
    if _DECLARATION.match(text):
        end = text.find(b"?>")
        if end < 0:
            raise DecryptionError("decrypted plaintext has an unterminated XML declaration")
        text = text[end + 2 :]
    return text


def _x(name: str) -> str:
    return f"{{{XENC}}}{name}"

"""The hardened first look at a SAML message, before pysaml2 sees a byte of it.

Specs: SAML 2.0 Bindings §3.4.4.1 (HTTP-Redirect DEFLATE encoding), §3.5.4 (HTTP-POST
base64 encoding); SAML 2.0 Core §5.4 (the XML-DSig profile: enveloped signatures whose
single Reference points at the enclosing element's ID, exclusive canonicalization);
XML-DSig 1.1 §4.4.3 (Reference), §6.6 (transforms).

Security invariant 3, the parts that must happen *before* the signature library runs:

- the size cap, checked on the encoded text before any decoding grows it, and on the
  decoded (and, for DEFLATE, inflated) bytes;
- no DOCTYPE/DTD, no entity declaration, no external reference, no processing
  instruction, no comment (a comment splits a NameID once canonicalization drops it);
  a bounded tree depth. Parsed with defusedxml's expat parser: no network, no entities;
- the shape XML signature wrapping needs is refused: exactly one assertion (plain or
  encrypted) and only as a direct child of the Response, unique IDs, every ds:Signature
  a direct child of the Response or of that assertion, with one Reference to its parent's
  ID, enveloped/exclusive-c14n transforms only (no ``#WithComments``, no XPath/XSLT) and no
  ds:Object.

This parse only *inspects*: no value is ever read from it. Every value the hub uses comes
from pysaml2's signature-verified objects.

An encrypted assertion is out of sight of :func:`inspect`: :func:`inspect_decrypted` applies
the same rules to its plaintext once :mod:`connectors.saml.xmlenc` has decrypted it, before
it is put back into the message (no DTD, PI or comment; one saml:Assertion whose IDs are
unique, in it and against the message around it; no assertion inside it; its signature, if
any, directly on it, pointing at its ID, with the safe transforms only).

:func:`verify_metadata_signature` applies the same rules to signed IdP metadata (SAML 2.0
Metadata §3): the one signature that counts is the enveloped signature directly on the
document's root (md:EntityDescriptor or md:EntitiesDescriptor), first in document order,
whose single Reference is the root's ID; xmlsec1 then checks it against the trusted
certificates only (a certificate inside ds:KeyInfo is ignored).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from connectors.saml._pysaml2 import saml2

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
INCLUSIVE_NAMESPACES = "{http://www.w3.org/2001/10/xml-exc-c14n#}InclusiveNamespaces"
MAX_DEPTH = 48
MAX_ELEMENTS = 20_000
ALLOWED_TRANSFORMS = frozenset(
    {
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
    }
)
ALLOWED_C14N = frozenset(
    {
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    }
)


class UnsafeMessage(ValueError):
    """The message is refused before signature checking; the text says why (for logs)."""


def decode_post(value: str, max_bytes: int) -> bytes:
    """HTTP-POST binding (Bindings §3.5.4): base64, size-capped before and after decoding."""
    if len(value) > _encoded_limit(max_bytes):
        raise UnsafeMessage(f"message of {len(value)} encoded bytes exceeds the size cap")
    compact = "".join(value.split())  # some IdPs wrap the base64 text at 76 columns
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise UnsafeMessage("message is not valid base64") from None
    if len(data) > max_bytes:
        raise UnsafeMessage(f"message of {len(data)} bytes exceeds the size cap")
    return data


def decode_redirect(value: str, max_bytes: int) -> bytes:
    """HTTP-Redirect binding (Bindings §3.4.4.1): base64 of raw DEFLATE, inflated to a cap."""
    if len(value) > _encoded_limit(max_bytes):
        raise UnsafeMessage(f"message of {len(value)} encoded bytes exceeds the size cap")
    try:
        compressed = base64.b64decode("".join(value.split()), validate=True)
        inflater = zlib.decompressobj(-15)
        data = inflater.decompress(compressed, max_bytes + 1)
    except (binascii.Error, ValueError, zlib.error):
        raise UnsafeMessage("message is not valid base64 DEFLATE") from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise UnsafeMessage("inflated message exceeds the size cap")
    return data


def _encoded_limit(max_bytes: int) -> int:
    # base64 grows 4/3, plus room for line breaks some IdPs insert every 76 characters.
    return (max_bytes * 4 // 3) * 78 // 76 + 16


def inspect(data: bytes, *, root: str) -> None:
    """Parse ``data`` hardened and refuse anything unsafe; ``root`` is the expected element
    (``Response``, ``LogoutRequest``, ``LogoutResponse``) in the SAML protocol namespace."""
    document = parse_document(data)
    if document.tag != f"{{{SAMLP}}}{root}":
        raise UnsafeMessage(f"root element is {document.tag!r}, expected samlp:{root}")
    _check_ids(document)
    if root == "Response":
        _check_assertions(document)
    _check_signatures(document)


class LocatingTreeBuilder(TreeBuilder):
    """A tree builder that also notes where each element starts and ends in the bytes parsed
    (for :mod:`connectors.saml.xmlenc`, which puts a plaintext in the place of an element)."""

    def __init__(self) -> None:
        super().__init__()
        self.expat: Any = None  # set by parse_document, before the first byte is fed
        self._starts: dict[int, int] = {}
        self._ends: dict[int, int] = {}

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        element = super().start(tag, attrs)
        self._starts[id(element)] = self.expat.CurrentByteIndex
        return element

    def end(self, tag: str) -> Element:
        element = super().end(tag)
        self._ends[id(element)] = self.expat.CurrentByteIndex
        return element

    def span(self, element: Element, data: bytes) -> tuple[int, int]:
        """The byte range ``data[start:end]`` of ``element``, start tag to end tag included.
        An empty-element tag (``<x/>``) has no separate end tag: refused (no caller needs one,
        and its end cannot be found without re-reading its attributes)."""
        start, end_tag = self._starts[id(element)], self._ends[id(element)]
        if end_tag <= start or data[end_tag : end_tag + 2] != b"</":
            raise UnsafeMessage("element without an end tag where content is expected")
        return start, data.index(b">", end_tag) + 1


def parse_document(data: bytes, *, target: TreeBuilder | None = None) -> Element:
    """Hardened parse: refuses DTDs, entities, external references, PIs, comments, depth.
    ``target``: the tree builder (a :class:`LocatingTreeBuilder` to know where elements are)."""
    builder = TreeBuilder() if target is None else target
    parser = DefusedXMLParser(
        target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    if isinstance(builder, LocatingTreeBuilder):
        builder.expat = parser.parser
    # Anywhere in the document, prolog included (a tree builder sees only the root's inside).
    parser.parser.ProcessingInstructionHandler = _refuse_pi
    parser.parser.CommentHandler = _refuse_comment
    try:
        parser.feed(data)
        document: Element = parser.close()
    except DefusedXmlException as exc:
        raise UnsafeMessage(f"forbidden XML construct: {type(exc).__name__}") from None
    except ParseError as exc:
        raise UnsafeMessage(f"not well-formed XML: {exc}") from None
    for count, (_, depth) in enumerate(_walk(document), 1):
        if depth > MAX_DEPTH or count > MAX_ELEMENTS:
            raise UnsafeMessage("XML tree too deep or too large")
    return document


def _refuse_pi(target: str, data: str) -> None:
    raise UnsafeMessage(f"XML processing instruction {target!r} in the message")


def _refuse_comment(data: str) -> None:
    raise UnsafeMessage("XML comment in the message (it could split a NameID)")


def _walk(element: Element, depth: int = 0) -> Iterator[tuple[Element, int]]:
    yield element, depth
    for child in element:
        yield from _walk(child, depth + 1)


def _check_ids(document: Element, taken: Collection[str] = ()) -> set[str]:
    """Every ID in ``document`` is unique, and none is in ``taken``; returns them."""
    seen: set[str] = set()
    for element in document.iter():
        for name in ("ID", "Id", "id"):
            value = element.get(name)
            if value is None:
                continue
            if value in seen or value in taken:
                raise UnsafeMessage(f"ID {value!r} appears twice (signature wrapping?)")
            seen.add(value)
    return seen


def ids_of(document: Element) -> set[str]:
    """The IDs (``ID``, ``Id``, ``id``) of a document :func:`inspect` has accepted."""
    return _check_ids(document)


def inspect_decrypted(
    plaintext: bytes, *, expected: Literal["Assertion", "NameID"], taken_ids: Collection[str]
) -> None:
    """The plaintext of an EncryptedAssertion (``expected="Assertion"``) or EncryptedID
    (``"NameID"``), before it takes the EncryptedData's place: parsed on its own (it must
    declare the namespaces it uses) with the rules of :func:`inspect` — and ``taken_ids``,
    the IDs of the message around it, which none of its IDs may repeat."""
    document = parse_document(plaintext)
    if document.tag != f"{{{SAML}}}{expected}":
        raise UnsafeMessage(f"decrypted element is {document.tag!r}, expected saml:{expected}")
    _check_ids(document, taken_ids)
    nested = [
        element
        for element in document.iter()
        if element is not document
        and element.tag in (f"{{{SAML}}}Assertion", f"{{{SAML}}}EncryptedAssertion")
    ]
    if nested:
        raise UnsafeMessage("assertion nested inside the decrypted assertion (wrapping?)")
    signatures = list(document.iter(f"{{{DS}}}Signature"))
    if expected == "NameID" and signatures:
        raise UnsafeMessage("ds:Signature inside an encrypted NameID")
    if len(signatures) > 1:
        raise UnsafeMessage("two signatures in the decrypted assertion")
    for signature in signatures:
        if not any(child is signature for child in document):
            raise UnsafeMessage("ds:Signature in an unexpected place (signature wrapping?)")
        _check_signature(signature, document)


def _check_assertions(response: Element) -> None:
    direct = [
        child
        for child in response
        if child.tag in (f"{{{SAML}}}Assertion", f"{{{SAML}}}EncryptedAssertion")
    ]
    if len(direct) > 1:
        raise UnsafeMessage(f"response carries {len(direct)} assertions; exactly one is allowed")
    everywhere = list(response.iter(f"{{{SAML}}}Assertion")) + list(
        response.iter(f"{{{SAML}}}EncryptedAssertion")
    )
    if len(everywhere) != len(direct):
        raise UnsafeMessage("assertion nested outside the response's top level (wrapping?)")


def _check_signatures(document: Element) -> None:
    allowed_parents = {id(document)} | {
        id(child) for child in document if child.tag == f"{{{SAML}}}Assertion"
    }
    parents = {id(child): parent for parent in document.iter() for child in parent}
    signed: set[int] = set()
    for signature in document.iter(f"{{{DS}}}Signature"):
        parent = parents.get(id(signature))
        if parent is None or id(parent) not in allowed_parents:
            raise UnsafeMessage("ds:Signature in an unexpected place (signature wrapping?)")
        if id(parent) in signed:
            raise UnsafeMessage("two signatures on one element")
        signed.add(id(parent))
        _check_signature(signature, parent)


def _check_signature(signature: Element, parent: Element) -> None:
    if signature.find(f"{{{DS}}}Object") is not None:
        raise UnsafeMessage("ds:Object inside a signature")
    method = signature.find(f"{{{DS}}}SignedInfo/{{{DS}}}CanonicalizationMethod")
    if method is None or method.get("Algorithm") not in ALLOWED_C14N:
        raise UnsafeMessage("unexpected canonicalization method")
    references = signature.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    if len(references) != 1:
        raise UnsafeMessage(f"signature has {len(references)} references; exactly one is allowed")
    parent_id = parent.get("ID")
    if not parent_id or references[0].get("URI") != f"#{parent_id}":
        raise UnsafeMessage("signature reference does not point at its enclosing element")
    for transform in references[0].iter(f"{{{DS}}}Transform"):
        if transform.get("Algorithm") not in ALLOWED_TRANSFORMS:
            raise UnsafeMessage(f"unexpected transform {transform.get('Algorithm')!r}")
        if any(child.tag != INCLUSIVE_NAMESPACES for child in transform):
            raise UnsafeMessage("transform with parameters (XPath/XSLT?)")


# --- signed metadata ----------------------------------------------------------------------

MetadataSignatureReason = Literal[
    "verified",  # the root's signature verifies with a trusted certificate
    "unsigned",  # no signature on the root element (perhaps on inner elements: not enough)
    "malformed",  # not safe, well-formed SAML metadata: nothing was checked
    "unusable",  # a signature whose shape is refused (wrapping, transforms, ...)
    "untrusted",  # signed, but no trusted certificate was given to check it
    "mismatch",  # signed, and no trusted certificate verifies it
    "no_xmlsec1",  # xmlsec1 is not installed: nothing could be checked
]


@dataclass(frozen=True, slots=True)
class MetadataSignature:
    """What :func:`verify_metadata_signature` found; ``problem`` says why it is not verified
    (a sentence for logs and admin reports), None when it is."""

    signed: bool
    verified: bool
    problem: str | None
    reason: MetadataSignatureReason


def verify_metadata_signature(
    xml: bytes, certs_pem: Sequence[str], *, root: Element | None = None
) -> MetadataSignature:
    """Does the signature on the root of this IdP metadata verify with one of ``certs_pem``?

    ``root`` is the document already parsed by :func:`parse_document` (saves a parse).
    Never raises on bad input: the outcome says what was wrong. Blocking (xmlsec1 runs as
    a subprocess, once per certificate tried): call it from a worker thread.
    """
    if root is None:
        try:
            root = parse_document(xml)
        except UnsafeMessage as exc:
            return MetadataSignature(False, False, f"metadata refused: {exc}", "malformed")
    if root.tag not in (f"{{{MD}}}EntityDescriptor", f"{{{MD}}}EntitiesDescriptor"):
        problem = f"root element is {root.tag!r}, not md:EntityDescriptor/EntitiesDescriptor"
        return MetadataSignature(False, False, problem, "malformed")
    signature = root.find(f"{{{DS}}}Signature")
    if signature is None:
        if next(root.iter(f"{{{DS}}}Signature"), None) is not None:
            problem = "only an inner element is signed, not the whole document"
        else:
            problem = "the metadata is not signed"
        return MetadataSignature(False, False, problem, "unsigned")
    try:
        _check_metadata_signature_shape(root, signature)
    except UnsafeMessage as exc:
        return MetadataSignature(True, False, f"the signature is unusable: {exc}", "unusable")
    if not certs_pem:
        problem = "the metadata is signed, but no trusted certificate was given to check it"
        return MetadataSignature(True, False, problem, "untrusted")
    try:
        xmlsec = saml2.sigver.get_xmlsec_binary()
    except saml2.sigver.SigverError:
        problem = "xmlsec1 is not installed: the signature cannot be checked"
        return MetadataSignature(True, False, problem, "no_xmlsec1")
    crypto = saml2.sigver.CryptoBackendXmlSec1(xmlsec)
    node = f"{MD}:{root.tag.rsplit('}', 1)[-1]}"
    for cert_pem in certs_pem:
        if _verifies(crypto, xml, cert_pem, node, root.get("ID", "")):
            return MetadataSignature(True, True, None, "verified")
    problem = (
        "the signature does not verify with any trusted certificate: the document was "
        "changed after signing, or signed with another key"
    )
    return MetadataSignature(True, False, problem, "mismatch")


def _check_metadata_signature_shape(root: Element, signature: Element) -> None:
    """The root's signature covers the whole document and is the one xmlsec1 checks: unique
    IDs, one Reference to the root's ID, safe transforms, and no other ds:Signature before
    it in document order (xmlsec1 verifies the first one it finds)."""
    _check_ids(root)
    if next(root.iter(f"{{{DS}}}Signature")) is not signature:
        raise UnsafeMessage("another ds:Signature precedes the document's (signature wrapping?)")
    _check_signature(signature, root)


def _verifies(crypto: Any, xml: bytes, cert_pem: str, node: str, node_id: str) -> bool:
    """xmlsec1 with ``cert_pem`` alone (pysaml2 passes ``--enabled-key-data raw-x509-cert``
    and ``--id-attr:ID`` for the root's element only)."""
    cert_file = saml2.sigver.make_temp(cert_pem.encode(), suffix=".pem", decode=False)
    try:
        return bool(crypto.validate_signature(xml, cert_file.name, "pem", node, node_id))
    except (saml2.sigver.SignatureError, saml2.sigver.XmlsecError):
        return False

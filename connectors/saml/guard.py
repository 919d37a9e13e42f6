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
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterator
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
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


def parse_document(data: bytes) -> Element:
    """Hardened parse: refuses DTDs, entities, external references, PIs, comments, depth."""
    parser = DefusedXMLParser(
        target=TreeBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
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


def _check_ids(document: Element) -> None:
    seen: set[str] = set()
    for element in document.iter():
        for name in ("ID", "Id", "id"):
            value = element.get(name)
            if value is None:
                continue
            if value in seen:
                raise UnsafeMessage(f"ID {value!r} appears twice (signature wrapping?)")
            seen.add(value)


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

"""Hostile SAML responses, generated from a valid signed one (no static XML checked in).

Each :class:`Variant` has a name, a one-line description and a builder that turns a
:class:`Solicitation` (what the hub asked the fake IdP for) into the bytes an attacker
posts. Most start from a response the fake IdP signs correctly and only then move,
duplicate, strip or rewrite parts of it -- the signatures that survive are genuine, so a
variant is refused by the hub's structure and value checks, not by luck.

``Variant.connection`` names the connection settings a variant is meant against (the
response-level wrapping variants need a connection that accepts a signed Response around
an unsigned assertion, else "unsigned assertion" refuses them first and proves nothing);
``Variant.base`` which signatures the starting response carries; ``Variant.replay`` that
the valid response itself is posted twice (the harness does that, not the builder).

:func:`signed_parts_intact` is what the self-tests use to show a wrapping variant still
carries the original signed element and its signature, unchanged (xmlsec1 verifies them
once put back together), and :func:`attempt` posts a variant through the whole hub.
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from lxml import etree

from tests.fakes.saml_idp import (
    DS,
    NS,
    SAML,
    SAMLP,
    FakeSamlIdP,
    SamlAttribute,
    SamlKeyPair,
    parse_xml,
    sign_element,
    verify,
)

EVIL_NAME_ID = "ceo"
XPATH_FILTER = "http://www.w3.org/TR/1999/REC-xpath-19991116"
Base = Literal["both", "assertion", "response", "none"]


@dataclass(frozen=True)
class Solicitation:
    """What the hub's AuthnRequest asked for, and who the attacker wants to be."""

    idp: FakeSamlIdP
    acs_url: str
    sp_entity_id: str
    in_response_to: str | None
    user: str  # the attacker's own account at the IdP (a genuine signed login)
    victim_email: str  # the identity the attacker wants the hub to accept
    max_response_bytes: int = 256 * 1024
    other_key: SamlKeyPair | None = None  # a key no metadata lists
    produced: list[bytes] = field(default_factory=list)  # every genuine response built

    def valid(self, base: Base = "both", **overrides: Any) -> bytes:
        values: dict[str, Any] = {
            "acs_url": self.acs_url,
            "sp_entity_id": self.sp_entity_id,
            "in_response_to": self.in_response_to,
            "user": self.user,
            "sign_response": base in ("both", "response"),
            "sign_assertion": base in ("both", "assertion"),
        }
        xml = self.idp.response(**(values | overrides))
        self.produced.append(xml)
        return xml


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    build: Callable[[Solicitation], bytes]
    base: Base = "assertion"
    connection: Mapping[str, Any] = field(default_factory=dict)
    replay: Literal["same-flow", "new-flow", "unsolicited"] | None = None
    xsw: bool = False  # a signature wrapping variant: signed_parts_intact must hold
    # Every signature in the variant verifies with the IdP's key: only the hub's own
    # checks (values, structure, parsing, size, replay) can refuse it.
    signed_validly: bool = False


# --- tree surgery ----------------------------------------------------------------------------


def _tree(xml: bytes) -> etree._Element:
    return parse_xml(xml)


def _out(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _assertion(root: etree._Element) -> etree._Element:
    found = root.find("saml:Assertion", NS)
    assert found is not None, "no assertion at the response's top level"
    return found


def _signature(element: etree._Element) -> etree._Element:
    found = element.find("ds:Signature", NS)
    assert found is not None, f"{element.tag} carries no signature"
    return found


def _strip_signature(element: etree._Element) -> etree._Element:
    for signature in element.findall("ds:Signature", NS):
        element.remove(signature)
    return element


def _evil_assertion(signed: etree._Element, victim_email: str) -> etree._Element:
    """An unsigned copy of ``signed`` that speaks for the victim, with a fresh ID."""
    evil = _strip_signature(copy.deepcopy(signed))
    evil.set("ID", "_evil" + secrets.token_hex(12))
    _make_evil(evil, victim_email)
    return evil


def _make_evil(assertion: etree._Element, victim_email: str) -> None:
    name_id = assertion.find("saml:Subject/saml:NameID", NS)
    if name_id is not None:
        name_id.text = EVIL_NAME_ID
    for value in assertion.iterfind(
        "saml:AttributeStatement/saml:Attribute/saml:AttributeValue", NS
    ):
        if value.text and "@" in value.text:
            value.text = victim_email


def _after_issuer(parent: etree._Element, element: etree._Element) -> None:
    issuer = parent.find("saml:Issuer", NS)
    parent.insert(0 if issuer is None else parent.index(issuer) + 1, element)


def _extensions(response: etree._Element) -> etree._Element:
    """samlp:Extensions sits after Issuer and Signature, before Status (Core §3.2.2)."""
    extensions = etree.Element(_q(SAMLP, "Extensions"))
    status = response.find("samlp:Status", NS)
    assert status is not None
    status.addprevious(extensions)
    return extensions


def _doctype(xml: bytes, doctype: str) -> bytes:
    """Put a DOCTYPE right after the XML declaration (lxml will not write one for us)."""
    declaration, sep, rest = xml.partition(b"?>")
    assert sep, "no XML declaration"
    return declaration + sep + b"\n" + doctype.encode() + rest


# --- signature wrapping (XSW) --------------------------------------------------------------
# Numbered as in SAML Raider / "On Breaking SAML" (Somorovsky et al., USENIX Security 2012).


def _xsw_response(s: Solicitation, *, inside_signature: bool) -> bytes:
    original = _tree(s.valid("response"))
    evil = copy.deepcopy(original)
    evil.set("ID", "_evil" + secrets.token_hex(12))
    evil_assertion = _evil_assertion(_assertion(evil), s.victim_email)
    evil.replace(_assertion(evil), evil_assertion)
    signature = _signature(evil)
    unsigned_original = _strip_signature(copy.deepcopy(original))
    if inside_signature:
        signature.append(unsigned_original)
    else:
        signature.addprevious(unsigned_original)
    return _out(evil)


def xsw1(s: Solicitation) -> bytes:
    return _xsw_response(s, inside_signature=True)


def xsw2(s: Solicitation) -> bytes:
    return _xsw_response(s, inside_signature=False)


def response_in_extensions(s: Solicitation) -> bytes:
    original = _tree(s.valid("response"))
    evil = _strip_signature(copy.deepcopy(original))
    evil.set("ID", "_evil" + secrets.token_hex(12))
    evil.replace(_assertion(evil), _evil_assertion(_assertion(original), s.victim_email))
    _extensions(evil).append(original)
    return _out(evil)


def xsw3(s: Solicitation) -> bytes:
    root = _tree(s.valid("assertion"))
    signed = _assertion(root)
    signed.addprevious(_evil_assertion(signed, s.victim_email))
    return _out(root)


def evil_assertion_after(s: Solicitation) -> bytes:
    root = _tree(s.valid("assertion"))
    signed = _assertion(root)
    signed.addnext(_evil_assertion(signed, s.victim_email))
    return _out(root)


def xsw4(s: Solicitation) -> bytes:
    root = _tree(s.valid("assertion"))
    signed = _assertion(root)
    evil = _evil_assertion(signed, s.victim_email)
    root.replace(signed, evil)
    evil.append(signed)
    return _out(root)


def _evil_keeps_signature(
    s: Solicitation,
) -> tuple[etree._Element, etree._Element, etree._Element]:
    """XSW5/6/8: the evil copy carries the genuine signature (still pointing at the
    original's ID); returns (root, that signature, the unsigned original)."""
    root = _tree(s.valid("assertion"))
    signed = _assertion(root)
    evil = copy.deepcopy(signed)
    evil.set("ID", "_evil" + secrets.token_hex(12))
    _make_evil(evil, s.victim_email)
    root.replace(signed, evil)
    return root, _signature(evil), _strip_signature(signed)


def xsw5(s: Solicitation) -> bytes:
    root, _, original = _evil_keeps_signature(s)
    root.append(original)
    return _out(root)


def xsw6(s: Solicitation) -> bytes:
    root, signature, original = _evil_keeps_signature(s)
    signature.append(original)
    return _out(root)


def xsw7(s: Solicitation) -> bytes:
    root = _tree(s.valid("assertion"))
    signed = _assertion(root)
    root.replace(signed, _evil_assertion(signed, s.victim_email))
    _extensions(root).append(signed)
    return _out(root)


def evil_assertion_in_extensions(s: Solicitation) -> bytes:
    root = _tree(s.valid("assertion"))
    _extensions(root).append(_evil_assertion(_assertion(root), s.victim_email))
    return _out(root)


def xsw8(s: Solicitation) -> bytes:
    root, signature, original = _evil_keeps_signature(s)
    holder = etree.SubElement(signature, _q(DS, "Object"))
    holder.append(original)
    return _out(root)


def signed_assertion_in_advice(s: Solicitation) -> bytes:
    root = _tree(s.valid("assertion"))
    signed = _assertion(root)
    evil = _evil_assertion(signed, s.victim_email)
    root.replace(signed, evil)
    conditions = evil.find("saml:Conditions", NS)
    assert conditions is not None
    advice = etree.Element(_q(SAML, "Advice"))
    conditions.addnext(advice)
    advice.append(signed)
    return _out(root)


# --- signatures missing, foreign or not covering what is used ----------------------------


def signature_removed(s: Solicitation) -> bytes:
    root = _tree(s.valid("both"))
    _strip_signature(_assertion(root))
    _strip_signature(root)
    return _out(root)


def assertion_unsigned(s: Solicitation) -> bytes:
    return s.valid("response")


def second_assertion_injected(s: Solicitation) -> bytes:
    return evil_assertion_after(s)


def two_signed_assertions(s: Solicitation) -> bytes:
    root = _tree(s.valid("assertion"))
    other = _tree(s.valid("assertion", name_id=EVIL_NAME_ID, attributes={"mail": [s.victim_email]}))
    _assertion(root).addnext(_assertion(other))
    return _out(sign_root(root, s))


def sign_root(root: etree._Element, s: Solicitation) -> etree._Element:
    return _tree(sign_element(_out(root), root.get("ID", ""), s.idp.signing_key))


def tampered_after_signing(s: Solicitation) -> bytes:
    root = _tree(s.valid("both"))
    _make_evil(_assertion(root), s.victim_email)
    return _out(root)


def another_key(s: Solicitation) -> bytes:
    assert s.other_key is not None
    return s.valid("both", signer=s.other_key)


def wrong_issuer(s: Solicitation) -> bytes:
    return s.valid("both", issuer="https://idp.evil.test/saml")


def xpath_transform(s: Solicitation) -> bytes:
    """Signed with an XPath filter that leaves the Subject out of the digest, then the
    NameID is rewritten: the signature still verifies, over less than the assertion."""
    root = _tree(s.valid("none"))
    assertion = _assertion(root)
    transforms = [
        etree.Element(_q(DS, "Transform"), Algorithm=XPATH_FILTER),
        etree.Element(
            _q(DS, "Transform"), Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"
        ),
        etree.Element(_q(DS, "Transform"), Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"),
    ]
    xpath = etree.SubElement(transforms[0], _q(DS, "XPath"), nsmap={"saml": SAML})
    xpath.text = "not(ancestor-or-self::saml:Subject)"
    signed = _tree(
        sign_element(_out(root), assertion.get("ID", ""), s.idp.signing_key, transforms=transforms)
    )
    name_id = signed.find("saml:Assertion/saml:Subject/saml:NameID", NS)
    assert name_id is not None
    name_id.text = EVIL_NAME_ID
    return _out(signed)


# --- comments, DTDs, entities, size -------------------------------------------------------


def comment_in_name_id(s: Solicitation) -> bytes:
    """The IdP signed ``<victim>.evil.example``; a comment after ``<victim>`` keeps the
    signature valid (exclusive c14n drops comments) and fools a parser that reads only the
    first text node."""
    local, _, domain = s.victim_email.partition("@")
    signed_value = f"{s.victim_email}.evil.example"
    xml = s.valid(
        "both",
        name_id=signed_value,
        attributes=[SamlAttribute("urn:oid:0.9.2342.19200300.100.1.3", (signed_value,), "mail")],
    )
    split = f"{local}@{domain}<!---->.evil.example".encode()
    assert xml.count(signed_value.encode()) == 2
    return xml.replace(signed_value.encode(), split)


def xxe(s: Solicitation) -> bytes:
    root = _tree(s.valid("both"))
    name_id = root.find("saml:Assertion/saml:Subject/saml:NameID", NS)
    assert name_id is not None
    name_id.text = "XXE_HERE"
    xml = _out(root).replace(b"XXE_HERE", b"&xxe;")
    return _doctype(xml, '<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>')


def billion_laughs(s: Solicitation) -> bytes:
    root = _tree(s.valid("both"))
    name_id = root.find("saml:Assertion/saml:Subject/saml:NameID", NS)
    assert name_id is not None
    name_id.text = "LOL_HERE"
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    xml = _out(root).replace(b"LOL_HERE", b"&lol9;")
    return _doctype(xml, "<!DOCTYPE samlp:Response [" + "".join(entities) + "]>")


def dtd(s: Solicitation) -> bytes:
    """A harmless internal DTD in front of a validly signed response: refused all the same."""
    return _doctype(s.valid("both"), "<!DOCTYPE samlp:Response [<!ELEMENT samlp:Response ANY>]>")


def oversized(s: Solicitation) -> bytes:
    """Valid and signed, only too big: the size cap alone must refuse it."""
    padding = "x" * (s.max_response_bytes + 1024)
    extra = SamlAttribute("padding", (padding,))
    user = s.idp.user(s.user)
    return s.valid("both", attributes=[*user.attributes(s.idp.attribute_names), extra])


# --- values the hub must check itself ----------------------------------------------------


def _valid_with(**overrides: Any) -> Callable[[Solicitation], bytes]:
    def build(s: Solicitation) -> bytes:
        return s.valid("both", **overrides)

    return build


def no_in_response_to(s: Solicitation) -> bytes:
    return s.valid("both", in_response_to=None)


WRONG = "https://wrong.example/callback/acme-saml"

VARIANTS: tuple[Variant, ...] = (
    # signature wrapping
    Variant(
        "xsw1",
        "evil Response wraps the signed one's Signature, the unsigned original Response inside it",
        xsw1,
        base="response",
        connection={"want_assertions_signed": False},
        xsw=True,
    ),
    Variant(
        "xsw2",
        "evil Response, the unsigned original Response placed just before the Signature",
        xsw2,
        base="response",
        connection={"want_assertions_signed": False},
        xsw=True,
    ),
    Variant(
        "response_in_extensions",
        "the signed Response moved whole into samlp:Extensions of an unsigned evil Response",
        response_in_extensions,
        base="response",
        connection={"want_assertions_signed": False},
        xsw=True,
    ),
    Variant("xsw3", "evil unsigned assertion placed before the signed one", xsw3, xsw=True),
    Variant(
        "evil_assertion_after",
        "evil unsigned assertion placed after the signed one",
        evil_assertion_after,
        xsw=True,
    ),
    Variant("xsw4", "evil assertion takes the signed one's place and wraps it", xsw4, xsw=True),
    Variant(
        "xsw5",
        "evil copy keeps the Signature; the unsigned original moved to the response's end",
        xsw5,
        xsw=True,
    ),
    Variant(
        "xsw6",
        "evil copy keeps the Signature; the unsigned original moved inside that Signature",
        xsw6,
        xsw=True,
    ),
    Variant(
        "xsw7",
        "signed assertion moved into samlp:Extensions; evil unsigned one in its place",
        xsw7,
        xsw=True,
    ),
    Variant(
        "evil_assertion_in_extensions",
        "evil unsigned assertion in samlp:Extensions, the signed one left in place",
        evil_assertion_in_extensions,
        xsw=True,
    ),
    Variant(
        "xsw8",
        "evil copy keeps the Signature; the unsigned original inside a ds:Object in it",
        xsw8,
        xsw=True,
    ),
    Variant(
        "signed_assertion_in_advice",
        "signed assertion moved into the saml:Advice of an evil unsigned assertion",
        signed_assertion_in_advice,
        xsw=True,
    ),
    # signatures
    Variant("signature_removed", "every ds:Signature stripped", signature_removed, base="both"),
    Variant(
        "assertion_unsigned",
        "signed Response around an unsigned assertion, the connection wanting signed assertions",
        assertion_unsigned,
        base="response",
    ),
    Variant(
        "second_assertion_injected",
        "an unsigned assertion appended beside the signed one",
        second_assertion_injected,
    ),
    Variant(
        "two_signed_assertions",
        "two validly signed assertions (two people) in one signed response",
        two_signed_assertions,
    ),
    Variant(
        "tampered_after_signing",
        "NameID and email rewritten after signing",
        tampered_after_signing,
        base="both",
    ),
    Variant(
        "another_key",
        "Response and assertion signed by a key the IdP metadata does not list",
        another_key,
        base="both",
    ),
    Variant(
        "wrong_issuer",
        "signed by the IdP's own key but issued under another entity id",
        wrong_issuer,
        base="both",
    ),
    Variant(
        "xpath_transform",
        "signature with an XPath transform leaving the Subject out; NameID rewritten after",
        xpath_transform,
    ),
    # parsing
    Variant(
        "comment_in_name_id",
        "comment splits a signed NameID/email: victim@domain<!---->.evil.example",
        comment_in_name_id,
        base="both",
    ),
    Variant("xxe", "external entity to /etc/passwd in the NameID", xxe, base="both"),
    Variant("billion_laughs", "nested entity expansion (10^9 lols)", billion_laughs, base="both"),
    Variant("dtd", "an internal DTD before a validly signed response", dtd, base="both"),
    Variant("oversized", "validly signed but over max_response_bytes", oversized, base="both"),
    # values
    Variant(
        "expired",
        "NotOnOrAfter 10 minutes ago (beyond the skew)",
        _valid_with(not_on_or_after=-600, confirmation_not_on_or_after=-600),
        base="both",
    ),
    Variant(
        "confirmation_expired",
        "SubjectConfirmationData NotOnOrAfter 10 minutes ago, Conditions still fine",
        _valid_with(confirmation_not_on_or_after=-600),
        base="both",
    ),
    Variant(
        "not_yet_valid",
        "NotBefore 10 minutes ahead (beyond the skew)",
        _valid_with(not_before=600),
        base="both",
    ),
    Variant(
        "wrong_audience",
        "Audience is another SP",
        _valid_with(audience="https://other-sp.example"),
        base="both",
    ),
    Variant(
        "missing_audience",
        "no AudienceRestriction at all (pysaml2 accepts that)",
        _valid_with(audience=None),
        base="both",
    ),
    Variant(
        "wrong_destination",
        "Response Destination is another URL",
        _valid_with(destination=WRONG),
        base="both",
    ),
    Variant(
        "missing_destination",
        "signed Response with no Destination (Bindings §3.5.5.2 requires it)",
        _valid_with(destination=None),
        base="both",
    ),
    Variant(
        "wrong_recipient",
        "SubjectConfirmationData Recipient is another URL",
        _valid_with(recipient=WRONG),
        base="both",
    ),
    Variant(
        "missing_not_on_or_after",
        "bearer SubjectConfirmationData with no NotOnOrAfter",
        _valid_with(confirmation_not_on_or_after=None),
        base="both",
    ),
    Variant(
        "wrong_in_response_to",
        "InResponseTo names a request the hub never sent",
        _valid_with(in_response_to="_not-the-request"),
        base="both",
    ),
    Variant(
        "wrong_confirmation_in_response_to",
        "Response InResponseTo right, SubjectConfirmationData InResponseTo another request",
        _valid_with(confirmation_in_response_to="_not-the-request"),
        base="both",
    ),
    Variant(
        "no_in_response_to",
        "no InResponseTo at all although the hub solicited the login",
        no_in_response_to,
        base="both",
    ),
    # replay (the harness posts the valid response twice)
    Variant(
        "replay_same_flow",
        "the valid response posted again with the same RelayState",
        _valid_with(),
        base="both",
        replay="same-flow",
    ),
    Variant(
        "replay_new_flow",
        "the valid response posted again into a new login flow",
        _valid_with(),
        base="both",
        replay="new-flow",
    ),
    Variant(
        "replay_unsolicited",
        "an unsolicited valid response posted twice (IdP-initiated allowed): the id cache",
        no_in_response_to,
        base="both",
        connection={"allow_idp_initiated": True},
        replay="unsolicited",
    ),
)

# Every signature in these verifies with the IdP's key (the self-tests check it).
_SIGNED_VALIDLY = {
    "assertion_unsigned",
    "two_signed_assertions",
    "wrong_issuer",
    "xpath_transform",
    "comment_in_name_id",
    "dtd",
    "oversized",
    "expired",
    "confirmation_expired",
    "not_yet_valid",
    "wrong_audience",
    "missing_audience",
    "wrong_destination",
    "missing_destination",
    "wrong_recipient",
    "missing_not_on_or_after",
    "wrong_in_response_to",
    "wrong_confirmation_in_response_to",
    "no_in_response_to",
    "replay_same_flow",
    "replay_new_flow",
    "replay_unsolicited",
}
VARIANTS = tuple(
    dataclasses.replace(variant, signed_validly=variant.name in _SIGNED_VALIDLY)
    for variant in VARIANTS
)
BY_NAME = {variant.name: variant for variant in VARIANTS}


def signed_parts_intact(xml: bytes, original: bytes, key: SamlKeyPair) -> bool:
    """True when ``xml`` still holds every element the original response signed, unchanged,
    and the signature over it: put back together (the element with the signed ID, its
    genuine ds:Signature re-attached where the IdP put it) xmlsec1 verifies it with ``key``."""
    source = _tree(original)
    variant = _tree(xml)
    for signature in source.iter(_q(DS, "Signature")):
        reference = signature.find("ds:SignedInfo/ds:Reference", NS)
        assert reference is not None
        signed_id = reference.get("URI", "")[1:]
        values = {el.text for el in variant.iter(_q(DS, "SignatureValue"))}
        if signature.findtext("ds:SignatureValue", namespaces=NS) not in values:
            return False
        candidates = [el for el in variant.iter() if el.get("ID") == signed_id]
        if not any(_verifies_reassembled(el, signature, key) for el in candidates):
            return False
    return True


def _verifies_reassembled(
    element: etree._Element, signature: etree._Element, key: SamlKeyPair
) -> bool:
    candidate = copy.deepcopy(element)
    _strip_signature(candidate)
    _after_issuer(candidate, copy.deepcopy(signature))
    return verify(candidate, key)


# --- through the hub ---------------------------------------------------------------------


@dataclass
class Attempt:
    """What the hub answered: ``first`` the POST of the response (normally 303), ``final``
    the page that completes (or refuses) the login; ``earlier`` for replays: the answer to
    the first, legitimate post."""

    post: httpx.Response
    final: httpx.Response
    earlier: httpx.Response | None = None


async def post_response(
    client: httpx.AsyncClient, acs_path: str, xml: bytes, relay_state: str | None, idp: FakeSamlIdP
) -> Attempt:
    """POST a response to the ACS as the browser would, then follow the hub's 303."""
    posted = await client.post(acs_path, data=idp.post_params(xml, relay_state))
    if posted.status_code != 303:
        return Attempt(posted, posted)
    final = await client.get(posted.headers["location"])
    return Attempt(posted, final)


def form_fields(html: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of an auto-submitting POST-binding page."""
    page = etree.fromstring(html.encode(), etree.HTMLParser())
    form = page.find(".//form")
    assert form is not None, "no form in the POST-binding page"
    fields = {
        str(i.get("name")): str(i.get("value", ""))
        for i in form.iter("input")
        if i.get("name") is not None
    }
    return str(form.get("action")), fields


def acs_path_of(acs_url: str) -> str:
    return "/" + acs_url.split("://", 1)[1].split("/", 1)[1]


__all__ = [
    "BY_NAME",
    "VARIANTS",
    "Attempt",
    "Solicitation",
    "Variant",
    "acs_path_of",
    "form_fields",
    "post_response",
    "signed_parts_intact",
]

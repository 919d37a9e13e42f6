"""An in-process fake SAML 2.0 identity provider, with fresh keys per instance.

No HTTP: the tests carry the messages themselves. Responses are built UNSIGNED with lxml,
every override is applied, and only THEN are the Assertion and/or the Response signed
(RSA-SHA256, exclusive c14n, enveloped) by Debian's ``xmlsec1`` -- the same command
pysaml2's ``CryptoBackendXmlSec1.sign_statement`` runs. So a test can hold a response whose
signature is valid and whose audience, destination, recipient or validity window is wrong:
those must be refused by the hub's own checks, not by the signature.

Small API::

    idp = FakeSamlIdP("https://idp.acme.test/saml",
                      users=[SamlUser("alice", email="alice@acme.test", groups=("eng",))],
                      sign_response=True, sign_assertion=True)
    idp.metadata_xml(want_authn_requests_signed=False)  # -> str: IdPSSODescriptor (slo=False:
                                                        #    no SingleLogoutService)
    request = idp.read_authn_request(location_url)      # Redirect binding: a URL
    request = idp.read_authn_request(form_fields)       # POST binding: {"SAMLRequest": ...}
    #   -> AuthnRequestInfo(id, acs_url, issuer, signed, binding, relay_state, destination,
    #      name_id_format, xml); ``sp_cert=PEM`` also verifies the signature (else raises)
    xml = idp.response(acs_url=request.acs_url, sp_entity_id=request.issuer,
                       in_response_to=request.id, user="alice", audience="https://x")
    form = idp.post_params(xml, request.relay_state)    # {"SAMLResponse": b64, "RelayState"}

``response`` overrides (keyword-only; each defaults to what a correct IdP sends, ``None``
removes the element or attribute): ``issuer``, ``destination``, ``recipient``,
``audience``, ``confirmation_in_response_to`` (defaults to ``in_response_to``),
``not_before`` / ``not_on_or_after`` (Conditions) and ``confirmation_not_on_or_after``
(SubjectConfirmationData), all in seconds relative to now; ``issue_instant`` (seconds
relative to now), ``name_id``, ``name_id_format``, ``attributes`` (replace the user's:
``{name: values}``, or ``SamlAttribute`` items with a FriendlyName/NameFormat),
``attribute_names`` (``"oid"``, ``"uri"`` or ``"basic"``: how the user's attributes are
named), ``authn_context``, ``session_index``, ``response_id`` / ``assertion_id`` (replays),
``status`` (not Success: no assertion), ``encrypt_to`` (an SP certificate, PEM: the signed
assertion becomes an EncryptedAssertion, AES-256-CBC or AES-128-GCM + RSA-OAEP),
``sign_response`` / ``sign_assertion`` (per call), ``signer`` (another ``SamlKeyPair``).

Certificates: ``add_next_key(common_name=...)`` publishes a second certificate (metadata
lists both for the overlap), ``rotate()`` signs with the newest one from then on,
``drop_old_keys()`` ends the overlap. ``SamlKeyPair.generate(...)`` makes a key no metadata
knows ("signed by another key"). ``sign(xml, element_id, signer=..., transforms=...)`` signs
any element; ``verify(xml_or_element, cert)`` checks a signature with xmlsec1 (the corpus's
self-tests use both).

Single logout: ``logout_request(...)`` (IdP-initiated), ``read_logout_request(...)``
(answering the SP's), ``logout_response(...)``, ``read_logout_response(...)``;
``redirect_url(endpoint, xml, kind=..., relay_state=..., sign=...)`` encodes any message
for the HTTP-Redirect binding (deflate + base64, the query-string signature of SAML
Bindings §3.4.4.1), ``post_params(xml, relay_state, kind=...)`` for HTTP-POST.

xmlsec1 runs as a subprocess (a few milliseconds per signature); keys are generated once
per instance and written to a private temporary directory removed with the instance.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import functools
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from lxml import etree

from connectors.saml.keys import self_signed

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XS = "http://www.w3.org/2001/XMLSchema"
NS = {"samlp": SAMLP, "saml": SAML, "md": MD, "ds": DS, "xenc": XENC}

BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
STATUS_AUTHN_FAILED = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
ATTRNAME_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
ATTRNAME_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
AC_PASSWORD_PROTECTED = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
AES256_CBC = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
AES128_GCM = "http://www.w3.org/2009/xmlenc11#aes128-gcm"
RSA_OAEP_MGF1P = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"

AttributeNames = Literal["oid", "uri", "basic"]
Encryption = Literal["aes256-cbc", "aes128-gcm"]

# Identity field -> (basic name, OID, claim URI, FriendlyName of the OID).
_ATTRIBUTE_NAMES: dict[str, tuple[str, str, str, str]] = {
    "email": (
        "email",
        "urn:oid:0.9.2342.19200300.100.1.3",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        "mail",
    ),
    "name": (
        "displayName",
        "urn:oid:2.16.840.1.113730.3.1.241",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "displayName",
    ),
    "groups": (
        "groups",
        "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
        "http://schemas.xmlsoap.org/claims/Group",
        "isMemberOf",
    ),
    "roles": (
        "roles",
        "urn:oid:1.3.6.1.4.1.5923.1.1.1.1",
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        "eduPersonAffiliation",
    ),
}


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()  # "what a correct IdP would send" for an override


class SamlFakeError(AssertionError):
    """The SP sent something the fake cannot read, or a signature did not verify."""


@dataclass(frozen=True)
class SamlAttribute:
    name: str
    values: tuple[str, ...]
    friendly_name: str | None = None
    name_format: str | None = None  # None: uri for urn:/http names, basic otherwise


@dataclass(frozen=True)
class SamlUser:
    name_id: str
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    name_id_format: str = NAMEID_PERSISTENT
    extra: tuple[SamlAttribute, ...] = ()

    def attributes(self, names: AttributeNames) -> list[SamlAttribute]:
        values = {
            "email": (self.email,) if self.email else (),
            "name": (self.name,) if self.name else (),
            "groups": self.groups,
            "roles": self.roles,
        }
        out: list[SamlAttribute] = []
        for key, found in values.items():
            if not found:
                continue
            basic, oid, uri, friendly = _ATTRIBUTE_NAMES[key]
            if names == "oid":
                out.append(SamlAttribute(oid, tuple(found), friendly, ATTRNAME_URI))
            elif names == "uri":
                out.append(SamlAttribute(uri, tuple(found), None, ATTRNAME_URI))
            else:
                out.append(SamlAttribute(basic, tuple(found), None, ATTRNAME_BASIC))
        return out + list(self.extra)


@dataclass(frozen=True)
class SamlKeyPair:
    """An RSA key and its self-signed certificate, as PEM files xmlsec1 can read."""

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    key_path: Path
    cert_path: Path

    @classmethod
    def generate(
        cls,
        directory: Path | None = None,
        *,
        common_name: str = "fake-saml-idp",
        valid_days: float = 365,
        clock: Callable[[], float] = time.time,
    ) -> SamlKeyPair:
        if directory is None:
            directory = _shared_tempdir()
        now = dt.datetime.fromtimestamp(clock(), dt.UTC)
        key, cert = self_signed(
            common_name,
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=valid_days),
        )
        stem = secrets.token_hex(6)
        key_path = directory / f"{stem}.key.pem"
        cert_path = directory / f"{stem}.cert.pem"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, key_path, cert_path)

    @property
    def cert_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def cert_b64(self) -> str:
        """The DER certificate in base64, as metadata and KeyInfo carry it."""
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()


@dataclass(frozen=True, kw_only=True)
class _ReceivedInfo:
    """What every message the SP sent carries, as read by ``FakeSamlIdP.read_*``."""

    id: str
    issuer: str | None
    signed: bool
    binding: Literal["redirect", "post"]
    relay_state: str | None = None
    destination: str | None = None
    xml: bytes = b""


@dataclass(frozen=True, kw_only=True)
class AuthnRequestInfo(_ReceivedInfo):
    acs_url: str | None
    name_id_format: str | None = None


@dataclass(frozen=True, kw_only=True)
class LogoutRequestInfo(_ReceivedInfo):
    name_id: str | None
    session_index: str | None


@dataclass(frozen=True, kw_only=True)
class LogoutResponseInfo(_ReceivedInfo):
    in_response_to: str | None
    status: str | None


@dataclass(frozen=True)
class _Message:
    root: etree._Element
    binding: Literal["redirect", "post"]
    relay_state: str | None
    signed: bool
    xml: bytes

    def info(self) -> dict[str, Any]:
        """The fields every ``*Info`` shares."""
        return {
            "id": self.root.get("ID", ""),
            "issuer": _text(self.root.find("saml:Issuer", NS)),
            "signed": self.signed,
            "binding": self.binding,
            "relay_state": self.relay_state,
            "destination": self.root.get("Destination"),
            "xml": self.xml,
        }


class FakeSamlIdP:
    def __init__(
        self,
        entity_id: str = "https://idp.acme.test/saml",
        *,
        users: Iterable[SamlUser] = (),
        sign_response: bool = True,
        sign_assertion: bool = True,
        attribute_names: AttributeNames = "oid",
        cert_valid_days: float = 365,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.entity_id = entity_id
        self.users = list(users) or [
            SamlUser("user-1", email="user1@acme.test", name="User One", groups=("staff",))
        ]
        self.sign_response = sign_response
        self.sign_assertion = sign_assertion
        self.attribute_names: AttributeNames = attribute_names
        self.clock = clock
        self.directory = _private_tempdir(self)
        first = SamlKeyPair.generate(self.directory, valid_days=cert_valid_days, clock=clock)
        self.keys: list[SamlKeyPair] = [first]  # published in metadata, oldest first
        self.signing_key = first
        parts = urlsplit(entity_id)
        origin = f"{parts.scheme}://{parts.netloc}"
        self.sso_redirect_url = f"{origin}/saml/sso/redirect"
        self.sso_post_url = f"{origin}/saml/sso/post"
        self.slo_redirect_url = f"{origin}/saml/slo/redirect"
        self.slo_post_url = f"{origin}/saml/slo/post"

    def close(self) -> None:
        """Remove the key files now (else they go when the instance is collected)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- keys and metadata ---------------------------------------------------------------

    def add_next_key(
        self, *, valid_days: float = 365, common_name: str = "fake-saml-idp"
    ) -> SamlKeyPair:
        """Publish a second certificate beside the current one (the rollover's overlap)."""
        key = SamlKeyPair.generate(
            self.directory, common_name=common_name, valid_days=valid_days, clock=self.clock
        )
        self.keys.append(key)
        return key

    def rotate(self) -> SamlKeyPair:
        """Sign with the newest published key from now on (adding one if there is none)."""
        if self.keys[-1] is self.signing_key:
            self.add_next_key()
        self.signing_key = self.keys[-1]
        return self.signing_key

    def drop_old_keys(self) -> None:
        """End the overlap: only the signing key stays in the metadata."""
        self.keys = [self.signing_key]

    def user(self, name: str | SamlUser | None) -> SamlUser:
        if isinstance(name, SamlUser):
            return name
        if name is None:
            return self.users[0]
        for user in self.users:
            if name in (user.name_id, user.email):
                return user
        raise KeyError(f"fake SAML IdP has no user {name!r}")

    def metadata_xml(
        self,
        *,
        want_authn_requests_signed: bool = False,
        valid_until: float | None = None,
        slo: bool = True,
    ) -> str:
        """The IdP's EntityDescriptor; ``slo=False`` leaves out the SingleLogoutService."""
        md = etree.Element(_q(MD, "EntityDescriptor"), nsmap={"md": MD, "ds": DS})
        md.set("entityID", self.entity_id)
        if valid_until is not None:
            md.set("validUntil", self._instant(valid_until))
        idp = etree.SubElement(md, _q(MD, "IDPSSODescriptor"))
        idp.set("protocolSupportEnumeration", SAMLP)
        idp.set("WantAuthnRequestsSigned", "true" if want_authn_requests_signed else "false")
        for key in self.keys:
            descriptor = etree.SubElement(idp, _q(MD, "KeyDescriptor"), use="signing")
            info = etree.SubElement(descriptor, _q(DS, "KeyInfo"))
            data = etree.SubElement(info, _q(DS, "X509Data"))
            etree.SubElement(data, _q(DS, "X509Certificate")).text = key.cert_b64
        for binding, url in (
            (BINDING_REDIRECT, self.slo_redirect_url),
            (BINDING_POST, self.slo_post_url),
        ):
            if slo:
                etree.SubElement(idp, _q(MD, "SingleLogoutService"), Binding=binding, Location=url)
        for fmt in (NAMEID_PERSISTENT, NAMEID_EMAIL, NAMEID_TRANSIENT):
            etree.SubElement(idp, _q(MD, "NameIDFormat")).text = fmt
        for binding, url in (
            (BINDING_REDIRECT, self.sso_redirect_url),
            (BINDING_POST, self.sso_post_url),
        ):
            etree.SubElement(idp, _q(MD, "SingleSignOnService"), Binding=binding, Location=url)
        return etree.tostring(md, encoding="unicode")

    # --- responses -------------------------------------------------------------------------

    def response(
        self,
        *,
        acs_url: str,
        sp_entity_id: str,
        in_response_to: str | None,
        user: str | SamlUser | None = None,
        issuer: str | None = DEFAULT,
        destination: str | None = DEFAULT,
        recipient: str | None = DEFAULT,
        audience: str | None = DEFAULT,
        confirmation_in_response_to: str | None = DEFAULT,
        not_before: float | None = -60,
        not_on_or_after: float | None = 300,
        confirmation_not_on_or_after: float | None = 300,
        issue_instant: float = 0,
        name_id: str | None = DEFAULT,
        name_id_format: str | None = DEFAULT,
        attributes: Mapping[str, Sequence[str]] | Sequence[SamlAttribute] | None = DEFAULT,
        attribute_names: AttributeNames | None = None,
        authn_context: str | None = AC_PASSWORD_PROTECTED,
        session_index: str | None = DEFAULT,
        response_id: str | None = None,
        assertion_id: str | None = None,
        status: str = STATUS_SUCCESS,
        status_message: str | None = None,
        encrypt_to: str | bytes | None = None,
        encryption: Encryption = "aes256-cbc",
        sign_response: bool | None = None,
        sign_assertion: bool | None = None,
        signer: SamlKeyPair | None = None,
    ) -> bytes:
        """A SAML Response (XML bytes) answering ``in_response_to`` (None: unsolicited)."""
        person = self.user(user)
        response_id = response_id or _new_id()
        issuer = self.entity_id if issuer is DEFAULT else issuer
        root = self._protocol_message(
            "Response",
            response_id,
            issue_instant=issue_instant,
            destination=acs_url if destination is DEFAULT else destination,
            in_response_to=in_response_to,
            issuer=issuer,
        )
        status_el = _status(root, status)
        if status_message is not None:
            etree.SubElement(status_el, _q(SAMLP, "StatusMessage")).text = status_message
        if status != STATUS_SUCCESS:
            xml = _serialize(root)
            return self._sign_if(xml, response_id, sign_response, signer)

        assertion_id = assertion_id or _new_id()
        assertion = etree.SubElement(root, _q(SAML, "Assertion"), nsmap={"xs": XS, "xsi": XSI})
        assertion.set("ID", assertion_id)
        assertion.set("Version", "2.0")
        assertion.set("IssueInstant", self._instant(issue_instant))
        if issuer is not None:
            etree.SubElement(assertion, _q(SAML, "Issuer")).text = issuer
        subject = etree.SubElement(assertion, _q(SAML, "Subject"))
        name_id = person.name_id if name_id is DEFAULT else name_id
        if name_id is not None:
            nid = etree.SubElement(subject, _q(SAML, "NameID"))
            fmt = person.name_id_format if name_id_format is DEFAULT else name_id_format
            _set(nid, "Format", fmt)
            nid.set("SPNameQualifier", sp_entity_id)
            nid.text = name_id
        confirmation = etree.SubElement(subject, _q(SAML, "SubjectConfirmation"), Method=CM_BEARER)
        data = etree.SubElement(confirmation, _q(SAML, "SubjectConfirmationData"))
        if confirmation_in_response_to is DEFAULT:
            confirmation_in_response_to = in_response_to
        _set(data, "InResponseTo", confirmation_in_response_to)
        _set(data, "NotOnOrAfter", self._instant(confirmation_not_on_or_after))
        _set(data, "Recipient", acs_url if recipient is DEFAULT else recipient)
        conditions = etree.SubElement(assertion, _q(SAML, "Conditions"))
        _set(conditions, "NotBefore", self._instant(not_before))
        _set(conditions, "NotOnOrAfter", self._instant(not_on_or_after))
        audience = sp_entity_id if audience is DEFAULT else audience
        if audience is not None:
            restriction = etree.SubElement(conditions, _q(SAML, "AudienceRestriction"))
            etree.SubElement(restriction, _q(SAML, "Audience")).text = audience
        authn = etree.SubElement(assertion, _q(SAML, "AuthnStatement"))
        authn.set("AuthnInstant", self._instant(issue_instant))
        index = secrets.token_hex(12) if session_index is DEFAULT else session_index
        _set(authn, "SessionIndex", index)
        if authn_context is not None:
            context = etree.SubElement(authn, _q(SAML, "AuthnContext"))
            etree.SubElement(context, _q(SAML, "AuthnContextClassRef")).text = authn_context
        self._add_attributes(assertion, person, attributes, attribute_names)

        xml = _serialize(root)
        if self.sign_assertion if sign_assertion is None else sign_assertion:
            xml = self.sign(xml, assertion_id, signer=signer)
        if encrypt_to is not None:
            xml = _encrypt_assertion(xml, assertion_id, encrypt_to, encryption)
        return self._sign_if(xml, response_id, sign_response, signer)

    def _sign_if(
        self, xml: bytes, element_id: str, wanted: bool | None, signer: SamlKeyPair | None
    ) -> bytes:
        if self.sign_response if wanted is None else wanted:
            return self.sign(xml, element_id, signer=signer)
        return xml

    def _add_attributes(
        self,
        assertion: etree._Element,
        person: SamlUser,
        attributes: Mapping[str, Sequence[str]] | Sequence[SamlAttribute] | None,
        names: AttributeNames | None,
    ) -> None:
        if attributes is None:
            return
        if attributes is DEFAULT:
            items = person.attributes(names or self.attribute_names)
        elif isinstance(attributes, Mapping):
            items = [SamlAttribute(k, tuple(v)) for k, v in attributes.items()]
        else:
            items = list(attributes)
        if not items:
            return
        statement = etree.SubElement(assertion, _q(SAML, "AttributeStatement"))
        for item in items:
            attr = etree.SubElement(statement, _q(SAML, "Attribute"), Name=item.name)
            fmt = item.name_format or (
                ATTRNAME_URI if item.name.startswith(("urn:", "http")) else ATTRNAME_BASIC
            )
            attr.set("NameFormat", fmt)
            _set(attr, "FriendlyName", item.friendly_name)
            for value in item.values:
                el = etree.SubElement(attr, _q(SAML, "AttributeValue"))
                el.set(_q(XSI, "type"), "xs:string")
                el.text = value

    @staticmethod
    def post_params(
        xml: bytes, relay_state: str | None = None, *, kind: str = "SAMLResponse"
    ) -> dict[str, str]:
        """The HTTP-POST binding's form fields."""
        params = {kind: base64.b64encode(xml).decode()}
        if relay_state is not None:
            params["RelayState"] = relay_state
        return params

    def redirect_url(
        self,
        endpoint: str,
        xml: bytes,
        *,
        kind: str = "SAMLRequest",
        relay_state: str | None = None,
        sign: bool = True,
        signer: SamlKeyPair | None = None,
    ) -> str:
        """The HTTP-Redirect binding: DEFLATE + base64 in the query, signed over the query
        string (SAML Bindings §3.4.4.1) with RSA-SHA256 when ``sign``."""
        compressor = zlib.compressobj(wbits=-15)
        raw = compressor.compress(xml) + compressor.flush()
        query = f"{kind}={quote(base64.b64encode(raw).decode(), safe='')}"
        if relay_state is not None:
            query += f"&RelayState={quote(relay_state, safe='')}"
        if sign:
            query += f"&SigAlg={quote(RSA_SHA256, safe='')}"
            key = (signer or self.signing_key).private_key
            signature = key.sign(query.encode(), asym_padding.PKCS1v15(), hashes.SHA256())
            query += f"&Signature={quote(base64.b64encode(signature).decode(), safe='')}"
        separator = "&" if "?" in endpoint else "?"
        return f"{endpoint}{separator}{query}"

    # --- reading what the SP sent -----------------------------------------------------------

    def read_authn_request(
        self, url_or_params: str | Mapping[str, str], *, sp_cert: str | bytes | None = None
    ) -> AuthnRequestInfo:
        """Decode the SP's AuthnRequest: a Redirect-binding URL, or POST form fields.
        With ``sp_cert`` the signature must be there and verify (else SamlFakeError)."""
        message = self._read(url_or_params, "SAMLRequest", "AuthnRequest", sp_cert)
        root = message.root
        policy = root.find("samlp:NameIDPolicy", NS)
        return AuthnRequestInfo(
            **message.info(),
            acs_url=root.get("AssertionConsumerServiceURL"),
            name_id_format=None if policy is None else policy.get("Format"),
        )

    def read_logout_request(
        self, url_or_params: str | Mapping[str, str], *, sp_cert: str | bytes | None = None
    ) -> LogoutRequestInfo:
        message = self._read(url_or_params, "SAMLRequest", "LogoutRequest", sp_cert)
        root = message.root
        return LogoutRequestInfo(
            **message.info(),
            name_id=_text(root.find("saml:NameID", NS)),
            session_index=_text(root.find("samlp:SessionIndex", NS)),
        )

    def read_logout_response(
        self, url_or_params: str | Mapping[str, str], *, sp_cert: str | bytes | None = None
    ) -> LogoutResponseInfo:
        message = self._read(url_or_params, "SAMLResponse", "LogoutResponse", sp_cert)
        root = message.root
        code = root.find("samlp:Status/samlp:StatusCode", NS)
        return LogoutResponseInfo(
            **message.info(),
            in_response_to=root.get("InResponseTo"),
            status=None if code is None else code.get("Value"),
        )

    def _read(
        self,
        url_or_params: str | Mapping[str, str],
        kind: str,
        element: str,
        sp_cert: str | bytes | None,
    ) -> _Message:
        if isinstance(url_or_params, str):
            raw_query = urlsplit(url_or_params).query
            params = dict(parse_qsl(raw_query))
            if kind not in params:
                raise SamlFakeError(f"no {kind} in {url_or_params!r}")
            xml = zlib.decompress(base64.b64decode(params[kind]), wbits=-15)
            signed = "Signature" in params
            if sp_cert is not None:
                _verify_redirect(raw_query, kind, params, sp_cert)
            binding: Literal["redirect", "post"] = "redirect"
        else:
            params = dict(url_or_params)
            if kind not in params:
                raise SamlFakeError(f"no {kind} in the form {sorted(params)}")
            xml = base64.b64decode(params[kind])
            binding = "post"
            signed = False  # set below from the document
        root = parse_xml(xml)
        if root.tag != _q(SAMLP, element):
            raise SamlFakeError(f"expected samlp:{element}, got {root.tag}")
        if binding == "post":
            signed = root.find("ds:Signature", NS) is not None
            if sp_cert is not None and not verify(xml, sp_cert, element_id=root.get("ID")):
                raise SamlFakeError(f"the {element}'s XML signature does not verify")
        return _Message(root, binding, params.get("RelayState"), signed, xml)

    # --- single logout ---------------------------------------------------------------------

    def logout_request(
        self,
        *,
        destination: str,
        name_id: str,
        name_id_format: str | None = NAMEID_PERSISTENT,
        sp_entity_id: str | None = None,
        session_index: str | None = None,
        issuer: str | None = DEFAULT,
        request_id: str | None = None,
        not_on_or_after: float | None = 300,
        sign: bool = True,
        signer: SamlKeyPair | None = None,
    ) -> bytes:
        """An IdP-initiated LogoutRequest. ``sign`` embeds an XML signature (HTTP-POST);
        for HTTP-Redirect build it with ``sign=False`` and let ``redirect_url`` sign."""
        request_id = request_id or _new_id()
        root = self._protocol_message(
            "LogoutRequest",
            request_id,
            destination=destination,
            issuer=self.entity_id if issuer is DEFAULT else issuer,
        )
        _set(root, "NotOnOrAfter", self._instant(not_on_or_after))
        nid = etree.SubElement(root, _q(SAML, "NameID"))
        _set(nid, "Format", name_id_format)
        _set(nid, "SPNameQualifier", sp_entity_id)
        nid.text = name_id
        if session_index is not None:
            etree.SubElement(root, _q(SAMLP, "SessionIndex")).text = session_index
        xml = _serialize(root)
        return self.sign(xml, request_id, signer=signer) if sign else xml

    def logout_response(
        self,
        *,
        destination: str,
        in_response_to: str,
        status: str = STATUS_SUCCESS,
        issuer: str | None = DEFAULT,
        sign: bool = True,
        signer: SamlKeyPair | None = None,
    ) -> bytes:
        """The IdP's answer to the SP's LogoutRequest (``sign`` as in ``logout_request``)."""
        response_id = _new_id()
        root = self._protocol_message(
            "LogoutResponse",
            response_id,
            destination=destination,
            in_response_to=in_response_to,
            issuer=self.entity_id if issuer is DEFAULT else issuer,
        )
        _status(root, status)
        xml = _serialize(root)
        return self.sign(xml, response_id, signer=signer) if sign else xml

    # --- signatures --------------------------------------------------------------------------

    def sign(
        self,
        xml: bytes,
        element_id: str,
        *,
        signer: SamlKeyPair | None = None,
        transforms: Sequence[etree._Element] | None = None,
    ) -> bytes:
        """Enveloped RSA-SHA256 signature (exclusive c14n) over the element ``element_id``,
        placed right after its Issuer. ``transforms`` replaces the usual two (hostile tests)."""
        return sign_element(xml, element_id, signer or self.signing_key, transforms=transforms)

    def _protocol_message(
        self,
        name: str,
        message_id: str,
        *,
        issue_instant: float = 0,
        destination: str | None,
        in_response_to: str | None = None,
        issuer: str | None,
    ) -> etree._Element:
        """A samlp:``name`` with its ID, Version, IssueInstant, Destination, InResponseTo
        (``None`` leaves an attribute out) and Issuer."""
        root = etree.Element(_q(SAMLP, name), nsmap={"samlp": SAMLP, "saml": SAML})
        root.set("ID", message_id)
        root.set("Version", "2.0")
        root.set("IssueInstant", self._instant(issue_instant))
        _set(root, "Destination", destination)
        _set(root, "InResponseTo", in_response_to)
        if issuer is not None:
            etree.SubElement(root, _q(SAML, "Issuer")).text = issuer
        return root

    def _instant(self, offset: float | None) -> str | None:
        if offset is None:
            return None
        return instant(self.clock() + offset)


# --- module helpers (the corpus uses them too) ---------------------------------------------


def instant(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_xml(xml: bytes) -> etree._Element:
    """Parse what a test built or an SP sent: no DTD, no entities, no network."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    return etree.fromstring(xml, parser)


def sign_element(
    xml: bytes,
    element_id: str,
    key: SamlKeyPair,
    *,
    transforms: Sequence[etree._Element] | None = None,
) -> bytes:
    root = parse_xml(xml)
    target = _by_id(root, element_id)
    template = _signature_template(element_id, transforms)
    issuer = target.find("saml:Issuer", NS)
    target.insert(0 if issuer is None else target.index(issuer) + 1, template)
    command = [
        "xmlsec1",
        "--sign",
        "--privkey-pem",
        f"{key.key_path},{key.cert_path}",
        *_ID_ATTRS,
        "--node-id",
        element_id,
        "-",
    ]
    out = _xmlsec(command, _serialize(root))
    if out.returncode != 0:
        raise SamlFakeError(f"xmlsec1 --sign failed: {out.stderr.decode(errors='replace')}")
    return out.stdout


def verify(
    xml_or_element: bytes | etree._Element,
    cert: SamlKeyPair | str | bytes,
    *,
    element_id: str | None = None,
) -> bool:
    """True when xmlsec1 verifies the signature of ``element_id`` (default: the root) with
    ``cert`` alone. An element is verified on its own (serialized out of its document:
    exclusive c14n makes that faithful), which is how the corpus checks that a wrapped,
    moved element still carries a valid signature."""
    root = parse_xml(xml_or_element) if isinstance(xml_or_element, bytes) else xml_or_element
    target = root if element_id is None else _by_id(root, element_id)
    signature = target.find("ds:Signature", NS)
    if signature is None:
        return False
    pem = cert.cert_pem.encode() if isinstance(cert, SamlKeyPair) else _as_bytes(cert)
    with tempfile.NamedTemporaryFile(suffix=".pem") as cert_file:
        cert_file.write(pem)
        cert_file.flush()
        command = [
            "xmlsec1",
            "--verify",
            "--enabled-key-data",
            "raw-x509-cert",
            "--pubkey-cert-pem",
            cert_file.name,
            *_ID_ATTRS,
            "--node-id",
            target.get("ID", ""),
            "-",
        ]
        out = _xmlsec(command, etree.tostring(target))
    return out.returncode == 0


# xmlsec1 resolves "#id" references through these ID attributes only.
_ID_ATTRS = [
    arg
    for node in (
        f"{SAMLP}:Response",
        f"{SAML}:Assertion",
        f"{SAMLP}:AuthnRequest",
        f"{SAMLP}:LogoutRequest",
        f"{SAMLP}:LogoutResponse",
    )
    for arg in ("--id-attr:ID", node)
]


def _xmlsec(command: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, input=stdin, capture_output=True, check=False, timeout=30)


def _signature_template(
    element_id: str, transforms: Sequence[etree._Element] | None
) -> etree._Element:
    sig = etree.Element(_q(DS, "Signature"), nsmap={"ds": DS})
    info = etree.SubElement(sig, _q(DS, "SignedInfo"))
    etree.SubElement(info, _q(DS, "CanonicalizationMethod"), Algorithm=EXC_C14N)
    etree.SubElement(info, _q(DS, "SignatureMethod"), Algorithm=RSA_SHA256)
    ref = etree.SubElement(info, _q(DS, "Reference"), URI=f"#{element_id}")
    chain = etree.SubElement(ref, _q(DS, "Transforms"))
    if transforms is None:
        etree.SubElement(chain, _q(DS, "Transform"), Algorithm=ENVELOPED)
        etree.SubElement(chain, _q(DS, "Transform"), Algorithm=EXC_C14N)
    else:
        for transform in transforms:
            chain.append(transform)
    etree.SubElement(ref, _q(DS, "DigestMethod"), Algorithm=SHA256)
    etree.SubElement(ref, _q(DS, "DigestValue"))
    etree.SubElement(sig, _q(DS, "SignatureValue"))
    key_info = etree.SubElement(sig, _q(DS, "KeyInfo"))
    data = etree.SubElement(key_info, _q(DS, "X509Data"))
    etree.SubElement(data, _q(DS, "X509Certificate"))
    return sig


def _encrypt_assertion(
    xml: bytes, assertion_id: str, cert_pem: str | bytes, encryption: Encryption
) -> bytes:
    """Replace the assertion by an EncryptedAssertion for the SP holding ``cert_pem``."""
    root = parse_xml(xml)
    assertion = _by_id(root, assertion_id)
    plaintext = etree.tostring(assertion)
    cert = x509.load_pem_x509_certificate(_as_bytes(cert_pem))
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SamlFakeError("the fake encrypts to RSA certificates only")
    if encryption == "aes128-gcm":
        session_key, algorithm = AESGCM.generate_key(bit_length=128), AES128_GCM
        nonce = os.urandom(12)
        ciphertext = nonce + AESGCM(session_key).encrypt(nonce, plaintext, None)
    else:
        session_key, algorithm = os.urandom(32), AES256_CBC
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(session_key), modes.CBC(iv)).encryptor()
        padded = padder.update(plaintext) + padder.finalize()
        ciphertext = iv + encryptor.update(padded) + encryptor.finalize()
    wrapped = public_key.encrypt(
        session_key,
        asym_padding.OAEP(
            # rsa-oaep-mgf1p is SHA-1 by definition (XML Encryption 1.0 §5.4.2).
            mgf=asym_padding.MGF1(hashes.SHA1()),
            algorithm=hashes.SHA1(),
            label=None,
        ),
    )
    encrypted = etree.Element(_q(SAML, "EncryptedAssertion"))
    data = etree.SubElement(
        encrypted,
        _q(XENC, "EncryptedData"),
        nsmap={"xenc": XENC, "ds": DS},
        Type="http://www.w3.org/2001/04/xmlenc#Element",
    )
    etree.SubElement(data, _q(XENC, "EncryptionMethod"), Algorithm=algorithm)
    key_info = etree.SubElement(data, _q(DS, "KeyInfo"))
    encrypted_key = etree.SubElement(key_info, _q(XENC, "EncryptedKey"))
    method = etree.SubElement(encrypted_key, _q(XENC, "EncryptionMethod"), Algorithm=RSA_OAEP_MGF1P)
    etree.SubElement(
        method, _q(DS, "DigestMethod"), Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"
    )
    cipher = etree.SubElement(encrypted_key, _q(XENC, "CipherData"))
    etree.SubElement(cipher, _q(XENC, "CipherValue")).text = base64.b64encode(wrapped).decode()
    cipher = etree.SubElement(data, _q(XENC, "CipherData"))
    etree.SubElement(cipher, _q(XENC, "CipherValue")).text = base64.b64encode(ciphertext).decode()
    parent = assertion.getparent()
    assert parent is not None
    parent.replace(assertion, encrypted)
    return _serialize(root)


def _verify_redirect(
    raw_query: str, kind: str, params: Mapping[str, str], cert: str | bytes
) -> None:
    """SAML Bindings §3.4.4.1: the signature covers the query's original octets."""
    if "Signature" not in params or "SigAlg" not in params:
        raise SamlFakeError("the Redirect-binding message is not signed")
    raw = dict(part.split("=", 1) for part in raw_query.split("&") if "=" in part)
    signed = "&".join(f"{k}={raw[k]}" for k in (kind, "RelayState", "SigAlg") if k in raw)
    algorithm = {RSA_SHA256: hashes.SHA256(), RSA_SHA1: hashes.SHA1()}.get(params["SigAlg"])
    if algorithm is None:
        raise SamlFakeError(f"unsupported SigAlg {params['SigAlg']}")
    public_key = x509.load_pem_x509_certificate(_as_bytes(cert)).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SamlFakeError("the fake verifies RSA signatures only")
    try:
        public_key.verify(
            base64.b64decode(params["Signature"]),
            signed.encode(),
            asym_padding.PKCS1v15(),
            algorithm,
        )
    except InvalidSignature:
        raise SamlFakeError("the Redirect-binding signature does not verify") from None


def _by_id(root: etree._Element, element_id: str) -> etree._Element:
    found = [el for el in root.iter() if isinstance(el.tag, str) and el.get("ID") == element_id]
    if not found:
        raise SamlFakeError(f"no element with ID {element_id!r}")
    return found[0]


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _status(root: etree._Element, status: str) -> etree._Element:
    status_el = etree.SubElement(root, _q(SAMLP, "Status"))
    etree.SubElement(status_el, _q(SAMLP, "StatusCode"), Value=status)
    return status_el


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _set(element: etree._Element, name: str, value: str | None) -> None:
    if value is not None:
        element.set(name, value)


def _text(element: etree._Element | None) -> str | None:
    return None if element is None else element.text


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _new_id() -> str:
    return "_" + secrets.token_hex(16)


@functools.cache
def _shared_tempdir() -> Path:
    """For keys made outside an IdP instance (``SamlKeyPair.generate()``): one directory,
    removed when the process ends."""
    path = Path(tempfile.mkdtemp(prefix="fake-saml-keys-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _private_tempdir(owner: object) -> Path:
    path = Path(tempfile.mkdtemp(prefix="fake-saml-idp-"))
    os.chmod(path, 0o700)
    weakref.finalize(owner, shutil.rmtree, path, True)
    return path


__all__ = [
    "DEFAULT",
    "AuthnRequestInfo",
    "FakeSamlIdP",
    "LogoutRequestInfo",
    "LogoutResponseInfo",
    "SamlAttribute",
    "SamlFakeError",
    "SamlKeyPair",
    "SamlUser",
    "instant",
    "parse_xml",
    "sign_element",
    "verify",
]

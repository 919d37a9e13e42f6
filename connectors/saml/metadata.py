"""The partner IdP, as its SAML metadata describes it.

Specs: SAML 2.0 Metadata §2.3.2 (EntityDescriptor, entityID), §2.4.3 (IDPSSODescriptor:
SingleSignOnService, WantAuthnRequestsSigned), §2.4.1.1 (KeyDescriptor: several signing
keys are how an IdP rolls its certificate over), §2.2.2 (SingleLogoutService).

Metadata comes from a URL (fetched through the hub's HTTP plumbing, refreshed when older
than ``metadata_refresh_seconds``; a failed refresh keeps the last good copy), a file or
inline XML. It passes the same hardened parse as messages (no DTD, no entities) before
pysaml2 reads it.

Trust (Metadata §3, §2.3.2): with a :class:`MetadataTrust` of certificates, the document's
root must carry a signature that verifies with one of them
(:func:`connectors.saml.guard.verify_metadata_signature`) — on every load and refresh; a
``validUntil`` in the past (on the root or on the chosen EntityDescriptor) is refused in
any case. Both refusals are :class:`MetadataRefused`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from connectors.saml._pysaml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml2
from connectors.saml.guard import MD, UnsafeMessage, parse_document, verify_metadata_signature

MAX_METADATA_BYTES = 16 * 1024 * 1024  # federation aggregates are large; one IdP is not


class MetadataRefused(ValueError):
    """The metadata is readable but not to be trusted: its signature does not verify with a
    trusted certificate (or is missing when required), or it has expired (validUntil)."""


@dataclass(frozen=True, slots=True)
class MetadataTrust:
    """The certificates trusted to sign the metadata, and whether a signature is required
    (``SamlConnectionSettings.metadata_signing_certs`` / ``metadata_signature_required``)."""

    certs_pem: tuple[str, ...] = ()
    required: bool = False


@dataclass(frozen=True, slots=True)
class IdpMetadata:
    """What the SP needs to know about the IdP, read from its metadata."""

    entity_id: str
    # The document, handed to pysaml2 as inline metadata. In an aggregate other entities'
    # keys verify only messages whose Issuer is theirs, and those are refused (Issuer check).
    xml: str
    sso: dict[str, str]  # binding URI → SingleSignOnService location
    slo: dict[str, str]  # binding URI → SingleLogoutService location
    signing_certs: tuple[str, ...]  # base64 DER, every one accepted (rollover)
    want_authn_requests_signed: bool
    # POSIX seconds: the earliest validUntil of the document and of this IdP's descriptor.
    valid_until: float | None = None
    # The document's signature verified with a trusted certificate.
    signature_verified: bool = False

    def expired(self, now: float) -> bool:
        return self.valid_until is not None and self.valid_until <= now


def parse_idp_metadata(
    xml: str | bytes,
    entity_id: str | None = None,
    *,
    trust: MetadataTrust | None = None,
    now: float | None = None,
) -> IdpMetadata:
    """The IdP of ``xml``: ``entity_id`` picks one out of an aggregate (required when the
    document describes several IdPs). ``trust``: the document's signature is checked
    (blocking: xmlsec1). ``now`` (POSIX seconds, default the system clock) for validUntil.
    Raises ValueError with the reason (:class:`MetadataRefused` for trust and expiry)."""
    data = xml.encode() if isinstance(xml, str) else xml
    if len(data) > MAX_METADATA_BYTES:
        raise ValueError("metadata exceeds 16 MB")
    try:
        root = parse_document(data)
    except UnsafeMessage as exc:
        raise ValueError(f"metadata refused: {exc}") from None
    if root.tag not in (f"{{{MD}}}EntityDescriptor", f"{{{MD}}}EntitiesDescriptor"):
        raise ValueError(f"metadata root is {root.tag!r}, not md:EntityDescriptor")
    verified = _check_trust(data, root, trust)
    moment = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    valid_until = _valid_until(root, entity_id, moment)
    store = saml2.mdstore.InMemoryMetaData(None)
    try:
        store.parse(data.decode("utf-8"))
    except Exception as exc:  # pysaml2 raises many types on bad or expired metadata
        raise ValueError(f"metadata not usable: {exc}") from None
    idps = [eid for eid, entity in store.entity.items() if entity.get("idpsso_descriptor")]
    if entity_id is None:
        if len(idps) != 1:
            raise ValueError(f"metadata describes {len(idps)} IdPs: set idp_entity_id")
        entity_id = idps[0]
    elif entity_id not in idps:
        raise ValueError(f"metadata has no IdP {entity_id!r}")
    descriptor = store.entity[entity_id]["idpsso_descriptor"][0]
    certs = tuple(dict.fromkeys(cert for _, cert in store.certs(entity_id, "idpsso", "signing")))
    if not certs:
        raise ValueError(f"IdP {entity_id!r} publishes no signing certificate")
    sso = _endpoints(store, entity_id, "single_sign_on_service")
    if not sso:
        raise ValueError(f"IdP {entity_id!r} has no SingleSignOnService we can use")
    want = str(descriptor.get("want_authn_requests_signed", "false")).lower() in ("true", "1")
    return IdpMetadata(
        entity_id=entity_id,
        xml=data.decode("utf-8"),
        sso=sso,
        slo=_endpoints(store, entity_id, "single_logout_service"),
        signing_certs=certs,
        want_authn_requests_signed=want,
        valid_until=valid_until,
        signature_verified=verified,
    )


def _check_trust(data: bytes, root: Element, trust: MetadataTrust | None) -> bool:
    """True when the signature verifies; MetadataRefused when trust requires more."""
    if trust is None or not (trust.certs_pem or trust.required):
        return False
    signature = verify_metadata_signature(data, trust.certs_pem, root=root)
    if signature.verified:
        return True
    if signature.signed or trust.required:  # a signature that fails is never ignored
        raise MetadataRefused(f"metadata signature check failed: {signature.problem}")
    return False


def _valid_until(root: Element, entity_id: str | None, now: float) -> float | None:
    """The earliest validUntil of the root and of the IdP's EntityDescriptor (the chosen
    one, else every IdP of the document); MetadataRefused when one has passed. pysaml2
    checks too, on the system clock, but silently drops an expired entity: this says why."""
    elements = [root]
    if root.tag == f"{{{MD}}}EntitiesDescriptor":
        elements += [
            e
            for e in root.iter(f"{{{MD}}}EntityDescriptor")
            if e.get("entityID") == entity_id
            or (entity_id is None and e.find(f"{{{MD}}}IDPSSODescriptor") is not None)
        ]
    earliest: float | None = None
    for element in elements:
        value = element.get("validUntil")
        if value is None:
            continue
        until = _instant(value)
        if until <= now:
            whose = "metadata" if element is root else f"entity {element.get('entityID')!r}"
            raise MetadataRefused(f"{whose} expired at {value} (validUntil)")
        earliest = until if earliest is None else min(earliest, until)
    return earliest


def _instant(value: str) -> float:
    """xs:dateTime (UTC when no offset is given) as POSIX seconds."""
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # any number of fraction digits; Python takes up to 6
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{(rest[:digits] + '000000')[:6]}{rest[digits:]}"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise MetadataRefused(f"validUntil {value!r} is not a dateTime") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _endpoints(store: saml2.mdstore.InMemoryMetaData, entity_id: str, kind: str) -> dict[str, str]:
    found = store.service(entity_id, "idpsso_descriptor", kind) or {}
    result: dict[str, str] = {}
    for binding in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST):
        for endpoint in found.get(binding, []):
            result.setdefault(binding, str(endpoint["location"]))
    return result

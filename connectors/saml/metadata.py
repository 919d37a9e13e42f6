"""The partner IdP, as its SAML metadata describes it.

Specs: SAML 2.0 Metadata §2.3.2 (EntityDescriptor, entityID), §2.4.3 (IDPSSODescriptor:
SingleSignOnService, WantAuthnRequestsSigned), §2.4.1.1 (KeyDescriptor: several signing
keys are how an IdP rolls its certificate over), §2.2.2 (SingleLogoutService).

Metadata comes from a URL (fetched through the hub's HTTP plumbing, refreshed when older
than ``metadata_refresh_seconds``; a failed refresh keeps the last good copy), a file or
inline XML. It passes the same hardened parse as messages (no DTD, no entities) before
pysaml2 reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.saml._pysaml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml2
from connectors.saml.guard import UnsafeMessage, parse_document

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
MAX_METADATA_BYTES = 16 * 1024 * 1024  # federation aggregates are large; one IdP is not


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


def parse_idp_metadata(xml: str | bytes, entity_id: str | None = None) -> IdpMetadata:
    """The IdP of ``xml``: ``entity_id`` picks one out of an aggregate (required when the
    document describes several IdPs). Raises ValueError with the reason."""
    data = xml.encode() if isinstance(xml, str) else xml
    if len(data) > MAX_METADATA_BYTES:
        raise ValueError("metadata exceeds 16 MB")
    try:
        root = parse_document(data)
    except UnsafeMessage as exc:
        raise ValueError(f"metadata refused: {exc}") from None
    if root.tag not in (f"{{{MD}}}EntityDescriptor", f"{{{MD}}}EntitiesDescriptor"):
        raise ValueError(f"metadata root is {root.tag!r}, not md:EntityDescriptor")
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
    )


def _endpoints(store: saml2.mdstore.InMemoryMetaData, entity_id: str, kind: str) -> dict[str, str]:
    found = store.service(entity_id, "idpsso_descriptor", kind) or {}
    result: dict[str, str] = {}
    for binding in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST):
        for endpoint in found.get(binding, []):
            result.setdefault(binding, str(endpoint["location"]))
    return result

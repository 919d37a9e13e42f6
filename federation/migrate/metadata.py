"""SAML 2.0 metadata for an IdP Keycloak knew only by its settings (no metadata URL).

Spec: SAML 2.0 Metadata §2.4.3 (IDPSSODescriptor: KeyDescriptor, SingleLogoutService,
NameIDFormat, SingleSignOnService, in the schema's order; WantAuthnRequestsSigned),
§2.4.1.1 (KeyDescriptor ``use="signing"``). Keycloak keeps signing certificates as
comma-separated base64 DER.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509

SAML_PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


def certificates(value: str) -> tuple[list[str], list[int]]:
    good, bad = [], []
    for index, text in enumerate(t for t in value.split(",") if t.strip()):
        compact = "".join(text.split())
        try:
            x509.load_der_x509_certificate(base64.b64decode(compact, validate=True))
        except ValueError:
            bad.append(index)
            continue
        good.append(compact)
    return good, bad


def idp_metadata_xml(
    *,
    entity_id: str,
    sso_url: str,
    sso_binding: str,
    slo_url: str | None,
    slo_binding: str,
    signing_certs: Sequence[str],
    want_authn_requests_signed: bool,
    name_id_format: str | None,
) -> str:
    """SAML 2.0 metadata (§2.4.3 IDPSSODescriptor) describing an IdP from the settings
    Keycloak kept: entity id, single sign-on (and logout) endpoint, signing keys."""
    want = "true" if want_authn_requests_signed else "false"
    lines = [
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"',
        '    xmlns:ds="http://www.w3.org/2000/09/xmldsig#"',
        f"    entityID={quoteattr(entity_id)}>",
        f'  <md:IDPSSODescriptor protocolSupportEnumeration="{SAML_PROTOCOL}"',
        f'      WantAuthnRequestsSigned="{want}">',
    ]
    for cert in signing_certs:
        lines += [
            '    <md:KeyDescriptor use="signing">',
            "      <ds:KeyInfo><ds:X509Data>",
            f"        <ds:X509Certificate>{escape(cert)}</ds:X509Certificate>",
            "      </ds:X509Data></ds:KeyInfo>",
            "    </md:KeyDescriptor>",
        ]
    if slo_url:
        lines.append(
            f"    <md:SingleLogoutService Binding={quoteattr(slo_binding)} "
            f"Location={quoteattr(slo_url)}/>"
        )
    if name_id_format:
        lines.append(f"    <md:NameIDFormat>{escape(name_id_format)}</md:NameIDFormat>")
    lines += [
        f"    <md:SingleSignOnService Binding={quoteattr(sso_binding)} "
        f"Location={quoteattr(sso_url)}/>",
        "  </md:IDPSSODescriptor>",
        "</md:EntityDescriptor>",
    ]
    return "\n".join(lines) + "\n"

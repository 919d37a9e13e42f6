"""SAML 2.0 partner connections: the hub as one service provider per connection.

Specs: SAML 2.0 Core, Bindings (HTTP-Redirect, HTTP-POST), Profiles (Web Browser SSO,
Single Logout), Metadata (OASIS, March 2005, with errata); W3C XML-Signature through pysaml2
and Debian's xmlsec1; W3C XML Encryption 1.1 in :mod:`~connectors.saml.xmlenc`.

One module per concern:

- :mod:`~connectors.saml.guard` — size cap and hardened pre-parse (before pysaml2);
- :mod:`~connectors.saml.metadata` — the IdP from its metadata (URL, file, inline XML);
- :mod:`~connectors.saml.keys` — the SP key pair, certificate reports;
- :mod:`~connectors.saml.sp` — pysaml2's SP configuration, SP metadata;
- :mod:`~connectors.saml.xmlenc` — decrypting encrypted assertions with the SP key
  (XML Encryption 1.1, in-process; xmlsec1 only signs and verifies);
- :mod:`~connectors.saml.consumer` — the checks pysaml2 leaves to the SP;
- :mod:`~connectors.saml.mapping` — NameID and attributes → FederatedIdentity;
- :mod:`~connectors.saml.connector` — :class:`SamlConnector` (login, ACS, SLO);
- :mod:`~connectors.saml.certs` — :func:`certificates`, behind ``isthmus saml certs``.
"""

from connectors.saml.certs import CertInfo, certificates
from connectors.saml.connector import SamlConnector

__all__ = ["CertInfo", "SamlConnector", "certificates"]

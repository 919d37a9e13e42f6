"""Certificates of a SAML connection and when they expire (``isthmus saml certs``).

Specs: SAML 2.0 Metadata §2.4.1.1 (KeyDescriptor); RFC 5280 §4.1.2.5 (validity).

An IdP rolling its key over publishes the old and the new signing certificate side by
side; the hub accepts both (pysaml2 tries every metadata key) and this report shows both,
so an operator sees the old one approach its end. A generated SP certificate is not listed:
it lives only as long as the process.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from connectors.saml.keys import CertInfo, cert_info, der_from_base64
from connectors.saml.metadata import parse_idp_metadata
from federation.settings import SamlConnectionSettings

__all__ = ["CertInfo", "certificates"]


def certificates(
    connection: SamlConnectionSettings, *, metadata_xml: str | bytes | None = None
) -> list[CertInfo]:
    """Every IdP signing certificate (from its metadata) and the configured SP certificate.

    ``metadata_xml`` overrides the connection's source; a URL is fetched synchronously (this
    is for the CLI). Raises ValueError or OSError when the metadata cannot be had.
    """
    found: list[CertInfo] = []
    xml = metadata_xml if metadata_xml is not None else _metadata(connection)
    idp = parse_idp_metadata(xml, connection.idp_entity_id)
    for text in idp.signing_certs:
        found.append(cert_info(connection.id, "IdP", der_from_base64(text)))
    if connection.sp_cert_file is not None:
        found.append(cert_info(connection.id, "SP", Path(connection.sp_cert_file).read_bytes()))
    return found


def _metadata(connection: SamlConnectionSettings) -> str | bytes:
    if connection.idp_metadata_xml is not None:
        return connection.idp_metadata_xml
    if connection.idp_metadata_file is not None:
        return Path(connection.idp_metadata_file).read_bytes()
    if connection.idp_metadata_url is not None:
        try:
            response = httpx.get(connection.idp_metadata_url, timeout=10.0)
        except httpx.HTTPError as exc:
            raise OSError(f"{connection.idp_metadata_url} unreachable: {exc!r}") from None
        if response.status_code != 200:
            raise OSError(f"{connection.idp_metadata_url} answered HTTP {response.status_code}")
        return response.content
    raise ValueError("no IdP metadata source")

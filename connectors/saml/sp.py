"""The hub as a SAML service provider for one connection: pysaml2's client and metadata.

Specs: SAML 2.0 Metadata §2.4.4 (SPSSODescriptor: AuthnRequestsSigned,
WantAssertionsSigned, AssertionConsumerService, SingleLogoutService, KeyDescriptor),
SAML 2.0 Bindings §3.4 (HTTP-Redirect) and §3.5 (HTTP-POST).

pysaml2's checks that the hub *relies on* are set here: signatures verified with
xmlsec1 against the IdP metadata keys only (``only_use_keys_in_metadata``), assertions
(or the response, when ``want_assertions_signed`` is false) required to be signed,
conditions checked with the connection's clock skew. What pysaml2 leaves open is closed
in :mod:`connectors.saml.consumer`. Encrypted assertions are decrypted by
:mod:`connectors.saml.xmlenc` in the place of ``xmlsec1 --decrypt`` (:class:`XmlEncBackend`),
with the SP key only; xmlsec1 still verifies every signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.saml import xmlenc
from connectors.saml._pysaml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml2
from connectors.saml.keys import SpKeyPair
from connectors.saml.metadata import IdpMetadata
from federation.settings import SamlConnectionSettings


@dataclass(frozen=True, slots=True)
class SpEndpoints:
    entity_id: str
    acs_url: str  # AssertionConsumerService, HTTP-POST
    slo_url: str  # SingleLogoutService, HTTP-Redirect and HTTP-POST

    @classmethod
    def of(cls, settings: SamlConnectionSettings, hub_base_url: str) -> SpEndpoints:
        base = hub_base_url.rstrip("/")
        return cls(
            entity_id=settings.sp_entity_id or f"{base}/saml/{settings.id}/metadata",
            acs_url=f"{base}/callback/{settings.id}",
            slo_url=f"{base}/saml/{settings.id}/slo",
        )


def signs_authn_requests(settings: SamlConnectionSettings, idp: IdpMetadata | None) -> bool:
    if settings.sign_authn_requests is not None:
        return settings.sign_authn_requests
    return idp is not None and idp.want_authn_requests_signed


def sp_config(
    settings: SamlConnectionSettings,
    endpoints: SpEndpoints,
    keys: SpKeyPair,
    idp: IdpMetadata | None,
) -> saml2.config.SPConfig:
    """pysaml2's configuration for this SP (and, when known, its one IdP)."""
    sp: dict[str, Any] = {
        "endpoints": {
            "assertion_consumer_service": [(endpoints.acs_url, BINDING_HTTP_POST)],
            "single_logout_service": [
                (endpoints.slo_url, BINDING_HTTP_REDIRECT),
                (endpoints.slo_url, BINDING_HTTP_POST),
            ],
        },
        "want_assertions_signed": settings.want_assertions_signed,
        "want_response_signed": False,
        "want_assertions_or_response_signed": True,
        "authn_requests_signed": signs_authn_requests(settings, idp),
        "logout_requests_signed": True,
        "logout_responses_signed": True,
        "allow_unsolicited": settings.allow_idp_initiated,
        "only_use_keys_in_metadata": True,
    }
    if settings.name_id_format:
        sp["name_id_format"] = [settings.name_id_format]
    config: dict[str, Any] = {
        "entityid": endpoints.entity_id,
        "xmlsec_binary": saml2.sigver.get_xmlsec_binary(),
        "key_file": str(keys.key_file),
        "cert_file": str(keys.cert_file),
        "encryption_keypairs": [{"key_file": str(keys.key_file), "cert_file": str(keys.cert_file)}],
        "accepted_time_diff": settings.clock_skew_seconds,
        "allow_unknown_attributes": True,
        "delete_tmpfiles": True,
        "service": {"sp": sp},
        "metadata": {"inline": [idp.xml]} if idp is not None else {},
    }
    loaded = saml2.config.SPConfig()
    loaded.load(config)
    return loaded


class XmlEncBackend(saml2.sigver.CryptoBackendXmlSec1):  # type: ignore[misc]
    """pysaml2's xmlsec1 backend, but decrypting in-process (:mod:`connectors.saml.xmlenc`).

    pysaml2 calls :meth:`decrypt` once per key it holds (here: the SP's) with the whole
    Response, and expects it back with the first EncryptedData decrypted in place — what
    ``xmlsec1 --decrypt`` does. A key that unwraps nothing raises XmlsecError, so pysaml2
    tries its next key (and, with none left, leaves the assertion encrypted: the connector
    says so); any other :class:`xmlenc.DecryptionError` (an algorithm not supported, a
    refused plaintext) goes up to the connector as it is.
    """

    def decrypt(self, enctext: object, key_file: str) -> str:
        if not isinstance(enctext, str | bytes):  # pysaml2 passes EncryptedAttributes so
            raise xmlenc.UnsupportedEncryption(
                "cannot decrypt: encrypted attributes are not supported"
            )
        data = enctext.encode("utf-8") if isinstance(enctext, str) else enctext
        key = xmlenc.load_private_key(Path(key_file))
        try:
            return xmlenc.decrypt_first(data, key).decode("utf-8")
        except xmlenc.WrongKey as exc:
            raise saml2.sigver.XmlsecError(str(exc)) from exc


def sp_client(config: saml2.config.SPConfig) -> saml2.client.Saml2Client:
    client = saml2.client.Saml2Client(config)
    xmlsec = client.sec.crypto
    client.sec.crypto = XmlEncBackend(xmlsec.xmlsec, delete_tmpfiles=xmlsec.delete_tmpfiles)
    return client


def sp_metadata_xml(config: saml2.config.SPConfig) -> str:
    """The SP's EntityDescriptor (Metadata §2.3.2) with signing and encryption keys."""
    descriptor = saml2.metadata.entity_descriptor(config)
    return str(descriptor)

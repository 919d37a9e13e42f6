"""A minimal SAML IdP for the connector tests, on pysaml2's ``Server`` (its own signing).

Until the shared fake (tests/fakes/saml_idp.py) lands, this builds what the tests need:
IdP metadata, and signed/encrypted/tampered Responses to an SP's AuthnRequest. Tampered
variants are mutated *before* signing, so they carry a valid signature and exercise the
connector's own checks rather than xmlsec1's.
"""

from __future__ import annotations

import base64
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connectors.saml import SamlConnector
from connectors.saml._pysaml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml2
from connectors.saml.keys import SpKeyPair, generate_key_pair
from federation.settings import SamlConnectionSettings

# pysaml2 through connectors.saml._pysaml2 only: its import-time warning is silenced there.
saml, samlp = saml2.saml, saml2.samlp
IdPConfig = saml2.config.IdPConfig
Server = saml2.server.Server
pre_signature_part = saml2.sigver.pre_signature_part

SIG = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIGEST = "http://www.w3.org/2001/04/xmlenc#sha256"
ENTITY = "https://idp.test/metadata"
SSO_REDIRECT = "https://idp.test/sso"
SSO_POST = "https://idp.test/sso/post"
SLO = "https://idp.test/slo"
PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"

Mutate = Callable[[Any], None]


def new_keys(name: str) -> SpKeyPair:
    return generate_key_pair(name, Path(tempfile.mkdtemp(prefix="fake-idp-")))


def attribute(name: str, *values: str, friendly: str | None = None) -> Any:
    return saml.Attribute(
        name=name,
        friendly_name=friendly,
        name_format="urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
        attribute_value=[saml.AttributeValue(text=v) for v in values],
    )


class FakeIdp:
    def __init__(
        self,
        entity_id: str = ENTITY,
        *,
        want_authn_requests_signed: bool = False,
        slo: bool = True,
        keys: SpKeyPair | None = None,
        published: list[SpKeyPair] | None = None,
    ) -> None:
        self.entity_id = entity_id
        self.want_authn_requests_signed = want_authn_requests_signed
        self.slo = slo
        self.keys = keys or new_keys("fake idp")
        # Certificates in the metadata (rollover: old and new side by side).
        self.published = published or [self.keys]
        self._servers: dict[str, Server] = {}

    def config(self, sp_metadata: str | None = None) -> Any:
        endpoints: dict[str, Any] = {
            "single_sign_on_service": [
                (SSO_REDIRECT, BINDING_HTTP_REDIRECT),
                (SSO_POST, BINDING_HTTP_POST),
            ]
        }
        if self.slo:
            endpoints["single_logout_service"] = [(SLO, BINDING_HTTP_REDIRECT)]
        return IdPConfig().load(
            {
                "entityid": self.entity_id,
                "key_file": str(self.keys.key_file),
                "cert_file": str(self.keys.cert_file),
                "xmlsec_binary": saml2.sigver.get_xmlsec_binary(),
                "metadata": {"inline": [sp_metadata]} if sp_metadata else {},
                "service": {
                    "idp": {
                        "endpoints": endpoints,
                        "want_authn_requests_signed": self.want_authn_requests_signed,
                        "sign_response": False,
                        "sign_assertion": False,
                        "policy": {"default": {"lifetime": {"minutes": 5}}},
                    }
                },
            }
        )

    @property
    def metadata_xml(self) -> str:
        descriptor = saml2.metadata.entity_descriptor(self.config())
        key_descriptors = [
            saml2.md.KeyDescriptor(
                use="signing",
                key_info=saml2.xmldsig.KeyInfo(
                    x509_data=[
                        saml2.xmldsig.X509Data(
                            x509_certificate=saml2.xmldsig.X509Certificate(text=k.cert_base64)
                        )
                    ]
                ),
            )
            for k in self.published
        ]
        descriptor.idpsso_descriptor.key_descriptor = key_descriptors
        return str(descriptor)

    def connection(self, id: str = "conn-1", **overrides: Any) -> SamlConnectionSettings:
        return SamlConnectionSettings(
            type="saml", id=id, idp_metadata_xml=self.metadata_xml, **overrides
        )

    async def server(self, sp: SamlConnector) -> Server:
        if sp.id not in self._servers:
            self._servers[sp.id] = Server(config=self.config(await sp.sp_metadata()))
        return self._servers[sp.id]

    async def response(
        self,
        sp: SamlConnector,
        request_id: str | None,
        *,
        name_id: str = "u-1",
        attributes: list[Any] | None = None,
        class_ref: str = PASSWORD,
        mutate: Mutate | None = None,
        sign_assertion: bool = True,
        sign_response: bool = False,
        encrypt: bool = False,
        signer: SpKeyPair | None = None,
    ) -> str:
        """A Response XML document to ``sp``'s ACS, answering ``request_id``."""
        server = await self.server(sp)
        nid = saml.NameID(format=saml.NAMEID_FORMAT_PERSISTENT, text=name_id)
        authn = {"class_ref": class_ref, "authn_auth": self.entity_id}
        if encrypt:
            xml: str = server.create_authn_response(
                {},
                request_id,
                sp.endpoints.acs_url,
                sp.endpoints.entity_id,
                name_id=nid,
                authn=authn,
                sign_assertion=True,
                sign_response=False,
                encrypt_assertion=True,
                encrypt_cert_assertion=sp.keys.cert_pem.decode(),
                sign_alg=SIG,
                digest_alg=DIGEST,
            )
            return str(xml)
        unsigned = server.create_authn_response(
            {},
            request_id,
            sp.endpoints.acs_url,
            sp.endpoints.entity_id,
            name_id=nid,
            authn=authn,
            sign_assertion=False,
            sign_response=False,
        )
        response = samlp.response_from_string(str(unsigned))
        assertion = response.assertion[0]
        assertion.attribute_statement = (
            [saml.AttributeStatement(attribute=attributes)] if attributes else []
        )
        if mutate is not None:
            mutate(response)
        return self.sign(response, sign_assertion, sign_response, signer)

    def sign(
        self, response: Any, sign_assertion: bool, sign_response: bool, signer: SpKeyPair | None
    ) -> str:
        key = signer or self.keys
        sec = saml2.sigver.security_context(self.config())
        targets = []
        if sign_assertion:
            for assertion in response.assertion:
                assertion.signature = pre_signature_part(
                    assertion.id, sec.my_cert, 1, sign_alg=SIG, digest_alg=DIGEST
                )
                targets.append((saml2.class_name(assertion), assertion.id))
        if sign_response:
            response.signature = pre_signature_part(
                response.id, sec.my_cert, 2, sign_alg=SIG, digest_alg=DIGEST
            )
            targets.append((saml2.class_name(response), response.id))
        xml = str(response)
        for node_name, node_id in targets:
            xml = sec.sign_statement(xml, node_name, key_file=str(key.key_file), node_id=node_id)
        return str(xml)

    @staticmethod
    def post(xml: str, relay_state: str | None = "flow-1") -> dict[str, str]:
        params = {"SAMLResponse": base64.b64encode(xml.encode()).decode()}
        if relay_state is not None:
            params["RelayState"] = relay_state
        return params


def redirect_message(url: str) -> tuple[str, dict[str, str]]:
    """The XML and query parameters of an HTTP-Redirect binding URL."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    key = "SAMLRequest" if "SAMLRequest" in query else "SAMLResponse"
    xml = zlib.decompress(base64.b64decode(query[key]), -15).decode()
    return xml, query


__all__ = ["FakeIdp", "attribute", "new_keys", "redirect_message"]


def test_the_fake_idp_publishes_its_signing_certificate() -> None:
    idp = FakeIdp()
    assert idp.keys.cert_base64 in idp.metadata_xml

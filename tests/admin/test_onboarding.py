"""Onboarding: inspecting an OIDC IdP or SAML metadata, testing a connection, test logins.

The IdPs are the in-process fakes (tests/fakes) or small ``httpx.MockTransport`` answers
for documents no sane fake serves (HTML instead of JSON, keys without labels); a refused
connection is a real one (a loopback port nothing listens on).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import etree

from connectors.registry import ConnectorContext
from federation.admin import onboarding
from federation.admin.onboarding import Report, inspect_oidc, inspect_saml
from federation.audit import Audit
from federation.broker.login import Broker
from federation.errors import NotFound, PartnerNotActive
from federation.hub import Hub, build_hub
from federation.settings import Settings
from federation.web.app import create_app
from tests.broker.test_mock_partner_to_hub_session import sign_in
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser
from tests.fakes.saml_idp import (
    DS,
    ENVELOPED,
    EXC_C14N,
    MD,
    RSA_SHA256,
    SHA256,
    FakeSamlIdP,
    SamlUser,
)
from tests.peers.common import free_port

BASE = "http://127.0.0.1:8080"
ISSUER = "https://idp.acme.test"


def statuses(report: Report) -> dict[str, str]:
    """name → status; a name reported twice keeps its worst status."""
    order = {"ok": 0, "warning": 1, "error": 2}
    found: dict[str, str] = {}
    for check in report.checks:
        if order[check.status] >= order[found.get(check.name, "ok")]:
            found[check.name] = check.status
    return found


def detail(report: Report, name: str) -> str:
    return " | ".join(c.detail for c in report.checks if c.name == name)


def context_for(handler: Callable[[httpx.Request], httpx.Response]) -> ConnectorContext:
    return ConnectorContext(hub_base_url=BASE, transport=httpx.MockTransport(handler))


def static_idp(
    discovery: dict[str, Any], jwks: dict[str, Any] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    """An IdP answering its discovery document and JWKS, 404 elsewhere."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json=discovery)
        if request.url.path == "/jwks" and jwks is not None:
            return httpx.Response(200, json=jwks)
        return httpx.Response(404, text="not here")

    return handler


# ================================================================== inspect_oidc


@pytest.fixture
def idp() -> FakeOidcProvider:
    return FakeOidcProvider(ISSUER, users=[FakeUser("alice", email="alice@acme.example")])


def ctx(idp: FakeOidcProvider) -> ConnectorContext:
    return ConnectorContext(hub_base_url=BASE, transport=idp.transport)


@pytest.mark.parametrize(
    "url", [ISSUER, f"{ISSUER}/", f"{ISSUER}/.well-known/openid-configuration"]
)
async def test_a_good_idp_passes_and_gets_a_valid_connection(
    idp: FakeOidcProvider, url: str
) -> None:
    report = await inspect_oidc(
        url, ctx(idp), connection_id="acme-oidc", client_id="isthmus", client_secret="s3cret"
    )
    assert report.ok and report.status == "ok", report.to_dict()
    assert set(statuses(report)) >= {
        "https", "discovery", "issuer", "endpoints", "response_type", "pkce", "jwks",
        "algorithms", "token_auth", "client", "connection",
    }  # fmt: skip
    assert report.connection == {
        "type": "oidc",
        "id": "acme-oidc",
        "issuer": ISSUER,
        "client_id": "isthmus",
        "client_secret": "s3cret",
        "token_endpoint_auth_method": "client_secret_basic",
        "algorithms": ["RS256"],
    }
    assert "RS256" in detail(report, "jwks") and "ES256" in detail(report, "jwks")
    assert f"{BASE}/callback/acme-oidc" in detail(report, "client")
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True


async def test_algorithms_follow_what_the_idp_advertises() -> None:
    es = FakeOidcProvider(ISSUER, alg="ES256")
    report = await inspect_oidc(ISSUER, ctx(es), connection_id="acme-oidc", client_id="c")
    assert report.connection is not None
    assert report.connection["algorithms"] == ["ES256"]
    # No secret: a public client, PKCE only.
    assert report.connection["token_endpoint_auth_method"] == "none"


async def test_advertised_but_refused_algorithms_leave_none_in_common(
    idp: FakeOidcProvider,
) -> None:
    idp.metadata_overrides["id_token_signing_alg_values_supported"] = ["HS256", "none"]
    report = await inspect_oidc(ISSUER, ctx(idp), connection_id="acme-oidc", client_id="c")
    assert statuses(report)["algorithms"] == "error"
    assert "HS256" in detail(report, "algorithms") and report.connection is None


async def test_issuer_mismatch_is_an_error(idp: FakeOidcProvider) -> None:
    idp.metadata_overrides["issuer"] = "https://evil.test"
    report = await inspect_oidc(ISSUER, ctx(idp), connection_id="acme-oidc", client_id="c")
    assert not report.ok
    assert statuses(report)["issuer"] == "error"
    assert "'https://evil.test'" in detail(report, "issuer")
    assert report.connection is None


async def test_missing_jwks_uri_is_an_error(idp: FakeOidcProvider) -> None:
    idp.metadata_overrides["jwks_uri"] = None
    report = await inspect_oidc(ISSUER, ctx(idp), connection_id="acme-oidc", client_id="c")
    assert statuses(report)["endpoints"] == "error"
    assert "jwks_uri is missing" in detail(report, "endpoints")
    assert not report.ok


async def test_unreachable_jwks_is_an_error(idp: FakeOidcProvider) -> None:
    idp.metadata_overrides["jwks_uri"] = f"{ISSUER}/no-such-jwks"
    report = await inspect_oidc(ISSUER, ctx(idp), connection_id="acme-oidc", client_id="c")
    assert statuses(report)["jwks"] == "error"
    assert "HTTP 404" in detail(report, "jwks")


async def test_jwks_without_usable_keys_is_an_error(idp: FakeOidcProvider) -> None:
    idp.metadata_overrides["jwks_uri"] = f"{ISSUER}/.well-known/openid-configuration"
    report = await inspect_oidc(ISSUER, ctx(idp), connection_id="acme-oidc", client_id="c")
    assert statuses(report)["jwks"] == "error"
    assert "no 'keys' list" in detail(report, "jwks")

    symmetric = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "use": "sig"}]}
    discovery = FakeOidcProvider(ISSUER).discovery()
    report = await inspect_oidc(
        ISSUER, context_for(static_idp(discovery, symmetric)), connection_id="x", client_id="c"
    )
    assert statuses(report)["jwks"] == "error"
    assert "none usable" in detail(report, "jwks")


async def test_keys_without_alg_or_use_are_a_warning(idp: FakeOidcProvider) -> None:
    unlabelled = [
        {k: v for k, v in key.items() if k not in ("alg", "use")} for key in idp.jwks()["keys"]
    ]
    discovery = idp.discovery() | {"id_token_signing_alg_values_supported": ["RS256", "ES256"]}
    report = await inspect_oidc(
        ISSUER,
        context_for(static_idp(discovery, {"keys": unlabelled})),
        connection_id="acme-oidc",
        client_id="c",
    )
    assert report.ok
    assert statuses(report)["jwks_labels"] == "warning"
    assert report.connection is not None
    assert report.connection["algorithms"] == ["RS256", "ES256"]


async def test_pkce_not_advertised_is_a_warning_and_no_code_flow_an_error(
    idp: FakeOidcProvider,
) -> None:
    del_pkce = {"code_challenge_methods_supported": None}
    idp.metadata_overrides.update(del_pkce)
    report = await inspect_oidc(ISSUER, ctx(idp), connection_id="acme-oidc", client_id="c")
    assert statuses(report)["pkce"] == "warning" and report.ok
    idp.metadata_overrides["response_types_supported"] = ["id_token", "token id_token"]
    report = await inspect_oidc(ISSUER, ctx(idp), connection_id="acme-oidc", client_id="c")
    assert statuses(report)["response_type"] == "error" and not report.ok


async def test_plain_http_is_refused_unless_on_loopback() -> None:
    report = await inspect_oidc(
        "http://idp.acme.test",
        context_for(lambda r: httpx.Response(404)),
        connection_id="x",
    )
    assert statuses(report)["https"] == "error"
    local = await inspect_oidc(
        "http://127.0.0.1:9", context_for(lambda r: httpx.Response(404)), connection_id="x"
    )
    assert statuses(local)["https"] == "ok"


async def test_not_json_is_an_error() -> None:
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"})

    report = await inspect_oidc(ISSUER, context_for(html), connection_id="x")
    assert statuses(report) == {"https": "ok", "discovery": "error"}
    assert "is not JSON (text/html)" in detail(report, "discovery")


async def test_non_200_and_redirect_are_errors() -> None:
    report = await inspect_oidc(
        ISSUER, context_for(lambda r: httpx.Response(500)), connection_id="x"
    )
    assert "answered HTTP 500" in detail(report, "discovery")
    moved = httpx.Response(301, headers={"location": "https://idp.acme.test/realm"})
    report = await inspect_oidc(ISSUER, context_for(lambda r: moved), connection_id="x")
    assert "redirects (HTTP 301) to https://idp.acme.test/realm" in detail(report, "discovery")


async def test_an_oversized_document_is_an_error() -> None:
    huge = httpx.Response(200, json={"issuer": ISSUER, "padding": "x" * (2 * 1024 * 1024)})
    report = await inspect_oidc(ISSUER, context_for(lambda r: huge), connection_id="x")
    assert "larger than 1024 KiB" in detail(report, "discovery")


async def test_connection_refused_is_an_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    report = await inspect_oidc(url, ConnectorContext(hub_base_url=BASE), connection_id="x")
    assert not report.ok and report.connection is None
    assert "refused the connection" in detail(report, "discovery")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("[Errno -2] Name or service not known"), "does not resolve (DNS)"),
        (httpx.ConnectTimeout("timed out"), "did not answer within 10 s"),
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]"), "TLS with idp.acme.test"),
    ],
)
async def test_network_failures_are_named(error: httpx.HTTPError, expected: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    report = await inspect_oidc(ISSUER, context_for(fail), connection_id="x")
    assert statuses(report)["discovery"] == "error"
    assert expected in detail(report, "discovery")


@pytest.mark.parametrize("url", ["idp.acme.test", "ftp://idp.acme.test", f"{ISSUER}?x=1"])
async def test_a_bad_url_is_an_error(url: str) -> None:
    report = await inspect_oidc(url, ConnectorContext(), connection_id="x")
    assert statuses(report) == {"url": "error"}


async def test_an_invalid_connection_id_is_an_error(idp: FakeOidcProvider) -> None:
    report = await inspect_oidc(ISSUER, ctx(idp), connection_id="Not Valid!", client_id="c")
    assert statuses(report)["connection"] == "error"
    assert "id:" in detail(report, "connection") and report.connection is None


# ================================================================== inspect_saml


@pytest.fixture
def saml_idp() -> Iterator[FakeSamlIdP]:
    idp = FakeSamlIdP("https://idp.acme.test/saml")
    yield idp
    idp.close()


def sign_metadata(idp: FakeSamlIdP, xml: str) -> str:
    """The metadata with an enveloped RSA-SHA256 signature on its root (as pyFF or
    SimpleSAMLphp sign it), made by xmlsec1 with the IdP's current key."""
    root = etree.fromstring(xml.encode())
    root.set("ID", "_metadata1")
    signature = etree.Element(f"{{{DS}}}Signature", nsmap={"ds": DS})
    info = etree.SubElement(signature, f"{{{DS}}}SignedInfo")
    etree.SubElement(info, f"{{{DS}}}CanonicalizationMethod", Algorithm=EXC_C14N)
    etree.SubElement(info, f"{{{DS}}}SignatureMethod", Algorithm=RSA_SHA256)
    reference = etree.SubElement(info, f"{{{DS}}}Reference", URI="#_metadata1")
    transforms = etree.SubElement(reference, f"{{{DS}}}Transforms")
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=ENVELOPED)
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=EXC_C14N)
    etree.SubElement(reference, f"{{{DS}}}DigestMethod", Algorithm=SHA256)
    etree.SubElement(reference, f"{{{DS}}}DigestValue")
    etree.SubElement(signature, f"{{{DS}}}SignatureValue")
    root.insert(0, signature)
    key = idp.signing_key
    done = subprocess.run(
        [
            "xmlsec1", "--sign", "--privkey-pem", f"{key.key_path},{key.cert_path}",
            "--id-attr:ID", f"{MD}:EntityDescriptor", "--node-id", "_metadata1", "-",
        ],
        input=etree.tostring(root),
        capture_output=True,
        check=True,
        timeout=30,
    )  # fmt: skip
    return done.stdout.decode()


async def test_good_metadata_passes(saml_idp: FakeSamlIdP) -> None:
    xml = saml_idp.metadata_xml()
    report = await inspect_saml(ConnectorContext(), connection_id="acme-saml", metadata_xml=xml)
    assert report.ok and report.status == "ok", report.to_dict()
    assert statuses(report) == {
        "source": "ok", "xml": "ok", "metadata_signature": "ok", "entity_id": "ok",
        "sso": "ok", "slo": "ok", "signing_certificate": "ok", "connection": "ok",
    }  # fmt: skip
    assert "https://idp.acme.test/saml" in detail(report, "entity_id")
    assert "HTTP-Redirect https://idp.acme.test/saml/sso/redirect" in detail(report, "sso")
    assert "CN=fake-saml-idp" in detail(report, "signing_certificate")
    assert report.connection == {"type": "saml", "id": "acme-saml", "idp_metadata_xml": xml}


async def test_no_single_logout_is_a_warning(saml_idp: FakeSamlIdP) -> None:
    report = await inspect_saml(
        ConnectorContext(), connection_id="acme-saml", metadata_xml=saml_idp.metadata_xml(slo=False)
    )
    assert report.ok and statuses(report)["slo"] == "warning"


async def test_an_expired_certificate_is_an_error() -> None:
    expired = FakeSamlIdP(cert_valid_days=-1)
    report = await inspect_saml(
        ConnectorContext(), connection_id="acme-saml", metadata_xml=expired.metadata_xml()
    )
    expired.close()
    assert not report.ok
    assert statuses(report)["signing_certificate"] == "error"
    assert "expired on" in detail(report, "signing_certificate")


async def test_a_certificate_near_expiry_is_a_warning(saml_idp: FakeSamlIdP) -> None:
    saml_idp.add_next_key(valid_days=10, common_name="next-key")
    report = await inspect_saml(
        ConnectorContext(), connection_id="acme-saml", metadata_xml=saml_idp.metadata_xml()
    )
    assert report.ok and report.status == "warning"
    found = [c for c in report.checks if c.name == "signing_certificate"]
    assert [c.status for c in found] == ["ok", "warning"]  # rollover: both certificates shown
    assert "CN=next-key" in found[1].detail and "ask the partner" in found[1].detail


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ('<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"', "well-formed"),
        (
            '<?xml version="1.0"?><!DOCTYPE md [<!ENTITY x "boom">]>'
            '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
            'entityID="&x;"/>',
            "DTD",
        ),
        ("<!DOCTYPE html><html><body>Sign in</body></html>", "is this an HTML page?"),
        ("not xml at all", "well-formed"),
    ],
)
async def test_malformed_metadata_is_an_error(xml: str, expected: str) -> None:
    report = await inspect_saml(ConnectorContext(), connection_id="acme-saml", metadata_xml=xml)
    assert statuses(report) == {"source": "ok", "xml": "error"}
    assert expected in detail(report, "xml") and report.connection is None


async def test_not_an_idp_descriptor_is_an_error(saml_idp: FakeSamlIdP) -> None:
    response = '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_1"/>'
    report = await inspect_saml(ConnectorContext(), connection_id="x", metadata_xml=response)
    assert statuses(report)["descriptor"] == "error"
    assert "not a SAML md:EntityDescriptor" in detail(report, "descriptor")
    sp_only = saml_idp.metadata_xml().replace("IDPSSODescriptor", "SPSSODescriptor")
    report = await inspect_saml(ConnectorContext(), connection_id="x", metadata_xml=sp_only)
    assert "describes no identity provider" in detail(report, "descriptor")


async def test_expired_metadata_is_an_error(saml_idp: FakeSamlIdP) -> None:
    xml = saml_idp.metadata_xml(valid_until=-60)
    report = await inspect_saml(ConnectorContext(), connection_id="x", metadata_xml=xml)
    assert statuses(report)["valid_until"] == "error" and not report.ok


async def test_signed_metadata_verifies_with_the_given_certificate(
    saml_idp: FakeSamlIdP,
) -> None:
    signed = sign_metadata(saml_idp, saml_idp.metadata_xml())
    report = await inspect_saml(
        ConnectorContext(),
        connection_id="acme-saml",
        metadata_xml=signed,
        signing_cert_pem=saml_idp.signing_key.cert_pem,
    )
    assert report.ok and report.status == "ok", report.to_dict()
    assert "verifies" in detail(report, "metadata_signature")
    assert statuses(report)["trusted_certificate"] == "ok"


async def test_tampered_signed_metadata_is_an_error(saml_idp: FakeSamlIdP) -> None:
    signed = sign_metadata(saml_idp, saml_idp.metadata_xml())
    tampered = signed.replace("https://idp.acme.test/saml/sso/post", "https://evil.test/sso")
    assert tampered != signed
    report = await inspect_saml(
        ConnectorContext(),
        connection_id="acme-saml",
        metadata_xml=tampered,
        signing_cert_pem=saml_idp.signing_key.cert_pem,
    )
    assert not report.ok
    assert statuses(report)["metadata_signature"] == "error"
    assert "does NOT verify" in detail(report, "metadata_signature")


async def test_metadata_signed_by_another_key_is_an_error(saml_idp: FakeSamlIdP) -> None:
    signed = sign_metadata(saml_idp, saml_idp.metadata_xml())
    other = FakeSamlIdP()
    report = await inspect_saml(
        ConnectorContext(),
        connection_id="acme-saml",
        metadata_xml=signed,
        signing_cert_pem=other.signing_key.cert_pem,
    )
    other.close()
    assert statuses(report)["metadata_signature"] == "error"


async def test_signed_metadata_without_a_trusted_certificate_is_a_warning(
    saml_idp: FakeSamlIdP,
) -> None:
    signed = sign_metadata(saml_idp, saml_idp.metadata_xml())
    report = await inspect_saml(ConnectorContext(), connection_id="acme-saml", metadata_xml=signed)
    assert report.ok and statuses(report)["metadata_signature"] == "warning"
    assert "no trusted certificate" in detail(report, "metadata_signature")


async def test_a_trusted_certificate_that_is_not_pem_is_an_error(saml_idp: FakeSamlIdP) -> None:
    report = await inspect_saml(
        ConnectorContext(),
        connection_id="acme-saml",
        metadata_xml=saml_idp.metadata_xml(),
        signing_cert_pem="-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----",
    )
    assert statuses(report)["trusted_certificate"] == "error"


def metadata_server(xml: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metadata":
            return httpx.Response(200, text=xml, headers={"content-type": "application/xml"})
        return httpx.Response(404)

    return handler


async def test_metadata_by_url(saml_idp: FakeSamlIdP) -> None:
    context = context_for(metadata_server(saml_idp.metadata_xml()))
    url = "https://idp.acme.test/metadata"
    report = await inspect_saml(context, connection_id="acme-saml", metadata_url=url)
    assert report.ok and report.status == "ok", report.to_dict()
    assert report.connection == {"type": "saml", "id": "acme-saml", "idp_metadata_url": url}
    missing = await inspect_saml(
        context, connection_id="acme-saml", metadata_url="https://idp.acme.test/gone"
    )
    assert statuses(missing) == {"source": "error"}
    assert "HTTP 404" in detail(missing, "source")


async def test_unsigned_metadata_over_plain_http_is_a_warning(saml_idp: FakeSamlIdP) -> None:
    context = context_for(metadata_server(saml_idp.metadata_xml()))
    report = await inspect_saml(
        context, connection_id="acme-saml", metadata_url="http://idp.acme.test/metadata"
    )
    assert report.ok and statuses(report)["metadata_signature"] == "warning"
    assert "not signed" in detail(report, "metadata_signature")


async def test_unreachable_metadata_url_is_an_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/metadata"
    report = await inspect_saml(ConnectorContext(), connection_id="x", metadata_url=url)
    assert statuses(report) == {"source": "error"}
    assert "refused the connection" in detail(report, "source")


async def test_exactly_one_metadata_source() -> None:
    neither = await inspect_saml(ConnectorContext(), connection_id="x")
    both = await inspect_saml(
        ConnectorContext(), connection_id="x", metadata_url="https://a.test/m", metadata_xml="<x/>"
    )
    assert statuses(neither) == statuses(both) == {"source": "error"}


# ================================================================== existing connections


def _mock_user(subject: str, domain: str, *roles: str, verified: bool = True) -> dict[str, Any]:
    return {"subject": subject, "email": f"{subject}@{domain}", "name": subject.title(),
            "roles": list(roles), "email_verified": verified}  # fmt: skip


def onboarding_settings(saml_xml: str) -> Settings:
    return Settings(
        issuer=BASE,
        allow_insecure_http=True,
        allow_mock_connections=True,
        partners=[
            {
                "id": "corp",
                "name": "Corp",
                "kind": "internal",
                "status": "active",
                "domains": ["corp.example"],
                "connections": [
                    {
                        "type": "mock",
                        "id": "corp-mock",
                        "users": [
                            _mock_user("root", "corp.example", "isthmus-admin"),
                            _mock_user("audrey", "corp.example", "isthmus-auditor"),
                            _mock_user("joe", "corp.example"),
                        ],
                    }
                ],
            },
            {
                "id": "acme",
                "name": "Acme",
                "kind": "supplier",
                "status": "invited",  # being onboarded: only test logins go through
                "domains": ["acme.example"],
                "connections": [
                    {
                        "type": "mock",
                        "id": "acme-mock",
                        "users": [
                            _mock_user("alice", "acme.example"),
                            _mock_user("mallory", "globex.example"),
                            _mock_user("eve", "acme.example", verified=False),
                        ],
                    },
                    {
                        "type": "oidc",
                        "id": "acme-oidc",
                        "issuer": ISSUER,
                        "client_id": "isthmus",
                        "client_secret": "s3cret",
                    },
                    {
                        "type": "oidc",
                        "id": "acme-es",
                        "issuer": ISSUER,
                        "client_id": "isthmus",
                        "client_secret": "s3cret",
                        "algorithms": ["ES256"],
                    },
                    {"type": "saml", "id": "acme-saml", "idp_metadata_xml": saml_xml},
                ],
            },
            {
                "id": "globex",
                "name": "Globex",
                "kind": "customer",
                "status": "active",
                "domains": ["globex.example"],
                "connections": [
                    {
                        "type": "mock",
                        "id": "globex-mock",
                        "users": [
                            _mock_user("gina", "globex.example", "partner-admin"),
                            _mock_user("gary", "globex.example"),
                        ],
                    }
                ],
            },
        ],
    )


@pytest.fixture
def audit_log() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def hub(idp: FakeOidcProvider, saml_idp: FakeSamlIdP, audit_log: list[dict[str, Any]]) -> Hub:
    context = ConnectorContext(hub_base_url=BASE, mounts=idp.mounts())
    return build_hub(
        onboarding_settings(saml_idp.metadata_xml()),
        context=context,
        audit=Audit([audit_log.append]),
    )


async def test_test_connection_oidc(hub: Hub) -> None:
    report = await onboarding.test_connection(hub, "acme", "acme-oidc")
    assert report.ok, report.to_dict()
    assert report.test_login_url == f"{BASE}/admin/test-login/acme-oidc"
    assert report.connection is None
    found = statuses(report)
    assert found["configured_algorithms"] == "ok" and found["issuer"] == "ok"
    assert found["partner"] == "warning" and "invited" in detail(report, "partner")
    assert found["domains"] == "ok"


async def test_test_connection_finds_algorithms_the_idp_does_not_use(hub: Hub) -> None:
    report = await onboarding.test_connection(hub, "acme", "acme-es")
    assert statuses(report)["configured_algorithms"] == "error"
    assert "ES256" in detail(report, "configured_algorithms")


async def test_test_connection_of_an_idp_gone_down(hub: Hub, idp: FakeOidcProvider) -> None:
    idp.network_error = httpx.ConnectError("[Errno 111] Connection refused")
    report = await onboarding.test_connection(hub, "acme", "acme-oidc")
    assert not report.ok and statuses(report)["discovery"] == "error"
    assert report.test_login_url is not None


async def test_test_connection_saml_and_mock(hub: Hub) -> None:
    saml = await onboarding.test_connection(hub, "acme", "acme-saml")
    assert saml.ok, saml.to_dict()
    assert statuses(saml)["signing_certificate"] == "ok"
    assert saml.test_login_url == f"{BASE}/admin/test-login/acme-saml"
    mock = await onboarding.test_connection(hub, "globex", "globex-mock")
    assert mock.ok and mock.status == "ok"
    assert statuses(mock) == {"mock": "ok", "partner": "ok", "domains": "ok"}


async def test_test_connection_of_an_unknown_connection(hub: Hub) -> None:
    with pytest.raises(NotFound):
        await onboarding.test_connection(hub, "acme", "globex-mock")  # another partner's
    with pytest.raises(NotFound):
        await onboarding.test_connection(hub, "nobody", "acme-oidc")


# ================================================================== the test login


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(hub=hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


async def as_user(client: httpx.AsyncClient, email: str) -> None:
    signed_in = await sign_in(client, email, email.split("@")[0])
    assert signed_in.status_code == 303, signed_in.text


async def start_test(client: httpx.AsyncClient, connection_id: str) -> httpx.Response:
    return await client.get(f"/admin/test-login/{connection_id}")


def no_cookie_set(response: httpx.Response) -> bool:
    return "set-cookie" not in response.headers


async def test_test_login_through_the_mock_shows_the_identity_and_opens_no_session(
    client: httpx.AsyncClient, hub: Hub, audit_log: list[dict[str, Any]]
) -> None:
    await as_user(client, "root@corp.example")
    admin_session = client.cookies["isthmus_session"]
    to_idp = await start_test(client, "acme-mock")
    assert to_idp.status_code == 303, to_idp.text
    assert urlsplit(to_idp.headers["location"]).path == "/mock/acme-mock"
    state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
    started = len(audit_log)

    page = await client.get("/callback/acme-mock", params={"state": state, "user": "alice"})

    assert page.status_code == 200, page.text
    assert no_cookie_set(page)
    assert client.cookies["isthmus_session"] == admin_session  # the admin's, untouched
    assert 'id="subject"><code>alice</code>' in page.text
    assert "alice@acme.example" in page.text and "verified by the IdP" in page.text
    assert "<strong>Passed</strong>: acme.example is a verified domain of acme" in page.text
    assert "acme is <strong>invited</strong>" in page.text  # test logins work before activation
    assert "<code>email</code>" in page.text and "<code>sub</code>" in page.text
    events = audit_log[started:]
    assert [e["event"] for e in events] == ["admin.connection.test_login"]
    assert events[0]["step"] == "completed" and events[0]["outcome"] == "success"
    assert events[0]["actor"] == "root@corp.example (corp)" and events[0]["subject"] == "alice"
    assert not any(
        e["event"] == "login.succeeded" and e.get("partner") == "acme" for e in audit_log
    )
    assert audit_log[started - 1]["event"] == "admin.connection.test_login"
    assert audit_log[started - 1]["step"] == "started"


async def test_test_login_shows_a_failed_binding_and_a_dropped_email(
    client: httpx.AsyncClient, audit_log: list[dict[str, Any]]
) -> None:
    await as_user(client, "root@corp.example")
    for user, expected in [
        ("mallory", "<strong>Failed</strong>: refused: connection acme-mock of partner acme "
                    "asserted &#39;mallory@globex.example&#39;; domain &#39;globex.example&#39; "
                    "belongs to globex"),
        ("eve", "but the IdP does not assert the email verified: it is dropped"),
    ]:  # fmt: skip
        to_idp = await start_test(client, "acme-mock")
        state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
        page = await client.get("/callback/acme-mock", params={"state": state, "user": user})
        assert page.status_code == 200 and no_cookie_set(page)
        assert expected in page.text, page.text
    completed = [e for e in audit_log if e.get("step") == "completed"]
    assert [e["outcome"] for e in completed] == ["failure", "success"]  # mallory, then eve


async def test_test_login_through_the_fake_oidc_idp(
    client: httpx.AsyncClient, idp: FakeOidcProvider
) -> None:
    await as_user(client, "root@corp.example")
    to_idp = await start_test(client, "acme-oidc")
    assert to_idp.status_code == 303
    assert to_idp.headers["location"].startswith(f"{ISSUER}/authorize?")
    params = await idp.authorize(to_idp.headers["location"])

    page = await client.get("/callback/acme-oidc", params=params)

    assert page.status_code == 200, page.text
    assert no_cookie_set(page)
    assert f'id="issuer">{ISSUER}<' in page.text
    assert 'id="subject"><code>alice</code>' in page.text
    assert "<strong>Passed</strong>" in page.text
    assert "<code>nonce</code>" in page.text and "<code>email_verified</code>" in page.text


async def test_test_login_through_the_fake_saml_idp(
    client: httpx.AsyncClient, saml_idp: FakeSamlIdP
) -> None:
    await as_user(client, "root@corp.example")
    to_idp = await start_test(client, "acme-saml")
    assert to_idp.status_code == 303
    request = saml_idp.read_authn_request(to_idp.headers["location"])
    assert request.acs_url == f"{BASE}/callback/acme-saml"
    alice = SamlUser("alice-nameid", email="alice@acme.example", groups=("eng",))
    xml = saml_idp.response(
        acs_url=request.acs_url,
        sp_entity_id=str(request.issuer),
        in_response_to=request.id,
        user=alice,
    )
    # The IdP's cross-site POST is parked, then resumed by a GET that carries the cookie.
    parked = await client.post(
        "/callback/acme-saml", data=saml_idp.post_params(xml, request.relay_state)
    )
    assert parked.status_code == 303
    page = await client.get(parked.headers["location"])

    assert page.status_code == 200, page.text
    assert no_cookie_set(parked) and no_cookie_set(page)
    assert 'id="subject"><code>alice-nameid</code>' in page.text
    assert 'id="groups">eng<' in page.text and "<strong>Passed</strong>" in page.text


async def test_a_failing_callback_is_shown_to_the_admin(
    client: httpx.AsyncClient, idp: FakeOidcProvider
) -> None:
    await as_user(client, "root@corp.example")
    to_idp = await start_test(client, "acme-oidc")
    idp.tamper_next_id_token(claims={"aud": "someone-else"})
    params = await idp.authorize(to_idp.headers["location"])
    page = await client.get("/callback/acme-oidc", params=params)
    assert page.status_code == 200 and no_cookie_set(page)
    assert 'id="test-error"' in page.text and "ID token refused" in page.text


async def test_an_idp_down_at_the_start_is_shown_to_the_admin(
    client: httpx.AsyncClient, idp: FakeOidcProvider
) -> None:
    await as_user(client, "root@corp.example")
    idp.network_error = httpx.ConnectError("[Errno 111] Connection refused")
    page = await start_test(client, "acme-oidc")
    assert page.status_code == 502
    assert "upstream_error" in page.text and "unreachable" in page.text


async def test_the_callback_must_come_back_to_the_browser_that_started_it(
    client: httpx.AsyncClient, hub: Hub
) -> None:
    await as_user(client, "root@corp.example")
    to_idp = await start_test(client, "acme-mock")
    state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
    transport = httpx.ASGITransport(app=create_app(hub=hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as stranger:
        page = await stranger.get("/callback/acme-mock", params={"state": state, "user": "alice"})
    assert page.status_code == 400 and "alice@acme.example" not in page.text


async def test_a_real_login_of_the_invited_partner_is_still_refused(hub: Hub) -> None:
    broker = Broker(hub)
    with pytest.raises(PartnerNotActive):
        await broker.start(broker.begin("/"), "acme-mock")


@pytest.mark.parametrize(
    ("email", "connection_id", "status"),
    [
        (None, "acme-mock", 401),  # nobody signed in
        ("joe@corp.example", "acme-mock", 403),  # staff without an admin role
        ("audrey@corp.example", "acme-mock", 403),  # auditors read, they do not test
        ("gina@globex.example", "acme-mock", 404),  # another partner's admin
        ("gary@globex.example", "globex-mock", 403),  # a partner user
        ("gina@globex.example", "globex-mock", 303),  # their own partner's admin
        ("root@corp.example", "nope", 404),
    ],
)
async def test_who_may_run_a_test_login(
    client: httpx.AsyncClient, email: str | None, connection_id: str, status: int
) -> None:
    if email is not None:
        await as_user(client, email)
    response = await start_test(client, connection_id)
    assert response.status_code == status, response.text
    if status != 303:
        assert "isthmus_flow" not in response.headers.get("set-cookie", "")


async def test_test_connection_of_a_keycloak_realm(idp: FakeOidcProvider) -> None:
    """A `keycloak` connection is checked as the OIDC issuer its realm is."""
    realm = FakeOidcProvider("https://kc.corp.test/realms/staff", users=[FakeUser("root")])
    settings = onboarding_settings("<unused/>")
    corp = settings.partners[0].model_dump()
    corp["connections"] = [
        *corp["connections"],
        {"type": "keycloak", "id": "corp-kc", "server_url": "https://kc.corp.test",
         "realm": "staff", "client_id": "isthmus", "client_secret": "s3cret"},
    ]  # fmt: skip
    settings = settings.model_copy(update={"partners": (type(settings.partners[0])(**corp),)})
    context = ConnectorContext(hub_base_url=BASE, mounts={**idp.mounts(), **realm.mounts()})
    hub = build_hub(settings, context=context)
    try:
        report = await onboarding.test_connection(hub, "corp", "corp-kc")
    finally:
        await hub.aclose()
    assert report.ok, report.to_dict()
    assert statuses(report)["issuer"] == "ok"
    assert report.test_login_url == f"{BASE}/admin/test-login/corp-kc"


async def test_test_connection_of_a_one_time_code_connection(idp: FakeOidcProvider) -> None:
    """An `otp` connection reports the SMTP server its codes go through."""
    settings = onboarding_settings("<unused/>")
    acme = settings.partners[1].model_dump()
    acme["connections"] = [*acme["connections"], {"type": "otp", "id": "acme-otp"}]
    partners = (settings.partners[0], type(settings.partners[1])(**acme), settings.partners[2])
    settings = settings.model_copy(
        update={"partners": partners, "smtp": settings.smtp.model_copy(update={"port": 2525})}
    )
    hub = build_hub(settings, context=ConnectorContext(hub_base_url=BASE, mounts=idp.mounts()))
    try:
        report = await onboarding.test_connection(hub, "acme", "acme-otp")
    finally:
        await hub.aclose()
    assert statuses(report)["otp"] == "ok"
    assert ":2525" in detail(report, "otp")
    assert report.test_login_url == f"{BASE}/admin/test-login/acme-otp"

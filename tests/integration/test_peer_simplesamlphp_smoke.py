"""Smoke: the SimpleSAMLphp peer (tests/peers/simplesamlphp.py) with pysaml2 as a plain SP.

What the hub's SAML tests rely on, shown without the hub: SP-initiated login over a signed
HTTP-Redirect AuthnRequest (wrong password first), the user's attributes and NameID in a
Response that pysaml2 validates against the IdP's metadata (xmlsec1) and that is refused
once tampered with; IdP-initiated SSO; unsigned AuthnRequests refused when the peer
requires signed ones; an encrypted assertion; an SP registered by its metadata XML, and an
unknown SP refused; OID attribute names; single logout initiated by the SP and by the IdP
(signed HTTP-Redirect messages); the peer's process group gone after ``stop()``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.peers.browser import Browser, find_form
from tests.peers.common import free_port
from tests.peers.simplesamlphp import (
    PERSISTENT_NAMEID,
    PlainSP,
    SamlPeer,
    StartSamlPeer,
    redirect_message,
)

pytestmark = pytest.mark.integration

ALICE_ATTRIBUTES = {
    "uid": ["alice"],
    "email": ["alice@initech.example"],
    "givenName": ["Alice"],
    "sn": ["Anderson"],
    "name": ["Alice Anderson"],
    "displayName": ["Alice Anderson"],
    "groups": ["engineering", "admins"],
}
EMAIL_NAMEID = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"


@pytest.fixture(scope="module")
def sp_base() -> str:
    # Never served: the browser stops at the IdP's auto-POST form / redirect to it.
    return f"http://127.0.0.1:{free_port()}"


def plain_sp(tmp_path_factory: pytest.TempPathFactory, base: str, name: str) -> PlainSP:
    return PlainSP(
        tmp_path_factory.mktemp(f"plain-sp-{name}"),
        entity_id=f"{base}/{name}/metadata",
        acs_url=f"{base}/{name}/acs",
        slo_url=f"{base}/{name}/slo",
    )


@contextlib.contextmanager
def peer_of(
    start: StartSamlPeer, sp: PlainSP, name: str, *, by_metadata: bool = False, **kwargs: Any
) -> Iterator[SamlPeer]:
    """A running peer that knows ``sp`` (by its parts, or by its metadata), trusted by it;
    stopped afterwards."""
    known: dict[str, Any] = (
        {"sp_metadata_xml": sp.metadata_xml()}
        if by_metadata
        else {"sp_entity_id": sp.entity_id, "sp_acs_url": sp.acs_url, "sp_cert_pem": sp.cert_pem}
    )
    peer = start(name, email_domain="initech.example", **known, **kwargs)
    try:
        sp.trust(peer.metadata_xml())
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def sp(tmp_path_factory: pytest.TempPathFactory, sp_base: str) -> PlainSP:
    return plain_sp(tmp_path_factory, sp_base, "sp")


@pytest.fixture(scope="module")
def idp(simplesamlphp_peer: StartSamlPeer, sp: PlainSP) -> Iterator[SamlPeer]:
    with peer_of(simplesamlphp_peer, sp, "smoke-idp", sp_slo_url=sp.slo_url) as peer:
        yield peer


def saml_post_form(page: httpx.Response, acs_url: str) -> dict[str, str]:
    """The IdP's auto-POST form to the SP's ACS: its fields (never submitted here)."""
    assert page.status_code == 200, page.text[:1500]
    form = find_form(page, with_field="SAMLResponse")
    assert form.method == "POST" and form.action == acs_url, form
    return form.fields


def response_xml(fields: dict[str, str]) -> str:
    return base64.b64decode(fields["SAMLResponse"]).decode()


def sp_login(
    browser: Browser,
    sp: PlainSP,
    idp: SamlPeer,
    username: str = "alice",
    nameid_format: str | None = None,
) -> tuple[dict[str, str], str]:
    """SP-initiated login up to the auto-POST form: (its fields, the AuthnRequest ID)."""
    url, request_id = sp.authn_request_url("rs-sp-init", nameid_format=nameid_format)
    assert url.startswith(idp.sso_url + "?SAMLRequest=") and "&Signature=" in url
    form_page = browser.get(url)
    assert str(form_page.url).startswith(idp.login_form_url + "?AuthState=")
    done = browser.login(form_page, username, f"{username}-password")
    return saml_post_form(done, sp.acs_url), request_id


# --- metadata -------------------------------------------------------------------------------


def test_metadata_names_the_signing_certificate_and_endpoints(idp: SamlPeer) -> None:
    xml = idp.metadata_xml()
    assert f'entityID="{idp.entity_id}"' in xml
    cert_body = "".join(idp.cert_pem.strip().splitlines()[1:-1])
    assert cert_body in re.sub(r"\s+", "", xml)
    for binding in ("HTTP-Redirect", "HTTP-POST"):
        assert re.search(
            rf'SingleSignOnService Binding="[^"]*{binding}" Location="{idp.sso_url}"', xml
        )
        assert re.search(
            rf'SingleLogoutService Binding="[^"]*{binding}" Location="{idp.slo_url}"', xml
        )


# --- SSO ---------------------------------------------------------------------------------------


def test_sp_initiated_login_gives_a_signed_response_pysaml2_accepts(
    idp: SamlPeer, sp: PlainSP, browser: Browser
) -> None:
    url, request_id = sp.authn_request_url("rs-sp-init")
    form_page = browser.get(url)
    assert find_form(form_page, with_field="password").fields.keys() >= {"AuthState"}
    assert any(c in browser.cookies for c in idp.cookie_names)

    wrong = browser.login(form_page, "alice", "wrong-password")
    assert wrong.status_code == 200 and "SAMLResponse" not in wrong.text
    done = browser.login(wrong, "alice", "alice-password")
    fields = saml_post_form(done, sp.acs_url)
    assert fields["RelayState"] == "rs-sp-init"
    xml = response_xml(fields)
    assert len(re.findall(r"<ds:Signature[\s>]", xml)) == 2  # Response and Assertion
    assert "EncryptedAssertion" not in xml

    response = sp.parse_response(fields["SAMLResponse"], request_id)
    assert response.issuer() == idp.entity_id
    assert response.in_response_to == request_id
    assert response.name_id.text == "alice@initech.example"
    assert response.name_id.format == EMAIL_NAMEID
    assert response.get_identity() == ALICE_ATTRIBUTES
    statement = response.assertion.authn_statement[0]
    assert statement.session_index
    context = statement.authn_context.authn_context_class_ref.text
    assert context == "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"

    # the same response, tampered with, is refused: pysaml2 really checks the signature
    evil = xml.replace(">alice@initech.example<", ">mallory@initech.example<")
    assert evil != xml
    logging.getLogger("saml2").setLevel(logging.CRITICAL)  # xmlsec1's failure output is expected
    with pytest.raises(Exception, match=r"(?i)signature|sign"):
        sp.parse_response(base64.b64encode(evil.encode()).decode(), request_id)

    # IdP-initiated SSO rides on the IdP session: no login form, no InResponseTo
    unsolicited = browser.get(idp.idp_initiated_url(sp.entity_id, "rs-idp-init"))
    fields = saml_post_form(unsolicited, sp.acs_url)
    assert fields["RelayState"] == "rs-idp-init"
    response = sp.parse_response(fields["SAMLResponse"], None)
    assert response.in_response_to is None and response.name_id.text == "alice@initech.example"


def test_nameid_format_follows_the_sp_policy_and_groups_may_be_empty(
    idp: SamlPeer, sp: PlainSP, browser: Browser
) -> None:
    fields, request_id = sp_login(browser, sp, idp, "carol", nameid_format=PERSISTENT_NAMEID)
    response = sp.parse_response(fields["SAMLResponse"], request_id)
    assert response.name_id.format == PERSISTENT_NAMEID
    assert re.fullmatch(r"[0-9a-f]{40}", response.name_id.text)
    assert response.get_identity()["groups"] == []  # present, without a value
    assert '<saml:Attribute Name="groups"' in response_xml(fields)


def test_unsigned_authnrequest_refused_when_signatures_are_required(
    simplesamlphp_peer: StartSamlPeer,
    tmp_path_factory: pytest.TempPathFactory,
    sp_base: str,
    browser: Browser,
) -> None:
    strict_sp = plain_sp(tmp_path_factory, sp_base, "strict")
    with peer_of(
        simplesamlphp_peer, strict_sp, "smoke-strict", require_signed_authnrequest=True
    ) as peer:
        unsigned, _ = strict_sp.authn_request_url("rs", sign=False)
        assert "Signature=" not in unsigned
        refused = browser.get(unsigned)
        assert "Unhandled exception" in refused.text and "SAMLResponse" not in refused.text
        assert "Validation of received messages enabled, but no signature found" in peer.log()

        fields, request_id = sp_login(browser, strict_sp, peer)
        assert strict_sp.parse_response(fields["SAMLResponse"], request_id).name_id.text


def test_encrypted_assertion(
    simplesamlphp_peer: StartSamlPeer,
    tmp_path_factory: pytest.TempPathFactory,
    sp_base: str,
    browser: Browser,
) -> None:
    enc_sp = plain_sp(tmp_path_factory, sp_base, "enc")
    with peer_of(
        simplesamlphp_peer, enc_sp, "smoke-enc", encrypt_assertion=True, sign_response=False
    ) as peer:
        fields, request_id = sp_login(browser, enc_sp, peer)
        xml = response_xml(fields)
        assert "<saml:EncryptedAssertion" in xml and "alice@initech.example" not in xml
        assert not re.search(r"<ds:Signature[\s>]", xml)  # the signed assertion is encrypted
        response = enc_sp.parse_response(fields["SAMLResponse"], request_id)
        assert response.get_identity() == ALICE_ATTRIBUTES


def test_sp_registered_by_metadata_xml_oid_attributes_unknown_sp_refused(
    simplesamlphp_peer: StartSamlPeer,
    tmp_path_factory: pytest.TempPathFactory,
    sp_base: str,
    browser: Browser,
) -> None:
    md_sp = plain_sp(tmp_path_factory, sp_base, "by-metadata")
    with peer_of(
        simplesamlphp_peer,
        md_sp,
        "smoke-md",
        by_metadata=True,
        attribute_nameformat="uri",
        users=[{"username": "alice", "password": "alice-password", "groups": ["ops"]}],
    ) as peer:
        fields, request_id = sp_login(browser, md_sp, peer)
        xml = response_xml(fields)
        assert 'Name="urn:oid:1.2.840.113549.1.9.1"' in xml  # email (PKCS #9)
        assert 'NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri"' in xml
        response = md_sp.parse_response(fields["SAMLResponse"], request_id)
        assert response.name_id.text == "alice@initech.example"

        unknown = browser.get(peer.idp_initiated_url("https://unknown.example/sp"))
        assert "Metadata not found" in unknown.text and "SAMLResponse" not in unknown.text

        # a second SP on the running peer, no restart
        late = plain_sp(tmp_path_factory, sp_base, "late")
        peer.register_sp(sp_entity_id=late.entity_id, sp_acs_url=late.acs_url)
        late.trust(peer.metadata_xml())
        page = browser.get(peer.idp_initiated_url(late.entity_id, "rs-late"))
        assert late.parse_response(saml_post_form(page, late.acs_url)["SAMLResponse"], None)


# --- single logout -----------------------------------------------------------------------------


def test_sp_initiated_single_logout(idp: SamlPeer, sp: PlainSP, browser: Browser) -> None:
    fields, request_id = sp_login(browser, sp, idp, "bob")
    response = sp.parse_response(fields["SAMLResponse"], request_id)
    session_index = response.assertion.authn_statement[0].session_index

    url, logout_id = sp.logout_request_url(idp.slo_url, response.name_id, session_index, "rs-out")
    back = browser.get(url, stop_at=sp.slo_url)
    message = redirect_message(browser.location(back), idp.cert_pem)
    assert message.kind == "SAMLResponse" and message.signed and message.relay_state == "rs-out"
    logout = sp.parse_logout_response(message)
    assert logout.response.in_response_to == logout_id
    assert logout.response.status.status_code.value.endswith(":Success")

    # the IdP session is gone: a new login shows the form again
    url, _ = sp.authn_request_url("rs-again")
    again = browser.get(url)
    assert str(again.url).startswith(idp.login_form_url)


def test_idp_initiated_single_logout(idp: SamlPeer, sp: PlainSP, browser: Browser) -> None:
    fields, request_id = sp_login(browser, sp, idp)
    response = sp.parse_response(fields["SAMLResponse"], request_id)

    to_sp = browser.get(idp.init_slo_url("http://rp.test/bye"), stop_at=sp.slo_url)
    message = redirect_message(browser.location(to_sp), idp.cert_pem)
    assert message.kind == "SAMLRequest" and message.signed
    request = sp.parse_logout_request(message).message
    assert request.issuer.text == idp.entity_id and request.destination == sp.slo_url
    assert request.name_id.text == "alice@initech.example"
    assert [s.text for s in request.session_index] == [
        response.assertion.authn_statement[0].session_index
    ]


# --- the process --------------------------------------------------------------------------------


def test_stop_takes_down_the_whole_process_group(simplesamlphp_peer: StartSamlPeer) -> None:
    peer = simplesamlphp_peer("smoke-stop", email_domain="initech.example")
    group = os.getpgid(peer.process.pid)
    assert group == peer.process.pid  # its own session / group
    assert len(_group_members(group)) >= 2  # the wrapper, php and its workers
    peer.stop()
    assert not peer.running and _group_members(group) == []  # stop() waited for all of them
    with pytest.raises(httpx.TransportError):
        httpx.get(peer.metadata_url, timeout=2)
    assert urlsplit(peer.base_url).hostname == "127.0.0.1"


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members

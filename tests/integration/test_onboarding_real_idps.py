"""Onboarding against real partner IdPs: node oidc-provider and SimpleSAMLphp.

The inspections read what real IdPs publish (not what the fakes were written to publish);
the settings they suggest are then handed to the real connectors, which must accept them.
A test login runs through the real oidc-provider (its login form included) into the hub
served in-process, and shows the identity without opening a session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from connectors.oidc import OidcConnector
from connectors.registry import ConnectorContext
from connectors.saml import SamlConnector
from federation.admin import onboarding
from federation.admin.onboarding import Report, inspect_oidc, inspect_saml
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.identity import FederatedIdentity
from federation.settings import OidcConnectionSettings, SamlConnectionSettings, Settings
from federation.web.app import create_app
from tests.peers.browser import find_form
from tests.peers.oidc_provider import Peer, StartPeer
from tests.peers.simplesamlphp import SamlPeer, StartSamlPeer

pytestmark = pytest.mark.integration

HUB = "http://127.0.0.1:8080"  # served in-process (mounted), never on a real port
CONNECTION = "onboard-oidc"


def statuses(report: Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


@pytest.fixture(scope="module")
def oidc_peer(oidc_provider_peer: StartPeer) -> Peer:
    return oidc_provider_peer(
        "onboard",
        email_domain="onboard.example",
        client_id="hub",
        client_secret="hub-secret-onboard",
        redirect_uris=[f"{HUB}/callback/{CONNECTION}"],
        pkce_required=True,
    )


@pytest.fixture(scope="module")
def saml_peer(simplesamlphp_peer: StartSamlPeer) -> SamlPeer:
    return simplesamlphp_peer("onboard-saml", email_domain="onboard.example")


async def test_inspect_oidc_against_oidc_provider(oidc_peer: Peer) -> None:
    context = ConnectorContext(hub_base_url=HUB)
    report = await inspect_oidc(
        oidc_peer.discovery_url,
        context,
        connection_id=CONNECTION,
        client_id="hub",
        client_secret="hub-secret-onboard",
    )
    assert report.ok, report.to_dict()
    found = statuses(report)
    for name in ("https", "discovery", "issuer", "endpoints", "response_type", "pkce", "jwks"):
        assert found[name] == "ok", report.to_dict()
    assert report.connection is not None
    assert report.connection["issuer"] == oidc_peer.issuer
    assert "RS256" in report.connection["algorithms"]
    assert not {"HS256", "none"} & set(report.connection["algorithms"])
    # The suggestion is what the connector needs: it reads the same discovery document.
    connector = OidcConnector("onboard", OidcConnectionSettings(**report.connection), context)
    try:
        metadata = await connector.metadata()
        assert metadata.issuer == oidc_peer.issuer
    finally:
        await connector.aclose()


async def test_inspect_oidc_of_a_stopped_idp(oidc_provider_peer: StartPeer) -> None:
    gone = oidc_provider_peer(
        "onboard-gone",
        email_domain="gone.example",
        client_id="hub",
        client_secret="s",
        redirect_uris=[f"{HUB}/callback/gone"],
    )
    gone.stop()
    report = await inspect_oidc(gone.issuer, ConnectorContext(), connection_id="gone")
    assert not report.ok
    assert "refused the connection" in " ".join(c.detail for c in report.checks)


async def test_inspect_saml_against_simplesamlphp(saml_peer: SamlPeer) -> None:
    context = ConnectorContext(hub_base_url=HUB)
    report = await inspect_saml(
        context, connection_id="onboard-saml", metadata_url=saml_peer.metadata_url
    )
    assert report.ok, report.to_dict()
    found = statuses(report)
    for name in ("source", "xml", "entity_id", "sso", "slo", "signing_certificate"):
        assert found[name] == "ok", report.to_dict()
    # SimpleSAMLphp does not sign its metadata here, and it is served over plain http.
    assert found["metadata_signature"] == "warning"
    details = " ".join(c.detail for c in report.checks)
    assert saml_peer.entity_id in details and saml_peer.sso_url in details
    assert report.connection == {
        "type": "saml",
        "id": "onboard-saml",
        "idp_metadata_url": saml_peer.metadata_url,
    }
    connector = SamlConnector("onboard", SamlConnectionSettings(**report.connection), context)
    try:
        idp = await connector.idp()
        assert idp.entity_id == saml_peer.entity_id
    finally:
        await connector.aclose()


# ------------------------------------------------------------------ the test login


def _settings(peer: Peer, report: Report) -> Settings:
    assert report.connection is not None
    return Settings(
        issuer=HUB,
        allow_insecure_http=True,
        partners=[
            {"id": "corp", "name": "Corp", "kind": "internal", "status": "active",
             "domains": ["corp.example"]},
            {"id": "onboard", "name": "Onboard", "kind": "supplier", "status": "invited",
             "domains": [peer.email_domain], "connections": [report.connection]},
        ],
    )  # fmt: skip


@pytest.fixture
def audit_log() -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def hub(oidc_peer: Peer, audit_log: list[dict[str, Any]]) -> AsyncIterator[Hub]:
    report = await inspect_oidc(
        oidc_peer.issuer,
        ConnectorContext(hub_base_url=HUB),
        connection_id=CONNECTION,
        client_id="hub",
        client_secret="hub-secret-onboard",
    )
    hub = build_hub(_settings(oidc_peer, report), audit=Audit([audit_log.append]))
    yield hub
    await hub.aclose()


async def test_test_login_through_oidc_provider(
    hub: Hub, oidc_peer: Peer, audit_log: list[dict[str, Any]]
) -> None:
    report = await onboarding.test_connection(hub, "onboard", CONNECTION)
    assert report.ok, report.to_dict()
    assert report.test_login_url == f"{HUB}/admin/test-login/{CONNECTION}"

    admin = FederatedIdentity("corp", "corp-intranet", "https://intranet.test", "root",
                              roles=("isthmus-admin",))  # fmt: skip
    session = await hub.sessions.create(admin)
    app = httpx.ASGITransport(app=create_app(hub=hub))
    async with httpx.AsyncClient(mounts={HUB: app}, follow_redirects=True, timeout=10) as browser:
        browser.cookies.set("isthmus_session", session.id, domain="127.0.0.1")
        login_page = await browser.get(report.test_login_url)
        assert login_page.url.host == "127.0.0.1" and login_page.url.port == oidc_peer.port
        form = find_form(login_page, form_id="login")
        alice: dict[str, Any] = oidc_peer.user("alice")
        data = {**form.fields, "login": "alice", "password": alice["password"]}
        result = await browser.post(form.action, data=data)

    assert result.status_code == 200, result.text
    assert str(result.url).startswith(f"{HUB}/callback/{CONNECTION}?")
    assert f'id="issuer">{oidc_peer.issuer}<' in result.text
    assert alice["email"] in result.text and "<strong>Passed</strong>" in result.text
    assert "onboard is <strong>invited</strong>" in result.text
    assert all("set-cookie" not in r.headers for r in [*result.history, result]
               if str(r.url).startswith(f"{HUB}/callback/"))  # fmt: skip
    tests = [e for e in audit_log if e["event"] == "admin.connection.test_login"]
    assert [(e["step"], e["outcome"]) for e in tests] == [
        ("started", "success"),
        ("completed", "success"),
    ]
    assert not any(e["event"] == "login.succeeded" for e in audit_log)

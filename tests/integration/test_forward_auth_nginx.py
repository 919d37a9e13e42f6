"""Forward-auth with a real nginx (Debian) in front of a test upstream.

Browser → nginx (``auth_request`` → the hub's ``/forward-auth``) → upstream echo app.
Users of two partners (mock connections) sign in through the hub; everything is on
127.0.0.1 (the hub, nginx and the upstream on their own ports: cookies are scoped by
host, not port, so the hub's host-only session cookie reaches nginx too). Allowed, denied
and unauthenticated requests behave as the app's policy says; identity headers a client
sends never reach the upstream; the upstream gets the hub's headers and an assertion JWT
it verifies against the hub's JWKS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from connectors.mock import MockConnector
from connectors.registry import ConnectorRegistry
from federation import jose
from federation.audit import Audit
from federation.hub import build_hub
from federation.settings import Settings
from federation.web.app import create_app
from tests.broker.conftest import mock_partner
from tests.forward_auth.conftest import POLICY
from tests.peers.asgi import ServeApp
from tests.peers.common import free_port
from tests.peers.nginx import NginxPeer, StartNginx, echo_app, nginx_binary

pytestmark = pytest.mark.integration

IDENTITY_HEADERS = {
    "X-Isthmus-User": "subject",
    "X-Isthmus-Email": "email",
    "X-Isthmus-Partner": "partner_id",
    "X-Isthmus-Groups": "groups",
}
ASSERTION = "X-Isthmus-Assertion"
# What a client may try to slip through to the upstream.
FORGED = {
    "X-Isthmus-User": "admin",
    "X-Isthmus-Email": "ceo@company.example",
    "X-Isthmus-Partner": "internal",
    "X-Isthmus-Groups": "admins",
    ASSERTION: "eyJhbGciOiJub25lIn0.e30.",
}


@dataclass
class Site:
    hub_url: str
    edge: NginxPeer
    audit: list[dict[str, Any]]

    def url(self, path: str) -> str:
        return f"{self.edge.base_url}{path}"

    def decisions(self) -> list[dict[str, Any]]:
        return [e for e in self.audit if e["event"] == "proxy.decision"]


@pytest.fixture
def site(asgi_server: ServeApp, nginx_peer: StartNginx) -> Iterator[Site]:
    hub_port, edge_port = free_port(), free_port()
    hub_url = f"http://127.0.0.1:{hub_port}"
    upstream = asgi_server(echo_app)
    settings = Settings(
        issuer=hub_url,
        allow_insecure_http=True,
        allow_mock_connections=True,
        partners=[
            mock_partner("acme", "supplier", "acme.example"),
            mock_partner("soylent", "customer", "soylent.example"),
        ],
        apps=[
            {
                "id": "orders",
                "hosts": [f"127.0.0.1:{edge_port}"],
                "upstreams": [upstream],
                "policy": yaml.safe_load(POLICY),
                "identity_headers": IDENTITY_HEADERS,
                "assertion_header": ASSERTION,
            }
        ],
        trusted_proxies=["127.0.0.1/32"],
    )
    audit: list[dict[str, Any]] = []
    hub = build_hub(
        settings,
        audit=Audit([audit.append]),
        connector_types=ConnectorRegistry({"mock": MockConnector.from_settings}),
    )
    asgi_server(create_app(hub=hub), port=hub_port)
    edge = nginx_peer(
        "forward-auth",
        upstream=upstream,
        auth=f"{hub_url}/forward-auth",
        identity_headers=tuple(IDENTITY_HEADERS),
        assertion_header=ASSERTION,
        port=edge_port,
    )
    yield Site(hub_url, edge, audit)
    edge.stop()


def sign_in(browser: httpx.Client, login_url: str, email: str, user: str) -> httpx.Response:
    """From the hub's login page to the callback's redirect (the mock IdP: pick a user)."""
    page = browser.get(login_url)
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    to_idp = browser.post(
        urlsplit(login_url)._replace(query="").geturl(),
        data={**{k: unescape(v) for k, v in fields.items()}, "email": email},
    )
    assert to_idp.status_code == 303, to_idp.text
    target = urlsplit(to_idp.headers["location"])
    state = parse_qs(target.query)["state"][0]
    connection = target.path.rsplit("/", 1)[1]
    back = browser.get(f"/callback/{connection}", params={"state": state, "user": user})
    assert back.status_code == 303, back.text
    return back


def upstream_headers(response: httpx.Response) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


def test_login_through_the_hub_then_back_to_the_app(site: Site) -> None:
    with httpx.Client(base_url=site.hub_url, timeout=10) as browser:
        first = browser.get(site.url("/orders/7?full=1"))
        assert first.status_code == 302
        login = first.headers["location"]
        assert login.startswith(f"{site.hub_url}/login?")
        assert parse_qs(urlsplit(login).query)["rd"] == [site.url("/orders/7?full=1")]
        back = sign_in(browser, login, "alice@acme.example", "alice")
        assert back.headers["location"] == site.url("/orders/7?full=1")
        landed = browser.get(back.headers["location"])
        assert landed.status_code == 200
        assert landed.json()["path"] == "/orders/7"
        assert landed.json()["query"] == "full=1"
    assert [e["decision"] for e in site.decisions()] == ["login", "allow"]


def test_two_partners_as_the_policy_says(site: Site) -> None:
    acme = httpx.Client(base_url=site.hub_url, timeout=10)
    soylent = httpx.Client(base_url=site.hub_url, timeout=10)
    with acme, soylent:
        sign_in(acme, f"{site.hub_url}/login", "alice@acme.example", "alice")
        sign_in(soylent, f"{site.hub_url}/login", "alice@soylent.example", "alice")
        expected = [
            (acme, "GET", "/orders/7", 200),
            (acme, "POST", "/orders/7", 200),
            (acme, "GET", "/admin/users", 403),
            (acme, "DELETE", "/orders/7", 403),
            (acme, "GET", "/reports/../admin/x", 403),
            (soylent, "GET", "/reports/q1", 200),
            (soylent, "GET", "/orders/7", 403),
            (soylent, "GET", "/reports/%2e%2e/orders/7", 403),
        ]
        for browser, method, path, status in expected:
            answer = browser.request(method, site.url(path))
            assert answer.status_code == status, (method, path, answer.text)
            if status == 200:
                assert answer.json()["method"] == method
    assert [(e["decision"], e["partner"]) for e in site.decisions()] == [
        ("allow", "acme"),
        ("allow", "acme"),
        ("deny", "acme"),
        ("deny", "acme"),
        ("deny", "acme"),
        ("allow", "soylent"),
        ("deny", "soylent"),
        ("deny", "soylent"),
    ]
    assert {e["app"] for e in site.decisions()} == {"orders"}
    assert {e["source_ip"] for e in site.decisions()} == {"127.0.0.1"}


def test_upstream_gets_the_hubs_identity_never_the_clients(site: Site) -> None:
    with httpx.Client(base_url=site.hub_url, timeout=10) as browser:
        sign_in(browser, f"{site.hub_url}/login", "alice@soylent.example", "alice")
        browser.cookies.set("app_pref", "dark", domain="127.0.0.1")
        answer = browser.get(site.url("/reports/q1"), headers=FORGED)
        assert answer.status_code == 200
        jwks = browser.get("/oauth2/jwks").json()
    seen = upstream_headers(answer)
    for name in FORGED:  # exactly one value each: the hub's
        assert len(seen[name.lower()]) == 1, name
    assert seen["x-isthmus-email"] == ["alice@soylent.example"]
    assert seen["x-isthmus-partner"] == ["soylent"]
    assert seen["x-isthmus-groups"] == ["buyers"]
    claims = jose.verify(
        seen[ASSERTION.lower()][0],
        jose.keys_from_jwks(jwks, ["RS256"]),
        issuer=site.hub_url,
        audience="orders",
    )
    assert claims["sub"] == seen["x-isthmus-user"][0]
    assert claims["partner"] == "soylent"
    assert claims["email"] == "alice@soylent.example"
    # The hub's session cookie stays between the browser and the edge.
    cookies = [c.strip().split("=", 1)[0] for c in seen["cookie"][0].split(";")]
    assert "app_pref" in cookies
    assert "isthmus_session" not in cookies


def test_forged_identity_without_a_session_never_reaches_the_upstream(site: Site) -> None:
    with httpx.Client(timeout=10) as stranger:
        answer = stranger.get(site.url("/orders/7"), headers=FORGED)
        assert answer.status_code == 302
        assert answer.headers["location"].startswith(f"{site.hub_url}/login?rd=")
        forged_cookie = stranger.get(
            site.url("/orders/7"), headers={"Cookie": "isthmus_session=forged"}
        )
        assert forged_cookie.status_code == 302
    assert [e["decision"] for e in site.decisions()] == ["login", "login"]


def test_hub_down_fails_closed(site: Site) -> None:
    """nginx cannot reach the decision endpoint: 500 from the edge, nothing upstream."""
    dead_port = free_port()
    edge = site.edge
    edge.stop()
    conf = edge.conf_path.read_text()
    hub_port = urlsplit(site.hub_url).port
    edge.conf_path.write_text(conf.replace(f"127.0.0.1:{hub_port}", f"127.0.0.1:{dead_port}"))
    edge.start(nginx_binary())
    with httpx.Client(timeout=10) as client:
        answer = client.get(site.url("/orders/7"), headers=FORGED)
    assert answer.status_code == 500
    assert site.decisions() == []

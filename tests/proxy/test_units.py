"""Routing, return-URL origins, the assertion cache and the cookie-domain checks."""

from __future__ import annotations

from typing import Any

import pytest

from federation.errors import ConfigError
from federation.identity import FederatedIdentity
from federation.keys import KeyManager
from federation.proxy.headers import AssertionIssuer, response_headers
from federation.proxy.routing import AmbiguousPath, Router, app_origins, is_hub_path
from federation.redirects import safe_return_url_for
from federation.registry import Partner
from federation.settings import AppSettings, PartnerSettings, Settings, load_settings


def app(app_id: str, **extra: Any) -> AppSettings:
    extra.setdefault("upstreams", ("http://127.0.0.1:9",))
    return AppSettings(id=app_id, **extra)


def test_host_apps_win_then_longest_prefix() -> None:
    router = Router(
        [
            app("any", path_prefix="/"),
            app("api", path_prefix="/api"),
            app("apiv2", path_prefix="/api/v2"),
            app("orders", hosts=("orders.example",)),
        ]
    )
    assert router.match("orders.example", "/api/x").app.id == "orders"  # type: ignore[union-attr]
    assert router.match("ORDERS.example:8443", "/").app.id == "orders"  # type: ignore[union-attr]
    assert router.match("hub.example", "/api/v2/x").app.id == "apiv2"  # type: ignore[union-attr]
    assert router.match("hub.example", "/api").app.id == "api"  # type: ignore[union-attr]
    assert router.match("hub.example", "/apix").app.id == "any"  # type: ignore[union-attr]


def test_no_app_for_the_host_means_the_hub() -> None:
    router = Router([app("orders", hosts=("orders.example",))])
    assert router.match("hub.example", "/orders") is None
    assert router.match("hub.example", "/a%2fb") is None  # not an app request: not judged


def test_prefix_is_matched_on_the_normalized_path() -> None:
    router = Router([app("docs", path_prefix="/docs", case_insensitive_paths=True)])
    found = router.match("hub.example", "/x/../DOCS/%41")
    assert found is not None and found.path == "/docs/a"
    assert router.match("hub.example", "/docsx") is None
    with pytest.raises(AmbiguousPath):
        router.match("hub.example", "/docs/a%2fb")


def test_strip_prefix_and_round_robin() -> None:
    router = Router(
        [
            app(
                "docs",
                path_prefix="/docs/",
                strip_prefix=True,
                upstreams=("http://10.0.0.1:80/base/", "http://10.0.0.2:80"),
            )
        ]
    )
    found = router.match("h", "/docs/a/b")
    assert found is not None and found.forward_path == "/a/b" and found.path == "/docs/a/b"
    assert router.match("h", "/docs").forward_path == "/"  # type: ignore[union-attr]
    route = found.route
    picks = [route.upstream() for _ in range(4)]
    assert [u.origin for u in picks] == ["http://10.0.0.1:80", "http://10.0.0.2:80"] * 2
    assert picks[0].base_path == "/base"


def test_hub_paths() -> None:
    assert is_hub_path("/login") and is_hub_path("/oauth2/jwks") and is_hub_path("/static/x")
    assert not is_hub_path("/loginx") and not is_hub_path("/")


def test_return_urls_to_app_origins() -> None:
    settings = Settings(
        issuer="https://hub.example",
        apps=[app("orders", hosts=("orders.example", "legacy.example:8443"))],
    )
    assert app_origins(settings.apps, settings.issuer) == (
        "https://orders.example",
        "https://legacy.example:8443",
    )
    for ok in ("https://orders.example/x?y=1", "https://legacy.example:8443/", "/local"):
        assert safe_return_url_for(ok, settings) == ok
    for bad in (
        "http://orders.example/x",
        "https://orders.example.evil.example/",
        "https://user@orders.example/",
        "https://legacy.example/",
    ):
        assert safe_return_url_for(bad, settings) == "/"


def test_response_hop_by_hop_headers_dropped() -> None:
    kept = response_headers(
        [
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Type", b"text/plain"),
        ]
    )
    assert kept == [(b"Content-Type", b"text/plain")]


def test_assertion_is_reused_while_fresh_then_renewed() -> None:
    now = [1_000_000.0]
    issuer = AssertionIssuer(KeyManager(None), "https://hub.example", clock=lambda: now[0])
    orders = app("orders")
    identity = FederatedIdentity("acme", "acme-mock", "https://idp", "alice", email="a@acme.ex")
    partner = Partner(PartnerSettings(id="acme", name="Acme", kind="supplier"))
    first = issuer.issue(orders, identity, partner, "sid1")
    now[0] += 29
    assert issuer.issue(orders, identity, partner, "sid1") == first
    assert issuer.issue(app("docs"), identity, partner, "sid1") != first
    now[0] += 2
    assert issuer.issue(orders, identity, partner, "sid1") != first


@pytest.mark.parametrize(
    ("session", "apps", "problem"),
    [
        ({"cookie_domain": "other.example"}, [], "session.cookie_domain"),
        ({}, [{"id": "a", "hosts": ["a.example"], "upstreams": ["http://127.0.0.1:1"]}], "apps.0"),
    ],
)
def test_cookie_domain_must_cover_hub_and_apps(
    tmp_path: Any, session: dict[str, Any], apps: list[dict[str, Any]], problem: str
) -> None:
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"issuer": "https://hub.extranet.example", "session": session, "apps": apps})
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(config, env={})
    assert any(path.startswith(problem) for path, _ in raised.value.problems)


def test_cookie_domain_covering_hub_and_apps_is_fine(tmp_path: Any) -> None:
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "issuer": "https://hub.extranet.example",
                "session": {"cookie_domain": "extranet.example"},
                "apps": [
                    {"id": "a", "hosts": ["orders.extranet.example"], "upstreams": ["http://x:1"]}
                ],
            }
        )
    )
    assert load_settings(config, env={}).session.cookie_domain == "extranet.example"


def test_unknown_identity_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown identity field"):
        app("a", identity_headers={"X-User": "password"})

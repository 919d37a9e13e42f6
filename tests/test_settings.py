"""Configuration: every problem at once with the path of each bad key; env overrides the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.errors import ConfigError
from federation.settings import (
    MockConnectionSettings,
    PartnerKind,
    PartnerStatus,
    Settings,
    load_settings,
)

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, data: Any, name: str = "isthmus.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=NO_ENV if env is None else env)
    found: dict[str, list[str]] = {}
    for where, message in caught.value.problems:
        found.setdefault(where, []).append(message)
    return found


def valid_config() -> dict[str, Any]:
    return {
        "issuer": "https://hub.example.com",
        "partners": [
            {
                "id": "acme",
                "name": "ACME",
                "kind": "supplier",
                "status": "active",
                "domains": ["acme.example", "ACME-Europe.example"],
                "connections": [
                    {
                        "type": "oidc",
                        "id": "acme-oidc",
                        "issuer": "https://idp.acme.example",
                        "client_id": "isthmus",
                        "client_secret": "s3cret",
                    }
                ],
            }
        ],
        "clients": [
            {
                "client_id": "orders",
                "client_secret": "orders-secret",
                "redirect_uris": ["https://orders.example.com/callback"],
            }
        ],
    }


# --- a valid file ---------------------------------------------------------------------------


def test_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, valid_config()), env=NO_ENV)
    assert settings.issuer == "https://hub.example.com"
    partner = settings.partners[0]
    assert partner.kind is PartnerKind.supplier
    assert partner.status is PartnerStatus.active
    assert partner.domains == ("acme.example", "acme-europe.example")  # lower-cased
    connection = partner.connections[0]
    assert connection.type == "oidc"
    assert connection.algorithms == ("RS256",)
    assert settings.store.backend == "memory"
    assert settings.keys.path is None
    assert settings.listen.port == 8080
    assert settings.session.ttl_seconds == 8 * 3600
    assert settings.tokens.code_ttl == 60
    assert not settings.allow_insecure_http
    assert not settings.allow_mock_connections
    assert [c.id for _, c in settings.connections()] == ["acme-oidc"]


def test_no_file_gives_the_defaults() -> None:
    settings = load_settings(None, env=NO_ENV)
    assert settings == Settings()
    assert settings.issuer == "http://127.0.0.1:8080"  # loopback http needs no opt-in


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), env=NO_ENV) == Settings()


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, valid_config()), env=NO_ENV)
    with pytest.raises(ValueError):
        settings.issuer = "https://other.example"  # type: ignore[misc]


# --- every problem at once ------------------------------------------------------------------


def test_structural_problems_are_all_reported_with_their_paths(tmp_path: Path) -> None:
    data = valid_config()
    data["colour"] = "blue"  # unknown key, top level
    data["store"] = {"backend": "mongodb", "flavour": "x"}  # bad enum + unknown key, depth 1
    partner = data["partners"][0]
    partner["kind"] = "vendor"  # bad enum
    partner["status"] = "sleeping"  # bad enum
    partner["domains"] = ["acme.example", "not a domain"]
    partner["connections"][0]["scope"] = "openid"  # unknown key, depth 3 (typo of scopes)
    partner["connections"][0]["algorithms"] = ["HS256"]  # not on the allow-list
    data["clients"][0]["redirect_uri"] = "x"  # unknown key in a client
    data["listen"] = {"port": 70000}
    data["tokens"] = {"code_ttl": 5}

    found = problems_of(write(tmp_path, data))

    assert set(found) >= {
        "colour",
        "store.backend",
        "store.flavour",
        "partners.0.kind",
        "partners.0.status",
        "partners.0.domains",
        "partners.0.connections.0.scope",
        "partners.0.connections.0.algorithms.0",
        "clients.0.redirect_uri",
        "listen.port",
        "tokens.code_ttl",
    }
    assert any("Extra inputs" in m for m in found["partners.0.connections.0.scope"])
    assert any("'memory' or 'redis'" in m for m in found["store.backend"])
    assert any("not a domain name" in m for m in found["partners.0.domains"])


def test_semantic_problems_are_all_reported_with_their_paths(tmp_path: Path) -> None:
    data = valid_config()
    data["issuer"] = "http://hub.example.com"  # plain http off loopback, no opt-in
    data["store"] = {"backend": "redis"}  # no url
    data["partners"].append(
        {
            "id": "acme",  # duplicate partner id
            "name": "ACME again",
            "kind": "distributor",
            "domains": ["acme-again.example"],
            "contract": {
                "valid_from": "2030-01-01T00:00:00Z",
                "valid_until": "2029-01-01T00:00:00Z",
            },
            "connections": [
                {"type": "mock", "id": "acme-oidc"},  # duplicate connection id; mock not allowed
                {
                    "type": "oidc",
                    "id": "acme-2",
                    "issuer": "ftp://idp.acme.example",  # not an http(s) URL
                    "client_id": "isthmus",  # confidential without a secret
                    "scopes": ["email"],  # no openid
                },
            ],
        }
    )
    data["partners"].append(
        {"id": "other", "name": "Other", "kind": "customer", "domains": ["ACME.example"]}
    )  # a domain acme already claims (compared lower-cased)
    data["clients"].append(
        {
            "client_id": "orders",  # duplicate client id
            "redirect_uris": ["https://user:pw@orders.example.com/cb#frag"],
            "post_logout_redirect_uris": ["orders.example.com/bye"],
        }
    )
    data["clients"].append(
        {
            "client_id": "spa",
            "token_endpoint_auth_method": "none",
            "client_secret": "should-not-be-here",
            "redirect_uris": ["https://spa.example.com/cb"],
        }
    )

    found = problems_of(write(tmp_path, data))

    expected = {
        "issuer": "allow_insecure_http",
        "store.url": "required",
        "partners.1.id": "used twice",
        "partners.2.domains": "already claimed by 'acme'",
        "partners.1.contract.valid_until": "after valid_from",
        "partners.1.connections.0.id": "used twice",
        "partners.1.connections.0.type": "allow_mock_connections",
        "partners.1.connections.1.issuer": "absolute http(s) URL",
        "partners.1.connections.1.client_secret": "required",
        "partners.1.connections.1.scopes": "openid",
        "clients.1.client_id": "used twice",
        "clients.1.client_secret": "confidential",
        "clients.1.redirect_uris.0": "user information",
        "clients.1.post_logout_redirect_uris.0": "absolute http(s) URL",
        "clients.2.client_secret": "public client",
    }
    for where, fragment in expected.items():
        assert where in found, f"no problem reported at {where}: {found}"
        assert any(fragment in m for m in found[where]), (where, found[where])
    assert any("fragment" in m for m in found["clients.1.redirect_uris.0"])


def test_structural_and_semantic_problems_in_one_report(tmp_path: Path) -> None:
    data = valid_config()
    data["colour"] = "blue"
    data["clients"][0].pop("client_secret")
    found = problems_of(write(tmp_path, data))
    assert "colour" in found and "clients.0.client_secret" in found


def test_cross_checks_keep_the_file_indices_when_an_entry_is_broken(tmp_path: Path) -> None:
    data = valid_config()
    broken = dict(data["partners"][0], id="Not Valid!")
    second = dict(data["partners"][0], id="second")  # claims the same domain as the first
    data["partners"] = [broken, data["partners"][0], second]
    found = problems_of(write(tmp_path, data))
    assert "partners.0.id" in found and "partners.2.domains" in found


@pytest.mark.parametrize(
    ("issuer", "insecure", "ok"),
    [
        ("http://127.0.0.1:8080", False, True),
        ("http://localhost:9000", False, True),
        ("http://hub.internal:8080", False, False),
        ("http://hub.internal:8080", True, True),
        ("https://hub.example.com/tenant-a", False, True),
        ("hub.example.com", False, False),
    ],
)
def test_issuer_scheme_rules(tmp_path: Path, issuer: str, insecure: bool, ok: bool) -> None:
    path = write(tmp_path, {"issuer": issuer, "allow_insecure_http": insecure})
    if ok:
        assert load_settings(path, env=NO_ENV).issuer == issuer
    else:
        assert "issuer" in problems_of(path)


def test_mock_connection_is_accepted_with_the_opt_in(tmp_path: Path) -> None:
    data = valid_config()
    data["allow_mock_connections"] = True
    data["partners"][0]["connections"].append(
        {
            "type": "mock",
            "id": "acme-mock",
            "users": [{"subject": "u1", "email": "u1@acme.example"}],
        }
    )
    settings = load_settings(write(tmp_path, data), env=NO_ENV)
    mock = settings.partners[0].connections[1]
    assert isinstance(mock, MockConnectionSettings)
    assert mock.users[0].email_verified


def test_unreadable_and_malformed_files_are_problems_too(tmp_path: Path) -> None:
    assert "cannot read" in problems_of(tmp_path / "missing.yaml")[""][0]
    assert "not valid YAML" in problems_of(write(tmp_path, "partners: [\n"))[""][0]
    assert "mapping" in problems_of(write(tmp_path, "- a\n- b\n"))[""][0]


def test_config_error_message_lists_every_problem() -> None:
    error = ConfigError([("a.b", "bad"), ("", "worse")])
    assert "2 configuration problem(s)" in str(error)
    assert "a.b: bad" in str(error)
    assert "<root>: worse" in str(error)


# --- environment overrides --------------------------------------------------------------------


def test_environment_beats_the_file(tmp_path: Path) -> None:
    data = valid_config()
    data["store"] = {"backend": "memory", "prefix": "from-file:"}
    env = {
        "ISTHMUS_ISSUER": "https://sso.example.org",
        "ISTHMUS_STORE__BACKEND": "redis",
        "ISTHMUS_STORE__URL": "redis://127.0.0.1:6379/0",
        "ISTHMUS_LISTEN__PORT": "9443",
        "OTHER_ISSUER": "https://ignored.example",
    }
    settings = load_settings(write(tmp_path, data), env=env)
    assert settings.issuer == "https://sso.example.org"
    assert settings.store.backend == "redis"
    assert settings.store.url == "redis://127.0.0.1:6379/0"
    assert settings.store.prefix == "from-file:"  # a sibling the environment did not set
    assert settings.listen.port == 9443
    assert settings.partners[0].id == "acme"  # the rest of the file is kept


def test_environment_values_are_checked_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, valid_config())
    found = problems_of(path, env={"ISTHMUS_STORE__BACKEND": "redis"})
    assert "store.url" in found  # redis without a url, whichever source said redis
    found = problems_of(path, env={"ISTHMUS_ISSUER": "http://hub.example.com"})
    assert "issuer" in found


def test_process_environment_is_read_by_default_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTHMUS_ISSUER", "https://from-env.example")
    path = write(tmp_path, valid_config())
    assert load_settings(path).issuer == "https://from-env.example"
    # An explicit env mapping replaces the process environment for that call only.
    assert load_settings(path, env=NO_ENV).issuer == "https://hub.example.com"
    import os

    assert os.environ["ISTHMUS_ISSUER"] == "https://from-env.example"

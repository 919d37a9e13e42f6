"""The ``isthmus`` CLI: check-config, serve's start-up report, keys init/rotate/show, demo."""

from __future__ import annotations

import json
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from federation import cli
from federation.keys import KeySet
from federation.settings import load_settings

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_isthmus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("ISTHMUS_")]:
        monkeypatch.delenv(key)


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


def write(tmp_path: Path, data: Any, name: str = "isthmus.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


GOOD = {
    "issuer": "https://hub.example.com",
    "partners": [
        {
            "id": "acme",
            "name": "ACME",
            "kind": "supplier",
            "status": "active",
            "domains": ["acme.example"],
            "connections": [
                {
                    "type": "oidc",
                    "id": "acme-oidc",
                    "issuer": "https://idp.acme.example",
                    "client_id": "isthmus",
                    "client_secret": "s",
                },
                {
                    "type": "oidc",
                    "id": "acme-oidc-2",
                    "issuer": "https://idp2.acme.example",
                    "client_id": "isthmus",
                    "client_secret": "s",
                },
            ],
        },
        {"id": "globex", "name": "Globex", "kind": "customer", "domains": ["globex.example"]},
    ],
    "clients": [
        {
            "client_id": "orders",
            "client_secret": "x",
            "redirect_uris": ["https://orders.example.com/cb"],
        }
    ],
}

BAD = {
    "issuer": "http://hub.example.com",  # http off loopback
    "partners": [
        {
            "id": "acme",
            "name": "A",
            "kind": "supplier",
            "domains": ["acme.example"],
            "connections": [{"type": "mock", "id": "m"}],
        },  # mock without the opt-in
        {"id": "beta", "name": "B", "kind": "customer", "domains": ["acme.example"]},
    ],
    "clients": [{"client_id": "c", "redirect_uris": ["https://c.example.com/cb"]}],  # no secret
}


# --- check-config ------------------------------------------------------------------------------


def test_check_config_ok(tmp_path: Path) -> None:
    result = invoke("check-config", str(write(tmp_path, GOOD)))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "configuration OK: 2 partners, 2 connections, 1 client"


def test_check_config_reports_every_problem_with_paths(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    result = invoke("check-config", str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: 4 configuration problems:"
    reported = {line.split(":", 1)[0].strip() for line in lines[1:]}
    assert reported == {
        "issuer",
        "partners.0.connections.0.type",
        "partners.1.domains",
        "clients.0.client_secret",
    }
    assert "Traceback" not in result.output


def test_check_config_reports_unknown_keys_at_every_depth(tmp_path: Path) -> None:
    data = json.loads(json.dumps(GOOD))
    data["colour"] = 1
    data["store"] = {"backend": "sqlite"}
    data["partners"][0]["connections"][1]["secret"] = "typo"
    result = invoke("check-config", str(write(tmp_path, data)))
    assert result.exit_code == 1
    assert "  colour: Extra inputs are not permitted" in result.stdout
    assert "  store.backend: Input should be 'memory' or 'redis'" in result.stdout
    assert "  partners.0.connections.1.secret: Extra inputs are not permitted" in result.stdout
    assert "3 configuration problems" in result.stdout


def test_check_config_singular_problem_and_missing_file(tmp_path: Path) -> None:
    result = invoke("check-config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert "1 configuration problem:" in result.stdout
    assert "<root>: cannot read" in result.stdout
    assert "Traceback" not in result.output


def test_check_config_applies_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("ISTHMUS_STORE__BACKEND", "redis")
    result = invoke("check-config", str(path))
    assert result.exit_code == 1
    assert "store.url: required when store.backend is 'redis'" in result.stdout
    monkeypatch.setenv("ISTHMUS_STORE__URL", "redis://127.0.0.1:6379/0")
    assert invoke("check-config", str(path)).exit_code == 0


def test_packaged_demo_configuration_passes() -> None:
    with resources.as_file(resources.files("federation.demo").joinpath("demo.yaml")) as demo:
        result = invoke("check-config", str(demo))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "configuration OK: 4 partners, 5 connections, 1 client"


# --- serve ---------------------------------------------------------------------------------------


def test_serve_with_a_bad_configuration_prints_the_report_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []
    monkeypatch.setattr(cli, "_run", lambda *a: started.append(a))
    path = write(tmp_path, BAD)
    result = invoke("serve", "--config", str(path))
    assert result.exit_code == 1
    assert f"{path}: 4 configuration problems:" in result.stderr
    assert "partners.1.domains: domain 'acme.example' is already claimed by 'acme'" in (
        result.stderr
    )
    assert started == []


def test_serve_runs_on_the_configured_listen_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[Any, str, int]] = []
    monkeypatch.setattr(cli, "_run", lambda app, host, port: started.append((app, host, port)))
    monkeypatch.setenv("ISTHMUS_LISTEN__PORT", "9099")
    data = {**GOOD, "listen": {"host": "127.0.0.2", "port": 8000}}
    result = invoke("serve", "--config", str(write(tmp_path, data)))
    assert result.exit_code == 0, result.output
    assert [(h, p) for _, h, p in started] == [("127.0.0.2", 9099)]
    assert "configuration OK" in result.stdout


def test_serve_with_an_unreadable_key_file_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_run", lambda *a: pytest.fail("must not start"))
    keys = tmp_path / "keys.json"
    keys.write_text('{"keys": []}')
    data = {**GOOD, "keys": {"path": str(keys)}}
    result = invoke("serve", "--config", str(write(tmp_path, data)))
    assert result.exit_code == 1
    assert "cannot start the hub" in result.stderr
    assert "Traceback" not in result.output


# --- keys ----------------------------------------------------------------------------------------


def read_keys(path: Path) -> KeySet:
    return KeySet.from_json(json.loads(path.read_text()))


def test_keys_init_creates_a_private_key_set(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "hub.json"
    result = invoke("keys", "init", "--path", str(path), "--alg", "ES256")
    assert result.exit_code == 0, result.output
    keys = read_keys(path)
    assert keys.current.alg == keys.next.alg == "ES256"
    assert keys.previous is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.current.kid in result.stdout and keys.next.kid in result.stdout


def test_keys_init_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    assert invoke("keys", "init", "--path", str(path)).exit_code == 0
    before = path.read_text()
    result = invoke("keys", "init", "--path", str(path))
    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert path.read_text() == before


def test_keys_init_rejects_an_unknown_algorithm(tmp_path: Path) -> None:
    result = invoke("keys", "init", "--path", str(tmp_path / "k.json"), "--alg", "HS256")
    assert result.exit_code == 1
    assert "RS256 or ES256" in result.stderr
    assert not (tmp_path / "k.json").exists()


def test_keys_rotate_moves_next_to_current_to_previous(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    assert invoke("keys", "init", "--path", str(path)).exit_code == 0
    before = read_keys(path)

    result = invoke("keys", "rotate", "--path", str(path))

    assert result.exit_code == 0, result.output
    after = read_keys(path)
    assert after.current.kid == before.next.kid
    assert after.previous is not None and after.previous.kid == before.current.kid
    assert after.next.kid not in (before.current.kid, before.next.kid)
    jwks = after.jwks()
    assert len(jwks["keys"]) == 3
    assert {k["kid"] for k in jwks["keys"]} == {
        after.current.kid,
        after.next.kid,
        before.current.kid,
    }
    assert all("d" not in k for k in jwks["keys"])  # public halves only
    for kid in (after.current.kid, after.next.kid, before.current.kid):
        assert kid in result.stdout

    # A second rotation retires the oldest key: still three published.
    assert invoke("keys", "rotate", "--path", str(path)).exit_code == 0
    again = read_keys(path)
    assert again.previous is not None and again.previous.kid == before.next.kid
    assert before.current.kid not in {k["kid"] for k in again.jwks()["keys"]}
    assert len(again.jwks()["keys"]) == 3


def test_keys_rotate_can_change_the_algorithm_of_the_new_next_key(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    assert invoke("keys", "init", "--path", str(path)).exit_code == 0
    assert invoke("keys", "rotate", "--path", str(path), "--alg", "ES256").exit_code == 0
    keys = read_keys(path)
    assert (keys.current.alg, keys.next.alg) == ("RS256", "ES256")


def test_keys_rotate_through_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    config = write(tmp_path, {**GOOD, "keys": {"path": str(path)}})
    assert invoke("keys", "init", "--config", str(config)).exit_code == 0
    first = read_keys(path)
    result = invoke("keys", "rotate", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert read_keys(path).current.kid == first.next.kid


def test_keys_commands_explain_what_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    for command in ("rotate", "show"):
        result = invoke("keys", command, "--path", str(missing))
        assert result.exit_code == 1
        assert f"isthmus keys init --path {missing}" in result.stderr
        assert not missing.exists()

    result = invoke("keys", "show")
    assert result.exit_code == 1
    assert "--path" in result.stderr

    result = invoke("keys", "rotate", "--config", str(write(tmp_path, GOOD)))
    assert result.exit_code == 1
    assert "keys.path is not set" in result.stderr

    result = invoke("keys", "show", "--config", str(write(tmp_path, BAD, "bad.yaml")))
    assert result.exit_code == 1
    assert "4 configuration problems" in result.stderr

    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    result = invoke("keys", "show", "--path", str(junk))
    assert result.exit_code == 1
    assert "is not an Isthmus key set" in result.stderr
    assert "Traceback" not in result.output


def test_keys_show_prints_a_table(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    assert invoke("keys", "init", "--path", str(path)).exit_code == 0
    assert invoke("keys", "rotate", "--path", str(path)).exit_code == 0
    keys = read_keys(path)
    assert keys.previous is not None

    result = invoke("keys", "show", "--path", str(path))

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["kid", "alg", "state", "created"]
    table = {row.split()[0]: row.split()[1:] for row in rows}
    assert table[keys.current.kid][:2] == ["RS256", "current"]
    assert table[keys.next.kid][:2] == ["RS256", "next"]
    assert table[keys.previous.kid][:2] == ["RS256", "previous"]
    assert all(cells[2].endswith("Z") for cells in table.values())


# --- demo ----------------------------------------------------------------------------------------


def test_demo_settings_follow_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_STORE__BACKEND", "redis")  # ignored: the demo is self-contained
    settings = cli.demo_settings("127.0.0.1", 9123)
    assert settings.issuer == "http://127.0.0.1:9123"
    assert settings.store.backend == "memory"
    assert settings.keys.path is None
    assert settings.listen.port == 9123
    client = settings.clients[0]
    assert client.redirect_uris == ("http://127.0.0.1:9123/demo-app/callback",)
    assert client.post_logout_redirect_uris == ("http://127.0.0.1:9123/demo-app/",)
    assert cli.demo_settings("0.0.0.0", 8080).issuer == "http://127.0.0.1:8080"


def test_demo_partners_show_each_case() -> None:
    settings = cli.demo_settings()
    by_id = {p.id: p for p in settings.partners}
    assert by_id["acme"].kind == "supplier" and len(by_id["acme"].connections) == 1
    assert len(by_id["globex"].connections) == 2  # the "choose how to sign in" page
    assert by_id["initech"].kind == "internal"
    assert by_id["umbrella"].status == "suspended"
    assert all(c.type == "mock" for _, c in settings.connections())
    assert load_settings(None, env={}).partners == ()  # the demo is not the default


def test_demo_command_prints_the_banner_and_serves_hub_and_demo_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[tuple[Any, str, int]] = []
    monkeypatch.setattr(cli, "_run", lambda app, host, port: started.append((app, host, port)))
    result = invoke("demo", "--port", "9124")
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:9124/demo-app/" in result.stdout
    for email in (
        "alice@acme.example",
        "carol@globex.example",
        "erin@initech.example",
        "frank@umbrella.example",
    ):
        assert email in result.stdout
    ((asgi_app, host, port),) = started
    assert (host, port) == ("127.0.0.1", 9124)
    assert isinstance(asgi_app, cli.PrefixDispatcher)


async def test_demo_dispatcher_routes_by_prefix() -> None:
    asgi_app = cli.build_demo_app(cli.demo_settings())
    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        bare = await http.get("/demo-app")
        assert bare.status_code == 307 and bare.headers["location"] == "/demo-app/"
        page = await http.get("/demo-app/")
        assert page.status_code == 200
        assert 'id="sign-in"' in page.text
        assert (await http.get("/demo-application")).status_code == 404  # not the demo app


# --- the README stays true -------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    head, _, rest = text.partition("```sh\n")
    title, sentence = [line for line in head.splitlines() if line.strip()]
    assert title == "# Isthmus"
    assert sentence.count(". ") == 0 and sentence.endswith(".")
    block = rest.split("```", 1)[0]
    assert block.splitlines() == [
        "./scripts/setup.sh && .venv/bin/isthmus demo",
        "./scripts/test.sh",
    ]


def test_readme_configuration_example_passes_check_config(tmp_path: Path) -> None:
    example = README.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    result = invoke("check-config", str(path))
    assert result.exit_code == 0, result.output
    assert "1 partner, 1 connection, 1 client" in result.stdout


def test_readme_demo_emails_are_the_demo_users() -> None:
    text = README.read_text()
    for user in cli.demo_users(cli.demo_settings()):
        assert f"`{user.email}`" in text

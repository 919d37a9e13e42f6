"""The admin CLI (``federation/cli_admin.py``): apply/export, partners, apps, audit, tokens.

Every invocation builds its own hub on the configuration, as separate processes would:
the registry is a SQLite file, so what one command writes the next one reads (a restart
in between). Sessions live in the session store: tests that need some share one
in-memory store between the commands and the test (``shared_store``).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import stat
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from typer.testing import CliRunner

from federation import cli, cli_admin
from federation import hub as hub_module
from federation.admin.auth import authenticate
from federation.admin.service import Actor, AdminService, Plan, Role
from federation.errors import IsthmusError
from federation.hub import Hub, build_hub
from federation.identity import FederatedIdentity
from federation.settings import load_settings
from federation.stores.memory import MemoryStore

T = TypeVar("T")
runner = CliRunner()

SECRET = "client-secret-never-shown"
CONFIG: dict[str, Any] = {
    "issuer": "https://hub.example.com",
    "keys": {"algorithm": "ES256"},  # quick to generate: every invocation makes a key set
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
                    "client_secret": SECRET,
                }
            ],
        }
    ],
    "clients": [
        {
            "client_id": "portal",
            "client_secret": SECRET,
            "redirect_uris": ["https://portal.example.com/cb"],
        }
    ],
    "apps": [
        {
            "id": "orders",
            "name": "Orders",
            "path_prefix": "/orders",
            "upstreams": ["http://127.0.0.1:9000"],
            "policy": {
                "description": "Who may use orders",
                "rules": [
                    {"name": "acme-buyers", "effect": "allow", "when": {"partner": "acme"}},
                    {
                        "name": "no-admin",
                        "effect": "deny",
                        "when": {"path": {"prefix": "/orders/admin"}},
                    },
                ],
            },
        }
    ],
}


@pytest.fixture(autouse=True)
def _no_isthmus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("ISTHMUS_")]:
        monkeypatch.delenv(key)


def write_config(directory: Path, data: dict[str, Any] | None = None, **registry: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = dict(CONFIG if data is None else data)
    body["registry"] = registry or {"backend": "sqlite", "path": str(directory / "registry.db")}
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "hub")


@pytest.fixture
def shared_store(monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    """One session store for every hub the commands build (as Redis would be)."""
    store = MemoryStore()
    real = hub_module.build_hub

    def build(settings: Any, **kwargs: Any) -> Hub:
        return real(settings, store=store, **kwargs)

    monkeypatch.setattr(hub_module, "build_hub", build)
    return store


def isthmus(config: Path, *args: str) -> Any:
    return runner.invoke(cli.app, [*args, "--config", str(config)])


def ok(config: Path, *args: str) -> Any:
    result = isthmus(config, *args)
    assert result.exit_code == 0, result.output
    return result


def as_json(config: Path, *args: str) -> Any:
    return json.loads(ok(config, *args, "--json").stdout)


def with_hub(config: Path, work: Callable[[Hub], Awaitable[T]]) -> T:
    """Run ``work`` on a hub of ``config`` (another process, as far as the CLI knows)."""

    async def main() -> T:
        hub = hub_module.build_hub(load_settings(config))
        try:
            await hub.ready()
            return await work(hub)
        finally:
            await hub.aclose()

    return asyncio.run(main())


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


ME = f"cli:{getpass.getuser()}"


# --- the registry survives between invocations -------------------------------------------


def test_a_partner_created_by_one_invocation_is_listed_by_the_next(config: Path) -> None:
    created = ok(config, "partners", "create", "globex", "--name", "Globex", "--kind", "customer")
    assert "created partner globex (customer, invited)" in created.stdout

    listed = ok(config, "partners", "list")
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "KIND",
        "STATUS",
        "DOMAINS",
        "PENDING",
        "CONNECTIONS",
        "VERSION",
    ]
    assert [r.split()[:4] for r in rows] == [
        ["acme", "ACME", "supplier", "active"],
        ["globex", "Globex", "customer", "invited"],
    ]
    # Aligned: every row's status starts in the header's STATUS column.
    column = header.index("STATUS")
    assert all(r[column:].split()[0] in ("active", "invited") for r in rows)

    found = as_json(config, "partners", "list")
    assert [(p["id"], p["version"], p["updated_by"]) for p in found] == [
        ("acme", 1, "settings-file"),
        ("globex", 1, ME),
    ]


def test_config_from_the_environment(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_CONFIG", str(config))
    result = runner.invoke(cli.app, ["partners", "list"])
    assert result.exit_code == 0, result.output
    assert "acme" in result.stdout


def test_a_bad_configuration_is_reported_like_check_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, {**CONFIG, "registry": {}}, backend="sqlite")  # no path
    result = isthmus(path, "partners", "list")
    assert result.exit_code == 1
    assert "registry.path: required when registry.backend is 'sqlite'" in result.stderr


def test_partners_list_filters_by_status_and_search(config: Path) -> None:
    ok(
        config,
        "partners",
        "create",
        "globex",
        "--name",
        "Globex Inc",
        "--kind",
        "customer",
        "--domain",
        "globex.test",
    )
    ok(config, "partners", "create", "initech", "--name", "Initech", "--kind", "distributor")

    def ids(*args: str) -> list[str]:
        return [p["id"] for p in as_json(config, "partners", "list", *args)]

    assert ids("--status", "invited") == ["globex", "initech"]
    assert ids("--status", "active") == ["acme"]
    assert ids("--search", "INC") == ["globex"]  # the name, any case
    assert ids("--search", "globex.test") == ["globex"]  # a pending domain
    assert ids("--search", "acme.example") == ["acme"]  # a verified domain
    assert ok(config, "partners", "list", "--search", "nobody").stdout == "No partners match.\n"
    assert isthmus(config, "partners", "list", "--status", "gone").exit_code == 2


# --- partners: show, create with domains, lifecycle, domains, history ----------------------


def test_create_claims_domains_as_pending_and_prints_their_records(config: Path) -> None:
    created = ok(
        config,
        "partners",
        "create",
        "globex",
        "--name",
        "Globex",
        "--kind",
        "customer",
        "--domain",
        "Globex.Example.",
        "--domain",
        "globex.test",
    )
    shown = as_json(config, "partners", "show", "globex")
    assert shown["spec"].get("domains", []) == []  # pending only: they route no login
    records = {r["domain"]: r for r in shown["pending_records"]}
    assert sorted(records) == ["globex.example", "globex.test"]
    for record in records.values():
        token = next(
            p["token"] for p in shown["spec"]["pending_domains"] if p["name"] == record["domain"]
        )
        line = (
            f"_isthmus-challenge.{record['domain']}.  IN  TXT  "
            f'"isthmus-domain-verification={token}"'
        )
        assert line in lines(created.stdout)

    text = ok(config, "partners", "show", "globex").stdout
    assert re.search(r"^\s+globex\.example\s+pending\s+\d{4}-", text, re.M)
    assert "isthmus partners domains verify globex DOMAIN" in text
    assert records["globex.test"]["record"] in text


def test_create_refuses_a_domain_another_partner_verified_and_writes_nothing(
    config: Path,
) -> None:
    result = isthmus(
        config,
        "partners",
        "create",
        "rival",
        "--name",
        "Rival",
        "--kind",
        "supplier",
        "--domain",
        "acme.example",
    )
    assert result.exit_code == 1
    assert "partner/rival: domain: acme.example is verified by another partner" in lines(
        result.stderr
    )
    assert "nothing was written" in result.stderr
    assert [p["id"] for p in as_json(config, "partners", "list")] == ["acme"]


def test_create_with_an_existing_id_is_a_version_conflict(config: Path) -> None:
    result = isthmus(config, "partners", "create", "acme", "--name", "X", "--kind", "supplier")
    assert result.exit_code == 1
    assert "partner/acme: read at version 0, now at version 1" in lines(result.stderr)
    assert "Run the command again" in result.stderr


def test_show_details_connections_and_sessions(config: Path, shared_store: MemoryStore) -> None:
    login(config, "alice@acme.example", "bob@acme.example")
    text = ok(config, "partners", "show", "acme").stdout
    assert text.startswith("partner acme (version 1, updated ")
    assert "by settings-file)" in text.splitlines()[0]
    assert re.search(r"^\s+status:\s+active$", text, re.M)
    assert re.search(r"^\s+sessions:\s+2 live$", text, re.M)
    assert re.search(r"^\s+acme\.example\s+verified", text, re.M)
    assert re.search(r"^\s+acme-oidc\s+oidc\s+-\s+https://idp\.acme\.example$", text, re.M)
    assert SECRET not in text

    shown = as_json(config, "partners", "show", "acme")
    assert shown["sessions"] == 2
    assert shown["spec"]["connections"][0]["client_secret"] == "**********"


def test_show_of_a_missing_partner(config: Path) -> None:
    result = isthmus(config, "partners", "show", "nobody")
    assert result.exit_code == 1
    assert result.stderr == "error: no partner/nobody\n"
    as_error = isthmus(config, "partners", "show", "nobody", "--json")
    assert as_error.exit_code == 1
    assert json.loads(as_error.stdout)["error"] == "not_found"


def login(config: Path, *emails: str) -> None:
    async def work(hub: Hub) -> None:
        for email in emails:
            identity = FederatedIdentity(
                "acme", "acme-oidc", "https://idp.acme.example", email.split("@")[0], email, True
            )
            await hub.sessions.create(identity)

    with_hub(config, work)


def test_lifecycle_suspend_ends_every_session_and_says_how_many(
    config: Path, shared_store: MemoryStore
) -> None:
    login(config, "alice@acme.example", "bob@acme.example")
    sessions = ok(config, "partners", "sessions", "acme").stdout
    assert sessions.split("\n")[0].split() == ["SID", "USER", "CONNECTION", "CREATED", "EXPIRES"]
    assert {"alice@acme.example", "bob@acme.example"} <= set(sessions.split())

    suspended = ok(config, "partners", "suspend", "acme", "--reason", "audit finding")
    assert suspended.stdout == (
        "partner acme: active → suspended (version 1 → 2); 2 sessions ended\n"
    )
    assert ok(config, "partners", "sessions", "acme").stdout == "No live sessions of acme.\n"

    activated = ok(config, "partners", "activate", "acme")
    assert activated.stdout == "partner acme: suspended → active (version 2 → 3)\n"
    offboarded = as_json(config, "partners", "offboard", "acme")
    assert (offboarded["spec"]["status"], offboarded["sessions_ended"]) == ("offboarded", 0)

    refused = isthmus(config, "partners", "activate", "acme")
    assert refused.exit_code == 1
    assert (
        "partner/acme: status: a partner cannot go from offboarded to active (allowed: none)"
        in lines(refused.stderr)
    )

    history = ok(config, "partners", "history", "acme").stdout.splitlines()
    assert history[0].split() == ["AT", "ACTOR", "ACTION", "VERSION", "CHANGED", "REASON"]
    assert [row.split()[1:5] for row in history[1:]] == [
        [ME, "update", "4", "status"],
        [ME, "update", "3", "status"],
        [ME, "update", "2", "status"],
        ["settings-file", "create", "1", "connections,"],
    ]
    assert history[3].endswith("audit finding")
    changes = as_json(config, "partners", "history", "acme")
    assert changes[-1]["after"]["connections"][0]["client_secret"] == "**********"


def test_end_one_session(config: Path, shared_store: MemoryStore) -> None:
    login(config, "alice@acme.example")
    [session] = as_json(config, "partners", "sessions", "acme")
    assert session["email"] == "alice@acme.example"
    assert ok(config, "partners", "end-session", "acme", session["sid"]).stdout == (
        f"session {session['sid']} of acme ended\n"
    )
    again = isthmus(config, "partners", "end-session", "acme", session["sid"])
    assert again.exit_code == 1
    assert f"acme has no live session {session['sid']}" in again.stderr


def test_domains_claim_and_remove(config: Path) -> None:
    claimed = ok(config, "partners", "domains", "claim", "acme", "acme.test")
    record = as_json(config, "partners", "show", "acme")["pending_records"][0]
    assert record["record"] in lines(claimed.stdout)
    assert "isthmus partners domains verify acme acme.test" in claimed.stdout

    again = isthmus(config, "partners", "domains", "claim", "acme", "acme.test")
    assert again.exit_code == 1
    assert "partner/acme: domain: acme.test is already pending" in lines(again.stderr)

    ok(config, "partners", "domains", "remove", "acme", "acme.test")
    ok(config, "partners", "domains", "remove", "acme", "acme.example")
    spec = as_json(config, "partners", "show", "acme")["spec"]
    assert (spec.get("domains", []), spec.get("pending_domains", [])) == ([], [])
    missing = isthmus(config, "partners", "domains", "remove", "acme", "acme.example")
    assert missing.exit_code == 1
    assert "partner/acme: domain: acme.example is not a domain of it" in lines(missing.stderr)


def test_verify_of_a_domain_never_claimed(config: Path) -> None:
    result = isthmus(config, "partners", "domains", "verify", "acme", "other.example")
    assert result.exit_code == 1
    assert "partner/acme: domain: other.example is not a pending domain" in lines(result.stderr)


@pytest.mark.integration
def test_domains_verify_against_a_real_dns_server(tmp_path: Path, dns_server: Any) -> None:
    dns = {"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout_seconds": 2.0}
    config = write_config(tmp_path / "hub", {**CONFIG, "dns": dns})
    claimed = as_json(config, "partners", "domains", "claim", "acme", "acme.test")

    refused = isthmus(config, "partners", "domains", "verify", "acme", "acme.test")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("acme.test not verified: ")
    assert f'expected: {claimed["name"]}.  IN  TXT  "{claimed["value"]}"' in refused.stderr

    dns_server.set_records({claimed["name"]: [claimed["value"]]})
    verified = ok(config, "partners", "domains", "verify", "acme", "acme.test")
    assert verified.stdout == "acme.test verified: it now routes logins to acme\n"
    spec = as_json(config, "partners", "show", "acme")["spec"]
    assert spec["domains"] == ["acme.example", "acme.test"]
    assert spec.get("pending_domains", []) == []


# --- apps -----------------------------------------------------------------------------------


def test_apps_list_and_show(config: Path) -> None:
    listed = ok(config, "apps", "list").stdout.splitlines()
    assert listed[0].split() == [
        "ID",
        "NAME",
        "HOSTS",
        "PATH",
        "PREFIX",
        "UPSTREAMS",
        "POLICY",
        "VERSION",
    ]
    assert listed[1].split() == [
        "orders",
        "Orders",
        "(any)",
        "/orders",
        "http://127.0.0.1:9000",
        "yes",
        "1",
    ]

    shown = ok(config, "apps", "show", "orders").stdout
    assert re.search(r"^\s+upstreams:\s+http://127\.0\.0\.1:9000$", shown, re.M)
    assert "policy (version 1): Who may use orders" in shown
    assert re.search(r"^\s+acme-buyers\s+allow\s+partner is acme$", shown, re.M)
    assert re.search(r"^\s+no-admin\s+deny\s+path under /orders/admin$", shown, re.M)
    data = as_json(config, "apps", "show", "orders")
    assert [r["name"] for r in data["rules"]] == ["acme-buyers", "no-admin"]
    assert data["policy"]["spec"]["description"] == "Who may use orders"


def test_an_app_without_a_policy_denies_everything(tmp_path: Path) -> None:
    data = {**CONFIG, "apps": [{"id": "wiki", "upstreams": ["http://127.0.0.1:9001"]}]}
    config = write_config(tmp_path, data)
    assert "none (deny all)" in ok(config, "apps", "list").stdout
    assert "policy: none, every request is denied" in ok(config, "apps", "show", "wiki").stdout


# --- apply and export -----------------------------------------------------------------------


def test_export_then_apply_on_a_fresh_registry_gives_the_same_files(tmp_path: Path) -> None:
    source = write_config(tmp_path / "source")
    ok(
        source,
        "partners",
        "create",
        "globex",
        "--name",
        "Globex",
        "--kind",
        "customer",
        "--domain",
        "globex.example",
    )
    first = tmp_path / "first"
    exported = ok(source, "export", "-o", str(first))
    assert exported.stdout.splitlines() == [
        f"Exported 5 documents to {first}:",
        "  apps/orders.yaml",
        "  clients/portal.yaml",
        "  partners/acme.yaml",
        "  partners/globex.yaml",
        "  policies/orders.yaml",
    ]
    assert SECRET in (first / "clients" / "portal.yaml").read_text()  # the export keeps them
    assert {stat.S_IMODE(p.stat().st_mode) for p in first.rglob("*.yaml")} == {0o600}

    fresh = write_config(
        tmp_path / "fresh", {"issuer": "https://hub.example.com", "keys": {"algorithm": "ES256"}}
    )
    applied = ok(fresh, "apply", "-f", str(first))
    assert applied.stdout.splitlines()[:6] == [
        "+ create app/orders",
        "+ create client/portal",
        "+ create partner/acme",
        "+ create partner/globex",
        "+ create policy/orders",
        "5 changes: 5 to create, 0 to update, 0 to delete; 0 unchanged.",
    ]
    second = tmp_path / "second"
    ok(fresh, "export", "-o", str(second))
    assert files_of(second) == files_of(first)

    again = ok(fresh, "apply", "-f", str(second), "--dry-run", "--exit-code")
    assert again.stdout == f"No changes: the registry matches {second} (5 documents).\n"
    assert ok(source, "apply", "-f", str(first)).stdout.startswith("No changes")
    plan = as_json(fresh, "apply", "-f", str(second))
    assert (plan["changes"], plan["applied"]) == ([], False)


def test_dry_run_shows_each_diff_and_writes_nothing(config: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    ok(config, "export", "-o", str(bundle))
    acme = bundle / "partners" / "acme.yaml"
    acme.write_text(acme.read_text().replace("name: ACME", "name: Acme Corp"))
    client = bundle / "clients" / "portal.yaml"
    client.write_text(client.read_text().replace(SECRET, "a-new-secret-also-hidden"))

    result = isthmus(config, "apply", "-f", str(bundle), "--dry-run", "--exit-code")
    assert result.exit_code == 2  # changes: CI sees the drift
    out = result.stdout.splitlines()
    assert out[:3] == [
        "~ update client/portal",
        "~ update partner/acme",
        "2 changes: 0 to create, 2 to update, 0 to delete; 2 unchanged.",
    ]
    assert "--- a/partner/acme" in out
    assert "+++ b/partner/acme" in out
    assert "-name: ACME" in out
    assert "+name: Acme Corp" in out
    assert "client/portal: only secret values change (masked)" in out
    assert out[-1] == "Dry run: nothing was written."
    assert SECRET not in result.stdout
    assert "a-new-secret-also-hidden" not in result.stdout
    assert as_json(config, "partners", "show", "acme")["version"] == 1

    assert ok(config, "apply", "-f", str(bundle), "--dry-run").exit_code == 0  # no --exit-code
    applied = ok(config, "apply", "-f", str(bundle), "--reason", "rename")
    assert applied.stdout.splitlines()[-1].startswith("Applied: registry at revision ")
    shown = as_json(config, "partners", "show", "acme")
    assert (shown["spec"]["name"], shown["version"]) == ("Acme Corp", 2)
    assert as_json(config, "partners", "history", "acme")[0]["reason"] == "rename"


def test_exit_code_needs_dry_run(config: Path, tmp_path: Path) -> None:
    ok(config, "export", "-o", str(tmp_path / "b"))
    result = isthmus(config, "apply", "-f", str(tmp_path / "b"), "--exit-code")
    assert result.exit_code == 2
    assert "--exit-code" in result.stderr


def test_prune_deletes_what_the_files_leave_out_but_never_tokens(
    config: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    ok(config, "export", "-o", str(bundle))
    ok(config, "partners", "create", "globex", "--name", "Globex", "--kind", "customer")
    token_id = as_json(config, "tokens", "create", "--name", "ci", "--role", "admin")["id"]

    kept = ok(config, "apply", "-f", str(bundle))
    assert kept.stdout.startswith("No changes")  # without --prune, globex stays

    planned = isthmus(config, "apply", "-f", str(bundle), "--prune", "--dry-run", "--exit-code")
    assert planned.exit_code == 2
    out = planned.stdout.splitlines()
    assert out[:2] == [
        "- delete partner/globex",
        "1 change: 0 to create, 0 to update, 1 to delete; 4 unchanged.",
    ]
    assert "--- a/partner/globex" in out
    assert "+++ /dev/null" in out

    ok(config, "apply", "-f", str(bundle), "--prune")
    assert [p["id"] for p in as_json(config, "partners", "list")] == ["acme"]
    assert [t["id"] for t in as_json(config, "tokens", "list")] == [token_id]


def test_apply_json_output(config: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    ok(config, "export", "-o", str(bundle))
    (bundle / "partners" / "globex.yaml").write_text(
        yaml.safe_dump(
            {
                "kind": "partner",
                "id": "globex",
                "spec": {"id": "globex", "name": "Globex", "kind": "customer"},
            }
        )
    )
    plan = as_json(config, "apply", "-f", str(bundle))
    assert plan["summary"] == {"create": 1, "update": 0, "delete": 0, "unchanged": 4}
    [change] = plan["changes"]
    assert (change["action"], change["kind"], change["id"], change["version"]) == (
        "create",
        "partner",
        "globex",
        0,
    )
    assert "+name: Globex" in change["diff"].splitlines()
    assert plan["applied"] is True
    assert isinstance(plan["revision"], int)


def test_a_bad_bundle_lists_every_file_problem_and_writes_nothing(
    config: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "broken.yaml").write_text("kind: partner\nid: x\nspec: [\n")
    (bundle / "widget.yaml").write_text("kind: widget\nid: w\nspec: {}\n")
    good = {
        "kind": "partner",
        "id": "globex",
        "spec": {"id": "globex", "name": "Globex", "kind": "customer"},
    }
    (bundle / "one.yaml").write_text(yaml.safe_dump(good))
    (bundle / "two.yml").write_text(yaml.safe_dump(good))

    result = isthmus(config, "apply", "-f", str(bundle))
    assert result.exit_code == 1
    err = result.stderr.splitlines()
    assert err[0] == "error: 3 problems in the files; nothing was applied:"
    assert err[1].startswith("  broken.yaml: cannot be read as YAML: ")
    assert "line 4, column 1" in err[1]  # the parser's message, on one line
    assert err[2:] == [
        "  two.yml: partner/globex is also in one.yaml",
        "  widget.yaml: kind must be one of partner, app, client, policy, not 'widget'",
    ]
    assert [p["id"] for p in as_json(config, "partners", "list")] == ["acme"]

    missing = isthmus(config, "apply", "-f", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1
    assert "nowhere: is not a directory" in missing.stderr


def test_invalid_documents_are_refused_field_by_field_and_nothing_is_written(
    config: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    docs = [
        {
            "kind": "partner",
            "id": "initech",
            "spec": {"id": "initech", "name": "Initech", "kind": "distributor"},
        },
        {
            "kind": "partner",
            "id": "bad",
            "spec": {"id": "bad", "name": "Bad", "kind": "alien", "domains": ["not a domain"]},
        },
        {
            "kind": "partner",
            "id": "rival",
            "spec": {
                "id": "rival",
                "name": "Rival",
                "kind": "supplier",
                "domains": ["acme.example"],
            },
        },
    ]
    (bundle / "partners.yaml").write_text(yaml.safe_dump_all(docs))

    result = isthmus(config, "apply", "-f", str(bundle))
    assert result.exit_code == 1
    err = lines(result.stderr)
    assert err[0] == "error: refused, nothing was written (3 problems):"
    assert err[1].startswith("partner/bad: kind: Input should be 'internal'")
    assert err[2] == "partner/bad: domains: Value error, 'not a domain' is not a domain name"
    assert err[3].startswith("partner/rival: domains: ")
    assert "acme.example" in err[3]
    assert [p["id"] for p in as_json(config, "partners", "list")] == ["acme"]

    as_error = isthmus(config, "apply", "-f", str(bundle), "--json")
    assert as_error.exit_code == 1
    body = json.loads(as_error.stdout)
    assert body["error"] == "invalid_document"
    assert body["problems"] == err[1:]


def test_a_concurrent_edit_between_plan_and_apply_is_refused(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle"
    ok(config, "export", "-o", str(bundle))
    acme = bundle / "partners" / "acme.yaml"
    acme.write_text(acme.read_text().replace("name: ACME", "name: Acme Corp"))
    real_apply = AdminService.apply

    async def someone_else_first(self: AdminService, actor: Actor, plan: Plan, **kw: Any) -> Any:
        async def rename(hub: Hub) -> None:
            service, other = AdminService(hub), Actor("api:bob", Role.admin)
            current = await service.document(other, "partner", "acme")
            spec = {**current.spec, "name": "ACME (Bob's)"}
            await service.put(other, "partner", "acme", spec, current.version)

        hub = build_hub(load_settings(config))
        try:
            await hub.ready()
            await rename(hub)
        finally:
            await hub.aclose()
        return await real_apply(self, actor, plan, **kw)

    monkeypatch.setattr(AdminService, "apply", someone_else_first)
    result = isthmus(config, "apply", "-f", str(bundle))
    assert result.exit_code == 1
    assert "someone else changed this since it was read; nothing was written" in result.stderr
    assert "partner/acme: read at version 1, now at version 2" in lines(result.stderr)
    monkeypatch.undo()
    shown = as_json(config, "partners", "show", "acme")
    assert (shown["spec"]["name"], shown["updated_by"]) == ("ACME (Bob's)", "api:bob")


# --- audit ----------------------------------------------------------------------------------

NOW = datetime.now(UTC)
OLD = (NOW - timedelta(days=3)).timestamp()


def record_events(config: Path) -> None:
    async def work(hub: Hub) -> None:
        await hub.audit_log.append(
            [
                {
                    "ts": OLD,
                    "event": "login.succeeded",
                    "outcome": "success",
                    "partner": "acme",
                    "subject": "carol",
                    "email": "carol@acme.example",
                }
            ]
        )
        hub.audit.emit(
            "login.succeeded",
            partner="acme",
            connection="acme-oidc",
            subject="alice",
            email="alice@acme.example",
        )
        hub.audit.emit(
            "proxy.decision",
            outcome="failure",
            partner="acme",
            app="orders",
            email="alice@acme.example",
            method="GET",
            path="/orders/admin",
            decision="deny",
            reasons=["admin_area: staff only"],
        )
        hub.audit.emit(
            "login.failed",
            outcome="failure",
            partner="globex",
            connection="globex-saml",
            reason="invalid_response",
        )
        await hub.audit.flush()

    with_hub(config, work)


def test_audit_filters(config: Path) -> None:
    record_events(config)

    def events(*args: str) -> list[tuple[str, str | None]]:
        found = as_json(config, "audit", *args)
        return [(e["event"], e.get("email")) for e in found]

    alice, carol = "alice@acme.example", "carol@acme.example"
    assert events("--partner", "acme") == [
        ("proxy.decision", alice),
        ("login.succeeded", alice),
        ("login.succeeded", carol),
    ]
    assert events("--user", "CAROL@acme.example") == [("login.succeeded", carol)]
    # The subject: the decision carries only the email.
    assert events("--user", "alice") == [("login.succeeded", alice)]
    assert events("--app", "orders") == [("proxy.decision", alice)]
    assert events("--event", "login.", "--outcome", "failure") == [("login.failed", None)]
    assert events("--partner", "acme", "--since", "2d") == [
        ("proxy.decision", alice),
        ("login.succeeded", alice),
    ]
    assert events("--until", "2d") == [("login.succeeded", carol)]
    since = (NOW - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (NOW - timedelta(days=2)).isoformat()
    assert events("--since", since, "--until", until) == [("login.succeeded", carol)]
    assert events("--partner", "acme", "--limit", "1") == [("proxy.decision", alice)]


def test_audit_table_and_jsonl_export(config: Path) -> None:
    record_events(config)
    table = ok(config, "audit", "--partner", "acme", "--since", "1h").stdout.splitlines()
    assert table[0].split() == ["TIME", "EVENT", "OUTCOME", "PARTNER", "WHO", "APP", "DETAIL"]
    assert table[1].split()[1:6] == [
        "proxy.decision",
        "failure",
        "acme",
        "alice@acme.example",
        "orders",
    ]
    assert "GET /orders/admin decision=deny admin_area: staff only" in table[1]
    assert table[2].split()[1:6] == [
        "login.succeeded",
        "success",
        "acme",
        "alice@acme.example",
        "-",
    ]

    exported = ok(config, "audit", "--jsonl").stdout.splitlines()
    parsed = [json.loads(line) for line in exported]
    assert [e["event"] for e in parsed] == [
        "login.failed",
        "proxy.decision",
        "login.succeeded",
        "login.succeeded",
    ]
    assert parsed[1]["reasons"] == ["admin_area: staff only"]  # every field, as recorded
    assert ok(config, "audit", "--partner", "nobody").stdout == "No events match.\n"


def test_admin_changes_are_in_the_audit_trail_with_the_cli_actor(config: Path) -> None:
    ok(config, "partners", "suspend", "acme", "--reason", "audit finding")
    changes = as_json(config, "audit", "--event", "admin.change")
    assert [(c["actor"], c["id"], c["after"]["status"]) for c in changes] == [
        (ME, "acme", "suspended")
    ]
    assert changes[0]["reason"] == "audit finding"
    assert changes[0]["after"]["connections"][0]["client_secret"] == "**********"
    table = ok(config, "audit", "--event", "admin.").stdout
    assert "update partner/acme v2: audit finding" in table


def test_audit_refuses_a_time_it_cannot_read(config: Path) -> None:
    result = isthmus(config, "audit", "--since", "yesterday")
    assert result.exit_code == 2
    assert "give ISO-8601" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_parse_when_relative(text: str, expected: timedelta) -> None:
    assert cli_admin.parse_when(text, NOW) == (NOW - expected).timestamp()


def test_parse_when_iso_is_utc_unless_it_says_otherwise() -> None:
    assert (
        cli_admin.parse_when("2025-03-01T12:00:00", NOW)
        == datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp()
    )
    assert (
        cli_admin.parse_when("2025-03-01T12:00:00+02:00", NOW)
        == datetime(2025, 3, 1, 10, tzinfo=UTC).timestamp()
    )
    assert cli_admin.parse_when("2025-03-01", NOW) == datetime(2025, 3, 1, tzinfo=UTC).timestamp()


# --- API tokens -----------------------------------------------------------------------------


def test_tokens_create_shows_the_token_once_then_list_and_revoke(config: Path) -> None:
    created = ok(
        config, "tokens", "create", "--name", "ci-deploy", "--role", "admin", "--ttl-days", "30"
    )
    token = created.stdout.strip()
    match = re.fullmatch(r"isth_([a-z0-9]{12})_[A-Za-z0-9_-]{43}", token)
    assert match is not None, created.stdout  # stdout is the token alone: TOKEN=$(isthmus ...)
    token_id = match.group(1)
    assert "shown this once and cannot be shown again" in created.stderr
    assert f"created token {token_id} ('ci-deploy', admin, expires " in created.stderr

    async def actor_of(hub: Hub) -> Actor | IsthmusError:
        try:
            return await authenticate(hub, f"Bearer {token}", None)
        except IsthmusError as exc:
            return exc

    assert with_hub(config, actor_of) == Actor("token:ci-deploy", Role.admin)

    listed = ok(config, "tokens", "list")
    assert listed.stdout.splitlines()[0].split() == [
        "ID",
        "NAME",
        "ROLE",
        "PARTNER",
        "CREATED",
        "BY",
        "EXPIRES",
        "STATE",
    ]
    row = listed.stdout.splitlines()[1].split()
    assert row[:4] == [token_id, "ci-deploy", "admin", "-"]
    assert row[5:] == [ME, row[6], "active"]
    assert token.split("_")[2] not in listed.stdout
    [as_data] = as_json(config, "tokens", "list")
    assert "secret_sha256" not in as_data
    assert as_data["id"] == token_id

    assert ok(config, "tokens", "revoke", token_id).stdout == (
        f"revoked token {token_id} ('ci-deploy')\n"
    )
    assert ok(config, "tokens", "list").stdout == "No API tokens.\n"
    assert isinstance(with_hub(config, actor_of), IsthmusError)  # refused at once


def test_a_partner_admin_token_needs_its_partner(config: Path) -> None:
    refused = isthmus(config, "tokens", "create", "--name", "x", "--role", "partner_admin")
    assert refused.exit_code == 1
    assert "partner_id is required for role partner_admin" in refused.stderr
    unknown = isthmus(
        config, "tokens", "create", "--name", "x", "--role", "partner_admin", "--partner", "nobody"
    )
    assert unknown.exit_code == 1
    assert "partner_id: no such partner" in unknown.stderr

    made = as_json(
        config,
        "tokens",
        "create",
        "--name",
        "acme-it",
        "--role",
        "partner_admin",
        "--partner",
        "acme",
    )
    assert (made["role"], made["partner_id"]) == ("partner_admin", "acme")
    assert made["token"].startswith(f"isth_{made['id']}_")
    unknown_token = isthmus(config, "tokens", "revoke", "nope")
    assert (unknown_token.exit_code, unknown_token.stderr) == (1, "error: no api_token/nope\n")


# --- the Redis registry -------------------------------------------------------------------


@pytest.mark.integration
def test_redis_registry_export_apply_round_trip(tmp_path: Path, redis_url: str) -> None:
    import secrets

    prefix = f"cli-{secrets.token_hex(4)}:"
    data = {**CONFIG, "store": {"backend": "redis", "url": redis_url, "prefix": prefix}}
    source = write_config(tmp_path / "source", data, backend="redis")
    ok(source, "partners", "create", "globex", "--name", "Globex", "--kind", "customer")
    first = tmp_path / "first"
    ok(source, "export", "-o", str(first))

    fresh_prefix = f"cli-{secrets.token_hex(4)}:"
    fresh_data = {
        "issuer": "https://hub.example.com",
        "keys": {"algorithm": "ES256"},
        "store": {"backend": "redis", "url": redis_url, "prefix": fresh_prefix},
    }
    fresh = write_config(tmp_path / "fresh", fresh_data, backend="redis")
    assert ok(fresh, "partners", "list").stdout == "No partners match.\n"
    ok(fresh, "apply", "-f", str(first))
    second = tmp_path / "second"
    ok(fresh, "export", "-o", str(second))
    assert files_of(second) == files_of(first)
    assert isthmus(fresh, "apply", "-f", str(second), "--dry-run", "--exit-code").exit_code == 0
    assert [p["id"] for p in as_json(fresh, "partners", "list")] == ["acme", "globex"]

"""``isthmus policy explain`` and ``isthmus policy test``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from federation import cli

runner = CliRunner()

POLICY = """
rules:
  - name: acme-buyers
    effect: allow
    when: {partner: acme, group: buyers, path: {prefix: /invoices}}
    reason: Acme buyers may read invoices.
  - name: globex-readers
    effect: allow
    when: {partner: globex, method: GET}
  - name: no-admin
    effect: deny
    when: {path: {prefix: /admin}}
    reason: The admin area is for staff only.
    public: true
"""


@pytest.fixture(autouse=True)
def _no_isthmus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("ISTHMUS_")]:
        monkeypatch.delenv(key)


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "orders.policy.yaml").write_text(POLICY)
    data = {
        "partners": [
            {
                "id": "acme",
                "name": "Acme",
                "kind": "supplier",
                "status": "active",
                "domains": ["acme.example"],
            },
            {
                "id": "globex",
                "name": "Globex",
                "kind": "customer",
                "status": "active",
                "domains": ["globex.example"],
            },
        ],
        "apps": [
            {
                "id": "orders",
                "upstreams": ["http://127.0.0.1:9000"],
                "policy_file": str(tmp_path / "orders.policy.yaml"),
            },
            {"id": "nothing", "upstreams": ["http://127.0.0.1:9001"]},
        ],
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_explain_allow(config: Path) -> None:
    result = invoke(
        "policy",
        "explain",
        "--config",
        str(config),
        "--app",
        "orders",
        "--email",
        "alice@acme.example",
        "--groups",
        "buyers,x",
        "--method",
        "GET",
        "--path",
        "/invoices/7",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "ALLOW GET /invoices/7 on orders for alice@acme.example"
    assert "  - allowed [rule acme-buyers]: Acme buyers may read invoices." in lines
    assert any(
        "globex-readers" in line and "not looked at: only for globex" in line for line in lines
    )


def test_explain_deny_shows_reasons_and_normalized_path(config: Path) -> None:
    result = invoke(
        "policy",
        "explain",
        "-c",
        str(config),
        "--app",
        "orders",
        "--email",
        "bob@globex.example",
        "--path",
        "/x/../%61dmin/",
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("DENY GET /x/../%61dmin/ on orders for bob@globex.example")
    assert "normalized path: /admin/" in result.output
    assert (
        "  - path_denied [rule no-admin]: The admin area is for staff only. (shown to the user)"
    ) in result.output
    assert "no match: requires method is GET" not in result.output


def test_explain_closest_rules(config: Path) -> None:
    result = invoke(
        "policy",
        "explain",
        "-c",
        str(config),
        "--app",
        "orders",
        "--email",
        "alice@acme.example",
        "--groups",
        "viewers",
        "--path",
        "/invoices/7",
        "--at",
        "2025-03-03T10:00:00+01:00",
    )
    assert "DENY" in result.output.splitlines()[0]
    assert "  - group_missing [rule acme-buyers]" in result.output
    assert "no match: requires member of buyers; had groups are viewers" in result.output


def test_explain_app_without_policy_and_errors(config: Path) -> None:
    result = invoke(
        "policy",
        "explain",
        "-c",
        str(config),
        "--app",
        "nothing",
        "--email",
        "alice@acme.example",
        "--path",
        "/",
    )
    assert "DENY" in result.output and "no_policy" in result.output
    result = invoke(
        "policy",
        "explain",
        "-c",
        str(config),
        "--app",
        "nope",
        "--email",
        "alice@acme.example",
        "--path",
        "/",
    )
    assert result.exit_code == 1 and "no app 'nope'" in result.output
    result = invoke(
        "policy",
        "explain",
        "-c",
        str(config),
        "--app",
        "orders",
        "--email",
        "eve@unknown.example",
        "--path",
        "/",
    )
    assert result.exit_code == 1 and "no partner owns 'unknown.example'" in result.output


def write_cases(tmp_path: Path, cases: list[dict[str, Any]]) -> Path:
    (tmp_path / "orders.policy.yaml").write_text(POLICY)
    data = {
        "policy": "orders.policy.yaml",
        "partners": {
            "acme": {"kind": "supplier", "domains": ["acme.example"]},
            "globex": {"kind": "customer", "domains": ["globex.example"]},
        },
        "cases": cases,
    }
    path = tmp_path / "orders.cases.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


GOOD = [
    {
        "name": "alice reads an invoice",
        "identity": {"email": "alice@acme.example", "groups": ["buyers"]},
        "request": {"method": "GET", "path": "/invoices/7", "at": "2025-03-03T10:00:00+01:00"},
        "expect": "allow",
        "reasons": ["allowed"],
    },
    {
        "name": "bob cannot post",
        "identity": {"email": "bob@globex.example"},
        "request": {"method": "POST", "path": "/invoices/7"},
        "expect": "deny",
        "reasons": ["method_not_allowed", "no_rule_allowed"],
    },
    {
        "name": "double encoding is refused",
        "identity": {"email": "bob@globex.example"},
        "request": {"path": "/%252e%252e/admin"},
        "expect": "deny",
        "reasons": ["ambiguous_path"],
    },
]


def test_policy_test_passes(tmp_path: Path) -> None:
    result = invoke("policy", "test", str(write_cases(tmp_path, GOOD)))
    assert result.exit_code == 0, result.output
    assert "ok   alice reads an invoice: ALLOW (allowed)" in result.output
    assert result.output.splitlines()[-1] == "3 passed, 0 failed"


def test_policy_test_failures_exit_1(tmp_path: Path) -> None:
    bad = [dict(GOOD[0], expect="deny"), dict(GOOD[1], reasons=["outside_hours"])]
    result = invoke("policy", "test", str(write_cases(tmp_path, bad)))
    assert result.exit_code == 1
    assert "FAIL alice reads an invoice: ALLOW (allowed)" in result.output
    assert "       expected deny, got allow" in result.output
    assert "expected reason 'outside_hours'" in result.output
    assert result.output.splitlines()[-1] == "0 passed, 2 failed"


def test_policy_test_bad_policy_or_file(tmp_path: Path) -> None:
    path = write_cases(tmp_path, GOOD)
    (tmp_path / "orders.policy.yaml").write_text(
        "rules:\n  - {name: a, effect: maybe, when: always}\n"
    )
    result = invoke("policy", "test", str(path))
    assert result.exit_code == 1
    assert "orders.policy.yaml:2: rules.0.effect: required: allow or deny" in result.output
    result = invoke("policy", "test", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1 and "cannot read" in result.output

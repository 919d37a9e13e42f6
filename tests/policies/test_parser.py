"""Policy problems name the file, the line and the field; all of them are reported."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

import policies
from policies.criteria import CRITERIA


def problems(source: str | Path | dict[str, object]) -> list[policies.PolicyProblem]:
    with pytest.raises(policies.PolicyError) as caught:
        policies.load_policy(source, name="orders.yaml")
    return caught.value.problems


def test_every_problem_with_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text(
        """rules:
  - name: ok
    effect: allow
    when: {group: buyers}
  - name: bad one
    effect: permit
    when:
      group: []
      colour: blue
  - name: ok
    effect: deny
    when: always
    public: yes please
"""
    )
    found = [(p.line, p.field) for p in problems(path)]
    assert found == [
        (5, "rules.1.name"),
        (6, "rules.1.effect"),
        (8, "rules.1.when.group"),
        (9, "rules.1.when.colour"),
        (13, "rules.2.public"),
    ]
    assert all(p.file == str(path) for p in problems(path))


def test_problem_text_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - name: r\n    effect: allow\n    when: {path: {prefix: x}}\n")
    (problem,) = problems(path)
    assert str(problem) == f"{path}:4: rules.0.when.path.prefix: 'x' must start with /"


def test_duplicate_rule_names_and_keys() -> None:
    text = "rules:\n  - {name: a, effect: allow, when: always}\n"
    text += "  - {name: a, effect: allow, when: always, effect: deny}\n"
    found = problems(text)
    assert {(p.field, p.message) for p in found} >= {("rules.1.effect", "duplicate key")}


def test_yaml_syntax_error_has_a_line() -> None:
    (problem,) = problems("rules:\n  - name: [unclosed\n")
    assert problem.line is not None and "not valid YAML" in problem.message


def test_missing_when_and_empty_when_are_refused() -> None:
    found = {p.field: p.message for p in problems("rules:\n  - {name: a, effect: allow}\n")}
    assert "always" in found["rules.0.when"]
    found = {p.field for p in problems("rules:\n  - {name: a, effect: allow, when: {}}\n")}
    assert found == {"rules.0.when"}


def test_top_level_checks() -> None:
    fields = {p.field for p in problems("version: 2\nrule: []\n")}
    assert fields == {"version", "rule", "rules"}
    assert problems("- a\n")[0].field == ""


def test_mapping_source_has_no_lines() -> None:
    found = problems({"rules": [{"name": "a", "effect": "allow", "when": {"nope": 1}}]})
    assert found[0].line is None and found[0].field == "rules.0.when.nope"
    assert found[0].file == "orders.yaml"


def test_mapping_and_path_sources_compile(tmp_path: Path) -> None:
    data = {"rules": [{"name": "a", "effect": "allow", "when": "always"}]}
    assert len(policies.load_policy(data, name="x").rules) == 1
    file = tmp_path / "x.yaml"
    file.write_text("rules: [{name: a, effect: allow, when: always}]\n")
    assert len(policies.load_policy(file, name="x").rules) == 1
    assert problems(tmp_path / "missing.yaml")[0].message.startswith("cannot read")


def test_schema_ships_and_covers_every_criterion() -> None:
    text = resources.files("policies").joinpath("schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    when = schema["$defs"]["when"]["properties"]
    assert set(when) == set(CRITERIA) | {"all", "any", "not"}
    rule = schema["$defs"]["rule"]["properties"]
    assert set(rule) == {"name", "effect", "when", "reason", "public", "code", "description"}

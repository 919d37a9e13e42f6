from __future__ import annotations

import pytest

import policies
from tests.policies.helpers import allow_when, allows, decide, policy, request, subject


def test_prefix_is_segment_aware() -> None:
    text = allow_when("{path: {prefix: /invoices}}")
    assert allows(text, path="/invoices")
    assert allows(text, path="/invoices/")
    assert allows(text, path="/invoices/7")
    assert not allows(text, path="/invoices-old")
    assert decide(text, path="/x").codes()[0] == "path_not_allowed"


def test_prefix_root_matches_everything() -> None:
    assert allows(allow_when("{path: {prefix: /}}"), path="/anything/at/all")


def test_exact_ignores_a_trailing_slash() -> None:
    text = allow_when("{path: {exact: /health}}")
    assert allows(text, path="/health")
    assert allows(text, path="/health/")
    assert not allows(text, path="/health/x")


def test_glob_single_and_double_star() -> None:
    text = allow_when("{path: {glob: [/projects/*/files/**, /docs/*.pdf]}}")
    assert allows(text, path="/projects/p1/files/a/b.txt")
    assert allows(text, path="/projects/p1/files")
    assert not allows(text, path="/projects/p1/x/files/a")
    assert allows(text, path="/docs/a.pdf")
    assert not allows(text, path="/docs/a/b.pdf")


def test_case_insensitive_app_folds_patterns_and_paths() -> None:
    text = "rules:\n  - {name: no-admin, effect: deny, when: {path: {prefix: /Admin}}}\n"
    text += "  - {name: all, effect: allow, when: always}\n"
    folded = policies.load_policy(text, name="orders", case_insensitive_paths=True)
    assert not folded.decide(subject(), request("/admin/users")).allowed
    assert not folded.decide(subject(), request("/ADMIN")).allowed
    plain = policies.load_policy(text, name="orders")
    assert plain.decide(subject(), request("/admin/users")).allowed
    assert not plain.decide(subject(), request("/Admin/users")).allowed


def test_patterns_are_normalized_or_refused() -> None:
    assert allows(allow_when("{path: {prefix: /a/./b/}}"), path="/a/b/c")
    with pytest.raises(policies.PolicyError) as caught:
        policy(allow_when("{path: {prefix: [/ok, /a;b]}}"))
    assert caught.value.problems[0].field == "rules.0.when.path.prefix.1"
    with pytest.raises(policies.PolicyError, match="must start with /"):
        policy(allow_when("{path: {exact: health}}"))

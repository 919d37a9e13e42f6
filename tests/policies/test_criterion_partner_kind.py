from __future__ import annotations

import pytest

import policies
from tests.policies.helpers import allow_when, allows, decide, policy, subject

POLICY = allow_when("{partner_kind: [supplier, subcontractor]}")


def test_kind_in_list() -> None:
    assert allows(POLICY, subject(kind="supplier"))
    assert allows(POLICY, subject(kind="subcontractor"))


def test_other_kind_refused() -> None:
    decision = decide(POLICY, subject(kind="customer"))
    assert not decision.allowed
    assert decision.codes() == ["partner_kind_not_allowed", "no_rule_allowed"]


def test_unknown_kind_is_a_policy_error() -> None:
    with pytest.raises(policies.PolicyError) as caught:
        policy(allow_when("{partner_kind: [vendor]}"))
    problem = caught.value.problems[0]
    assert problem.field == "rules.0.when.partner_kind.0"
    assert "not a partner kind" in problem.message

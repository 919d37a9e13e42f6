from __future__ import annotations

from tests.policies.helpers import allow_when, allows, decide, subject


def test_any_of_the_groups() -> None:
    text = allow_when("{group: [buyers, accounting]}")
    assert allows(text, subject(groups=("accounting", "x")))
    assert not allows(text, subject(groups=("x",)))
    assert decide(text, subject()).codes()[0] == "group_missing"


def test_all_of_the_groups_with_all() -> None:
    text = allow_when("{all: [{group: buyers}, {group: approvers}]}")
    assert allows(text, subject(groups=("buyers", "approvers")))
    decision = decide(text, subject(groups=("buyers",)))
    assert decision.codes()[0] == "group_missing"
    assert "approvers" in decision.reasons[0].message


def test_group_names_are_case_sensitive() -> None:
    assert not allows(allow_when("{group: Buyers}"), subject(groups=("buyers",)))

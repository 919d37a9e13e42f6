from __future__ import annotations

import pytest

import policies
from tests.policies.helpers import allow_when, allows, decide, policy, subject


def test_equals() -> None:
    text = allow_when("{claim: {name: department, equals: purchasing}}")
    assert allows(text, subject(raw_claims={"department": "purchasing"}))
    assert not allows(text, subject(raw_claims={"department": "sales"}))
    assert decide(text, subject()).codes()[0] == "claim_mismatch"


def test_in_and_nested_names() -> None:
    text = allow_when("{claim: {name: org.unit, in: [east, west]}}")
    assert allows(text, subject(raw_claims={"org": {"unit": "west"}}))
    assert not allows(text, subject(raw_claims={"org": "west"}))
    assert not allows(text, subject(raw_claims={}))


def test_contains_for_list_claims() -> None:
    text = allow_when("{claim: {name: entitlements, contains: orders}}")
    assert allows(text, subject(raw_claims={"entitlements": ["orders", "x"]}))
    assert not allows(text, subject(raw_claims={"entitlements": "orders"}))


def test_types_are_part_of_the_value() -> None:
    text = allow_when("{claim: {name: level, equals: 1}}")
    assert allows(text, subject(raw_claims={"level": 1}))
    assert not allows(text, subject(raw_claims={"level": True}))
    assert not allows(text, subject(raw_claims={"level": "1"}))


def test_exactly_one_operator() -> None:
    with pytest.raises(policies.PolicyError, match="exactly one of equals, in, contains"):
        policy(allow_when("{claim: {name: a, equals: 1, in: [2]}}"))

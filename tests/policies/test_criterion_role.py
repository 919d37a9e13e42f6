from __future__ import annotations

from tests.policies.helpers import allow_when, allows, decide, subject

POLICY = allow_when("{role: approver}")


def test_role_present() -> None:
    assert allows(POLICY, subject(roles=("viewer", "approver")))


def test_role_missing() -> None:
    assert decide(POLICY, subject(roles=("viewer",))).codes()[0] == "role_missing"

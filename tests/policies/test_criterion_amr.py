from __future__ import annotations

from tests.policies.helpers import allow_when, allows, decide, subject

POLICY = allow_when("{amr: mfa}")


def test_amr_contains() -> None:
    assert allows(POLICY, subject(amr=("pwd", "mfa")))
    decision = decide(POLICY, subject(amr=("pwd",)))
    assert decision.codes()[0] == "mfa_required"

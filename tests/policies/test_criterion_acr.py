from __future__ import annotations

from tests.policies.helpers import allow_when, allows, decide, subject

POLICY = allow_when("{acr: [urn:example:mfa, phr]}")


def test_acr_in_set() -> None:
    assert allows(POLICY, subject(acr="phr"))
    assert decide(POLICY, subject(acr="pwd")).codes()[0] == "acr_insufficient"
    assert not allows(POLICY, subject(acr=None))

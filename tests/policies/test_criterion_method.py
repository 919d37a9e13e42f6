from __future__ import annotations

import pytest

import policies
from tests.policies.helpers import allow_when, allows, decide, policy

POLICY = allow_when("{method: [GET, head]}")


def test_listed_methods() -> None:
    assert allows(POLICY, method="GET")
    assert allows(POLICY, method="HEAD")
    assert decide(POLICY, method="POST").codes()[0] == "method_not_allowed"


def test_lower_case_request_methods_cannot_dodge_a_deny() -> None:
    text = "rules:\n" + "\n".join(
        [
            "  - {name: no-delete, effect: deny, when: {method: DELETE}}",
            "  - {name: all, effect: allow, when: always}",
        ]
    )
    assert not allows(text, method="delete")


def test_bad_method_is_refused() -> None:
    with pytest.raises(policies.PolicyError, match="not an HTTP method"):
        policy(allow_when('{method: "GE T"}'))

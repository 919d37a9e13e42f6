from __future__ import annotations

from datetime import UTC, datetime

import pytest

import policies
from tests.policies.helpers import allow_when, allows, decide, policy, subject

POLICY = allow_when("{contract: valid}")
WINDOW = {"valid_from": "2025-01-01T00:00:00Z", "valid_until": "2025-07-01T00:00:00Z"}


def test_inside_the_window() -> None:
    assert allows(POLICY, subject(contract=WINDOW), at=datetime(2025, 3, 1, tzinfo=UTC))
    assert allows(POLICY, subject(), at=datetime(2025, 3, 1, tzinfo=UTC))  # open window


def test_outside_the_window() -> None:
    late = decide(POLICY, subject(contract=WINDOW), at=datetime(2025, 7, 1, tzinfo=UTC))
    assert late.codes()[0] == "contract_not_valid"
    assert not allows(POLICY, subject(contract=WINDOW), at=datetime(2024, 12, 31, tzinfo=UTC))


def test_only_valid_is_a_value() -> None:
    with pytest.raises(policies.PolicyError, match="only value is 'valid'"):
        policy(allow_when("{contract: expired}"))

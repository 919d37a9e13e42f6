from __future__ import annotations

from datetime import UTC, datetime

from policies import Grant
from tests.policies.helpers import MONDAY_10_UTC, allow_when, allows, decide, subject

POLICY = allow_when("{grant: valid}")


def grant(app: str, until: datetime) -> Grant:
    return Grant(app, until, "sponsor@corp.example")


def test_a_valid_grant_for_this_app() -> None:
    who = subject(grants=(grant("orders", datetime(2025, 3, 4, tzinfo=UTC)),))
    assert allows(POLICY, who, at=MONDAY_10_UTC)


def test_expired_or_other_app_grants_do_not_count() -> None:
    expired = subject(grants=(grant("orders", datetime(2025, 3, 3, 10, 0, tzinfo=UTC)),))
    assert decide(POLICY, expired).codes()[0] == "no_valid_grant"
    other = subject(grants=(grant("billing", datetime(2026, 1, 1, tzinfo=UTC)),))
    assert not allows(POLICY, other)


def test_grant_for_a_named_app() -> None:
    text = allow_when("{grant: {app: billing}}")
    who = subject(grants=(grant("billing", datetime(2026, 1, 1, tzinfo=UTC)),))
    assert allows(text, who)

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import policies
from tests.policies.helpers import allow_when, allows, decide, policy

HOURS = allow_when(
    "{time: {timezone: Europe/Paris, weekdays: [mon, tue, wed, thu, fri], "
    'from: "08:00", until: "18:00"}}'
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_inside_business_hours_in_the_named_zone() -> None:
    # 07:30 UTC on Monday 3 March 2025 is 08:30 in Paris (UTC+1).
    assert allows(HOURS, at=at("2025-03-03T07:30:00+00:00"))
    assert not allows(HOURS, at=at("2025-03-03T06:59:00+00:00"))
    # until is excluded: 17:00 UTC is 18:00 in Paris.
    assert not allows(HOURS, at=at("2025-03-03T17:00:00+00:00"))


def test_daylight_saving_time_is_followed() -> None:
    # Monday 7 July 2025: Paris is UTC+2; 06:30 UTC is 08:30 there.
    assert allows(HOURS, at=at("2025-07-07T06:30:00+00:00"))


def test_weekend_refused_with_outside_hours() -> None:
    decision = decide(HOURS, at=at("2025-03-08T10:00:00+00:00"))  # a Saturday
    assert decision.codes()[0] == "outside_hours"


def test_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    night = allow_when('{time: {timezone: UTC, weekdays: [fri], from: "22:00", until: "06:00"}}')
    assert allows(night, at=datetime(2025, 3, 7, 23, 0, tzinfo=UTC))  # Friday night
    assert allows(night, at=datetime(2025, 3, 8, 5, 59, tzinfo=UTC))  # Saturday morning
    assert not allows(night, at=datetime(2025, 3, 7, 5, 0, tzinfo=UTC))  # Friday morning


def test_weekdays_alone() -> None:
    text = allow_when("{time: {timezone: Asia/Tokyo, weekdays: [saturday]}}")
    # Friday 20:00 UTC is already Saturday in Tokyo.
    assert allows(text, at=datetime(2025, 3, 7, 20, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("when", "field"),
    [
        ("{time: {timezone: Mars/Olympus, weekdays: [mon]}}", "timezone"),
        ('{time: {timezone: UTC, from: "8:00", until: "18:00"}}', "from"),
        ("{time: {timezone: UTC, weekdays: [funday]}}", "weekdays"),
        ('{time: {timezone: UTC, from: "08:00"}}', ""),
    ],
)
def test_bad_windows_are_refused(when: str, field: str) -> None:
    with pytest.raises(policies.PolicyError) as caught:
        policy(allow_when(when))
    assert caught.value.problems[0].field == ("rules.0.when.time." + field).rstrip(".")

"""``time``: the request happens on one of these weekdays and/or between two times of
day, in a named time zone (IANA, via :mod:`zoneinfo`; daylight saving handled). ``from``
is included, ``until`` excluded; ``from`` later than ``until`` is a window across
midnight (``22:00`` to ``06:00``), its weekday being the day it starts.

    when:
      time: {timezone: Europe/Paris, weekdays: [mon, tue, wed, thu, fri],
             from: "08:00", until: "19:00"}
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from policies.criteria.base import (
    CompileContext,
    Criterion,
    CriterionValueError,
    mapping,
    string_list,
)
from policies.model import AccessRequest, Subject

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")


class TimeWindow(Criterion):
    __slots__ = ("end", "start", "weekdays", "zone", "zone_name")
    key = "time"
    code = "outside_hours"

    def __init__(
        self, zone_name: str, weekdays: frozenset[int] | None, start: int | None, end: int | None
    ) -> None:
        self.zone_name = zone_name
        self.zone = ZoneInfo(zone_name)
        self.weekdays = weekdays  # 0 = Monday
        self.start = start  # minutes after midnight
        self.end = end

    def local(self, request: AccessRequest) -> datetime:
        return request.now.astimezone(self.zone)

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        local = request.now.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        start, end = self.start, self.end
        if start is None or end is None:
            return self.weekdays is None or local.weekday() in self.weekdays
        if start < end:
            inside = start <= minute < end
            day = local
        elif minute >= start:  # across midnight, evening part
            inside, day = True, local
        elif minute < end:  # across midnight, morning part: the window began yesterday
            inside, day = True, local - timedelta(days=1)
        else:
            inside, day = False, local
        return inside and (self.weekdays is None or day.weekday() in self.weekdays)

    def describe(self) -> str:
        parts: list[str] = []
        if self.weekdays is not None:
            parts.append(",".join(DAYS[d] for d in sorted(self.weekdays)))
        if self.start is not None and self.end is not None:
            parts.append(f"{_hhmm(self.start)}-{_hhmm(self.end)}")
        return f"time within {' '.join(parts)} {self.zone_name}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        local = self.local(request)
        return f"time is {DAYS[local.weekday()]} {local:%H:%M} {self.zone_name}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(value: Any, field: str) -> int:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise CriterionValueError(f'expected a time of day as "HH:MM", got {value!r}', field)
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def compile(value: Any, ctx: CompileContext) -> TimeWindow:
    spec = mapping(value, ("timezone", "weekdays", "from", "until"), required=("timezone",))
    zone = spec["timezone"]
    try:
        if not isinstance(zone, str):
            raise ValueError(zone)
        ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError):
        raise CriterionValueError(f"{zone!r} is not an IANA time zone", "timezone") from None
    weekdays: frozenset[int] | None = None
    if "weekdays" in spec:
        try:
            names = string_list(spec["weekdays"], what="weekday")
        except CriterionValueError as exc:
            raise CriterionValueError(exc.message, "weekdays") from None
        for name in names:
            if name.lower()[:3] not in DAYS or name.lower() not in _day_names(name.lower()[:3]):
                raise CriterionValueError(f"{name!r} is not a weekday (mon..sun)", "weekdays")
        weekdays = frozenset(DAYS.index(n.lower()[:3]) for n in names)
    if ("from" in spec) != ("until" in spec):
        raise CriterionValueError("give both from and until, or neither")
    start = end = None
    if "from" in spec:
        start, end = _minutes(spec["from"], "from"), _minutes(spec["until"], "until")
        if start == end:
            raise CriterionValueError("from and until are the same time", "until")
    if weekdays is None and start is None:
        raise CriterionValueError("give weekdays, from/until, or both")
    return TimeWindow(zone, weekdays, start, end)


def _day_names(short: str) -> tuple[str, ...]:
    full = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    return (short, full[DAYS.index(short)])

"""`spec.schedules[]` (AIbrix; DESIGN §2.5): weekly windows that replace the replica bounds.

Each entry: `name`, `timezone` (IANA, default UTC), `daysOfWeek` (`Mon`…`Sun`, default all),
`startTime`/`endTime` as `HH:MM` (the end excluded, no crossing midnight) and `minReplicas`
and/or `maxReplicas`. Two windows that can be active at the same moment are an error, and so
are bounds that cross (a window's effective minimum above its effective maximum).

Windows in different time zones are compared on the wall clock of a winter and a summer week
(2026), which covers both sides of every daylight-saving rule the zone database holds today.
Pure: the zone database is data (`zoneinfo`, backed by the `tzdata` package where the system
has none).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from autoscalerd.config.model import Schedule
from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import (
    check_keys,
    describe,
    read_int,
    read_mapping,
    read_string,
    suggest,
)

__all__ = ["DAYS", "SCHEDULE_FIELDS", "read_schedules"]

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SCHEDULE_FIELDS = (
    "name",
    "timezone",
    "daysOfWeek",
    "startTime",
    "endTime",
    "minReplicas",
    "maxReplicas",
)
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_REFERENCE_WEEKS = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 7, 6, tzinfo=UTC))
"""Mondays of a winter and a summer week: where windows of different zones are compared."""


def read_schedules(
    doc: Document,
    path: Path,
    value: Any,
    min_replicas: int | None,
    max_replicas: int | None,
) -> tuple[Schedule, ...] | None:
    """The schedules at `path`; None after recording problems."""
    if value is None:
        return ()
    if not isinstance(value, list):
        doc.add(path, f"must be a list of schedules, got {describe(value)}")
        return None
    before = len(doc.problems)
    out: list[tuple[int, Schedule]] = []
    names: dict[str, int] = {}
    for i, item in enumerate(value):
        schedule = _read_one(doc, (*path, i), item, min_replicas, max_replicas)
        if schedule is None:
            continue
        if schedule.name in names:
            doc.add(
                (*path, i, "name"),
                f"schedule {schedule.name!r} is defined twice (also entry {names[schedule.name]}); "
                "give each window its own name",
            )
            continue
        names[schedule.name] = i
        out.append((i, schedule))
    for a in range(len(out)):
        for b in range(a + 1, len(out)):
            (_, first), (j, second) = out[a], out[b]
            if _overlap(first, second):
                doc.add(
                    (*path, j),
                    f"schedule {second.name!r} overlaps schedule {first.name!r}: at most one "
                    "window may be active at a time; move one of them or merge them",
                )
    if len(doc.problems) != before:
        return None
    return tuple(s for _, s in out)


def _read_one(
    doc: Document,
    path: Path,
    value: Any,
    spec_min: int | None,
    spec_max: int | None,
) -> Schedule | None:
    data = read_mapping(doc, path, value)
    if data is None:
        return None
    before = len(doc.problems)
    check_keys(doc, path, data, SCHEDULE_FIELDS)
    name = None
    if "name" not in data:
        doc.add(path, "name is required (shown in /status while the window is active)", at_key=True)
    else:
        name = read_string(doc, (*path, "name"), data["name"])
    timezone = "UTC"
    if "timezone" in data:
        tz = read_string(doc, (*path, "timezone"), data["timezone"])
        if tz is not None:
            try:
                zoneinfo.ZoneInfo(tz)
                timezone = tz
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                hint = suggest(tz, zoneinfo.available_timezones())
                doc.add(
                    (*path, "timezone"),
                    f"unknown time zone {tz!r}; use an IANA name such as Europe/Berlin or UTC"
                    + (f"; did you mean {hint!r}?" if hint else ""),
                )
    days = _read_days(doc, (*path, "daysOfWeek"), data.get("daysOfWeek"))
    start = _read_time(doc, path, data, "startTime")
    end = _read_time(doc, path, data, "endTime")
    if start is not None and end is not None and end <= start:
        doc.add(
            (*path, "endTime"),
            f"endTime ({_hhmm(end)}) must be after startTime ({_hhmm(start)}) on the same day "
            "(the end is excluded; a window cannot cross midnight: split it into two schedules)",
        )
    low = high = None
    if "minReplicas" in data:
        low = read_int(doc, (*path, "minReplicas"), data["minReplicas"], lo=0, hi=100000)
    if "maxReplicas" in data:
        high = read_int(doc, (*path, "maxReplicas"), data["maxReplicas"], lo=1, hi=100000)
    if "minReplicas" not in data and "maxReplicas" not in data:
        doc.add(path, "set minReplicas and/or maxReplicas: the bounds while the window is active")
    eff_min = low if low is not None else spec_min
    eff_max = high if high is not None else spec_max
    if eff_min is not None and eff_max is not None and eff_min > eff_max:
        doc.add(
            (*path, "minReplicas" if low is not None else "maxReplicas"),
            f"while this window is active minReplicas would be {eff_min} and maxReplicas "
            f"{eff_max}; set both so that minReplicas <= maxReplicas",
        )
    if len(doc.problems) != before:
        return None
    assert name is not None and days is not None and start is not None and end is not None
    return Schedule(
        name=name,
        timezone=timezone,
        days=days,
        start_minute=start,
        end_minute=end,
        min_replicas=low,
        max_replicas=high,
    )


def _read_days(doc: Document, path: Path, value: Any) -> frozenset[int] | None:
    if value is None:
        return frozenset(range(7))
    if not isinstance(value, list) or not value:
        doc.add(path, f"must be a list of days such as [Mon, Tue], got {describe(value)}")
        return None
    days: set[int] = set()
    for i, item in enumerate(value):
        if isinstance(item, str) and item in DAYS:
            days.add(DAYS.index(item))
            continue
        guess = suggest(item, DAYS) if isinstance(item, str) else None
        if isinstance(item, str) and guess is None and item[:3].capitalize() in DAYS:
            guess = item[:3].capitalize()
        doc.add(
            (*path, i),
            f"must be one of {', '.join(DAYS)}, got {describe(item)}"
            + (f"; did you mean {guess!r}?" if guess else ""),
        )
        return None
    return frozenset(days)


def _read_time(doc: Document, path: Path, data: Mapping[str, Any], key: str) -> int | None:
    """`HH:MM` as minutes after midnight."""
    if key not in data:
        doc.add(path, f"{key} is required, as HH:MM (24-hour clock)", at_key=True)
        return None
    raw = data[key]
    if isinstance(raw, int) and not isinstance(raw, bool):
        doc.add(
            (*path, key),
            f"must be a quoted HH:MM string: YAML reads an unquoted {raw // 60}:{raw % 60:02d} "
            f'as the number {raw}; write {key}: "{raw // 60:02d}:{raw % 60:02d}"',
        )
        return None
    match = _HHMM.match(raw) if isinstance(raw, str) else None
    if match is None:
        doc.add(
            (*path, key), f'must be HH:MM on a 24-hour clock such as "09:00", got {describe(raw)}'
        )
        return None
    return int(match.group(1)) * 60 + int(match.group(2))


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _overlap(a: Schedule, b: Schedule) -> bool:
    if a.timezone == b.timezone:
        return (
            bool(a.days & b.days)
            and a.start_minute < b.end_minute
            and b.start_minute < a.end_minute
        )
    ia, ib = _utc_intervals(a), _utc_intervals(b)
    return any(s1 < e2 and s2 < e1 for s1, e1 in ia for s2, e2 in ib)


def _utc_intervals(s: Schedule) -> Sequence[tuple[datetime, datetime]]:
    """The window's occurrences in the reference weeks (and the days around them), in UTC."""
    zone = zoneinfo.ZoneInfo(s.timezone)
    out = []
    for monday in _REFERENCE_WEEKS:
        for offset in range(-1, 8):
            day = (monday + timedelta(days=offset)).date()
            if day.weekday() not in s.days:
                continue
            local = datetime(day.year, day.month, day.day, tzinfo=zone)
            start = local + timedelta(minutes=s.start_minute)
            end = local + timedelta(minutes=s.end_minute)
            out.append((start.astimezone(UTC), end.astimezone(UTC)))
    return out

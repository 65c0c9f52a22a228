"""Which schedule window is active, across a DST change in Europe/Berlin and a day boundary."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from scaling_helpers import make_policy

from autoscalerd.config.model import Schedule, Strategy
from autoscalerd.scaling import Autoscaler, SourceSample, Tick
from autoscalerd.scaling.schedules import active_schedule, effective_bounds

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = Schedule(
    name="office",
    timezone="Europe/Berlin",
    days=frozenset({0, 1, 2, 3, 4, 6}),  # Mon-Fri and Sun (29 March 2026 is a Sunday)
    start_minute=8 * 60,
    end_minute=18 * 60,
    min_replicas=3,
)
EARLY = Schedule(
    name="early",
    timezone="Europe/Berlin",
    days=frozenset({6}),
    start_minute=2 * 60 + 30,  # inside the spring-forward gap (02:00 -> 03:00) on 29 March
    end_minute=4 * 60,
    min_replicas=2,
)
LATE = Schedule(
    name="late",
    timezone="UTC",
    days=frozenset({0}),
    start_minute=23 * 60,
    end_minute=24 * 60 - 1,
    max_replicas=2,
)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


CASES = [
    # Winter (CET, UTC+1): 08:00 local is 07:00Z.
    ("2026-03-27T06:59:59+00:00", None),
    ("2026-03-27T07:00:00+00:00", "office"),
    ("2026-03-27T16:59:59+00:00", "office"),
    ("2026-03-27T17:00:00+00:00", None),  # 18:00 local: the end is excluded
    # Saturday: not a day of the window
    ("2026-03-28T10:00:00+00:00", None),
    # Sunday 29 March, clocks go 02:00 -> 03:00: now CEST (UTC+2), 08:00 local is 06:00Z.
    ("2026-03-29T00:59:59+00:00", None),  # 01:59:59 CET
    ("2026-03-29T01:00:00+00:00", "early"),  # 03:00 CEST: the gap's 02:30 start begins here
    ("2026-03-29T01:59:59+00:00", "early"),  # 03:59:59 CEST
    ("2026-03-29T02:00:00+00:00", None),  # 04:00 CEST
    ("2026-03-29T05:59:59+00:00", None),
    ("2026-03-29T06:00:00+00:00", "office"),
    ("2026-03-29T15:59:59+00:00", "office"),
    ("2026-03-29T16:00:00+00:00", None),
    # Autumn: 25 October 2026 back to CET; Monday 26th 08:00 local is 07:00Z again.
    ("2026-10-26T06:59:59+00:00", None),
    ("2026-10-26T07:00:00+00:00", "office"),
    # Day boundary in UTC: Monday 23:00-23:59 only, Tuesday 00:00 is outside.
    ("2026-03-30T22:59:59+00:00", None),
    ("2026-03-30T23:00:00+00:00", "late"),
    ("2026-03-30T23:58:59+00:00", "late"),
    ("2026-03-30T23:59:00+00:00", None),
    ("2026-03-31T00:00:00+00:00", None),
]


@pytest.mark.parametrize(("when", "expected"), CASES)
def test_active_schedule(when: str, expected: str | None) -> None:
    active = active_schedule((OFFICE, EARLY, LATE), utc(when))
    assert (active.name if active else None) == expected


def test_local_times_of_the_dst_table_are_what_they_claim() -> None:
    assert datetime.fromtimestamp(utc("2026-03-29T06:00:00+00:00"), BERLIN).hour == 8
    assert datetime.fromtimestamp(utc("2026-03-27T07:00:00+00:00"), BERLIN).hour == 8


def test_effective_bounds() -> None:
    p = make_policy(Strategy.APA, min_replicas=1, max_replicas=10, schedules=(OFFICE, LATE))
    assert effective_bounds(p, None).schedule is None
    b = effective_bounds(p, utc("2026-03-27T07:00:00+00:00"))
    assert (b.min_replicas, b.max_replicas, b.name) == (3, 10, "office")
    b = effective_bounds(p, utc("2026-03-30T23:30:00+00:00"))
    assert (b.min_replicas, b.max_replicas, b.name) == (1, 2, "late")
    b = effective_bounds(p, utc("2026-03-28T10:00:00+00:00"))
    assert (b.min_replicas, b.max_replicas, b.name) == (1, 10, None)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_decision_shows_the_schedule_and_its_bounds(strategy: Strategy) -> None:
    p = make_policy(strategy, min_replicas=1, max_replicas=10, schedules=(OFFICE, LATE))
    scaler = Autoscaler(p)
    office = utc("2026-03-27T07:00:00+00:00")
    low = (SourceSample(total=1.0, answered=1),)
    d = scaler.decide(Tick(now=0.0, wall=office, current_replicas=1, ready=1, samples=low))
    assert (d.desired, d.reason, d.schedule, d.bounds) == (3, "schedule-min", "office", (3, 10))
    assert "schedule office: replicas [3, 10]" in d.detail
    late = utc("2026-03-30T23:30:00+00:00")
    high = (SourceSample(total=100.0, answered=5),)
    d = scaler.decide(Tick(now=1.0, wall=late, current_replicas=5, ready=5, samples=high))
    assert (d.desired, d.reason, d.schedule, d.bounds) == (2, "schedule-max", "late", (1, 2))


def test_a_window_with_its_own_minimum_warms_up_a_target_at_zero() -> None:
    p = make_policy(Strategy.KPA, min_replicas=1, max_replicas=10, schedules=(OFFICE,))
    none = (SourceSample(total=None),)
    outside = utc("2026-03-28T10:00:00+00:00")
    d = Autoscaler(p).decide(Tick(now=0.0, wall=outside, current_replicas=0, ready=0, samples=none))
    assert (d.desired, d.reason) == (None, "target-at-zero")
    inside = utc("2026-03-27T07:00:00+00:00")
    d = Autoscaler(p).decide(Tick(now=0.0, wall=inside, current_replicas=0, ready=0, samples=none))
    assert (d.desired, d.reason) == (3, "schedule-min")

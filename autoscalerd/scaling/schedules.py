"""Which `spec.schedules` window is active at a wall-clock time, and the bounds it gives.

Pure: the wall time (Unix seconds) is an argument. A window is active from `startTime`
(included) to `endTime` (excluded) of the local day in its zone, on its days of the week.
Local times are wall-clock times: across a daylight-saving change an 08:00–18:00 window
stays 08:00–18:00 local (10 hours, not 9 or 11); a start that falls in the spring-forward
gap begins at the first instant after it.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from autoscalerd.config.model import Policy, Schedule

__all__ = ["Bounds", "active_schedule", "effective_bounds"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Bounds:
    """The replica bounds in force (AIbrix `status.scheduledBounds`)."""

    min_replicas: int
    max_replicas: int
    schedule: Schedule | None = None
    """The active window, None when the spec's bounds apply."""

    @property
    def name(self) -> str | None:
        return self.schedule.name if self.schedule is not None else None


@lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _is_active(schedule: Schedule, wall: float) -> bool:
    local = datetime.fromtimestamp(wall, UTC).astimezone(_zone(schedule.timezone))
    if local.weekday() not in schedule.days:
        return False
    minute = local.hour * 60 + local.minute
    return schedule.start_minute <= minute < schedule.end_minute


def active_schedule(schedules: tuple[Schedule, ...], wall: float) -> Schedule | None:
    """The window active at `wall` (validation forbids two at once; the first wins anyway)."""
    for schedule in schedules:
        if _is_active(schedule, wall):
            return schedule
    return None


def effective_bounds(policy: Policy, wall: float | None) -> Bounds:
    """The bounds at `wall`: the active window's overrides over the spec's; the spec's when
    there is no window or no wall time (a trace without `--start`)."""
    schedule = active_schedule(policy.schedules, wall) if wall is not None else None
    if schedule is None:
        return Bounds(min_replicas=policy.min_replicas, max_replicas=policy.max_replicas)
    low = schedule.min_replicas if schedule.min_replicas is not None else policy.min_replicas
    high = schedule.max_replicas if schedule.max_replicas is not None else policy.max_replicas
    return Bounds(min_replicas=low, max_replicas=high, schedule=schedule)

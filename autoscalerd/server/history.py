"""What each policy's decisions saw, kept in memory for `/history` and `/ui` (pure: time is an argument).

One `PolicyHistory` per policy: fixed-size ring buffers indexed by tick number, where a tick
number is `floor(now / interval)` of the loop's monotonic clock. The time of a point is never
stored: it is derived from its index (`tick * interval`), and a tick without a decision (the
target could not be read, pods not listed yet, the daemon was busy) leaves its slot marked
absent, so gaps show as gaps, never as zeros.

Per point, in `array`s allocated in full when the policy is first recorded (so the bound is
reached at once, not grown into):

| column | type | bytes |
|---|---|---|
| each metric source's value (the tick's total; NaN = no data) | float32 | 4 per source |
| ready pods (0xFFFF = unknown) | uint16 | 2 |
| desired replicas (0xFFFF = no decision) | uint16 | 2 |
| flags: present, panic, schedule window, error | uint8 | 1 |

**Bound**: `ceil(seconds / interval)` points per policy (`seconds` is `--history-seconds`,
default 3600, at most `MAX_HISTORY_SECONDS`), each `5 + 4 × sources` bytes: one hour at 1 s
is 3,600 points × 9 bytes = 32 KiB for a one-metric policy, 31 MiB for 1,000 such policies,
plus about 1 KiB of Python objects per policy. Target values are kept as change points (one
entry per change of `targetValue`, pruned as they leave the window).

A policy keeps its buffer across reloads as long as its key (`namespace/name`) stays: a
changed spec only adds or drops metric columns (by `targetMetric`). A change of the scrape
interval starts every buffer afresh (tick numbers mean another time then). `sync()` frees the
buffers of policies that are gone.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_HISTORY_SECONDS",
    "MAX_HISTORY_SECONDS",
    "HistoryStore",
    "Point",
    "PolicyHistory",
    "Snapshot",
    "point_bytes",
]

DEFAULT_HISTORY_SECONDS = 3600.0
"""How far back `/history` and `/ui` can look by default (one hour)."""
MAX_HISTORY_SECONDS = 86400.0
"""Upper limit of `--history-seconds`: a day at 1 s is 777 KiB per one-metric policy."""

_UNKNOWN = 0xFFFF
"""uint16 sentinel: no replica count (no decision, or not known)."""
_MAX_COUNT = _UNKNOWN - 1
_PRESENT = 1
_PANIC = 2
_SCHEDULE = 4
_ERROR = 8


def point_bytes(sources: int) -> int:
    """Bytes one point takes for a policy with `sources` metric sources."""
    return 5 + 4 * sources


@dataclass(frozen=True, kw_only=True, slots=True)
class Point:
    """One decision, as recorded."""

    values: Sequence[float | None]
    """Per metric column, in `names` order: the tick's total (None = no data)."""
    ready: int | None
    desired: int | None
    """None = no decision this tick."""
    panic: bool = False
    schedule: bool = False
    """A schedule window (spec.schedules) was in force."""
    error: bool = False
    """The policy had a problem (a failed scrape, read or write) at this tick."""


def _count(n: int | None) -> int:
    if n is None or n < 0:
        return _UNKNOWN
    return n if n <= _MAX_COUNT else _MAX_COUNT


def _f32(v: float) -> float | None:
    """A stored float32 as JSON wants it: None for NaN, 7 significant digits (a float32
    holds about that many, and `45.8182` should not come back as `45.81819915771484`)."""
    if v != v:  # NaN
        return None
    if v.is_integer():
        return v
    return float(f"{v:.7g}")


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    """Column names: two sources on the same `targetMetric` become `m` and `m#2`."""
    if len(set(names)) == len(names):
        return names
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return tuple(out)


def _values(raw: list[float], present: list[bool]) -> list[float | None]:
    """`_f32` of each present value (memoized: a metric repeats its values a lot)."""
    seen: dict[float, float | None] = {}
    out: list[float | None] = []
    for v, ok in zip(raw, present, strict=True):
        if not ok or v != v:  # absent, or NaN: no data
            out.append(None)
            continue
        got = seen.get(v, _MISSING)
        if got is _MISSING:
            got = seen[v] = _f32(v)
        out.append(got)  # type: ignore[arg-type]
    return out


_MISSING = object()
_NONZERO = re.compile(rb"[^\x00]")


class PolicyHistory:
    """The ring buffers of one policy; see the module docstring for layout and bound."""

    __slots__ = (
        "_cols",
        "_given",
        "_targets",
        "capacity",
        "desired",
        "flags",
        "head",
        "interval",
        "ready",
        "values",
    )

    def __init__(self, *, seconds: float, interval: float) -> None:
        if not interval > 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        self.interval = interval
        self.capacity = max(1, math.ceil(seconds / interval - 1e-9))
        self.head: int | None = None
        """Tick number of the newest point written (None: nothing yet)."""
        self.ready = array("H", [_UNKNOWN]) * self.capacity
        self.desired = array("H", [_UNKNOWN]) * self.capacity
        self.flags = array("B", bytes(self.capacity))
        self.values: dict[str, array[float]] = {}
        self._targets: dict[str, list[tuple[int, float]]] = {}
        """Per column: (first tick, targetValue) change points, oldest first."""
        self._cols: tuple[str, ...] = ()
        self._given: tuple[str, ...] = ()
        """`names` as last passed (the columns are these, made unique)."""

    @property
    def names(self) -> tuple[str, ...]:
        """The metric columns, in source order."""
        return self._cols

    def nbytes(self) -> int:
        """Bytes held by the arrays (the bound of the module docstring)."""
        n = self.ready.itemsize * len(self.ready) + self.desired.itemsize * len(self.desired)
        n += len(self.flags)
        return n + sum(a.itemsize * len(a) for a in self.values.values())

    def set_columns(self, names: Sequence[str], targets: Sequence[float], tick: int) -> None:
        """Make the columns `names` (with their targets, in force from `tick`); columns that
        stay keep their values, new ones start empty, others are freed."""
        given = tuple(names)
        if given != self._given:
            names = _unique(given)
            self.values = {
                name: self.values.get(name) or array("f", [math.nan]) * self.capacity
                for name in names
            }
            self._targets = {name: self._targets.get(name, []) for name in names}
            self._cols = names
            self._given = given
        for name, target in zip(self._cols, targets, strict=True):
            changes = self._targets[name]
            if not changes or changes[-1][1] != target:
                changes.append((tick, float(target)))

    def record(self, tick: int, point: Point) -> None:
        """Write `point` at `tick`; ticks skipped since the last one become absent. A tick
        older than the buffer is dropped; the same tick again overwrites."""
        cap = self.capacity
        head = self.head
        if head is None or tick - head >= cap:
            self._clear_all()
            self.head = tick
        elif tick > head:
            self._clear(head + 1, tick)
            self.head = tick
        elif tick <= head - cap:
            return
        i = tick % cap
        for name, value in zip(self._cols, point.values, strict=False):
            self.values[name][i] = math.nan if value is None else value
        self.ready[i] = _count(point.ready)
        self.desired[i] = _count(point.desired)
        self.flags[i] = (
            _PRESENT
            | (_PANIC if point.panic else 0)
            | (_SCHEDULE if point.schedule else 0)
            | (_ERROR if point.error else 0)
        )
        self._prune_targets()

    def _clear_all(self) -> None:
        self.flags = array("B", bytes(self.capacity))

    def _clear(self, first: int, end: int) -> None:
        """Mark ticks [first, end) absent (only the flags: they say whether a slot holds
        a point)."""
        cap = self.capacity
        a, b = first % cap, end % cap
        if end - first <= 0:
            return
        if a < b:
            self.flags[a:b] = array("B", bytes(b - a))
        else:
            self.flags[a:] = array("B", bytes(cap - a))
            self.flags[:b] = array("B", bytes(b))

    def _prune_targets(self) -> None:
        assert self.head is not None
        oldest = self.head - self.capacity + 1
        for changes in self._targets.values():
            # keep the change in force at `oldest` (the last one at or before it)
            while len(changes) > 1 and changes[1][0] <= oldest:
                del changes[0]

    def snapshot(self, key: str, *, now: float, seconds: float) -> Snapshot:
        """A copy of the last `seconds` (at most the buffer) up to `now`: cheap (array slices),
        so a large answer can be rendered elsewhere while the buffers move on.

        The window ends at the tick of `now`, or one before when that is this policy's
        newest point (its tick slot of this interval is still to come).
        """
        interval = self.interval
        end = math.floor(now / interval + 1e-9)
        if self.head is not None and self.head == end - 1:
            end = self.head
        n = min(self.capacity, max(1, math.ceil(seconds / interval - 1e-9)))
        start = end - n + 1
        return Snapshot(
            key=key,
            interval=interval,
            start=start,
            end=end,
            head=self.head,
            oldest=(self.head - self.capacity + 1) if self.head is not None else 0,
            flags=self._slice(self.flags, start, end),
            ready=self._slice(self.ready, start, end),
            desired=self._slice(self.desired, start, end),
            values=tuple((name, self._slice(self.values[name], start, end)) for name in self._cols),
            targets=tuple((name, tuple(self._targets[name])) for name in self._cols),
        )

    def window(
        self, *, now: float, seconds: float, wall_offset: float = 0.0, key: str = ""
    ) -> dict[str, Any]:
        """`snapshot(...).render(wall_offset)`."""
        return self.snapshot(key, now=now, seconds=seconds).render(wall_offset)

    def _slice(self, arr: array[Any], start: int, end: int) -> array[Any]:
        """A copy of the slots of ticks [start, end] (stale slots included: `render` masks
        them with the flags)."""
        cap = self.capacity
        n = end - start + 1
        a = start % cap
        if a + n <= cap:
            return arr[a : a + n]
        return arr[a:] + arr[: a + n - cap]


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """One policy's window, copied out of its buffers; `render` makes the JSON document."""

    key: str
    interval: float | None
    """None: the policy has not decided yet (nothing recorded)."""
    start: int = 0
    end: int = -1
    head: int | None = None
    oldest: int = 0
    flags: array[int] = field(default_factory=lambda: array("B"))
    ready: array[int] = field(default_factory=lambda: array("H"))
    desired: array[int] = field(default_factory=lambda: array("H"))
    values: tuple[tuple[str, array[float]], ...] = ()
    targets: tuple[tuple[str, tuple[tuple[int, float], ...]], ...] = ()

    @property
    def points(self) -> int:
        """Ticks in the window (what the answer's size is capped on)."""
        return max(0, self.end - self.start + 1) if self.interval is not None else 0

    def first(self) -> int | None:
        """Index (in the window) of its first point present, None if none: found by the C
        code of `bytes.find` and `re`, not a Python loop over the window."""
        if self.interval is None or self.head is None:
            return None
        # a slot holds a point iff its flags are not 0, and its tick is within
        # [oldest, head]: the window never starts before `oldest`, but may end after `head`
        lo = max(0, self.oldest - self.start)
        hi = min(len(self.flags), self.head - self.start + 1)
        if lo >= hi:
            return None
        found = _NONZERO.search(self.flags.tobytes(), lo, hi)
        return None if found is None else found.start()

    @property
    def rendered_points(self) -> int:
        """Entries per list of `render`'s document (from the first point present on)."""
        first = self.first()
        return 0 if first is None else self.points - first

    def render(self, wall_offset: float = 0.0) -> dict[str, Any]:
        """The JSON document of `/history`: lists with one entry per tick from the first
        point present in the window to its end; `null` where a tick had no point (and,
        for values, no data); flags 0/1. `wall_offset` turns loop time into Unix time
        (`time.time() - loop.time()`) for `start` and `end`."""
        doc: dict[str, Any] = {"policy": self.key, "interval_seconds": self.interval}
        interval = self.interval
        head = self.head
        first = self.first()
        if interval is None or first is None or head is None:
            end = None if interval is None else round(self.end * interval + wall_offset, 3)
            return {**doc, "start": end, "end": end, "points": 0, "ready": [], "desired": [],
                    "panic": [], "schedule": [], "error": [], "metrics": []}  # fmt: skip
        start = self.start + first
        flags = self.flags[first:].tolist()
        lo, hi = self.oldest, head
        present = [bool(f & _PRESENT) and lo <= t <= hi for t, f in enumerate(flags, start)]

        def counts(arr: array[int]) -> list[int | None]:
            return [
                (v if ok and v != _UNKNOWN else None)
                for v, ok in zip(arr[first:].tolist(), present, strict=True)
            ]

        def flag(bit: int) -> list[int | None]:
            return [
                ((1 if f & bit else 0) if ok else None)
                for f, ok in zip(flags, present, strict=True)
            ]

        metrics = []
        for (name, vals), (_, changes) in zip(self.values, self.targets, strict=True):
            metrics.append(
                {
                    "name": name,
                    "values": _values(vals[first:].tolist(), present),
                    "targets": _target_changes(changes, start),
                }
            )
        return {
            **doc,
            "start": round(start * interval + wall_offset, 3),
            "end": round(self.end * interval + wall_offset, 3),
            "points": len(present),
            "ready": counts(self.ready),
            "desired": counts(self.desired),
            "panic": flag(_PANIC),
            "schedule": flag(_SCHEDULE),
            "error": flag(_ERROR),
            "metrics": metrics,
        }


def _target_changes(changes: Sequence[tuple[int, float]], start: int) -> list[list[float]]:
    """`[[index, target], …]`: the target in force from each index of the series on (index 0
    is its first point): targets rarely change, so not one per point."""
    out: list[list[float]] = []
    for tick, target in changes:
        index = max(0, tick - start)
        if out and out[-1][0] == index:
            out[-1][1] = target
        else:
            out.append([index, target])
    return out


class HistoryStore:
    """The buffers of every policy, by key (`namespace/name`); one per daemon."""

    def __init__(self, seconds: float = DEFAULT_HISTORY_SECONDS) -> None:
        if not 0 < seconds <= MAX_HISTORY_SECONDS:
            raise ValueError(
                f"history seconds must be in (0, {MAX_HISTORY_SECONDS:g}], not {seconds!r}"
            )
        self.seconds = seconds
        self._policies: dict[str, PolicyHistory | None] = {}
        """None until the policy's first record (the interval is known then)."""

    def sync(self, keys: Iterable[str]) -> None:
        """Track exactly these policies: new keys start empty, removed keys are freed,
        the others keep their history."""
        wanted = dict.fromkeys(keys)
        self._policies = {k: self._policies.get(k) for k in wanted}

    def __contains__(self, key: object) -> bool:
        return key in self._policies

    def policies(self) -> list[str]:
        return list(self._policies)

    def get(self, key: str) -> PolicyHistory | None:
        return self._policies.get(key)

    def record(
        self,
        key: str,
        now: float,
        *,
        interval: float,
        names: Sequence[str],
        targets: Sequence[float],
        point: Point,
    ) -> None:
        """Add one decision of policy `key` at loop time `now` (ignored for keys not
        synced: a policy being removed must not bring its buffer back)."""
        if key not in self._policies:
            return
        history = self._policies[key]
        if history is None or history.interval != interval:
            history = self._policies[key] = PolicyHistory(seconds=self.seconds, interval=interval)
        tick = math.floor(now / interval + 1e-9)
        history.set_columns(names, targets, tick)
        history.record(tick, point)

    def snapshot(self, key: str, *, now: float, seconds: float) -> Snapshot | None:
        """`PolicyHistory.snapshot` of `key`; None for an unknown key; an empty snapshot
        for a policy that has not decided yet."""
        if key not in self._policies:
            return None
        history = self._policies[key]
        if history is None:
            return Snapshot(key=key, interval=None)
        return history.snapshot(key, now=now, seconds=seconds)

    def window(
        self, key: str, *, now: float, seconds: float, wall_offset: float = 0.0
    ) -> dict[str, Any] | None:
        """The `/history` document of `key` (None for an unknown key)."""
        snap = self.snapshot(key, now=now, seconds=seconds)
        return None if snap is None else snap.render(wall_offset)

    def nbytes(self) -> int:
        """Bytes held by every policy's arrays."""
        return sum(h.nbytes() for h in self._policies.values() if h is not None)

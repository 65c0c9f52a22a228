"""Time windows over timestamped samples: mean, maximum and minimum, amortized O(1).

Every window of length `W` answers, at time `now`, over the samples recorded with

    now − W < t ≤ now

(the boundary sample at exactly `now − W` has left). Samples are recorded in time order;
two samples with the same timestamp are both kept (AIbrix Gen1 keeps duplicates too).
Reading never looks at the wall clock: `now` is an argument.

Costs: `record` and the read methods are amortized O(1). `MeanWindow` keeps a compensated
running sum and re-adds its samples exactly (`math.fsum`) once every `len(window)` updates, so
rounding errors cannot build up over a long run (a day of 1 s ticks) while the amortized cost
stays constant; `MaxWindow`/`MinWindow` keep a monotonic deque.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["MaxWindow", "MeanWindow", "MinWindow"]


def _checked_duration(duration_seconds: float) -> float:
    if duration_seconds < 0:
        raise ValueError(f"window duration must be >= 0, got {duration_seconds}")
    return duration_seconds


class MeanWindow:
    """Plain (unweighted) mean of the samples in `(now − W, now]`."""

    __slots__ = ("_comp", "_samples", "_since_exact", "_sum", "duration_seconds")

    def __init__(self, duration_seconds: float) -> None:
        self.duration_seconds = _checked_duration(duration_seconds)
        self._samples: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._comp = 0.0  # Neumaier compensation term of `_sum`
        self._since_exact = 0  # updates since the last exact re-summation

    def __len__(self) -> int:
        return len(self._samples)

    def _add(self, value: float) -> None:
        """Add `value` to the running sum (Neumaier's compensated summation)."""
        old = self._sum
        total = old + value
        if abs(old) >= abs(value):
            self._comp += (old - total) + value
        else:
            self._comp += (value - total) + old
        self._sum = total
        self._since_exact += 1

    def record(self, now: float, value: float) -> None:
        """Add the sample `value` taken at `now` (not earlier than the last one recorded)."""
        self._samples.append((now, value))
        self._add(value)
        self._evict(now)

    def _evict(self, now: float) -> None:
        samples = self._samples
        cutoff = now - self.duration_seconds
        while samples and samples[0][0] <= cutoff:
            self._add(-samples.popleft()[1])
        if self._since_exact > len(samples):
            # Re-add exactly once per len(window) updates: amortized O(1), no drift.
            self._sum = math.fsum(v for _, v in samples) if samples else 0.0
            self._comp = 0.0
            self._since_exact = 0

    def average(self, now: float) -> float | None:
        """Return the mean of the samples in `(now − W, now]`, or None when there is none."""
        self._evict(now)
        if not self._samples:
            return None
        return (self._sum + self._comp) / len(self._samples)

    def count(self, now: float) -> int:
        """Return how many samples are in `(now − W, now]`."""
        self._evict(now)
        return len(self._samples)


class _ExtremumWindow:
    """Monotonic deque: the front is the extremum of the samples in `(now − W, now]`."""

    __slots__ = ("_samples", "duration_seconds")

    def __init__(self, duration_seconds: float) -> None:
        self.duration_seconds = _checked_duration(duration_seconds)
        self._samples: deque[tuple[float, float]] = deque()

    def _dominates(self, new: float, old: float) -> bool:
        """True when `old` can never be the answer again once `new` is in the window."""
        raise NotImplementedError

    def record(self, now: float, value: float) -> None:
        """Add the sample `value` taken at `now` (not earlier than the last one recorded)."""
        samples = self._samples
        while samples and self._dominates(value, samples[-1][1]):
            samples.pop()
        samples.append((now, value))

    def _evict(self, now: float) -> None:
        cutoff = now - self.duration_seconds
        samples = self._samples
        while samples and samples[0][0] <= cutoff:
            samples.popleft()

    def value(self, now: float) -> float | None:
        """Return the extremum of the samples in `(now − W, now]`, or None when there is none."""
        self._evict(now)
        return self._samples[0][1] if self._samples else None

    def clear(self) -> None:
        self._samples.clear()


class MaxWindow(_ExtremumWindow):
    """Largest sample in `(now − W, now]` (KPA scale-down delay, HPA scale-down stabilization)."""

    __slots__ = ()

    def _dominates(self, new: float, old: float) -> bool:
        return new >= old


class MinWindow(_ExtremumWindow):
    """Smallest sample in `(now − W, now]` (HPA scale-up stabilization)."""

    __slots__ = ()

    def _dominates(self, new: float, old: float) -> bool:
        return new <= old

"""Derived signals from successive pod scrapes: `rate()` and `histogram_quantile()` (DESIGN §2.4).

Pure: the caller hands each tick's series of every counted pod and the time; nothing here
reads a clock.

Memory. Per pod and per series (its full label set) a `_Counter` keeps the samples of the
window (and the one before it) as (time, cumulative increase) pairs: the increase over the window is then the
difference of the last and the first pair, O(1) per tick whatever the window holds. Pairs
older than the window are dropped on every tick; a pod that is no longer counted is dropped
at once, and a series missing from a pod's page is dropped at once (it "vanished"; if it
comes back it starts again, like a new series). So memory is bounded by pods × matching
series × samples per window.

Semantics, per pod, from that pod's own samples:
- a counter's increase over the window is the sum of the increases between successive
  samples, where a decrease is a counter reset (the value after it is the increase since
  the reset), as in Prometheus;
- a series needs two samples in the window; a pod none of whose series has two is missing
  (it just joined, or the daemon just started), never zero;
- `rate`: the increases of every series of every pod over the window, summed, divided by the
  window (by the time since the first tick while the state is younger than the window: a
  daemon that just started reads the real rate, not a fraction of it). So the tick's total is
  the requests served in the window by whichever pods were there, per second: a pod that
  joins mid-window adds what it served since it joined, and the pods that carried the load
  before keep counting what they served then; dividing each pod's increase by its own span
  instead would count the old load twice right after a scale-up. Prometheus, too, divides by
  the window, after extrapolating each series to the window's edges; here a series' count at
  the window's start is interpolated between the samples around it (one sample before the
  window is kept for that), and a series that appeared since the previous tick is credited
  what it counted before its first sample (`_Counter`);
- `histogram_quantile`: each bucket series' increase over the window, summed by `le` over
  series and pods, then Prometheus' `bucketQuantile` (`histogram_quantile_of`). No
  observation in the window (the `+Inf` bucket did not move) is no data.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from autoscalerd.config.model import Signal, SignalKind

__all__ = [
    "Labels",
    "SignalResult",
    "SignalState",
    "histogram_quantile_of",
]

Labels = tuple[tuple[str, str], ...]
"""A series' label set, sorted by label name: its identity on one pod."""

_MAX_SAMPLES = 4096
"""Hard cap of samples per series, whatever the window and the tick rate."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SignalResult:
    """One derived source at one tick."""

    value: float | None
    """Rate: per second, over the pods that have one; quantile: the level. None = no data."""
    answered: int
    """Pods that contributed."""
    missing: int
    """Counted pods without a value: failed scrape, or fewer than two samples in the window."""
    joined: int = 0
    """Of `missing`, the pods that answered but have fewer than two samples in the window
    (new pods, or a daemon that just started)."""
    why: str = ""
    """Why `value` is None ("" when it is not)."""


class _Counter:
    """One series on one pod: (time, cumulative increase) pairs covering the window.

    The increase over the window is interpolated at the window's start between the samples
    around it (the one sample before the window is kept for that), so it covers exactly the
    window whatever the jitter of the ticks.

    `head_seconds` > 0 for a series that appeared after the previous tick (a pod that just
    joined, a labelled counter created on first use): it may have counted for up to that long
    before its first sample. At its second sample it is credited with what it counted then,
    at most its rate over its first interval times `head_seconds` and at most its first
    value (a counter starts from 0); spread evenly over those seconds, the part inside the
    window counts. A pod that was there all along but not Ready had a counter that may hold
    hours of history: the cap keeps that out.
    """

    __slots__ = ("first_at", "first_value", "head", "head_seconds", "last", "samples", "total")

    def __init__(self, now: float, value: float, head_seconds: float = 0.0) -> None:
        self.last = self.first_value = value
        self.first_at = now
        self.head_seconds = head_seconds
        self.head = 0.0
        self.total = 0.0
        self.samples: deque[tuple[float, float]] = deque([(now, 0.0)], maxlen=_MAX_SAMPLES)

    def add(self, now: float, value: float) -> None:
        # A decrease is a counter reset: the new value is all increase since the reset.
        step = value - self.last if value >= self.last else value
        if self.head_seconds > 0 and len(self.samples) == 1 and now > self.first_at:
            rate = step / (now - self.first_at)
            self.head = max(0.0, min(self.first_value, rate * self.head_seconds))
        self.total += step
        self.last = value
        self.samples.append((now, self.total))

    def prune(self, oldest: float) -> None:
        """Drop the samples before `oldest` but the last one at or before it."""
        samples = self.samples
        while len(samples) > 1 and samples[1][0] <= oldest:
            samples.popleft()

    def increase(self, oldest: float) -> float | None:
        """The increase since `oldest` (the window's start); None with fewer than two
        samples."""
        samples = self.samples
        if len(samples) < 2:
            return None
        (t0, c0), (t1, c1) = samples[0], samples[1]
        last = samples[-1][1]
        if t0 < oldest:  # interpolate the count at the window's start
            return last - (c0 + (c1 - c0) * (oldest - t0) / (t1 - t0))
        grown = last - c0
        if t0 == self.first_at and self.head and self.head_seconds > 0:
            grown += self.head * min(1.0, (t0 - oldest) / self.head_seconds)
        return grown


class SignalState:
    """The memory of one derived source: per counted pod, per series, the window's samples."""

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self._pods: dict[str, dict[Labels, _Counter]] = {}
        self._first_at: float | None = None
        """The first tick's time: the window is not full before `first_at + window`."""
        self._last_at: float | None = None

    def pods_remembered(self) -> int:
        return len(self._pods)

    def samples_remembered(self) -> int:
        return sum(len(c.samples) for series in self._pods.values() for c in series.values())

    def observe(
        self, now: float, pods: Mapping[str, Sequence[tuple[Labels, float]] | None]
    ) -> SignalResult:
        """Record this tick and compute the signal.

        `pods`: every counted pod by name, with the series of its page that match the selector,
        or None when its scrape failed this tick (it is missing; its samples stay while they are
        inside the window). Pods not in `pods` are forgotten.
        """
        if self._first_at is None:
            self._first_at = now
        # A series first seen now may have counted since the previous tick (see `_Counter`).
        head_seconds = now - self._last_at if self._last_at is not None else 0.0
        self._last_at = now
        oldest = now - self.signal.window_seconds
        known = self._pods
        for gone in [name for name in known if name not in pods]:
            del known[gone]
        per_pod: list[Iterable[tuple[Labels, float]]] = []
        missing = joined = 0
        for name, series in pods.items():
            counters = known.get(name)
            if counters is None:
                counters = known[name] = {}
            if series is None:
                for counter in counters.values():
                    counter.prune(oldest)
                missing += 1
                continue
            fresh: dict[Labels, _Counter] = {}
            increases: list[tuple[Labels, float]] = []
            for labels, value in series:
                seen = counters.get(labels)
                if seen is None:
                    counter = _Counter(now, value, head_seconds)
                else:
                    counter = seen
                    counter.add(now, value)
                    counter.prune(oldest)
                    inc = counter.increase(oldest)
                    if inc is not None:
                        increases.append((labels, inc))
                fresh[labels] = counter
            known[name] = fresh  # series not on this page vanished: forgotten
            if increases:
                per_pod.append(increases)
            else:
                missing += 1
                joined += 1
        answered = len(per_pod)
        if not answered:
            why = "no pod has two samples in the window yet" if pods else "no counted pods"
            return SignalResult(value=None, answered=0, missing=missing, joined=joined, why=why)
        if self.signal.kind is SignalKind.RATE:
            # The requests of the window, per second of it (of the time observed while the
            # state is younger than the window).
            observed = min(self.signal.window_seconds, now - self._first_at)
            total = sum(grown for pod in per_pod for _, grown in pod) / observed
            return SignalResult(value=total, answered=answered, missing=missing, joined=joined)
        return self._quantile(per_pod, answered, missing, joined)

    def _quantile(
        self,
        per_pod: Sequence[Iterable[tuple[Labels, float]]],
        answered: int,
        missing: int,
        joined: int,
    ) -> SignalResult:
        buckets: dict[float, float] = {}
        for pod in per_pod:
            for labels, inc in pod:
                le = _le(labels)
                if le is None:
                    return SignalResult(
                        value=None,
                        answered=0,
                        missing=answered + missing,
                        why=f"a bucket series has no numeric le label: {dict(labels)}",
                    )
                buckets[le] = buckets.get(le, 0.0) + inc
        assert self.signal.quantile is not None
        value = histogram_quantile_of(self.signal.quantile, buckets.items())
        if value is None:
            why = (
                'the buckets have no le="+Inf" series'
                if math.inf not in buckets
                else "no observation in the window"
            )
            return SignalResult(
                value=None, answered=answered, missing=missing, joined=joined, why=why
            )
        return SignalResult(value=value, answered=answered, missing=missing, joined=joined)


def _le(labels: Labels) -> float | None:
    for name, value in labels:
        if name == "le":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def histogram_quantile_of(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' `bucketQuantile` on cumulative (upper bound, count) buckets; None for NaN.

    The highest bucket must be `+Inf`; counts are made monotonic; fewer than two buckets or no
    observations give None. A rank in the `+Inf` bucket gives the highest finite bound; the
    lowest bucket's lower limit is 0 when its bound is above 0 (else its bound is returned).
    One difference: where Prometheus divides 0 by 0 (q = 0 over an empty lowest bucket, NaN),
    this returns the bucket's lower limit.
    """
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if not ordered or ordered[-1][0] != math.inf or len(ordered) < 2:
        return None
    bounds = [b for b, _ in ordered]
    counts: list[float] = []
    running = 0.0
    for _, count in ordered:
        running = max(running, count)  # ensureMonotonic
        counts.append(running)
    observations = counts[-1]
    if observations == 0:
        return None
    rank = q * observations
    b = next(i for i in range(len(counts)) if i == len(counts) - 1 or counts[i] >= rank)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = bounds[b - 1] if b > 0 else 0.0
    count = counts[b] - (counts[b - 1] if b > 0 else 0.0)
    rank -= counts[b - 1] if b > 0 else 0.0
    if count == 0:
        return start
    return start + (bounds[b] - start) * (rank / count)

"""Derived signals from successive pod scrapes: `rate()` and `histogram_quantile()` (DESIGN §2.4).

Pure: the caller hands each tick's series of every counted pod and the time; nothing here
reads a clock.

Memory. Per pod and per series (its full label set) a `_Counter` keeps the samples of the
window as (time, cumulative increase) pairs: the increase over the window is then the
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
- `rate`: each series' increase over the span of its own samples in the window (first to
  last sample), per second; a pod's rate is the sum over its series, the tick's total the sum
  over the pods that have one. Prometheus divides by the window after extrapolating to its
  edges; over a window full of regular samples the two agree, and a pod that joined mid-window
  gets its real rate here rather than a fraction of it;
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
    """Rate: the sum over the pods that have one; quantile: the level. None = no data."""
    answered: int
    """Pods that contributed."""
    missing: int
    """Counted pods without a value: failed scrape, or fewer than two samples in the window."""
    why: str = ""
    """Why `value` is None ("" when it is not)."""


class _Counter:
    """One series on one pod: (time, cumulative increase) pairs within the window."""

    __slots__ = ("last", "samples", "total")

    def __init__(self, now: float, value: float) -> None:
        self.last = value
        self.total = 0.0
        self.samples: deque[tuple[float, float]] = deque([(now, 0.0)], maxlen=_MAX_SAMPLES)

    def add(self, now: float, value: float) -> None:
        # A decrease is a counter reset: the new value is all increase since the reset.
        self.total += value - self.last if value >= self.last else value
        self.last = value
        self.samples.append((now, self.total))

    def prune(self, oldest: float) -> None:
        samples = self.samples
        while samples and samples[0][0] < oldest:
            samples.popleft()

    def increase(self) -> tuple[float, float] | None:
        """(increase, seconds spanned) over the samples kept, None with fewer than two."""
        samples = self.samples
        if len(samples) < 2:
            return None
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        if t1 <= t0:
            return None
        return c1 - c0, t1 - t0


class SignalState:
    """The memory of one derived source: per counted pod, per series, the window's samples."""

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self._pods: dict[str, dict[Labels, _Counter]] = {}

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
        oldest = now - self.signal.window_seconds - 1e-9
        known = self._pods
        for gone in [name for name in known if name not in pods]:
            del known[gone]
        per_pod: list[Iterable[tuple[Labels, tuple[float, float]]]] = []
        missing = 0
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
            increases: list[tuple[Labels, tuple[float, float]]] = []
            for labels, value in series:
                seen = counters.get(labels)
                if seen is None:
                    counter = _Counter(now, value)
                else:
                    counter = seen
                    counter.add(now, value)
                    counter.prune(oldest)
                    inc = counter.increase()
                    if inc is not None:
                        increases.append((labels, inc))
                fresh[labels] = counter
            known[name] = fresh  # series not on this page vanished: forgotten
            if increases:
                per_pod.append(increases)
            else:
                missing += 1
        answered = len(per_pod)
        if not answered:
            why = "no pod has two samples in the window yet" if pods else "no counted pods"
            return SignalResult(value=None, answered=0, missing=missing, why=why)
        if self.signal.kind is SignalKind.RATE:
            total = sum(inc / span for pod in per_pod for _, (inc, span) in pod)
            return SignalResult(value=total, answered=answered, missing=missing)
        return self._quantile(per_pod, answered, missing)

    def _quantile(
        self,
        per_pod: Sequence[Iterable[tuple[Labels, tuple[float, float]]]],
        answered: int,
        missing: int,
    ) -> SignalResult:
        buckets: dict[float, float] = {}
        for pod in per_pod:
            for labels, (inc, _) in pod:
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
            return SignalResult(value=None, answered=answered, missing=missing, why=why)
        return SignalResult(value=value, answered=answered, missing=missing)


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

"""Derived signals from successive pod scrapes: `rate()` and `histogram_quantile()` (DESIGN §2.4).

Pure: the caller hands each tick's series of every counted pod and the time; nothing here
reads a clock.

Semantics, per pod, from that pod's own samples:
- a counter's increase is the sum of the increases between successive samples, where a
  decrease is a counter reset (the value after it is the increase since the reset), as in
  Prometheus;
- the increase over the window: the count at the window's start is interpolated between the
  samples around it (one sample before the window is kept for that), so it covers exactly
  the window whatever the jitter of the ticks;
- a pod needs two samples; one with fewer (it just joined, or the daemon just started) has
  no value yet (`SignalResult.joined`), never zero;
- a series that appeared since the pod's previous sample (a labelled counter created on
  first use) counts from its first sample, and is then credited what it may have counted
  before it: at most its first interval's rate for the time since the previous tick, and at
  most its first value (a counter starts from 0). A pod that joins gets the same credit, so a
  scale-up neither loses the new pods' first interval nor, for a pod that was running but
  not Ready for hours, brings that history in. A series missing from a page vanished: it is
  dropped (if it comes back it is new);
- `rate`: the increases of every series of every pod over the window, summed, divided by the
  window (by the time since the first tick while the state is younger than the window: a
  daemon that just started reads the real rate, not a fraction of it). So the total is the
  requests served in the window by whichever pods were there, per second: a pod that joins
  mid-window adds what it served since it joined, and the pods that carried the load before
  keep counting what they served then; dividing each pod's increase by its own span instead
  would count the old load twice right after a scale-up. Prometheus, too, divides by the
  window, after extrapolating each series to the window's edges;
- `histogram_quantile`: each bucket series' increase over the window, summed by `le` over
  series and pods, then Prometheus' `bucketQuantile` (`histogram_quantile_of`). No
  observation in the window (the `+Inf` bucket did not move) is no data.

Memory and cost. Per pod: its series' names (label sets as written on the page) once, and
per sample in the window (plus one) the time and a tuple of cumulative increases. A tick
whose page lists the same series as the last one (the steady state) is a few list
comprehensions per pod; a pod no longer counted is dropped at once.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import add, lt, mul, sub

from autoscalerd.config.model import Signal, SignalKind

__all__ = [
    "SeriesKey",
    "SignalResult",
    "SignalState",
    "histogram_quantile_of",
    "le_of",
]

SeriesKey = str
"""A series' label set as written on the page (`le="0.5",model="a"`; `""` without labels)."""

_MAX_SAMPLES = 4096
"""Hard cap of samples per pod, whatever the window and the tick rate."""


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


class _Pod:
    """One pod's series and samples.

    A sample is (time, a vector of the series' cumulative counts, their sum or None). The
    steady state stores the page's own values tuple as the vector: no arithmetic, no copy.
    What makes cumulative counts differ from the page's values (a counter reset, the credit a
    new series gets) is rare, and is applied by *rebasing* the samples already kept (each
    element of the series moved by the same amount, so every increase between samples stays
    what it was), so the newest vector is always the page's values.
    """

    __slots__ = ("keys", "last", "pending", "samples", "sums")

    def __init__(
        self, now: float, keys: tuple[str, ...], values: Sequence[float], head: float, sums: bool
    ) -> None:
        self.keys = keys
        self.sums = sums
        """Keep each sample's sum (`rate` reads the total of every series)."""
        if not isinstance(values, tuple):
            values = tuple(values)
        self.last: Sequence[float] = values
        self.samples: deque[tuple[float, Sequence[float], float]] = deque(
            [(now, values, sum(values) if sums else 0.0)], maxlen=_MAX_SAMPLES
        )
        self.pending: dict[int, tuple[float, float, float]] = {}
        """Series index → (first value, first time, seconds it may have counted before)."""
        if head > 0:
            self.pending = {i: (v, now, head) for i, v in enumerate(values)}

    def add(self, now: float, keys: tuple[str, ...], values: Sequence[float], head: float) -> None:
        if not isinstance(values, tuple):
            values = tuple(values)
        if keys is not self.keys and keys != self.keys:  # the same tuple, page after page
            self._rekey(now, keys, values, head)
        last = self.last
        # C-level maps: this runs per pod per tick for every series (30 buckets × 10 pods).
        if any(map(lt, values, last)):  # a counter reset: the value is the increase since
            delta = [(w if v < w else 0.0) for v, w in zip(values, last, strict=True)]
            self._rebase(delta, len(self.samples))
        self.last = values
        self.samples.append((now, values, sum(values) if self.sums else 0.0))
        if self.pending:
            waiting = {}
            credit = [0.0] * len(values)
            before = self.samples[-2][1]
            for i, (first, first_at, seconds) in self.pending.items():
                if now > first_at:  # its second sample: credit what it counted before
                    rate = (values[i] - before[i]) / (now - first_at)
                    credit[i] = max(0.0, min(first, rate * seconds))
                else:  # it appeared on this very page
                    waiting[i] = (first, first_at, seconds)
            self.pending = waiting
            if any(credit):
                self._rebase(credit, len(self.samples) - 1)

    def _rebase(self, delta: Sequence[float], upto: int) -> None:
        """Subtract `delta` (per series) from the first `upto` samples: the increase of any
        later sample over each of them grows by `delta`."""
        samples = self.samples
        sums = self.sums
        for k in range(upto):
            t, vec, _ = samples[k]
            moved = tuple(map(sub, vec, delta))
            samples[k] = (t, moved, sum(moved) if sums else 0.0)

    def _rekey(
        self, now: float, keys: tuple[str, ...], values: Sequence[float], head: float
    ) -> None:
        """The page lists other series: carry the known ones over, start the new ones (their
        first sample is now: no increase yet), drop the vanished ones from every sample."""
        where = {k: i for i, k in enumerate(self.keys)}
        order = [where.get(k) for k in keys]
        # A new series' previous value is its value now (no increase, and no reset).
        last = tuple(
            [self.last[j] if j is not None else v for j, v in zip(order, values, strict=True)]
        )
        pending = {}
        for i, j in enumerate(order):
            if j is None and head > 0:
                pending[i] = (values[i], now, head)
            elif j is not None and j in self.pending:
                pending[i] = self.pending[j]
        sums = self.sums

        def pick(vec: Sequence[float], new: Sequence[float]) -> tuple[float, ...]:
            # A new series has counted nothing at the samples kept: its value at each is the
            # value it starts from now.
            return tuple([vec[j] if j is not None else v for j, v in zip(order, new, strict=True)])

        self.samples = deque(
            (
                (t, p, sum(p) if sums else 0.0)
                for t, p in ((t, pick(c, last)) for t, c, _ in self.samples)
            ),
            maxlen=_MAX_SAMPLES,
        )
        self.last = last
        self.keys = keys
        self.pending = pending

    def prune(self, oldest: float) -> None:
        """Drop the samples before `oldest` but the last one at or before it."""
        samples = self.samples
        while len(samples) > 1 and samples[1][0] <= oldest:
            samples.popleft()

    def total_increase(self, oldest: float) -> float | None:
        """All series' increase since `oldest`; None with fewer than two samples."""
        samples = self.samples
        if len(samples) < 2:
            return None
        (t0, _, s0), (t1, _, s1) = samples[0], samples[1]
        if t0 < oldest:
            s0 += (s1 - s0) * (oldest - t0) / (t1 - t0)
        return samples[-1][2] - s0

    def add_increases(self, oldest: float, acc: list[float] | None) -> list[float] | None:
        """Each series' increase since `oldest`, in `keys` order, added to `acc` (None: a new
        list); `acc` unchanged with fewer than two samples."""
        samples = self.samples
        if len(samples) < 2:
            return acc
        (t0, c0, _), (t1, c1, _) = samples[0], samples[1]
        last = samples[-1][1]
        if t0 < oldest:
            f = (oldest - t0) / (t1 - t0)
            incs = map(sub, last, map(add, c0, map(mul, map(sub, c1, c0), repeat(f))))
        else:
            incs = map(sub, last, c0)
        return list(incs) if acc is None else list(map(add, acc, incs))


class SignalState:
    """The memory of one derived source: per counted pod, the window's samples."""

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self._pods: dict[str, _Pod] = {}
        self._first_at: float | None = None
        """The first tick's time: the window is not full before `first_at + window`."""
        self._last_at: float | None = None
        self._les: dict[tuple[str, ...], tuple[float | None, ...]] = {}
        self._plans: dict[tuple[str, ...], tuple[list[int], list[float]] | None] = {}
        self._sums = signal.kind is SignalKind.RATE

    def pods_remembered(self) -> int:
        return len(self._pods)

    def samples_remembered(self) -> int:
        return sum(len(p.samples) * len(p.keys) for p in self._pods.values())

    def observe(
        self,
        now: float,
        pods: Mapping[str, tuple[tuple[SeriesKey, ...], Sequence[float]] | None],
    ) -> SignalResult:
        """Record this tick and compute the signal.

        `pods`: every counted pod by name, with the series of its page that match the selector
        (their label sets, and their values in the same order), or None when its scrape failed
        this tick (it is missing; its samples stay while they are
        inside the window). Pods not in `pods` are forgotten.
        """
        if self._first_at is None:
            self._first_at = now
        # A series first seen now may have counted since the previous tick (see the docstring).
        head = now - self._last_at if self._last_at is not None else 0.0
        self._last_at = now
        oldest = now - self.signal.window_seconds
        known = self._pods
        for gone in [name for name in known if name not in pods]:
            del known[gone]
        live: list[_Pod] = []
        missing = joined = 0
        for name, series in pods.items():
            pod = known.get(name)
            if series is None:
                if pod is not None:
                    pod.prune(oldest)
                missing += 1
                continue
            keys, values = series
            if pod is None:
                known[name] = _Pod(now, keys, values, head, self._sums)
                missing += 1
                joined += 1
                continue
            pod.add(now, keys, values, head)
            pod.prune(oldest)
            live.append(pod)
        if not live:
            why = "no pod has two samples in the window yet" if pods else "no counted pods"
            return SignalResult(value=None, answered=0, missing=missing, joined=joined, why=why)
        answered = len(live)
        if self.signal.kind is SignalKind.RATE:
            observed = min(self.signal.window_seconds, now - self._first_at)
            total = 0.0
            for pod in live:
                total += pod.total_increase(oldest) or 0.0
            return SignalResult(
                value=total / observed, answered=answered, missing=missing, joined=joined
            )
        return self._quantile(live, oldest, answered, missing, joined)

    def _quantile(
        self, live: Sequence[_Pod], oldest: float, answered: int, missing: int, joined: int
    ) -> SignalResult:
        by_keys: dict[tuple[str, ...], list[float]] = {}
        keys: tuple[str, ...] | None = None  # the usual case: every pod's page, one shape
        acc: list[float] | None = None
        for pod in live:
            if pod.keys is keys:
                acc = pod.add_increases(oldest, acc)
                continue
            if keys is not None and acc is not None:
                by_keys[keys] = acc
            keys = pod.keys
            acc = pod.add_increases(oldest, by_keys.pop(keys, None))
        if keys is not None and acc is not None:
            by_keys[keys] = acc
        if len(by_keys) == 1:  # the usual case: every pod lists the same series
            ((keys, incs),) = by_keys.items()
            plan = self._plan(keys)
            if plan is not None:
                order, bounds = plan
                assert self.signal.quantile is not None
                value = _bucket_quantile(self.signal.quantile, bounds, [incs[i] for i in order])
                return self._quantile_result(value, bounds, answered, missing, joined)
        buckets: dict[float, float] = {}
        for keys, incs in by_keys.items():
            les = self._le_values(keys)
            for le, inc in zip(les, incs, strict=True):
                if le is None:
                    return SignalResult(
                        value=None,
                        answered=0,
                        missing=answered + missing,
                        joined=joined,
                        why=f"a bucket series has no numeric le label: {keys[les.index(None)]!r}",
                    )
                buckets[le] = buckets.get(le, 0.0) + inc
        assert self.signal.quantile is not None
        value = histogram_quantile_of(self.signal.quantile, buckets.items())
        return self._quantile_result(value, buckets, answered, missing, joined)

    @staticmethod
    def _quantile_result(
        value: float | None, bounds: Container[float], answered: int, missing: int, joined: int
    ) -> SignalResult:
        if value is None:
            why = (
                'the buckets have no le="+Inf" series'
                if math.inf not in bounds
                else "no observation in the window"
            )
            return SignalResult(
                value=None, answered=answered, missing=missing, joined=joined, why=why
            )
        return SignalResult(value=value, answered=answered, missing=missing, joined=joined)

    def _le_values(self, keys: tuple[str, ...]) -> tuple[float | None, ...]:
        les = self._les.get(keys)
        if les is None:
            if len(self._les) >= 1024:
                self._les.clear()
                self._plans.clear()
            les = self._les[keys] = tuple(le_of(k) for k in keys)
        return les

    def _plan(self, keys: tuple[str, ...]) -> tuple[list[int], list[float]] | None:
        """For series whose `le`s are all numbers and distinct: the order that sorts them by
        `le`, and the sorted `le`s (computed once per set of series); None otherwise (the
        general path sums the series by `le`)."""
        if keys in self._plans:
            return self._plans[keys]
        les = self._le_values(keys)
        numbers = [le for le in les if le is not None and le == le]
        plan = None
        # No le, le="NaN" and equal les (several series per le) take the general path.
        if len(numbers) == len(les) and len(set(numbers)) == len(numbers):
            order = sorted(range(len(numbers)), key=numbers.__getitem__)
            plan = (order, [numbers[i] for i in order])
        self._plans[keys] = plan
        return plan


def le_of(labels: SeriesKey) -> float | None:
    """The `le` label of a label set as written (`model="a",le="0.5"`) as a number; None when
    it has none or it is not a number. Quotes and escapes in other values are skipped."""
    i, n = 0, len(labels)
    while i < n:
        while i < n and labels[i] in " \t,":
            i += 1
        eq = labels.find("=", i)
        if eq == -1:
            return None
        name = labels[i:eq].strip()
        q = labels.find('"', eq)
        if q == -1:
            return None
        j = q + 1
        while j < n and labels[j] != '"':
            j += 2 if labels[j] == "\\" else 1
        if name == "le":
            try:
                return float(labels[q + 1 : j])
            except ValueError:
                return None
        i = j + 1
    return None


def histogram_quantile_of(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' `bucketQuantile` on cumulative (upper bound, count) buckets; None for NaN.

    The highest bucket must be `+Inf`; counts are made monotonic; fewer than two buckets or no
    observations give None. A rank in the `+Inf` bucket gives the highest finite bound; the
    lowest bucket's lower limit is 0 when its bound is above 0 (else its bound is returned).
    One difference: where Prometheus divides 0 by 0 (q = 0 over an empty lowest bucket, NaN),
    this returns the bucket's lower limit.
    """
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    return _bucket_quantile(q, [b for b, _ in ordered], [c for _, c in ordered])


def _bucket_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """`histogram_quantile_of` on buckets sorted by their distinct bounds."""
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if not bounds or bounds[-1] != math.inf or len(bounds) < 2:
        return None
    counts = list(accumulate(counts, max, initial=0.0))[1:]  # ensureMonotonic
    observations = counts[-1]
    if observations == 0:
        return None
    rank = q * observations
    # The first bucket holding the rank (counts are sorted now); a NaN rank (0 × ∞) none.
    b = min(bisect_left(counts, rank), len(counts) - 1) if rank == rank else len(counts) - 1
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

"""rate() and histogram_quantile() from successive pod scrapes, against hand-worked tables."""

from __future__ import annotations

import math

import pytest

from autoscalerd.config.model import Signal, SignalKind
from autoscalerd.scaling.signals import SignalState, histogram_quantile_of, le_of

RATE = Signal(kind=SignalKind.RATE, window_seconds=10.0)
A = 'code="200"'
B = 'code="500"'

Page = list[tuple[str, float]]


def split(series: Page | None) -> tuple[tuple[str, ...], tuple[float, ...]] | None:
    """A page's series as the scraper hands them over: (label sets, values)."""
    if series is None:
        return None
    return tuple(k for k, _ in series), tuple(v for _, v in series)


def observe(state: SignalState, now: float, pods: dict[str, Page | None]):
    return state.observe(now, {name: split(series) for name, series in pods.items()})


def feed(state: SignalState, ticks: list[tuple[float, dict[str, Page | None]]]):
    return [observe(state, now, pods) for now, pods in ticks]


RATE_CASES = [
    pytest.param(
        [(0, {"p": [(A, 0)]}), (1, {"p": [(A, 5)]}), (2, {"p": [(A, 15)]})],
        [None, 5.0, 7.5],
        id="steady-counter",
    ),
    pytest.param(
        # a reset at t=2: 100 -> 4 counts as +4 (the value since the reset), never negative
        [
            (0, {"p": [(A, 90)]}),
            (1, {"p": [(A, 100)]}),
            (2, {"p": [(A, 4)]}),
            (3, {"p": [(A, 14)]}),
        ],
        [None, 10.0, 7.0, 8.0],
        id="counter-reset",
    ),
    pytest.param(
        # the window is 10 s: at t=12 the samples at 0 and 1 are gone; (60-30)/(12-2)
        [(0, {"p": [(A, 0)]}), (1, {"p": [(A, 0)]}), (2, {"p": [(A, 30)]}), (12, {"p": [(A, 60)]})],
        [None, 0.0, 15.0, 3.0],
        id="window-slides",
    ),
    pytest.param(
        # two series: the sum of their increases; B appears at t=1 (a counter created on first
        # use), so it may have counted since t=0: at t=2 it is credited its first interval's
        # rate (1/s) for that second: (4 + (1 + 1)) / 2 s
        [
            (0, {"p": [(A, 0)]}),
            (1, {"p": [(A, 2), (B, 100)]}),
            (2, {"p": [(A, 4), (B, 101)]}),
        ],
        [None, 2.0, 3.0],
        id="series-appears",
    ),
    pytest.param(
        # B vanishes at t=2: only A counts from then on
        [
            (0, {"p": [(A, 0), (B, 0)]}),
            (1, {"p": [(A, 2), (B, 10)]}),
            (2, {"p": [(A, 4)]}),
        ],
        [None, 12.0, 2.0],
        id="series-vanishes",
    ),
    pytest.param(
        # q joins at t=1 (no rate until its second sample; then credited 10/s for the second
        # before its first sample), p leaves at t=3 and is forgotten; the increases over the
        # window are divided by the time observed: (2 + 10 + 10) / 2, then (20 + 10) / 3
        [
            (0, {"p": [(A, 0)]}),
            (1, {"p": [(A, 1)], "q": [(A, 50)]}),
            (2, {"p": [(A, 2)], "q": [(A, 60)]}),
            (3, {"q": [(A, 70)]}),
        ],
        [None, 1.0, 11.0, 10.0],
        id="pods-join-and-leave",
    ),
    pytest.param(
        # a failed scrape makes the pod missing this tick; its samples stay
        [(0, {"p": [(A, 0)]}), (1, {"p": None}), (2, {"p": [(A, 20)]})],
        [None, None, 10.0],
        id="failed-scrape",
    ),
]


@pytest.mark.parametrize(("ticks", "expected"), RATE_CASES)
def test_rate(ticks, expected) -> None:
    results = feed(SignalState(RATE), ticks)
    assert [r.value for r in results] == pytest.approx(expected)


def test_a_pod_that_was_not_ready_for_long_brings_no_history_in() -> None:
    """A pod that joins with a counter of a million (it ran, unready, for hours) is credited
    at most its first interval's rate for the time before its first sample."""
    state = SignalState(RATE)
    observe(state, 0, {"p": [(A, 0)]})
    observe(state, 1, {"p": [(A, 5)], "q": [(A, 1_000_000)]})
    r = observe(state, 2, {"p": [(A, 10)], "q": [(A, 1_000_005)]})
    assert r.value == pytest.approx((10 + 5 + 5) / 2)


def test_rate_answered_and_missing_counts() -> None:
    state = SignalState(RATE)
    observe(state, 0, {"p": [(A, 0)], "q": [(A, 0)]})
    r = observe(state, 1, {"p": [(A, 3)], "q": None, "n": [(A, 7)]})
    assert (r.value, r.answered, r.missing) == (3.0, 1, 2)


def test_no_samples_is_no_data_never_zero() -> None:
    r = observe(SignalState(RATE), 0, {"p": [(A, 5)]})
    assert r.value is None and r.why == "no pod has two samples in the window yet"


def test_memory_bounded_by_window_and_gone_pods_forgotten() -> None:
    state = SignalState(RATE)
    for t in range(100):
        observe(state, float(t), {"p": [(A, float(t))], "q": [(A, float(t))]})
    # window 10 s at one sample a second: at most 11 samples per series
    assert state.samples_remembered() == 2 * 11  # one series per pod
    observe(state, 100.0, {"q": [(A, 100.0)]})
    assert state.pods_remembered() == 1
    observe(state, 101.0, {})
    assert state.pods_remembered() == 0 and state.samples_remembered() == 0


# Prometheus' own cases (promql/promqltest/testdata/histograms.test, "testhistogram" at 50m):
# cumulative counts 50/70/110/120 for le 0.1/0.2/1/+Inf ("positive") and 10/20/20/30 for
# le -0.2/-0.1/0.3/+Inf ("negative").
POSITIVE = [(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (math.inf, 120.0)]
NEGATIVE = [(-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (math.inf, 30.0)]
PROMETHEUS_CASES = [
    (-0.1, -math.inf, -math.inf),
    (1.01, math.inf, math.inf),
    (0.0, 0.0, -0.2),
    (1.0, 1.0, 0.3),
    (0.2, 0.048, -0.2),
    (0.5, 0.15, -0.15),
    (0.8, 0.72, 0.3),
]


@pytest.mark.parametrize(("q", "positive", "negative"), PROMETHEUS_CASES)
def test_histogram_quantile_prometheus_cases(q: float, positive: float, negative: float) -> None:
    assert histogram_quantile_of(q, POSITIVE) == pytest.approx(positive)
    assert histogram_quantile_of(q, NEGATIVE) == pytest.approx(negative)


QUANTILE_EDGE_CASES = [
    pytest.param([(0.1, 5.0), (1.0, 10.0)], 0.5, None, id="no-inf-bucket"),
    pytest.param([(math.inf, 10.0)], 0.5, None, id="one-bucket"),
    pytest.param([(0.1, 0.0), (math.inf, 0.0)], 0.5, None, id="no-observations"),
    pytest.param([(0.1, 0.0), (1.0, 0.0), (math.inf, 4.0)], 0.5, 1.0, id="rank-in-inf-bucket"),
    pytest.param([(1.0, 6.0), (2.0, 4.0), (math.inf, 10.0)], 0.5, 5 / 6, id="made-monotonic"),
    pytest.param([(0.1, 0.0), (1.0, 4.0), (math.inf, 4.0)], 0.0, 0.0, id="q0-empty-lowest"),
    pytest.param([(1.0, 2.0), (1.0, 2.0), (math.inf, 8.0)], 0.25, 0.5, id="same-le-merged"),
]


@pytest.mark.parametrize(("buckets", "q", "expected"), QUANTILE_EDGE_CASES)
def test_histogram_quantile_edges(buckets, q: float, expected: float | None) -> None:
    got = histogram_quantile_of(q, buckets)
    assert got == (None if expected is None else pytest.approx(expected))


def bucket(le: str, **extra: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in {**extra, "le": le}.items())


def page(counts: list[float], **extra: str) -> Page:
    les = ["0.1", "0.2", "1", "+Inf"]
    return [(bucket(le, **extra), c) for le, c in zip(les, counts, strict=True)]


def test_quantile_over_window_increases_summed_over_pods() -> None:
    """Two pods each observe half of Prometheus' "positive" histogram within the window: the
    quantiles are those of the whole, whatever each pod's counts were before."""
    state = SignalState(Signal(kind=SignalKind.QUANTILE, window_seconds=60.0, quantile=0.8))
    observe(state, 0, {"a": page([100, 100, 100, 100]), "b": page([0, 0, 0, 0])})
    r = observe(state, 30, {"a": page([125, 135, 155, 160]), "b": page([25, 35, 55, 60])})
    assert (r.value, r.answered) == (pytest.approx(0.72), 2)


def test_quantile_with_a_counter_reset_on_one_pod() -> None:
    state = SignalState(Signal(kind=SignalKind.QUANTILE, window_seconds=60.0, quantile=0.5))
    observe(state, 0, {"a": page([1000, 1000, 1000, 1000]), "b": page([0, 0, 0, 0])})
    # pod a restarted: its counts start again from 0, and these are its observations
    r = observe(state, 1, {"a": page([25, 35, 55, 60]), "b": page([25, 35, 55, 60])})
    assert r.value == pytest.approx(0.15)


def test_quantile_without_observations_is_no_data() -> None:
    state = SignalState(Signal(kind=SignalKind.QUANTILE, window_seconds=60.0, quantile=0.5))
    observe(state, 0, {"a": page([3, 4, 5, 6])})
    r = observe(state, 1, {"a": page([3, 4, 5, 6])})
    assert r.value is None and r.why == "no observation in the window"
    assert r.answered == 1


def test_quantile_sums_other_labels_by_le() -> None:
    state = SignalState(Signal(kind=SignalKind.QUANTILE, window_seconds=60.0, quantile=0.5))
    observe(state, 0, {"a": page([0, 0, 0, 0], model="x") + page([0, 0, 0, 0], model="y")})
    r = observe(
        state, 1, {"a": page([50, 70, 110, 120], model="x") + page([0, 0, 0, 0], model="y")}
    )
    assert r.value == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("labels", "le"),
    [
        ('le="0.5"', 0.5),
        ('model="a",le="+Inf"', math.inf),
        ('handle="x,le=\\"9\\"",le="2"', 2.0),
        ('model="a"', None),
        ('le="fast"', None),
    ],
)
def test_le_of(labels: str, le: float | None) -> None:
    assert le_of(labels) == le


def test_series_that_appear_and_vanish_on_a_pod_of_a_histogram() -> None:
    state = SignalState(Signal(kind=SignalKind.QUANTILE, window_seconds=60.0, quantile=0.5))
    observe(state, 0, {"a": page([0, 0, 0, 0], model="x")})
    # model y appears at t=1 (counts from there, credited its first interval's rate for the
    # second before its first sample), model x vanishes at t=2
    observe(state, 1, {"a": page([0, 0, 0, 0], model="x") + page([10, 10, 10, 10], model="y")})
    r = observe(state, 2, {"a": page([20, 20, 20, 20], model="y")})
    assert r.value == pytest.approx(0.05)  # all 20 observations in the lowest bucket


def _reference_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """`histogram_quantile_of` as first written (a linear scan): the faster one must agree."""
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
        running = max(running, count)
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


def test_histogram_quantile_agrees_with_the_linear_scan() -> None:
    import random

    rng = random.Random(13)
    for _ in range(3000):
        n = rng.randint(1, 8)
        bounds = rng.sample([-1.0, 0.0, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, math.inf], n)
        counts = [rng.choice([0.0, 1.0, 2.0, 3.5, 7.0, math.inf]) for _ in bounds]
        buckets = list(zip(bounds, counts, strict=True))
        if rng.random() < 0.2:
            buckets += buckets[:2]  # the same le twice: summed
        q = rng.choice([0.0, 0.01, 0.5, 0.95, 1.0, -0.5, 1.5])
        got, want = histogram_quantile_of(q, buckets), _reference_quantile(q, buckets)
        assert got == want or (got != got and want != want), (q, buckets)


def test_quantile_same_from_sorted_shuffled_and_split_series() -> None:
    """One set of series (sorted once per set) and several sets summed by le agree."""
    les = ["0.1", "0.5", "1", "+Inf"]
    counts = [(1.0, 3.0, 6.0, 8.0), (2.0, 7.0, 13.0, 20.0)]

    def run(keys_of_pod: dict[str, list[str]]) -> float | None:
        state = SignalState(Signal(kind=SignalKind.QUANTILE, window_seconds=60.0, quantile=0.7))
        result = None
        for t, values in enumerate(counts):
            pods = {}
            for pod, keys in keys_of_pod.items():
                by_le = dict(zip(les, values, strict=True))
                pods[pod] = (tuple(keys), tuple(by_le[le_text(k)] for k in keys))
            result = state.observe(float(t), pods)
        assert result is not None
        return result.value

    def le_text(key: str) -> str:
        return key.split('le="')[1].split('"')[0]

    plain = [f'le="{le}"' for le in les]
    shuffled = [plain[i] for i in (2, 0, 3, 1)]
    labelled = [f'le="{le}",x="y"' for le in les]
    one = run({"a": plain, "b": plain})
    assert one is not None
    assert run({"a": shuffled, "b": shuffled}) == one
    assert run({"a": plain, "b": labelled}) == pytest.approx(one)

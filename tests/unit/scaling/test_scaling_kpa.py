"""KPA: AIbrix's own test tables and one case per rule of docs/algorithms.md."""

from __future__ import annotations

from dataclasses import replace

import pytest
from scaling_helpers import make_policy

from autoscalerd.config.model import (
    KpaParams,
    Policy,
    Strategy,
)
from autoscalerd.scaling import Autoscaler, Decision, SourceSample, Tick
from autoscalerd.scaling.kpa import KpaSource, kpa_step


def kpa_policy(
    target: float = 10.0, *, min_replicas: int = 1, max_replicas: int = 100, **kpa: float
) -> Policy:
    return make_policy(
        Strategy.KPA,
        targets=(target,),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        kpa=KpaParams(**kpa),  # type: ignore[arg-type]
    )


def tick(now: float, total: float | None, ready: int, current: int | None = None) -> Tick:
    sample = (
        SourceSample(total=None, answered=0, missing=ready)
        if total is None
        else SourceSample(total=total, answered=ready)
    )
    return Tick(
        now=now,
        current_replicas=ready if current is None else current,
        ready=ready,
        samples=(sample,),
    )


# --- AIbrix Gen1 TestKpaScale2 (docs/algorithms.md, worked examples) --------------------------

TEST_KPA_SCALE2 = [
    # t, total, expected, mode
    (0, 10, 5, "panic"),  # ready 5 at start: starts in panic holding 5
    (10, 10, 5, "panic"),
    (20, 10, 5, "panic"),
    (30, 10, 5, "panic"),  # panicTime 0 + 30 is not < 30: still in panic
    (40, 10, 5, "stable"),  # leaves panic, wants 2; the delay window still holds 5
    (50, 10, 2, "stable"),  # the 5 at t=30 has left the 20 s delay window
    (60, 150, 2, "stable"),  # stable 56.67 → 2; panic 150 → 3, 3/2 < 2: no panic
    (70, 150, 3, "stable"),  # stable 103.33 → 3
    (80, 300, 6, "panic"),  # panic 300 → 6, 6/3 ≥ 2: enters panic
    (90, 600, 12, "panic"),  # panic 600 → 12 (maxUp = 2×6)
    (100, 300, 12, "panic"),  # stable 400 → 8, panic 300 → 6: panic never scales down
]


def test_aibrix_test_kpa_scale2_sequence() -> None:
    autoscaler = Autoscaler(
        kpa_policy(
            50,
            stable_window_seconds=30,
            panic_window_seconds=10,
            scale_down_delay_seconds=20,
            max_scale_up_rate=2,
            max_scale_down_rate=2,
            panic_threshold=2,
        )
    )
    ready = 5
    for t, total, expected, mode in TEST_KPA_SCALE2:
        d = autoscaler.decide(tick(10000 + t, total, ready))
        assert (d.desired, d.mode) == (expected, mode), f"t={t}: {d}"
        ready = expected  # the test sets ready := the result after each step


# --- AIbrix Gen1 TestKpaScale (single step) ---------------------------------------------------


def test_aibrix_test_kpa_scale_single_step_panic() -> None:
    # AIbrix records 10, 11, 12, 13, 14, 100 at now−60 … now−10 s and evaluates at `now`,
    # without a sample at `now` (its windows evict only when recording). Here a decision always
    # follows the tick's own sample, so the six samples sit at T−50 … T and we evaluate at T:
    # the same window contents. stable = 160/6 = 26.67 → dspc 3; panic = 100 → dppc 10;
    # started in panic with 5 pods, 10/5 ≥ 2 → desired 10 (maxUp = 2×5).
    source = KpaSource(
        KpaParams(
            stable_window_seconds=60,
            panic_window_seconds=10,
            max_scale_up_rate=2,
            max_scale_down_rate=2,
            panic_threshold=2,
        ),
        10,
    )
    now = 1000.0
    source.start_in_panic(now - 50, 5)
    for age, total in zip((50, 40, 30, 20, 10, 0), (10, 11, 12, 13, 14, 100), strict=True):
        source.record(now - age, total)
    r = source.recommend(now, 5)
    assert r is not None
    assert r.stable_average == pytest.approx(26.666666, rel=1e-6)
    assert r.panic_average == 100.0
    assert (r.step.dspc, r.step.dppc) == (3, 10)
    assert (r.desired, r.panic) == (10, True)


# --- AIbrix Gen2 algorithm/kpa_test.go --------------------------------------------------------
# Gen2 feeds per-pod means, applies a tolerance band (0 in its mock) and panics when
# panic/stable > threshold. We run the same numbers as TOTALS through our Gen1-style state
# (ready := current); every expected value still holds. Where the panic rule differs the case
# says so; Gen2 does not keep maxPanicPods, we do (that is what "panic never scales down" means).

GEN2_KPA = [
    # current, target, stable, panic, up, down, activation, in_panic, max_panic_pods, min, max, want
    pytest.param(2, 10, 20, 20, 2, 2, 1, False, 0, 0, 10, 2, id="stable-mode-basic-scaling"),
    pytest.param(2, 10, 30, 40, 2, 2, 1, True, 2, 0, 10, 4, id="panic-mode-scaling-up"),
    pytest.param(5, 10, 20, 20, 2, 2, 1, True, 5, 0, 10, 5, id="panic-mode-no-scale-down"),
    pytest.param(1, 10, 0, 0, 2, 2, 1, False, 0, 0, 10, 0, id="scale-to-zero"),
    # Gen2 caps scale-up from 0 pods at max(1, ceil(2×0)) = 1; we use max(1, ready) = 1 pod as
    # the base (Knative), so maxUp = 2; the activation scale lifts 2 to 3 either way. dppc 2 over
    # 1 pod is ≥ 2: we panic (Gen2 compares panic/stable = 1, no panic); same answer.
    pytest.param(0, 10, 15, 15, 2, 2, 3, False, 0, 0, 10, 3, id="activation-scale-from-zero"),
    # dppc 10 over 2 pods ≥ 2: we panic (Gen2 does not); both are capped at ceil(1.5×2) = 3
    pytest.param(2, 10, 100, 100, 1.5, 2, 1, False, 0, 0, 20, 3, id="max-scale-up-rate-limit"),
    pytest.param(4, 10, 5, 5, 2, 2, 1, False, 0, 0, 10, 2, id="max-scale-down-rate-limit"),
]


@pytest.mark.parametrize(
    ("current", "target", "stable", "panic", "up", "down", "activation", "in_panic", "mpp", "lo",
     "hi", "want"),
    GEN2_KPA,
)  # fmt: skip
def test_aibrix_gen2_compute_target_replicas(
    current: int,
    target: float,
    stable: float,
    panic: float,
    up: float,
    down: float,
    activation: int,
    in_panic: bool,
    mpp: int,
    lo: int,
    hi: int,
    want: int,
) -> None:
    params = KpaParams(max_scale_up_rate=up, max_scale_down_rate=down, activation_scale=activation)
    source = KpaSource(params, target, panic_since=0.0 if in_panic else None, max_panic_pods=mpp)
    r = source.step(1.0, current, stable, panic)
    assert max(lo, min(hi, r.desired)) == want


# --- docs/algorithms.md rules, one case each --------------------------------------------------


def test_kpa_uses_totals_not_per_pod_means() -> None:
    # 3 pods each at twice the target (total 60, T 10): the demand is 6 pods, not 2.
    a = Autoscaler(kpa_policy(10))
    d = a.decide(tick(0, 60, 3))
    assert d.desired == 6


@pytest.mark.parametrize(
    ("ready", "mode", "desired"),
    [
        pytest.param(1, "stable", 1, id="one-ready-pod-starts-stable"),
        pytest.param(4, "panic", 4, id="busy-target-starts-in-panic-holding-ready"),
    ],
)
def test_kpa_start_in_panic_only_when_more_than_one_pod_is_ready(
    ready: int, mode: str, desired: int
) -> None:
    a = Autoscaler(kpa_policy(10))
    d = a.decide(tick(0, 0, ready))  # no demand at all: a fresh state still must not shrink
    assert (d.mode, d.desired) == (mode, desired)


def test_kpa_panic_is_left_after_a_stable_window_without_the_condition() -> None:
    a = Autoscaler(kpa_policy(10, stable_window_seconds=60, panic_window_seconds=6))
    assert a.decide(tick(0, 40, 1)).mode == "panic"  # dppc 4 over 1 pod ≥ 2
    # demand falls; panic holds while panicTime + 60 ≥ now
    for t in range(1, 61):
        d = a.decide(tick(t, 10, 4))
        assert d.mode == "panic", t
        assert d.desired == 4, t
    d = a.decide(tick(61, 10, 4))  # 0 + 60 < 61: un-panic; stable window mean still > 10
    assert d.mode == "stable"


def test_kpa_panic_window_extends_panic_while_over_threshold() -> None:
    a = Autoscaler(kpa_policy(10, stable_window_seconds=10, panic_window_seconds=2))
    a.decide(tick(0, 40, 1))  # panic at 0
    a.decide(tick(9, 40, 4))  # dppc 4 / 4 pods < 2: not over; still in panic
    d = a.decide(tick(10, 200, 4))  # panic mean (40+200)/2 → dppc 12, 12/4 ≥ 2: panicTime = 10
    assert d.mode == "panic"
    assert a.decide(tick(20, 10, 10)).mode == "panic"  # 10 + 10 is not < 20
    assert a.decide(tick(21, 10, 10)).mode == "stable"


def test_kpa_panic_never_scales_down() -> None:
    a = Autoscaler(kpa_policy(10, max_scale_up_rate=1000))
    assert a.decide(tick(0, 80, 2)).desired == 8
    d = a.decide(tick(1, 10, 8))
    assert (d.mode, d.desired) == ("panic", 8)


@pytest.mark.parametrize(
    ("ready", "total", "up", "down", "want", "reason"),
    [
        pytest.param(
            2, 1000, 2.0, 2.0, 4, "rate-limited", id="scale-up-capped-at-ceil-rate-x-ready"
        ),
        pytest.param(3, 1000, 1.5, 2.0, 5, "rate-limited", id="scale-up-cap-rounds-up"),
        pytest.param(
            1,
            0,
            2.0,
            2.0,
            1,
            "scale-to-zero-grace",
            id="one-pod-at-zero-demand-waits-for-the-grace-period",
        ),
        pytest.param(8, 10, 1000, 2.0, 4, "rate-limited", id="scale-down-floor-ready-over-rate"),
        pytest.param(9, 10, 1000, 4.0, 2, "rate-limited", id="scale-down-rate-floors"),
    ],
)
def test_kpa_rates_bound_a_single_decision(
    ready: int, total: float, up: float, down: float, want: int, reason: str
) -> None:
    # start_in_panic would hold `ready`: begin with 1 ready pod, then evaluate with `ready`
    a = Autoscaler(
        kpa_policy(
            10,
            min_replicas=0,
            max_scale_up_rate=up,
            max_scale_down_rate=down,
            panic_threshold=1000,
        )
    )
    a.decide(tick(0, None, 1))
    d = a.decide(tick(1, total, ready))
    assert (d.desired, d.reason) == (want, reason)


def test_kpa_activation_scale_lifts_small_nonzero_answers() -> None:
    a = Autoscaler(kpa_policy(10, min_replicas=0, activation_scale=3))
    d = a.decide(tick(0, 5, 1))  # dspc 1 → 3
    assert (d.desired, d.reason) == (3, "activation-scale")


def test_kpa_activation_scale_does_not_lift_zero() -> None:
    a = Autoscaler(
        kpa_policy(10, min_replicas=0, activation_scale=3, scale_to_zero_grace_period_seconds=0)
    )
    assert a.decide(tick(0, 0, 1)).desired == 0


def test_kpa_scale_to_zero_waits_for_the_grace_period_of_zero_demand() -> None:
    a = Autoscaler(
        kpa_policy(
            10, min_replicas=0, stable_window_seconds=10, scale_to_zero_grace_period_seconds=30
        )
    )
    a.decide(tick(0, 5, 1))
    # zero demand from t=1; the stable window empties of non-zero samples at t=10
    for t in range(1, 31):
        d = a.decide(tick(t, 0, 1))
        assert d.desired == 1, t
    assert a.decide(tick(30, 0, 1)).reason == "scale-to-zero-grace"
    d = a.decide(tick(31, 0, 1))  # zero since t=1: 30 s of zero demand
    assert (d.desired, d.reason) == (0, "stable")


def test_kpa_never_scales_to_zero_when_min_replicas_is_positive() -> None:
    a = Autoscaler(kpa_policy(10, min_replicas=1, scale_to_zero_grace_period_seconds=0))
    d = a.decide(tick(0, 0, 1))
    assert (d.desired, d.reason) == (1, "clamped-min")


def test_kpa_scale_down_delay_keeps_the_maximum_of_its_window() -> None:
    a = Autoscaler(
        kpa_policy(
            10,
            stable_window_seconds=6,
            panic_window_seconds=1,
            scale_down_delay_seconds=5,
            panic_threshold=1000,  # keep panic out of it
        )
    )
    assert a.decide(tick(0, 30, 1)).desired == 3
    # demand drops to 10 at t=1; the stable window (t−6, t] holds the 30 until t=5, so the raw
    # answer is 2 for t=1..5 and 1 from t=6; the delay window keeps each answer 5 s:
    # 3 (from t=0) until t=4, 2 (last seen at t=5) until t=9: (t−5, t] excludes t−5
    got = [a.decide(tick(t, 10, 3)) for t in range(1, 12)]
    assert [d.desired for d in got] == [3, 3, 3, 3, 2, 2, 2, 2, 2, 1, 1]
    assert [d.reason for d in got][:5] == ["scale-down-delayed"] * 4 + ["stable"]
    assert got[5].reason == "scale-down-delayed"
    assert got[-1].reason == "stable"


def test_kpa_step_formulas() -> None:
    s = kpa_step(ready=0, stable_average=25, panic_average=45, target=10, params=KpaParams())
    assert (s.dspc, s.dppc, s.max_up, s.max_down) == (3, 5, 1000, 0)
    assert s.over_threshold  # 5 / max(1, 0) ≥ 2


def test_kpa_no_data_tick_records_nothing_and_decides_nothing() -> None:
    a = Autoscaler(kpa_policy(10, stable_window_seconds=10))
    a.decide(tick(0, 100, 1))  # → 10 (panic)
    d = a.decide(tick(1, None, 10))
    assert isinstance(d, Decision)
    assert (d.desired, d.reason, d.values) == (None, "no-data", (None,))


def test_kpa_params_replace_keeps_defaults() -> None:
    # the defaults of docs/algorithms.md
    p = KpaParams()
    assert (p.stable_window_seconds, p.panic_window_seconds, p.panic_threshold) == (60, 6, 2)
    assert (p.max_scale_up_rate, p.max_scale_down_rate, p.activation_scale) == (1000, 2, 1)
    assert (p.scale_down_delay_seconds, p.scale_to_zero_grace_period_seconds) == (0, 30)
    assert replace(p, activation_scale=2).activation_scale == 2

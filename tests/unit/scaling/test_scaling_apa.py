"""APA: AIbrix's test tables (Gen1 TestApaScale2, Gen2 apa_test.go) and our rules."""

from __future__ import annotations

import pytest
from scaling_helpers import make_policy

from autoscalerd.config.model import (
    ApaParams,
    Policy,
    Strategy,
)
from autoscalerd.scaling import Autoscaler, SourceSample, Tick
from autoscalerd.scaling.apa import apa_scale


def apa_policy(target: float = 50.0, *, max_replicas: int = 100, **apa: float) -> Policy:
    return make_policy(
        Strategy.APA,
        targets=(target,),
        max_replicas=max_replicas,
        apa=ApaParams(**apa),  # type: ignore[arg-type]
    )


def tick(now: float, total: float | None, ready: int, current: int | None = None) -> Tick:
    return Tick(
        now=now,
        current_replicas=ready if current is None else current,
        ready=ready,
        not_ready=0 if current is None else max(0, current - ready),
        samples=(SourceSample(total=total, answered=ready if total is not None else 0),),
    )


def test_aibrix_test_apa_scale2_sequence() -> None:
    a = Autoscaler(
        apa_policy(
            50,
            window_seconds=30,
            up_fluctuation_tolerance=0.1,
            down_fluctuation_tolerance=0.2,
            max_scale_up_rate=2,
            max_scale_down_rate=1.25,
        )
    )
    got = [a.decide(tick(t, total, 5)) for t, total in ((0, 250), (10, 300), (20, 50), (30, 100))]
    # ratios 1.0, 1.1 (not > 1.1), 0.8 (not < 0.8), 0.6 (t=0 left the window):
    # max(ceil(5 × 0.6), floor(5 / 1.25)) = max(3, 4) = 4
    assert [d.desired for d in got] == [5, 5, 5, 4]
    assert [d.reason for d in got] == ["within-tolerance"] * 3 + ["rate-limited"]


# AIbrix Gen2 algorithm/apa_test.go = docs/algorithms.md's single-step cases; target 30,
# tolerances 0.1/0.1; "current" is both the ready pods and spec.replicas.
GEN2_APA = [
    pytest.param(2, 45, 2, 2, 3, id="basic-scale-up"),
    pytest.param(2, 35, 2, 2, 3, id="scale-up-upto-ceiling"),
    pytest.param(2, 90, 2, 2, 4, id="scale-up-upto-max-scale-up"),
    pytest.param(2, 90, 2.5, 2, 5, id="scale-up-upto-max-scale-up-ceiling"),
    pytest.param(6, 20, 2, 2, 4, id="basic-scale-down"),
    pytest.param(6, 18, 2, 2, 4, id="scale-down-upto-ceiling"),
    pytest.param(6, 10, 2, 2, 3, id="scale-down-upto-max-scale-down"),
    pytest.param(6, 5, 2, 2.5, 2, id="scale-down-upto-max-scale-down-floor"),
    pytest.param(2, 33, 2, 2, 2, id="no-scaling-as-within-up-tolerance"),
    pytest.param(2, 27, 2, 2, 2, id="no-scaling-as-within-down-tolerance"),
]


@pytest.mark.parametrize(("ready", "per_pod", "up", "down", "want"), GEN2_APA)
def test_aibrix_apa_single_step(
    ready: int, per_pod: float, up: float, down: float, want: int
) -> None:
    r = apa_scale(
        ready=ready,
        current=ready,
        per_pod=per_pod,
        target=30,
        up_tolerance=0.1,
        down_tolerance=0.1,
        max_scale_up_rate=up,
        max_scale_down_rate=down,
    )
    assert r.desired == want


@pytest.mark.parametrize(("ready", "per_pod", "up", "down", "want"), GEN2_APA)
def test_aibrix_apa_single_step_through_the_autoscaler(
    ready: int, per_pod: float, up: float, down: float, want: int
) -> None:
    a = Autoscaler(
        apa_policy(
            30,
            up_fluctuation_tolerance=0.1,
            down_fluctuation_tolerance=0.1,
            max_scale_up_rate=up,
            max_scale_down_rate=down,
        )
    )
    assert a.decide(tick(0, per_pod * ready, ready)).desired == want


def test_aibrix_apa_division_by_zero_target_keeps_current() -> None:
    # Gen2 case `division_by_zero`: target 0 → current (our config rejects target ≤ 0)
    r = apa_scale(
        ready=1,
        current=1,
        per_pod=10,
        target=0,
        up_tolerance=0.1,
        down_tolerance=0.1,
        max_scale_up_rate=1000,
        max_scale_down_rate=2,
    )
    assert r.desired == 1


def test_apa_uses_the_window_mean_of_totals_over_ready_pods() -> None:
    a = Autoscaler(apa_policy(10, window_seconds=10))
    a.decide(tick(0, 20, 2))  # per pod 10: ratio 1
    d = a.decide(tick(5, 60, 2))  # mean 40 → 20 per pod → ratio 2 → min(4, ceil(2×2)) = 4
    assert (d.desired, d.reason) == (4, "scale-up")
    d = a.decide(tick(11, 60, 4))  # t=0 left the window: mean 60 → 15 per pod → ratio 1.5 → 6
    assert d.desired == 6


def test_apa_scale_up_signal_never_kills_starting_pods() -> None:
    # 4 replicas, 2 ready, ratio 1.5: ceil(2 × 1.5) = 3 < 4 would shrink; hold 4 instead
    a = Autoscaler(apa_policy(10))
    d = a.decide(tick(0, 30, 2, current=4))
    assert (d.desired, d.reason) == (4, "awaiting-ready")


def test_apa_no_ready_pods_means_no_decision() -> None:
    a = Autoscaler(apa_policy(10))
    d = a.decide(tick(0, 30, 0, current=2))
    assert (d.desired, d.reason) == (None, "no-data")


@pytest.mark.parametrize(
    ("up", "down", "want", "reason"),
    [
        pytest.param(0.0, 0.0, 3, "scale-up", id="no-cooldown-follows-the-metric"),
        pytest.param(10.0, 0.0, 2, "stabilized", id="up-cooldown-takes-the-lowest-recent"),
    ],
)
def test_apa_cooldown_windows_stabilize(up: float, down: float, want: int, reason: str) -> None:
    a = Autoscaler(apa_policy(10, scale_up_cooldown_seconds=up, scale_down_cooldown_seconds=down))
    a.decide(tick(0, 20, 2))  # ratio 1: 2
    d = a.decide(tick(1, 40, 2))  # window mean 30, ratio 1.5: 3, unless the up cooldown recalls 2
    assert (d.desired, d.reason) == (want, reason)


def test_apa_down_cooldown_takes_the_highest_recent() -> None:
    a = Autoscaler(apa_policy(10, scale_down_cooldown_seconds=10))
    a.decide(tick(0, 40, 4))  # 4 (seeded with current 4)
    d = a.decide(tick(1, 10, 4))  # ratio 0.25: max(1, floor(4/2)) = 2, but 4 was seen 1 s ago
    assert (d.desired, d.reason) == (4, "stabilized")
    d = a.decide(tick(11, 10, 4))  # (1, 11] holds only proposals of 2
    assert d.desired == 2


def test_apa_defaults_match_the_reference() -> None:
    p = ApaParams()
    assert (p.up_fluctuation_tolerance, p.down_fluctuation_tolerance) == (0.1, 0.2)
    assert (p.window_seconds, p.max_scale_up_rate, p.max_scale_down_rate) == (60, 2, 2)

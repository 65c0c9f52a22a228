"""HPA: the Kubernetes replica calculator, stabilization windows and behavior rate policies."""

from __future__ import annotations

import pytest
from scaling_helpers import make_policy

from autoscalerd.config.model import (
    HpaBehavior,
    HpaParams,
    HpaRules,
    Policy,
    RatePolicy,
    Strategy,
)
from autoscalerd.scaling import Autoscaler, SourceSample, Tick
from autoscalerd.scaling.hpa import HpaRateLimiter, hpa_replicas


def hpa_policy(
    target: float = 10.0,
    *,
    min_replicas: int = 1,
    max_replicas: int = 1000,
    behavior: HpaBehavior | None = None,
) -> Policy:
    return make_policy(
        Strategy.HPA,
        targets=(target,),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        hpa=HpaParams(behavior=behavior or HpaBehavior()),
    )


def tick(now: float, per_pod: float, ready: int, current: int | None = None) -> Tick:
    return Tick(
        now=now,
        current_replicas=ready if current is None else current,
        ready=ready,
        samples=(SourceSample(total=per_pod * ready, answered=ready),),
    )


NO_STABILIZATION = HpaBehavior(
    scale_up=HpaRules(
        stabilization_window_seconds=0,
        policies=(
            RatePolicy(type="Pods", value=4, period_seconds=15),
            RatePolicy(type="Percent", value=100, period_seconds=15),
        ),
    ),
    scale_down=HpaRules(
        stabilization_window_seconds=0,
        policies=(RatePolicy(type="Percent", value=100, period_seconds=15),),
    ),
)


# --- the replica calculator -----------------------------------------------------------------

CALC = [
    # current, total, answered, missing, not_ready, target, up_tol, down_tol, want, reason
    pytest.param(100, 1100, 100, 0, 0, 10, 0.1, 0.1, 100, "within-tolerance",
                 id="100-pods-at-exactly-1.1-is-inside-the-band"),
    pytest.param(100, 1100, 100, 0, 0, 10, 0.05, 0.1, 111, "scale-up",
                 id="float-ceil-of-110.00000000000001-is-111"),
    pytest.param(10, 90, 10, 0, 0, 10, 0.1, 0.1, 10, "within-tolerance",
                 id="exactly-0.9-is-inside-the-band"),
    pytest.param(3, 60, 3, 0, 0, 15, 0.1, 0.1, 4, "scale-up", id="k8s-scale-up-ceil-ratio-x-pods"),
    pytest.param(5, 30, 5, 0, 0, 10, 0.1, 0.1, 3, "scale-down", id="k8s-scale-down"),
    pytest.param(4, 60, 3, 1, 0, 10, 0.1, 0.1, 6, "scale-up",
                 id="missing-pod-counts-as-zero-on-scale-up"),
    pytest.param(4, 15, 3, 1, 0, 10, 0.1, 0.1, 3, "scale-down",
                 id="missing-pod-counts-as-target-on-scale-down"),
    pytest.param(4, 24, 2, 2, 0, 10, 0.1, 0.1, 4, "missing-pods",
                 id="missing-pods-that-flip-the-direction-mean-no-change"),
    pytest.param(11, 120, 10, 1, 0, 10, 0.1, 0.1, 11, "missing-pods",
                 id="missing-pods-that-land-in-the-band-mean-no-change"),
    pytest.param(4, 40, 2, 0, 2, 10, 0.1, 0.1, 4, "missing-pods",
                 id="unready-pods-count-as-zero-on-scale-up-no-cascade"),
    pytest.param(4, 60, 2, 0, 2, 10, 0.1, 0.1, 6, "scale-up",
                 id="unready-pods-dilute-a-scale-up"),
    pytest.param(4, 10, 2, 0, 2, 10, 0.1, 0.1, 1, "scale-down",
                 id="unready-pods-are-left-out-on-scale-down"),
    pytest.param(10, 120, 10, 0, 0, 10, 0.25, 0.1, 10, "within-tolerance",
                 id="per-direction-up-tolerance"),
    pytest.param(10, 80, 10, 0, 0, 10, 0.1, 0.25, 10, "within-tolerance",
                 id="per-direction-down-tolerance"),
    pytest.param(10, 80, 10, 0, 0, 10, 0.25, 0.1, 8, "scale-down",
                 id="up-tolerance-does-not-widen-the-down-side"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("current", "total", "answered", "missing", "not_ready", "target", "up", "down", "want",
     "reason"),
    CALC,
)  # fmt: skip
def test_hpa_replica_calculator(
    current: int,
    total: float,
    answered: int,
    missing: int,
    not_ready: int,
    target: float,
    up: float,
    down: float,
    want: int,
    reason: str,
) -> None:
    p = hpa_replicas(
        current=current,
        total=total,
        answered=answered,
        missing=missing,
        not_ready=not_ready,
        target=target,
        up_tolerance=up,
        down_tolerance=down,
    )
    assert (p.desired, p.reason) == (want, reason)


@pytest.mark.parametrize(
    ("up_tolerance", "want", "reason"),
    [
        pytest.param(0.1, 100, "within-tolerance", id="ratio-exactly-1.1-is-inside-a-0.1-band"),
        pytest.param(0.05, 111, "scale-up", id="outside-the-band-ceil-of-float64-1.1x100-is-111"),
    ],
)
def test_hpa_band_edge_and_float64_ceil_through_the_autoscaler(
    up_tolerance: float, want: int, reason: str
) -> None:
    """Kubernetes' float64 arithmetic end to end: 100 pods at 11 against a target of 10.

    The band test is inclusive, so a ratio of exactly 1.1 holds with `tolerance: 0.1`; with a
    narrower band the proposal is `ceil(1.1 × 100)`, which float64 makes 111, not 110.
    """
    behavior = HpaBehavior(
        scale_up=HpaRules(
            stabilization_window_seconds=0,
            tolerance=up_tolerance,
            policies=(RatePolicy(type="Percent", value=100, period_seconds=15),),
        ),
        scale_down=NO_STABILIZATION.scale_down,
    )
    d = Autoscaler(hpa_policy(10, behavior=behavior)).decide(tick(0, 11, 100))
    assert (d.desired, d.reason) == (want, reason)


def test_hpa_calculator_needs_an_answer() -> None:
    with pytest.raises(ValueError, match="at least one pod"):
        hpa_replicas(current=1, total=0, answered=0, target=1)


# --- stabilization --------------------------------------------------------------------------


def test_hpa_history_is_seeded_with_current_replicas() -> None:
    # default scale-down stabilization 300 s: a fresh policy does not scale down for 300 s
    a = Autoscaler(hpa_policy(10))
    for t in (0, 100, 299):
        d = a.decide(tick(t, 2, 10))  # ratio 0.2 → 2
        assert (d.desired, d.reason) == (10, "stabilized"), t
    d = a.decide(tick(300, 2, 10))  # the seed (t=0) has left (0, 300]: only proposals of 2
    assert d.desired == 2


def test_hpa_scale_down_takes_the_highest_recommendation_in_the_window() -> None:
    behavior = HpaBehavior(
        scale_up=NO_STABILIZATION.scale_up,
        scale_down=HpaRules(
            stabilization_window_seconds=60,
            policies=(RatePolicy(type="Percent", value=100, period_seconds=15),),
        ),
    )
    a = Autoscaler(hpa_policy(10, behavior=behavior))
    assert a.decide(tick(0, 10, 8)).desired == 8
    assert a.decide(tick(10, 5, 8)).desired == 8  # proposal 4; 8 seen at t=0
    assert a.decide(tick(30, 7.5, 8)).desired == 8  # proposal 6
    assert a.decide(tick(61, 5, 8)).desired == 6  # (1, 61]: proposals 4, 6, 4 → 6
    assert a.decide(tick(91, 5, 6)).desired == 4  # (31, 91]: proposals 4 (t=61), 3 (t=91) → 4


def test_hpa_scale_up_stabilization_takes_the_lowest_recommendation() -> None:
    behavior = HpaBehavior(
        scale_up=HpaRules(
            stabilization_window_seconds=30,
            policies=(RatePolicy(type="Percent", value=1000, period_seconds=15),),
        ),
        scale_down=NO_STABILIZATION.scale_down,
    )
    a = Autoscaler(hpa_policy(10, behavior=behavior))
    assert a.decide(tick(0, 10, 2)).desired == 2
    d = a.decide(tick(10, 40, 2))  # proposal 8; the up window still remembers 2
    assert (d.desired, d.reason) == (2, "stabilized")
    assert a.decide(tick(31, 40, 2)).desired == 8


# --- behavior rate policies -----------------------------------------------------------------


def test_hpa_default_scale_up_policies_pick_the_largest_change() -> None:
    a = Autoscaler(hpa_policy(10, behavior=NO_STABILIZATION))
    d = a.decide(tick(0, 1000, 1))  # Pods 4 → 5, Percent 100 → 2: Max → 5
    assert (d.desired, d.reason) == (5, "rate-limited")
    a.applied(0, 1, 5)
    d = a.decide(tick(5, 1000, 5))  # the +4 at t=0 is within both 15 s periods: start 1 → 5
    assert (d.desired, d.reason) == (5, "rate-limited")
    d = a.decide(tick(15, 1000, 5))  # t=0 is not after 15 − 15: start 5 → max(9, 10)
    assert (d.desired, d.reason) == (10, "rate-limited")


def test_hpa_only_applied_scales_use_the_rate_budget() -> None:
    """A decision that was not written (dry run, follower, failed write) is not a scale event:
    the next tick may take the whole budget again."""
    a = Autoscaler(hpa_policy(10, behavior=NO_STABILIZATION))
    assert a.decide(tick(0, 1000, 1)).desired == 5
    d = a.decide(tick(5, 1000, 1))  # nothing applied: start is still 1 → 5 again
    assert (d.desired, d.reason) == (5, "rate-limited")
    a.applied(5, 1, 5)
    d = a.decide(tick(6, 1000, 5))  # now the +4 counts: start 1 → no further scale-up
    assert (d.desired, d.reason) == (5, "rate-limited")


@pytest.mark.parametrize(
    ("select", "want", "reason"),
    [
        pytest.param("Max", 5, "rate-limited", id="select-max-largest-change"),
        pytest.param("Min", 2, "rate-limited", id="select-min-smallest-change"),
        pytest.param("Disabled", 1, "scaling-disabled", id="select-disabled-no-scale-up"),
    ],
)
def test_hpa_select_policy(select: str, want: int, reason: str) -> None:
    behavior = HpaBehavior(
        scale_up=HpaRules(
            stabilization_window_seconds=0,
            select_policy=select,
            policies=NO_STABILIZATION.scale_up.policies,
        ),
        scale_down=NO_STABILIZATION.scale_down,
    )
    a = Autoscaler(hpa_policy(10, behavior=behavior))
    d = a.decide(tick(0, 1000, 1))
    assert (d.desired, d.reason) == (want, reason)


def test_hpa_scale_down_percent_truncates_and_pods_subtracts() -> None:
    limiter = HpaRateLimiter(
        HpaBehavior(
            scale_down=HpaRules(
                stabilization_window_seconds=0,
                select_policy="Max",
                policies=(
                    RatePolicy(type="Percent", value=30, period_seconds=60),
                    RatePolicy(type="Pods", value=1, period_seconds=60),
                ),
            )
        )
    )
    # Percent: trunc(10 × 0.7) = 7; Pods: 9; Max (largest change) → 7
    assert limiter.limit(0, 10, 1, 1, 100) == (7, "rate-limited")
    limiter.record(0, 10, 7)
    # within the period: start = 7 + 3 = 10 → still 7: no further scale-down
    assert limiter.limit(30, 7, 1, 1, 100) == (7, "rate-limited")
    # the minimum bound wins when it is higher than the rate limit
    assert limiter.limit(61, 7, 1, 6, 100) == (6, "clamped-min")


def test_hpa_scale_down_select_min_takes_the_smallest_change() -> None:
    limiter = HpaRateLimiter(
        HpaBehavior(
            scale_down=HpaRules(
                stabilization_window_seconds=0,
                select_policy="Min",
                policies=(
                    RatePolicy(type="Percent", value=30, period_seconds=60),
                    RatePolicy(type="Pods", value=1, period_seconds=60),
                ),
            )
        )
    )
    assert limiter.limit(0, 10, 1, 1, 100) == (9, "rate-limited")


def test_hpa_max_replicas_caps_a_scale_up() -> None:
    a = Autoscaler(hpa_policy(10, max_replicas=3, behavior=NO_STABILIZATION))
    d = a.decide(tick(0, 1000, 1))
    assert (d.desired, d.reason) == (3, "clamped-max")


def test_hpa_no_answer_means_no_decision() -> None:
    a = Autoscaler(hpa_policy(10))
    d = a.decide(
        Tick(
            now=0,
            current_replicas=3,
            ready=3,
            samples=(SourceSample(total=None, answered=0, missing=3),),
        )
    )
    assert (d.desired, d.reason) == (None, "no-data")

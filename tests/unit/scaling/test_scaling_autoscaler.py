"""Rules shared by every strategy: bounds, missing data, several sources, fallback, estimates."""

from __future__ import annotations

import pytest
from scaling_helpers import make_policy

from autoscalerd.config.model import (
    Fallback,
    HpaBehavior,
    HpaParams,
    HpaRules,
    KpaParams,
    Policy,
    RatePolicy,
    Strategy,
)
from autoscalerd.scaling import Autoscaler, SourceSample, Tick, estimate_total

FAST_HPA = HpaBehavior(
    scale_up=HpaRules(
        stabilization_window_seconds=0,
        policies=(RatePolicy(type="Percent", value=1000, period_seconds=1),),
    ),
    scale_down=HpaRules(
        stabilization_window_seconds=0,
        policies=(RatePolicy(type="Percent", value=100, period_seconds=1),),
    ),
)


def policy(
    strategy: Strategy,
    *,
    targets: tuple[float, ...] = (10.0,),
    min_replicas: int = 1,
    max_replicas: int = 20,
    fallback: Fallback | None = None,
) -> Policy:
    return make_policy(
        strategy,
        targets=targets,
        metrics=[f"m{i}" for i in range(len(targets))],
        namespace="ns",
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        kpa=KpaParams(panic_threshold=1000),  # keep start-in-panic and panic out of these tests
        hpa=HpaParams(behavior=FAST_HPA),
        fallback=fallback,
    )


def full(total: float, ready: int) -> SourceSample:
    return SourceSample(total=total, answered=ready)


NONE = SourceSample(total=None, answered=0, missing=3)


def tick(now: float, current: int, ready: int, *samples: SourceSample) -> Tick:
    return Tick(now=now, current_replicas=current, ready=ready, samples=samples)


ALL = [pytest.param(s, id=s.value) for s in Strategy]


# --- estimate_total -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "ready", "want"),
    [
        pytest.param(SourceSample(total=30, answered=3), 3, 30, id="all-answered-as-is"),
        pytest.param(SourceSample(total=20, answered=2, missing=1), 3, 30, id="mean-times-ready"),
        pytest.param(SourceSample(total=20, answered=2, missing=2), 4, 40, id="exactly-half"),
        pytest.param(SourceSample(total=10, answered=1, missing=2), 3, None, id="under-half"),
        pytest.param(SourceSample(total=None, answered=0, missing=3), 3, None, id="none-answered"),
        pytest.param(SourceSample(total=15, answered=0), 0, 15, id="demand-with-no-ready-pods"),
        pytest.param(SourceSample(total=0, answered=3), 3, 0, id="zero-is-data"),
    ],
)
def test_estimate_total(sample: SourceSample, ready: int, want: float | None) -> None:
    assert estimate_total(sample, ready) == want


# --- bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ALL)
def test_target_at_zero_with_positive_min_is_left_alone(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy, min_replicas=1))
    d = a.decide(tick(0, 0, 0, full(100, 0)))
    assert (d.desired, d.reason) == (None, "target-at-zero")


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize(
    ("current", "want", "reason"),
    [
        pytest.param(30, 20, "clamped-max", id="above-max-to-max"),
        pytest.param(1, 2, "clamped-min", id="below-min-to-min"),
    ],
)
def test_current_out_of_bounds_is_brought_in_first(
    strategy: Strategy, current: int, want: int, reason: str
) -> None:
    a = Autoscaler(policy(strategy, min_replicas=2, max_replicas=20))
    d = a.decide(tick(0, current, current, full(10.0 * current, current)))
    assert (d.desired, d.reason) == (want, reason)


@pytest.mark.parametrize("strategy", ALL)
def test_out_of_bounds_applies_even_without_data(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy, max_replicas=5))
    d = a.decide(tick(0, 8, 3, NONE))
    assert (d.desired, d.reason) == (5, "clamped-max")


@pytest.mark.parametrize("strategy", ALL)
def test_result_is_clamped_to_max(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy, max_replicas=3))
    d = a.decide(tick(0, 2, 2, full(200, 2)))  # 20 pods' worth (APA: 4 after its rate)
    assert (d.desired, d.reason) == (3, "clamped-max")


# --- missing data ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ALL)
def test_no_data_makes_no_decision(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy))
    d = a.decide(tick(0, 3, 3, NONE))
    assert (d.desired, d.reason, d.values) == (None, "no-data", (None,))


@pytest.mark.parametrize("strategy", [Strategy.KPA, Strategy.APA])
def test_fewer_than_half_answering_is_no_data(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy))
    d = a.decide(tick(0, 4, 4, SourceSample(total=1, answered=1, missing=3)))
    assert (d.desired, d.reason) == (None, "no-data")


@pytest.mark.parametrize("strategy", [Strategy.KPA, Strategy.APA])
def test_missing_pods_are_estimated_never_zero(strategy: Strategy) -> None:
    # 4 ready pods at 10 each, one scrape failed: the total is 40, not 30 (no scale-down to 3)
    a = Autoscaler(policy(strategy))
    d = a.decide(tick(0, 4, 4, SourceSample(total=30, answered=3, missing=1)))
    assert d.values == (40.0,)
    assert d.desired == 4


@pytest.mark.parametrize("strategy", ALL)
def test_one_source_without_data_forbids_a_scale_down(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy, targets=(10, 10)))
    a.decide(tick(0, 1, 1, full(6, 1), full(6, 1)))  # (KPA: one ready pod, no start-in-panic)
    d = a.decide(tick(1, 6, 6, full(6, 6), NONE))  # source 0 wants fewer pods
    assert (d.desired, d.reason) == (6, "partial-data")


@pytest.mark.parametrize("strategy", ALL)
def test_one_source_without_data_allows_a_scale_up(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy, targets=(10, 10)))
    d = a.decide(tick(0, 2, 2, full(80, 2), NONE))
    assert d.desired is not None and d.desired > 2
    assert d.values == (80, None)


@pytest.mark.parametrize("strategy", ALL)
def test_several_sources_largest_recommendation_wins(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy, targets=(10, 5)))
    # source 0: 30/10 → 3; source 1: 30/5 → 6 (APA: rate 2 → 4)
    d = a.decide(tick(0, 2, 2, full(30, 2), full(30, 2)))
    assert d.desired == {"KPA": 6, "APA": 4, "HPA": 6}[strategy.value]


def test_aibrix_gen2_compute_desired_replicas_two_sources() -> None:
    # AIbrix TestComputeDesiredReplicas (APA, 1 pod, every fetch 70, max 6, upRate 4):
    # target 50 → ceil(1.4) = 2; with a second source of target 30 → ceil(2.33) = 3; max wins
    base = policy(Strategy.APA, targets=(50, 30), max_replicas=6)
    from dataclasses import replace

    p = replace(base, apa=replace(base.apa, max_scale_up_rate=4))
    a = Autoscaler(p)
    assert a.decide(tick(0, 1, 1, full(70, 1), full(70, 1))).desired == 3
    one = Autoscaler(replace(p, sources=p.sources[:1]))
    assert one.decide(tick(0, 1, 1, full(70, 1))).desired == 2


# --- fallback -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ALL)
def test_fallback_after_threshold_consecutive_no_data_ticks(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy, fallback=Fallback(failure_threshold=3, replicas=7)))
    reasons = [a.decide(tick(t, 2, 2, NONE)).reason for t in range(3)]
    assert reasons == ["no-data", "no-data", "fallback"]
    d = a.decide(tick(3, 2, 2, NONE))
    assert (d.desired, d.reason) == (7, "fallback")


@pytest.mark.parametrize("strategy", [Strategy.KPA, Strategy.APA])
def test_fallback_counter_resets_on_data(strategy: Strategy) -> None:
    a = Autoscaler(policy(strategy, fallback=Fallback(failure_threshold=2, replicas=7)))
    a.decide(tick(0, 2, 2, NONE))
    a.decide(tick(1, 2, 2, full(20, 2)))
    assert a.decide(tick(2, 2, 2, NONE)).reason == "no-data"
    assert a.state_summary()["consecutive_no_data"] == [1]


@pytest.mark.parametrize("strategy", ALL)
def test_fallback_is_never_below_a_working_source(strategy: Strategy) -> None:
    p = policy(strategy, targets=(10, 10), fallback=Fallback(failure_threshold=1, replicas=2))
    a = Autoscaler(p)
    d = a.decide(tick(0, 3, 3, full(90, 3), NONE))  # source 0 wants 9 (APA: 6), fallback 2
    assert d.desired == {"KPA": 9, "APA": 6, "HPA": 9}[strategy.value]


# --- API ------------------------------------------------------------------------------------


def test_samples_must_match_sources() -> None:
    a = Autoscaler(policy(Strategy.KPA))
    with pytest.raises(ValueError, match="samples"):
        a.decide(tick(0, 1, 1))


def test_time_must_not_go_backwards() -> None:
    a = Autoscaler(policy(Strategy.KPA))
    a.decide(tick(5, 1, 1, full(1, 1)))
    with pytest.raises(ValueError, match="backwards"):
        a.decide(tick(4, 1, 1, full(1, 1)))


def test_policy_without_sources_is_refused() -> None:
    p = policy(Strategy.KPA)
    from dataclasses import replace

    with pytest.raises(ValueError, match="no metric source"):
        Autoscaler(replace(p, sources=()))


@pytest.mark.parametrize("strategy", ALL)
def test_state_summary_is_json_friendly(strategy: Strategy) -> None:
    import json

    a = Autoscaler(policy(strategy))
    a.decide(tick(0, 2, 2, full(20, 2)))
    summary = a.state_summary()
    json.dumps(summary)
    assert summary["strategy"] == strategy.value
    assert summary["last_reason"]


def test_decision_mode_is_empty_for_apa_and_hpa() -> None:
    for s in (Strategy.APA, Strategy.HPA):
        assert Autoscaler(policy(s)).decide(tick(0, 2, 2, full(20, 2))).mode == ""


def test_scaling_package_is_pure() -> None:
    import ast
    import pathlib

    import autoscalerd.scaling as pkg

    forbidden = {"asyncio", "aiohttp", "yaml", "structlog", "kubernetes_asyncio", "time"}
    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"

"""The reconciler with derived sources (issue 13), against fakes, time stepped by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import FakeKube, FakeScraper, ManualClock, pod, scrape_error

from autoscalerd.config.load import load_config
from autoscalerd.config.model import DaemonConfig, Policy
from autoscalerd.daemon.reconciler import DaemonContext, PolicyReconciler
from autoscalerd.server.metrics import DaemonMetrics

T0 = 1000.0


def load_policy(tmp_path: Path, target_metric: str, target: float, extra: str = "") -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\n"
        "kind: PodAutoscaler\n"
        "metadata: {name: web, namespace: default}\n"
        "spec:\n"
        "  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n"
        "  minReplicas: 1\n"
        "  maxReplicas: 20\n"
        "  scalingStrategy: APA\n"
        "  metricsSources:\n"
        "    - metricSourceType: pod\n"
        "      protocolType: http\n"
        "      port: '8000'\n"
        f"      targetMetric: '{target_metric}'\n"
        f"      targetValue: '{target}'\n" + extra
    )
    (policy,) = load_config([str(path)]).policies
    return policy


RECONCILERS: list[PolicyReconciler] = []


@pytest.fixture(autouse=True)
async def _close() -> AsyncIterator[None]:
    yield
    while RECONCILERS:
        await RECONCILERS.pop().close()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def world(
    policy: Policy, replicas: int, pods: int
) -> tuple[PolicyReconciler, FakeScraper, ManualClock]:
    clock = ManualClock(T0)
    scraper = FakeScraper()
    kube = FakeKube(replicas, [pod(f"web-{i}") for i in range(pods)])
    ctx = DaemonContext(
        kube=kube, scraper=scraper, metrics=DaemonMetrics(), daemon=DaemonConfig(), clock=clock
    )
    r = PolicyReconciler(policy, ctx)
    RECONCILERS.append(r)
    return r, scraper, clock


def counter(value: float) -> tuple[tuple[str, ...], tuple[float, ...]]:
    return ('code="200"',), (value,)


async def test_rate_is_summed_over_pods_and_a_reset_causes_no_spurious_scaling(
    tmp_path: Path,
) -> None:
    policy = load_policy(tmp_path, "rate(requests_total[10s])", 10)
    r, scraper, clock = world(policy, replicas=2, pods=2)
    metric = policy.sources[0].target_metric
    values = {"web_0": 0.0, "web_1": 1000.0}
    decisions = []
    for _ in range(6):
        scraper.set(metric, **{k: counter(v) for k, v in values.items()})
        decisions.append(await r.tick())
        clock.advance(1.0)
        values["web_0"] += 20.0
        values["web_1"] += 20.0
    # first tick: one sample per pod, no data; then 20/s per pod = 40 total / 10 = 4 replicas
    assert decisions[0] is not None and decisions[0].values == (None,)
    assert [d.values for d in decisions[1:] if d] == [(40.0,)] * 5
    # web-1 restarts: its counter starts again from 0 and counts up at the same pace
    values["web_1"] = 20.0
    for _ in range(3):
        scraper.set(metric, **{k: counter(v) for k, v in values.items()})
        d = await r.tick()
        assert d is not None and d.values == (pytest.approx(40.0),)
        clock.advance(1.0)
        values["web_0"] += 20.0
        values["web_1"] += 20.0


async def test_rate_missing_pod_is_estimated_not_zero(tmp_path: Path) -> None:
    policy = load_policy(tmp_path, "rate(requests_total[10s])", 10)
    r, scraper, clock = world(policy, replicas=2, pods=2)
    metric = policy.sources[0].target_metric
    scraper.set(metric, web_0=counter(0), web_1=counter(0))
    await r.tick()
    clock.advance(1.0)
    scraper.set(metric, web_0=counter(30), web_1=scrape_error())
    d = await r.tick()
    assert d is not None and d.values == (60.0,), "mean × ready from the pod that answered"


async def test_histogram_quantile_total_is_value_times_pods(tmp_path: Path) -> None:
    policy = load_policy(tmp_path, "histogram_quantile(0.5, ttft_seconds_bucket[10s])", 0.1)
    r, scraper, clock = world(policy, replicas=2, pods=2)
    metric = policy.sources[0].target_metric

    def buckets(counts: list[float]) -> tuple[tuple[str, ...], tuple[float, ...]]:
        les = ("0.1", "0.2", "1", "+Inf")
        return tuple(f'le="{le}"' for le in les), tuple(counts)

    scraper.set(metric, web_0=buckets([0, 0, 0, 0]), web_1=buckets([0, 0, 0, 0]))
    d = await r.tick()
    assert d is not None and d.values == (None,)
    clock.advance(1.0)
    scraper.set(metric, web_0=buckets([25, 35, 55, 60]), web_1=buckets([25, 35, 55, 60]))
    d = await r.tick()
    # median 0.15 s over both pods (Prometheus' "positive" case); total = 0.15 × 2 pods
    assert d is not None and d.values == (pytest.approx(0.3),)


async def test_status_shows_the_active_schedule_and_bounds(tmp_path: Path) -> None:
    # ManualClock's wall clock starts at 2026-01-01T00:00:00Z, a Thursday
    schedule = (
        "  schedules:\n"
        "    - {name: night, daysOfWeek: [Thu], startTime: '00:00', endTime: '00:02',"
        " minReplicas: 4}\n"
    )
    policy = load_policy(tmp_path, "rate(requests_total[10s])", 10, schedule)
    r, _, clock = world(policy, replicas=2, pods=2)
    d = await r.tick()
    assert d is not None and (d.desired, d.reason, d.schedule) == (4, "schedule-min", "night")
    assert r.status()["scheduled_bounds"] == {
        "active_schedule": "night",
        "effective_min_replicas": 4,
        "effective_max_replicas": 20,
    }
    # cluster mode writes the same as AIbrix's status.scheduledBounds
    assert r.scheduled_bounds() == {
        "activeSchedule": "night",
        "effectiveMinReplicas": 4,
        "effectiveMaxReplicas": 20,
    }
    clock.advance(120.0)  # 00:02: the end is excluded
    d = await r.tick()
    assert d is not None and d.schedule is None
    assert r.status()["scheduled_bounds"] == {
        "active_schedule": None,
        "effective_min_replicas": 1,
        "effective_max_replicas": 20,
    }
    assert r.scheduled_bounds() == {"effectiveMinReplicas": 1, "effectiveMaxReplicas": 20}


async def test_a_histogram_without_its_inf_bucket_is_reported_once_with_the_fix(
    tmp_path: Path,
) -> None:
    metric = 'histogram_quantile(0.5, ttft_seconds_bucket{le!="+Inf"}[10s])'
    policy = load_policy(tmp_path, metric, 0.1)
    r, scraper, clock = world(policy, replicas=1, pods=1)
    for t in range(3):
        scraper.set(metric, web_0=(('le="0.1"', 'le="1"'), (float(t), float(2 * t))))
        d = await r.tick()
        assert d is not None and d.values == (None,), "no data, never 0"
        clock.advance(1.0)
    errors = r.status()["errors"]
    assert len(errors) == 1
    assert 'no le="+Inf" series' in errors[0] and "a matcher on le drops buckets" in errors[0]

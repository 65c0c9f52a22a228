"""Sources other than `pod` (daemon/sources.py) through the reconciler's tick, against fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeKube, FakeScraper, ManualClock, pod

from autoscalerd.config.load import load_config
from autoscalerd.config.model import DaemonConfig, MetricSource, Policy
from autoscalerd.daemon.reconciler import DaemonContext, PolicyReconciler
from autoscalerd.kube.errors import (
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    Op,
    error_for_status,
)
from autoscalerd.kube.metrics_api import PodUsage
from autoscalerd.scrape.client import ScrapeOutcome, ScrapeTarget
from autoscalerd.scrape.errors import ScrapeError, ScrapeErrorKind
from autoscalerd.server.metrics import DaemonMetrics

T0 = 1000.0


class FakeQuery:
    def __init__(self) -> None:
        self.answer: float | ScrapeError = 0.0
        self.calls: list[tuple[str, float]] = []

    async def query(
        self, source: MetricSource, *, daemon: DaemonConfig, timeout: float
    ) -> ScrapeOutcome:
        self.calls.append((source.query, timeout))
        target = ScrapeTarget(pod="prometheus", ip=source.endpoint, source=source)
        if isinstance(self.answer, ScrapeError):
            return ScrapeOutcome(target=target, value=None, error=self.answer, duration_seconds=0)
        return ScrapeOutcome(target=target, value=self.answer, error=None, duration_seconds=0)

    async def close(self) -> None:
        pass


def policy(tmp_path: Path, strategy: str, *sources: str, target: str = "50") -> Policy:
    text = (
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\nkind: PodAutoscaler\n"
        "metadata: {name: web, namespace: default}\n"
        "spec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n"
        f"  maxReplicas: 20\n  scalingStrategy: {strategy}\n  metricsSources:\n"
    )
    for s in sources:
        text += f"    - {{{s}, targetValue: '{target}'}}\n"
    f = tmp_path / "p.yaml"
    f.write_text(text)
    (p,) = load_config([str(f)]).policies
    return p


RECONCILERS: list[PolicyReconciler] = []


@pytest.fixture(autouse=True)
async def _close() -> AsyncIterator[None]:
    yield
    while RECONCILERS:
        await RECONCILERS.pop().close()
    await asyncio.sleep(0)


def world(
    pol: Policy, replicas: int = 2, requests: float | None = 500.0
) -> tuple[FakeKube, FakeQuery, FakeScraper, PolicyReconciler]:
    pods = [replace(pod(f"web-{i}"), cpu_request_millis=requests) for i in range(replicas)]
    kube = FakeKube(replicas, pods)
    query = FakeQuery()
    scraper = FakeScraper()
    ctx = DaemonContext(kube=kube, scraper=scraper, metrics=DaemonMetrics(),
                        daemon=DaemonConfig(), clock=ManualClock(T0), query=query)  # fmt: skip
    r = PolicyReconciler(pol, ctx)
    RECONCILERS.append(r)
    return kube, query, scraper, r


CPU = "metricSourceType: resource, targetMetric: cpu"
MEM = "metricSourceType: resource, targetMetric: memory"


async def test_resource_cpu_kpa_is_millicores_summed(tmp_path: Path) -> None:
    kube, _, _, r = world(policy(tmp_path, "KPA", CPU, target="250"))
    kube.usage = {"web-0": PodUsage(400, 1), "web-1": PodUsage(600, 1), "other": PodUsage(9, 9)}
    d = await r.tick()
    assert d is not None and d.values == (1000.0,)
    assert d.desired == 4
    assert kube.metrics_calls == [("pod_metrics", "default")]


async def test_resource_cpu_hpa_is_utilization_of_requests(tmp_path: Path) -> None:
    kube, _, _, r = world(policy(tmp_path, "HPA", CPU, target="50"))
    kube.usage = {"web-0": PodUsage(400, 1), "web-1": PodUsage(600, 1)}
    d = await r.tick()
    # 1000m used of 1000m requested = 100 % against a 50 % target: twice the pods
    assert d is not None and d.desired == 4
    assert d.values == (pytest.approx(200.0),), "utilization x answered pods"


async def test_hpa_cpu_without_a_request_is_an_error_not_a_guess(tmp_path: Path) -> None:
    kube, _, _, r = world(policy(tmp_path, "HPA", CPU), requests=None)
    kube.usage = {"web-0": PodUsage(400, 1), "web-1": PodUsage(600, 1)}
    d = await r.tick()
    assert d is not None and (d.desired, d.values) == (None, (None,))
    err = r.status()["last_error"]
    assert "web-0" in err and "resources.requests.cpu" in err


async def test_resource_memory_hpa_is_average_mib(tmp_path: Path) -> None:
    kube, _, _, r = world(policy(tmp_path, "HPA", MEM, target="100"))
    kube.usage = {"web-0": PodUsage(1, 300 * 2**20), "web-1": PodUsage(1, 100 * 2**20)}
    d = await r.tick()
    assert d is not None and d.values == (400.0,) and d.desired == 4


async def test_a_pod_without_metrics_yet_is_missing_not_zero(tmp_path: Path) -> None:
    kube, _, _, r = world(policy(tmp_path, "KPA", CPU, target="250"), replicas=3)
    kube.scale_by_hand(3)
    kube.usage = {"web-0": PodUsage(300, 1), "web-1": PodUsage(300, 1)}  # web-2 is new
    d = await r.tick()
    assert d is not None and d.values == (900.0,), "estimated from the 2 that answered"
    assert "web-2" in r.status()["last_error"] and "missing, not 0" in r.status()["last_error"]
    kube.usage["web-2"] = PodUsage(300, 1)
    await r.tick()
    assert r.status()["errors"] == []


OP = Op("list", "pods", group="metrics.k8s.io", namespace="default")


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (error_for_status(OP, 403), ["apiGroups [metrics.k8s.io]", "verbs [list]", "ClusterRole"]),
        (error_for_status(OP, 404), ["Is metrics-server installed?", "apiservice"]),
        (error_for_status(OP, 503), ["does not answer", "metrics-server"]),
    ],
)
async def test_api_errors_are_classified_with_a_fix_and_never_scale_down(
    tmp_path: Path, error: Exception, words: list[str]
) -> None:
    kube, _, _, r = world(policy(tmp_path, "KPA", CPU, target="250"), replicas=4)
    kube.scale_by_hand(4)
    kube.metrics_errors = [error, error]  # type: ignore[list-item]
    d = await r.tick()
    assert d is not None and d.desired is None and d.reason == "no-data"
    assert isinstance(error, KubeForbidden | KubeNotFound | KubeUnavailable)
    for word in words:
        assert word in r.status()["last_error"]
    assert kube.writes == []


async def test_custom_metric_per_pod_with_the_targets_selector(tmp_path: Path) -> None:
    kube, _, _, r = world(policy(tmp_path, "KPA", "metricSourceType: custom, targetMetric: q",
                                 target="10"))  # fmt: skip
    kube.custom = {"q": {"web-0": 15.0, "web-1": 25.0}}
    d = await r.tick()
    assert d is not None and d.values == (40.0,) and d.desired == 4
    assert kube.metrics_calls == [("custom", "default", "q", "app=web")]


async def test_external_api_sums_items_and_empty_is_missing(tmp_path: Path) -> None:
    src = 'metricSourceType: external, targetMetric: \'msgs{queue="jobs",env!="dev"}\''
    kube, _, _, r = world(policy(tmp_path, "HPA", src, target="10"))
    kube.external = {"msgs": [30.0, 20.0]}
    d = await r.tick()
    assert d is not None and d.values == (50.0,) and d.desired == 5, "ceil(total / target)"
    assert kube.metrics_calls[-1] == ("external", "default", "msgs", "queue=jobs,env!=dev")
    kube.external = {}
    d = await r.tick()
    assert d is not None and d.values == (None,)
    assert "returned no items" in r.status()["last_error"]


async def test_prometheus_is_the_ticks_total_and_a_failure_is_missing(tmp_path: Path) -> None:
    src = (
        "metricSourceType: prometheus, endpoint: 'http://p:9090', query: 'sum(x)', targetMetric: x"
    )
    _, query, _, r = world(policy(tmp_path, "KPA", src, target="10"))
    query.answer = 35.0
    d = await r.tick()
    assert d is not None and d.values == (35.0,) and d.desired == 4
    assert query.calls == [("sum(x)", DaemonConfig().scrape_timeout_seconds)]
    query.answer = ScrapeError(ScrapeErrorKind.ABSENT, "http://p:9090", "empty vector")
    d = await r.tick()
    assert d is not None and d.values == (None,) and "empty vector" in r.status()["last_error"]


async def test_external_endpoint_is_one_scrape_through_the_scraper(tmp_path: Path) -> None:
    src = ("metricSourceType: external, protocolType: http, endpoint: 'gw.local:8080', "
           "path: /metrics, targetMetric: pending")  # fmt: skip
    _, _, scraper, r = world(policy(tmp_path, "KPA", src, target="10"))
    scraper.answers[("gw.local", "pending")] = 25.0
    d = await r.tick()
    assert d is not None and d.values == (25.0,)
    ((targets, _),) = scraper.calls
    assert [(t.ip, t.source.port, t.source.path) for t in targets] == [
        ("gw.local", 8080, "/metrics")
    ]


async def test_pod_and_other_sources_keep_their_order(tmp_path: Path) -> None:
    pod_src = "metricSourceType: pod, protocolType: http, port: '8000', targetMetric: requests"
    kube, _, scraper, r = world(policy(tmp_path, "KPA", CPU, pod_src, target="100"))
    kube.usage = {"web-0": PodUsage(100, 1), "web-1": PodUsage(100, 1)}
    scraper.set("requests", web_0=70, web_1=80)
    d = await r.tick()
    assert d is not None and d.values == (200.0, 150.0)
    ((targets, _),) = scraper.calls
    assert {t.source.type for t in targets} == {"pod"}, "only pod sources are scraped per pod"

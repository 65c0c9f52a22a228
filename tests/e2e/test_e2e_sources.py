"""Every metric source type, end to end: the real `autoscalerd run` against the sandbox's
metrics APIs (metrics.k8s.io, custom.metrics.k8s.io, external.metrics.k8s.io), a page the
test serves (external with endpoint), and the real Prometheus server (prometheus)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e_harness import run_demo, write
from prometheus_server import Page, PrometheusServer, prometheus_binary

from autoscalerd.sandbox import Sandbox

pytestmark = pytest.mark.e2e

NS, NAME = "default", "web"


def policy(source: str, *, strategy: str = "KPA", max_replicas: int = 6, extra: str = "") -> str:
    return (
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\nkind: PodAutoscaler\n"
        f"metadata: {{name: {NAME}, namespace: {NS}}}\n"
        f"spec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {NAME}}}\n"
        f"  minReplicas: 1\n  maxReplicas: {max_replicas}\n  scalingStrategy: {strategy}\n"
        f"  metricsSources:\n    - {{{source}}}\n{extra}"
    )


async def web(sb: Sandbox, replicas: int = 2, **kw: Any) -> None:
    await sb.add_deployment(NS, NAME, replicas=replicas, **kw)


async def policy_status(daemon: Any, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
    status: dict[str, Any] = await daemon.wait_status(
        lambda s: bool(s["policies"]) and predicate(s["policies"][0]), timeout=timeout
    )
    return status["policies"][0]


def metrics_requests(sb: Sandbox, group: str) -> int:
    return sum(1 for r in sb.requests if r.path.startswith(f"/apis/{group}/"))


# -- resource ----------------------------------------------------------------------------------


async def test_resource_cpu_hpa_scales_on_utilization_of_requests(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await web(sandbox, 2, requests={"cpu": "500m"})
    sandbox.set_load(NS, NAME, "cpu", 500)  # 250m of 500m per pod: 50 %
    path = write(tmp_path, "p.yaml", policy(
        "metricSourceType: resource, targetMetric: cpu, targetValue: '50'", strategy="HPA"))  # fmt: skip
    daemon = await start_daemon(path)
    st = await policy_status(daemon, lambda p: p["metrics"]["cpu"] is not None)
    assert st["metrics"]["cpu"] == pytest.approx(100.0, rel=0.01), "50 % x 2 pods answered"
    assert sandbox.replicas(NS, NAME) == 2, "at the target: no change"

    sandbox.set_load(NS, NAME, "cpu", 2000)  # 1000m of 500m per pod: 200 %
    await sandbox.wait_for_spec_replicas(NS, NAME, 6, timeout=15)
    # the new pods have no PodMetrics for a while: missing, said once, never read as 0
    await daemon.wait_log(lambda d: "metrics.k8s.io yet" in d.get("event", ""), timeout=15)
    assert await daemon.stop() == 0


async def test_resource_is_one_pod_metrics_list_per_namespace_per_tick(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await web(sandbox, 1)
    await sandbox.add_deployment(NS, "api", replicas=1)
    sandbox.set_load(NS, NAME, "cpu", 100)
    sandbox.set_load(NS, "api", "cpu", 100)
    text = policy("metricSourceType: resource, targetMetric: cpu, targetValue: '1000'")
    text += "---\n" + text.replace(f"name: {NAME}", "name: api")
    daemon = await start_daemon(write(tmp_path, "p.yaml", text))
    status = await daemon.wait_status(
        lambda s: len(s["policies"]) == 2 and min(p["ticks"] for p in s["policies"]) >= 6
    )
    ticks = max(p["ticks"] for p in status["policies"])
    lists = metrics_requests(sandbox, "metrics.k8s.io")
    assert lists <= ticks + 1, f"{lists} PodMetrics lists for 2 policies x {ticks} ticks"
    assert await daemon.stop() == 0


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (403, ["forbidden", "apiGroups [metrics.k8s.io]", "verbs [list]"]),
        (404, ["Is metrics-server installed?"]),
        (503, ["does not answer"]),
    ],
)
async def test_resource_api_errors_are_missing_data_with_a_fix(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any, status: int, words: list[str]
) -> None:
    await web(sandbox, 3)
    sandbox.faults.add("GET", "/apis/metrics.k8s.io/.*", status=status, count=None)
    path = write(tmp_path, "p.yaml", policy(
        "metricSourceType: resource, targetMetric: cpu, targetValue: '100'"))  # fmt: skip
    daemon = await start_daemon(path)
    st = await policy_status(daemon, lambda p: p["ticks"] >= 3 and p["last_error"])
    for word in words:
        assert word in st["last_error"]
    assert st["metrics"] == {"cpu": None} and st["reason"] == "no-data"
    assert sandbox.scale_writes() == [], "no data never scales down (3 pods, load 0)"
    assert len(daemon.logs(lambda d: words[0] in d.get("event", ""))) == 1, "logged once"
    assert await daemon.stop() == 0


# -- custom / external API ---------------------------------------------------------------------


async def test_custom_metric_per_pod(tmp_path: Path, sandbox: Sandbox, start_daemon: Any) -> None:
    await web(sandbox, 1)
    sandbox.set_load(NS, NAME, "queue_depth", 40)
    path = write(tmp_path, "p.yaml", policy(
        "metricSourceType: custom, targetMetric: queue_depth, targetValue: '10'"))  # fmt: skip
    daemon = await start_daemon(path)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=15)
    assert await daemon.stop() == 0


async def test_custom_metric_the_adapter_does_not_serve_is_missing_with_a_fix(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await web(sandbox, 2)
    sandbox.set_load(NS, NAME, "queue_depth", 0)
    path = write(tmp_path, "p.yaml", policy(
        "metricSourceType: custom, targetMetric: queue_lenght, targetValue: '10'"))  # fmt: skip
    daemon = await start_daemon(path)
    st = await policy_status(daemon, lambda p: p["ticks"] >= 3 and p["last_error"])
    assert "not found" in st["last_error"] and "custom metrics adapter" in st["last_error"]
    assert st["reason"] == "no-data" and sandbox.scale_writes() == []
    assert await daemon.stop() == 0


async def test_hpa_cpu_without_requests_is_an_error_on_the_policy(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await web(sandbox, 2)  # no resources.requests
    sandbox.set_load(NS, NAME, "cpu", 50)
    path = write(tmp_path, "p.yaml", policy(
        "metricSourceType: resource, targetMetric: cpu, targetValue: '50'", strategy="HPA"))  # fmt: skip
    daemon = await start_daemon(path)
    st = await policy_status(daemon, lambda p: p["ticks"] >= 3 and p["last_error"])
    assert "resources.requests.cpu" in st["last_error"]
    assert st["metrics"] == {"cpu": None} and sandbox.scale_writes() == []
    assert await daemon.stop() == 0


async def test_external_api_sums_items_and_no_items_is_missing(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await web(sandbox, 1)
    ext = sandbox.metrics_apis
    ext.set_external(NS, "queue_messages", 30, {"queue": "jobs"})
    ext.set_external(NS, "queue_messages", 20, {"queue": "jobs", "shard": "2"})
    ext.set_external(NS, "queue_messages", 999, {"queue": "other"})
    source = "metricSourceType: external, targetMetric: 'queue_messages{queue=\"jobs\"}', targetValue: '10'"
    daemon = await start_daemon(write(tmp_path, "p.yaml", policy(source, strategy="HPA")))
    await sandbox.wait_for_spec_replicas(NS, NAME, 5, timeout=15)
    st = await policy_status(daemon, lambda p: p["metrics"]['queue_messages{queue="jobs"}'])
    assert st["metrics"] == {'queue_messages{queue="jobs"}': 50.0}

    ext.set_external(NS, "queue_messages", None, {"queue": "jobs"})
    ext.set_external(NS, "queue_messages", None, {"queue": "jobs", "shard": "2"})
    st = await policy_status(daemon, lambda p: "returned no items" in (p["last_error"] or ""))
    await policy_status(daemon, lambda p: p["ticks"] >= st["ticks"] + 3)
    assert sandbox.replicas(NS, NAME) == 5, "no items is missing data: never a scale-down"
    assert await daemon.stop() == 0


# -- external with endpoint, and domain --------------------------------------------------------


@pytest.mark.parametrize("source_type", ["external", "domain"])
async def test_external_endpoint_is_one_scrape_per_tick(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any, source_type: str
) -> None:
    await web(sandbox, 1)
    async with Page() as page:
        page.set("pending_requests", 30, gateway="a")
        source = (f"metricSourceType: {source_type}, protocolType: http, "
                  f"endpoint: '{page.address}', path: /metrics, "
                  "targetMetric: 'pending_requests{gateway=\"a\"}', targetValue: '10'")  # fmt: skip
        daemon = await start_daemon(write(tmp_path, "p.yaml", policy(source)))
        await sandbox.wait_for_spec_replicas(NS, NAME, 3, timeout=15)
        page.set("pending_requests", None, gateway="a")
        st = await policy_status(daemon, lambda p: "absent" in (p["last_error"] or "")
                                 or "not found" in (p["last_error"] or "")
                                 or "no series" in (p["last_error"] or ""))  # fmt: skip
        assert page.address in st["last_error"]
        assert sandbox.replicas(NS, NAME) == 3, "missing, never a scale-down"
        assert await daemon.stop() == 0


# -- prometheus ------------------------------------------------------------------------------


async def test_prometheus_query_against_the_real_server(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await web(sandbox, 1)
    async with Page() as page, PrometheusServer(tmp_path, [page.address]) as prom:
        page.set("inflight", 30, shard="a")
        page.set("inflight", 20, shard="b")
        await prom.wait_value("sum(inflight)", 50.0)
        source = (f"metricSourceType: prometheus, endpoint: '{prom.url}', "
                  "query: 'sum(inflight)', targetMetric: inflight, targetValue: '10'")  # fmt: skip
        wrong = source.replace("sum(inflight)", "inflight").replace(
            "targetMetric: inflight", "targetMetric: per_shard"
        )
        text = policy(source).replace(
            "    - {", f"    - {{{wrong}}}\n    - {{", 1)  # fmt: skip
        daemon = await start_daemon(write(tmp_path, "p.yaml", text))
        await sandbox.wait_for_spec_replicas(NS, NAME, 5, timeout=20)
        st = await policy_status(daemon, lambda p: p["metrics"].get("inflight") == 50.0)
        assert st["metrics"]["per_shard"] is None, "two series are not one number"
        assert any("returned 2 series" in e for e in st["errors"])

        page.set("inflight", None, shard="a")
        page.set("inflight", None, shard="b")
        st = await policy_status(daemon, lambda p: p["metrics"].get("inflight") is None,
                                 timeout=30)  # fmt: skip
        assert any("empty vector" in e for e in st["errors"])
        assert sandbox.replicas(NS, NAME) == 5, "an empty result is missing, never 0"
        assert await daemon.stop() == 0


# -- the demo, as a new user tries it from the README ------------------------------------------


@pytest.mark.parametrize("source", ["cpu", "prometheus"])
async def test_demo_with_another_source_scales(source: str) -> None:
    if source == "prometheus":
        prometheus_binary()
    text = await run_demo("--source", source, "--duration", "16", timeout=120)
    history = next(line for line in text.splitlines() if "replicas over time" in line)
    assert history.split(":", 1)[1].strip().startswith("1 -> "), text  # it scaled up
    assert "daemon exit code: 0" in text

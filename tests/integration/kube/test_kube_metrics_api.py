"""The metrics APIs through the real KubeClient against the sandbox's metrics.k8s.io,
custom.metrics.k8s.io and external.metrics.k8s.io (JSON shapes, discovery, errors)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from waiting import wait_for

from autoscalerd.kube import KubeClient
from autoscalerd.kube.errors import KubeForbidden, KubeNotFound, KubeUnavailable
from autoscalerd.kube.metrics_api import PodUsage
from autoscalerd.sandbox import Sandbox


def lists(sb: Sandbox) -> int:
    return sum(1 for r in sb.requests if r.path.startswith("/apis/metrics.k8s.io/"))


async def test_pod_metrics_sums_containers_in_aibrix_units(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=2, requests={"cpu": "250m"})
    sb.set_load("default", "web", "cpu", 600)  # 300m per pod
    sb.set_load("default", "web", "memory", 2 * 64 * 2**20)

    async def both_pods() -> dict[str, PodUsage] | None:
        usage = await kc.pod_metrics("default", now=asyncio.get_running_loop().time(), max_age=0)
        return dict(usage) if len(usage) == 2 else None  # a pod has metrics 1 s after Ready

    usage = await wait_for(both_pods, what="both pods have metrics")
    for u in usage.values():
        assert u.cpu_millis == pytest.approx(300.0)
        assert u.memory_bytes == 64 * 2**20


async def test_one_list_per_namespace_per_max_age_shared_by_concurrent_callers(
    sb: Sandbox, kc: KubeClient
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    now = 100.0
    before = lists(sb)
    results = await asyncio.gather(
        *(kc.pod_metrics("default", now=now + i * 0.1, max_age=1.0) for i in range(5))
    )
    assert lists(sb) - before == 1 and all(r == results[0] for r in results)
    await kc.pod_metrics("default", now=now + 1.0, max_age=1.0)
    await kc.pod_metrics("other", now=now + 1.0, max_age=1.0)
    assert lists(sb) - before == 3, "a new interval, another namespace: a new list each"


@pytest.mark.parametrize(
    ("status", "error"), [(403, KubeForbidden), (404, KubeNotFound), (503, KubeUnavailable)]
)
async def test_errors_are_typed_and_name_the_rule(
    sb: Sandbox, kc: KubeClient, status: int, error: type[Exception]
) -> None:
    sb.faults.add("GET", "/apis/metrics.k8s.io/.*", status=status, count=1)
    with pytest.raises(error) as info:
        await kc.pod_metrics("default", now=0.0, max_age=1.0)
    if status == 403:
        assert "apiGroups [metrics.k8s.io], resources [pods], verbs [list]" in str(info.value)


async def test_custom_and_external_metrics(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=2)
    await sb.add_deployment("default", "other", replicas=1)
    sb.set_load("default", "web", "queue_depth", 30)
    values = await kc.custom_pod_metric("default", "queue_depth", "app=web")
    assert sorted(values.values()) == [15.0, 15.0]
    with pytest.raises(KubeNotFound):
        await kc.custom_pod_metric("default", "no_such_metric", "app=web")

    sb.metrics_apis.set_external("default", "msgs", 7, {"queue": "a"})
    sb.metrics_apis.set_external("default", "msgs", 5, {"queue": "b"})
    assert sorted(await kc.external_metric("default", "msgs", "")) == [5.0, 7.0]
    assert await kc.external_metric("default", "msgs", "queue=a") == [7.0]
    assert await kc.external_metric("default", "msgs", "queue!=a") == [5.0]
    with pytest.raises(KubeNotFound):
        await kc.external_metric("default", "nope", "")


async def test_discovery_lists_the_three_groups(sb: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {sb.token}"}
    async with aiohttp.ClientSession(headers=headers) as s:

        async def get(path: str) -> Any:
            async with s.get(f"{sb.api_url}{path}", ssl=False) as r:
                return r.status, await r.json()

        _, groups = await get("/apis")
        names = {g["name"] for g in groups["groups"]}
        assert {"metrics.k8s.io", "custom.metrics.k8s.io", "external.metrics.k8s.io"} <= names
        _, res = await get("/apis/metrics.k8s.io/v1beta1")
        assert {r["name"]: r["kind"] for r in res["resources"]} == {
            "nodes": "NodeMetrics", "pods": "PodMetrics"}  # fmt: skip
        status, _ = await get("/apis/metrics.k8s.io/v2")
        assert status == 404


async def test_a_new_pod_has_no_metrics_at_first(sb: Sandbox, kc: KubeClient) -> None:
    sb.metrics_apis.delay_seconds = 30.0
    await sb.add_deployment("default", "web", replicas=1)
    assert await kc.pod_metrics("default", now=0.0, max_age=1.0) == {}
    sb.metrics_apis.delay_seconds = 0.0
    assert len(await kc.pod_metrics("default", now=5.0, max_age=1.0)) == 1

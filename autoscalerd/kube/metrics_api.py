"""The Kubernetes metrics APIs: `metrics.k8s.io`, `custom.metrics.k8s.io`, `external.metrics.k8s.io`.

```python
api = MetricsApi(transport)
usage = await api.pod_metrics("default", now=now, max_age=1.0)   # {pod: PodUsage}
values = await api.custom_pod_metric("default", "queue_depth", "app=web")   # {pod: value}
items = await api.external_metric("default", "queue_messages", "queue=jobs")  # [value, ...]
```

`pod_metrics` coalesces: ONE list per namespace per `max_age` (the scrape interval) is
shared by every policy of that namespace, whatever their tick phases; concurrent callers wait
on the same request. Every call has the transport's explicit timeout. Values are parsed as
Kubernetes quantities (cpu in millicores, memory in bytes, as AIbrix reads them); an item
that cannot be parsed is left out (that pod is then missing, never 0).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from autoscalerd.kube._transport import JSON, Transport
from autoscalerd.kube.errors import Op
from autoscalerd.kube.quantity import parse_quantity

__all__ = [
    "CUSTOM_METRICS",
    "EXTERNAL_METRICS",
    "RESOURCE_METRICS",
    "MetricsApi",
    "PodUsage",
    "custom_values",
    "external_values",
    "pod_usages",
]

RESOURCE_METRICS = "metrics.k8s.io"
CUSTOM_METRICS = "custom.metrics.k8s.io"
EXTERNAL_METRICS = "external.metrics.k8s.io"
VERSION = "v1beta1"


@dataclass(frozen=True, slots=True)
class PodUsage:
    """One pod's usage from its PodMetrics, summed over its containers."""

    cpu_millis: float
    memory_bytes: float


def pod_usages(doc: JSON) -> dict[str, PodUsage]:
    """A `PodMetricsList` → {pod name: usage}; items that do not parse are left out."""
    out: dict[str, PodUsage] = {}
    for item in doc.get("items") or []:
        try:
            name = str(item["metadata"]["name"])
            cpu = mem = 0.0
            for c in item.get("containers") or []:
                usage = c.get("usage") or {}
                cpu += parse_quantity(usage.get("cpu", "0")) * 1000.0
                mem += parse_quantity(usage.get("memory", "0"))
        except (KeyError, TypeError, ValueError):
            continue
        out[name] = PodUsage(cpu_millis=cpu, memory_bytes=mem)
    return out


def custom_values(doc: JSON) -> dict[str, float]:
    """A custom.metrics `MetricValueList` of pods → {pod name: value}."""
    out: dict[str, float] = {}
    for item in doc.get("items") or []:
        try:
            name = str(item["describedObject"]["name"])
            out[name] = out.get(name, 0.0) + parse_quantity(item["value"])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def external_values(doc: JSON) -> list[float]:
    """An `ExternalMetricValueList` → its values (AIbrix sums them)."""
    out: list[float] = []
    for item in doc.get("items") or []:
        try:
            out.append(parse_quantity(item["value"]))
        except (KeyError, TypeError, ValueError):
            continue
    return out


class MetricsApi:
    """Reads of the three metrics API groups through one `Transport` (explicit timeouts)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._pod_metrics: dict[str, tuple[float, asyncio.Future[dict[str, PodUsage]]]] = {}
        self.requests = 0
        """API requests made (for tests and the benchmark)."""

    async def pod_metrics(
        self, namespace: str, *, now: float, max_age: float
    ) -> Mapping[str, PodUsage]:
        """The namespace's PodMetrics; one list per `max_age` seconds of `now` time, shared.

        Raises `KubeError` (the same one to every caller of that list)."""
        entry = self._pod_metrics.get(namespace)
        if entry is None or now - entry[0] >= max_age or now < entry[0]:
            future = asyncio.ensure_future(self._list_pod_metrics(namespace))
            future.add_done_callback(_consume)
            entry = self._pod_metrics[namespace] = (now, future)
        return await asyncio.shield(entry[1])

    async def _list_pod_metrics(self, namespace: str) -> dict[str, PodUsage]:
        op = Op("list", "pods", "metrics.k8s.io", namespace)
        path = f"/apis/{RESOURCE_METRICS}/{VERSION}/namespaces/{quote(namespace)}/pods"
        return pod_usages(await self._get(op, path, {}))

    async def custom_pod_metric(
        self, namespace: str, metric: str, selector: str
    ) -> dict[str, float]:
        """`namespaces/NS/pods/*/METRIC?labelSelector=…` → {pod name: value}."""
        # The resources of these two groups are metric names (`pods/<metric>`, `<metric>`):
        # the rule that lets a reader read them is resources ["*"], as the HPA controller has.
        op = Op("get", "*", "custom.metrics.k8s.io", namespace)
        path = (
            f"/apis/{CUSTOM_METRICS}/{VERSION}/namespaces/{quote(namespace)}/pods/*/"
            f"{quote(metric, safe='')}"
        )
        return custom_values(await self._get(op, path, {"labelSelector": selector}))

    async def external_metric(
        self, namespace: str, metric: str, label_selector: str
    ) -> list[float]:
        """`namespaces/NS/METRIC?labelSelector=…` → the items' values."""
        op = Op("list", "*", "external.metrics.k8s.io", namespace)
        path = (
            f"/apis/{EXTERNAL_METRICS}/{VERSION}/namespaces/{quote(namespace)}/"
            f"{quote(metric, safe='')}"
        )
        query = {"labelSelector": label_selector} if label_selector else {}
        return external_values(await self._get(op, path, query))

    async def _get(self, op: Op, path: str, query: dict[str, str]) -> JSON:
        self.requests += 1
        api_client = self._t.api_client

        def do_get(**kwargs: Any) -> Awaitable[Any]:
            result: Awaitable[Any] = api_client.call_api(
                path,
                "GET",
                query_params=list(query.items()),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                **kwargs,
            )
            return result

        return await self._t.call(op, do_get)

    def close(self) -> None:
        for _, future in self._pod_metrics.values():
            future.cancel()
        self._pod_metrics.clear()


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a shared list's exception as retrieved (every caller gets it through shield)."""
    with contextlib.suppress(asyncio.CancelledError):
        future.exception()

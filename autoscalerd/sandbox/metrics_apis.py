"""The sandbox's metrics APIs: `metrics.k8s.io`, `custom.metrics.k8s.io`, `external.metrics.k8s.io`.

What metrics-server and a metrics adapter serve, with their JSON shapes and discovery, driven
by the sandbox's load model (`load.pod_metric_values`):

- `metrics.k8s.io/v1beta1` `PodMetrics`: each Ready pod's `cpu` load (millicores, served in
  nanocores as metrics-server does) and `memory` load (bytes, served in Ki), in one container.
  A pod appears only `delay_seconds` after it became Ready (metrics-server reports a pod
  after its first collection), so "pods without metrics yet" happen after every scale-up.
- `custom.metrics.k8s.io/v1beta1` `namespaces/NS/pods/*/METRIC?labelSelector=…`: a
  `MetricValueList` of the pods whose workload has a load for METRIC; 404 for a metric no
  workload of the namespace has (as prometheus-adapter answers).
- `external.metrics.k8s.io/v1beta1` `namespaces/NS/METRIC?labelSelector=…`: the series set
  with `set_external(namespace, metric, value, labels)`; 404 for an unknown metric.

Faults (`sandbox.faults`) apply to these paths as to every API path (403, 404, 503...).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .load import pod_metric_values
from .model import SimPod, Workload
from .selectors import SelectorError, matches, parse_label_selector

__all__ = ["GROUPS", "MetricsApis"]

RESOURCE = "metrics.k8s.io"
CUSTOM = "custom.metrics.k8s.io"
EXTERNAL = "external.metrics.k8s.io"
GROUPS = (RESOURCE, CUSTOM, EXTERNAL)
VERSION = "v1beta1"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found(message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "NotFound", "code": 404}  # fmt: skip
    return web.json_response(body, status=404)


def _bad_request(message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "BadRequest", "code": 400}  # fmt: skip
    return web.json_response(body, status=400)


@dataclass
class MetricsApis:
    """Serves the three groups for the workloads of one sandbox (`handles`/`handle` are the
    API server's routing hook; `groups()`/`resources()` its discovery)."""

    workloads: dict[tuple[str, str], Workload]
    delay_seconds: float = 1.0
    """How long after becoming Ready a pod has no PodMetrics yet."""
    external: dict[tuple[str, str], list[tuple[dict[str, str], float]]] = field(
        default_factory=dict
    )

    def set_external(
        self, namespace: str, metric: str, value: float | None, labels: Mapping[str, str] = {}
    ) -> None:
        """Set (None: remove) one series of an external metric."""
        series = [s for s in self.external.get((namespace, metric), []) if s[0] != dict(labels)]
        if value is not None:
            series.append((dict(labels), float(value)))
        self.external[(namespace, metric)] = series

    def handles(self, group: str) -> bool:
        return group in GROUPS

    def groups(self) -> list[dict[str, Any]]:
        gv = lambda g: {"groupVersion": f"{g}/{VERSION}", "version": VERSION}  # noqa: E731
        return [{"name": g, "versions": [gv(g)], "preferredVersion": gv(g)} for g in GROUPS]

    def resources(self, group: str, version: str) -> dict[str, Any] | None:
        if group not in GROUPS or version != VERSION:
            return None
        if group == RESOURCE:
            res = [
                {"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics",
                 "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics",
                 "verbs": ["get", "list"]},
            ]  # fmt: skip
        elif group == CUSTOM:
            names = sorted({m for wl in self.workloads.values() for m in wl.loads})
            res = [{"name": f"pods/{m}", "singularName": "", "namespaced": True,
                    "kind": "MetricValueList", "verbs": ["get"]} for m in names]  # fmt: skip
        else:
            names = sorted({m for _, m in self.external})
            res = [{"name": m, "singularName": "", "namespaced": True,
                    "kind": "ExternalMetricValueList", "verbs": ["get"]} for m in names]  # fmt: skip
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{VERSION}", "resources": res}  # fmt: skip

    async def handle(
        self, request: web.Request, group: str, version: str, tail: str
    ) -> web.StreamResponse:
        if version != VERSION or request.method != "GET":
            return _not_found("the server could not find the requested resource")
        parts = [p for p in tail.split("/") if p]
        try:
            reqs = parse_label_selector(request.query.get("labelSelector"))
        except SelectorError as exc:
            return _bad_request(str(exc))
        if len(parts) < 3 or parts[0] != "namespaces":
            return _not_found("the server could not find the requested resource")
        namespace, rest = parts[1], parts[2:]
        if group == RESOURCE and rest[0] == "pods" and len(rest) <= 2:
            found = [self._pod_metrics(p) for p in self._pods(namespace, reqs)]
            items = [i for i in found if i is not None]
            if len(rest) == 2:
                for item in items:
                    if item["metadata"]["name"] == rest[1]:
                        return web.json_response(item)
                return _not_found(f'podmetrics.metrics.k8s.io "{rest[1]}" not found')
            return web.json_response({"kind": "PodMetricsList", "apiVersion": f"{RESOURCE}/{VERSION}",
                                      "metadata": {}, "items": items})  # fmt: skip
        if group == CUSTOM and len(rest) == 3 and rest[0] == "pods":
            return self._custom(namespace, rest[1], rest[2], reqs)
        if group == EXTERNAL and len(rest) == 1:
            return self._external(namespace, rest[0], reqs)
        return _not_found("the server could not find the requested resource")

    def _pods(self, namespace: str, reqs: list[Any]) -> list[SimPod]:
        return [
            p
            for wl in self.workloads.values()
            if wl.namespace == namespace and matches(reqs, wl.labels)
            for p in wl.pods.values()
            if p.ready and not p.terminating
        ]

    def _pod_metrics(self, pod: SimPod) -> dict[str, Any] | None:
        if time.monotonic() - pod.created < pod.workload.startup_seconds + self.delay_seconds:
            return None  # no collection yet
        values = pod_metric_values(pod)
        cpu_nano = round(values.get("cpu", 0.0) * 1e6)
        mem_ki = round(values.get("memory", 0.0) / 1024)
        return {
            "kind": "PodMetrics",
            "apiVersion": f"{RESOURCE}/{VERSION}",
            "metadata": {"name": pod.name, "namespace": pod.namespace,
                         "labels": dict(pod.workload.labels), "creationTimestamp": _now()},
            "timestamp": _now(),
            "window": "15s",
            "containers": [{"name": pod.workload.name,
                            "usage": {"cpu": f"{cpu_nano}n", "memory": f"{mem_ki}Ki"}}],
        }  # fmt: skip

    def _custom(self, namespace: str, name: str, metric: str, reqs: list[Any]) -> web.Response:
        known = any(
            wl.namespace == namespace and metric in wl.loads for wl in self.workloads.values()
        )
        if not known:
            return _not_found(f"the server could not find the metric {metric} for pods")
        items = []
        for pod in self._pods(namespace, reqs):
            if name != "*" and pod.name != name:
                continue
            values = pod_metric_values(pod)
            if metric not in values:
                continue
            items.append({
                "describedObject": {"kind": "Pod", "namespace": namespace, "name": pod.name,
                                    "apiVersion": "/v1"},
                "metricName": metric,
                "timestamp": _now(),
                "value": f"{round(values[metric] * 1000)}m",
                "selector": None,
            })  # fmt: skip
        return web.json_response({"kind": "MetricValueList", "apiVersion": f"{CUSTOM}/{VERSION}",
                                  "metadata": {}, "items": items})  # fmt: skip

    def _external(self, namespace: str, metric: str, reqs: list[Any]) -> web.Response:
        series = self.external.get((namespace, metric))
        if series is None:
            return _not_found(f'the server could not find the external metric "{metric}"')
        items = [
            {"metricName": metric, "metricLabels": labels, "timestamp": _now(),
             "value": f"{round(value * 1000)}m"}
            for labels, value in series
            if matches(reqs, labels)
        ]  # fmt: skip
        return web.json_response({"kind": "ExternalMetricValueList",
                                  "apiVersion": f"{EXTERNAL}/{VERSION}", "metadata": {},
                                  "items": items})  # fmt: skip

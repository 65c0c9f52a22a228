"""The sandbox's pure parts: the Kubernetes JSON of workloads and pods, and the load
model, on hand-built workloads (no server, no loop)."""

from __future__ import annotations

from typing import Any

import pytest

from autoscalerd.sandbox import objects
from autoscalerd.sandbox.apiserver import DEPLOYMENTS, REPLICASETS, STATEFULSETS
from autoscalerd.sandbox.load import metrics_page, pod_metric_values
from autoscalerd.sandbox.model import KIND_TYPES, MetricsEndpoint, SimPod, Workload
from autoscalerd.sandbox.store import ResourceType


def workload(kind: str = "Deployment", pods: int = 0, ready: int = 0) -> Workload:
    wl = Workload(kind, KIND_TYPES[kind], "ns", "web", {"app": "web"}, MetricsEndpoint(), 0.0)
    wl.template_hash, wl.rs_name = "abc", "web-abc"
    for i in range(pods):
        wl.pods[f"web-{i}"] = SimPod(wl, f"web-{i}", i, phase="Running", ready=i < ready)
    return wl


def stored(wl: Workload, replicas: int) -> dict[str, Any]:
    """The workload's object as the store holds it after a few spec writes."""
    obj = objects.workload_object(wl, replicas)
    obj["metadata"]["generation"] = 3
    return obj


def test_deployment_status_counts_pods_and_omits_zero_counts() -> None:
    wl = workload(pods=2, ready=0)
    status = objects.workload_status(wl, DEPLOYMENTS, stored(wl, 3))
    assert status["replicas"] == 2 and status["updatedReplicas"] == 2
    assert status["unavailableReplicas"] == 3 and status["observedGeneration"] == 3
    assert "readyReplicas" not in status and "availableReplicas" not in status
    assert status["conditions"][0]["status"] == "False"


@pytest.mark.parametrize(
    ("rtype", "only"), [(STATEFULSETS, "currentReplicas"), (REPLICASETS, "fullyLabeledReplicas")]
)
def test_statefulset_and_replicaset_status_fields(rtype: ResourceType, only: str) -> None:
    wl = workload("StatefulSet" if rtype is STATEFULSETS else "ReplicaSet", pods=2, ready=2)
    status = objects.workload_status(wl, rtype, stored(wl, 2))
    assert status[only] == 2 and status["readyReplicas"] == 2
    assert "unavailableReplicas" not in status and "conditions" not in status


def test_widget_status_is_replicas_and_selector() -> None:
    wl = workload("Widget", pods=1, ready=1)
    status = objects.workload_status(wl, wl.rtype, stored(wl, 1))
    assert status == {"replicas": 1, "selector": "app=web"}


def test_replicaset_of_a_deployment_selects_by_template_hash() -> None:
    wl = workload()
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "uid": "u1"}}
    rs = objects.workload_object(wl, 2, rs_of=dep)
    assert rs["metadata"]["name"] == "web-abc"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": "abc"}
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "u1"


def test_statefulset_pod_labels_and_running_status() -> None:
    wl = workload("StatefulSet", pods=1, ready=1)
    owner = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "uid": "u"},
    }
    pod = objects.pod_object(wl, "web-0", 0, owner)
    assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "0"
    assert pod["status"]["phase"] == "Pending"
    sim = wl.pods["web-0"]
    sim.ip = "127.1.0.2"
    status = objects.pod_status(sim)
    assert status["podIP"] == "127.1.0.2" and status["containerStatuses"][0]["ready"] is True
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def test_load_is_spread_over_ready_pods_unless_overridden() -> None:
    wl = workload(pods=3, ready=2)
    wl.loads["go_threads"] = 30.0
    wl.pod_values[("web-1", "go_threads")] = 7.0
    values = [pod_metric_values(p)["go_threads"] for p in wl.pods.values()]
    assert values == [15.0, 7.0, 0.0]  # web-2 is not Ready
    assert "go_threads 15" in metrics_page(wl.pods["web-0"])

"""The Kubernetes JSON of the simulated objects: workloads, their ReplicaSet, pods, and
the status the controller writes back. Pure functions of the model (and of the clock,
for timestamps); the controller stores what they return."""

from __future__ import annotations

import copy
import random
from typing import Any

from .apiserver import DEPLOYMENTS, REPLICASETS, STATEFULSETS
from .model import SimPod, Workload
from .store import ResourceType, now_rfc3339

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def rand_suffix(n: int) -> str:
    """A random name suffix from the alphabet Kubernetes uses for generated names."""
    return "".join(random.choice(_HASH_ALPHABET) for _ in range(n))


def container(wl: Workload) -> dict[str, Any]:
    """The one container of a workload's pod template (and of its pods)."""
    container: dict[str, Any] = {
        "name": wl.name,
        "image": f"registry.example/{wl.name}:sandbox",
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": dict(wl.requests)} if wl.requests else {},
    }
    if wl.metrics is not None:
        container["ports"] = [
            {
                "name": "https" if wl.metrics.tls != "plain" else "http",
                "containerPort": wl.metrics.port,
                "protocol": "TCP",
            }
        ]
    return container


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def workload_object(
    wl: Workload, replicas: int, rs_of: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The workload's object as created (or, with ``rs_of`` = its Deployment, the
    Deployment's ReplicaSet)."""
    pod_labels = dict(wl.labels)
    selector: dict[str, Any] = {"matchLabels": dict(wl.labels)}
    meta: dict[str, Any] = {
        "name": wl.name,
        "namespace": wl.namespace,
        "labels": dict(wl.labels),
    }
    annotations = {}
    if rs_of is not None:
        pod_labels["pod-template-hash"] = wl.template_hash
        selector["matchLabels"]["pod-template-hash"] = wl.template_hash
        meta["name"] = wl.rs_name
        meta["labels"] = dict(pod_labels)
        meta["ownerReferences"] = [owner_ref(rs_of)]
        annotations["deployment.kubernetes.io/revision"] = "1"
    elif wl.kind == "Deployment":
        annotations["deployment.kubernetes.io/revision"] = "1"
    if annotations:
        meta["annotations"] = annotations
    template = {"metadata": {"labels": pod_labels}, "spec": {"containers": [container(wl)]}}
    spec: dict[str, Any] = {"replicas": replicas}
    if wl.kind == "Widget":
        spec["selector"] = selector
        spec["template"] = template
        status: dict[str, Any] = {"replicas": 0, "selector": wl.selector}
    else:
        spec["selector"] = selector
        spec["template"] = template
        status = {
            "replicas": 0,
            "readyReplicas": 0,
            "availableReplicas": 0,
            "observedGeneration": 1,
        }
        if wl.kind == "Deployment" and rs_of is None:
            spec["strategy"] = {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            }
            spec["revisionHistoryLimit"] = 10
            spec["progressDeadlineSeconds"] = 600
        if wl.kind == "StatefulSet":
            spec["serviceName"] = wl.name
            spec["podManagementPolicy"] = "Parallel"
    return {"metadata": meta, "spec": spec, "status": status}


def workload_status(wl: Workload, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """A new status for ``obj`` (of type ``rtype``: the workload's object, or its
    Deployment's ReplicaSet) that counts the workload's pods as they are now."""
    live = wl.live_pods()
    ready = len(wl.ready_pods())
    status = copy.deepcopy(obj.get("status") or {})
    status["replicas"] = len(live)
    if wl.kind == "Widget":
        status["selector"] = wl.selector
        return status
    status["readyReplicas"] = ready
    status["availableReplicas"] = ready
    status["observedGeneration"] = obj["metadata"].get("generation", 1)
    if rtype is DEPLOYMENTS:
        status["updatedReplicas"] = len(live)
        status["unavailableReplicas"] = max(0, obj["spec"].get("replicas", 1) - ready)
        status["conditions"] = [
            {
                "type": "Available",
                "status": "True" if ready >= 1 or not live else "False",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            }
        ]
    if rtype is STATEFULSETS:
        status["currentReplicas"] = len(live)
        status["updatedReplicas"] = len(live)
    if rtype is REPLICASETS:
        status["fullyLabeledReplicas"] = len(live)
    for k in ("readyReplicas", "availableReplicas", "unavailableReplicas"):
        if status.get(k) == 0:
            status.pop(k)  # zero values are omitted in the real API
    return status


def pod_object(wl: Workload, name: str, ordinal: int, owner: dict[str, Any]) -> dict[str, Any]:
    """A new pod of the workload, Pending, owned by ``owner``."""
    labels = dict(wl.labels)
    if wl.kind == "Deployment":
        labels["pod-template-hash"] = wl.template_hash
    if wl.kind == "StatefulSet":
        labels["statefulset.kubernetes.io/pod-name"] = name
        labels["apps.kubernetes.io/pod-index"] = str(ordinal)
    return {
        "metadata": {
            "name": name,
            "namespace": wl.namespace,
            "labels": labels,
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": {
            "containers": [container(wl)],
            "nodeName": "sandbox-node",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "serviceAccountName": "default",
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}
            ],
            "qosClass": "BestEffort",
        },
    }


def pod_status(pod: SimPod) -> dict[str, Any]:
    """The pod's status as the kubelet would report it now."""
    ts = now_rfc3339()
    ready = "True" if pod.ready else "False"
    status: dict[str, Any] = {
        "phase": pod.phase,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": ts},
            {"type": "Ready", "status": ready, "lastTransitionTime": ts},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": ts},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts},
        ],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "qosClass": "BestEffort",
        "startTime": ts,
    }
    if pod.ip:
        status["podIP"] = pod.ip
        status["podIPs"] = [{"ip": pod.ip}]
    if pod.phase == "Running":
        status["containerStatuses"] = [
            {
                "name": pod.workload.name,
                "image": f"registry.example/{pod.workload.name}:sandbox",
                "imageID": "registry.example/sandbox@sha256:" + "0" * 64,
                "containerID": "containerd://" + pod.name.encode().hex()[:64],
                "ready": pod.ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": ts}},
            }
        ]
    return status

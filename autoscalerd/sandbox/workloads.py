"""The sandbox's controller: creates workloads, and keeps each one's pods (and their
lifecycle: Pending, Running, Ready, terminating, gone) in line with ``spec.replicas``,
as the Deployment, ReplicaSet and StatefulSet controllers and the kubelet would."""

from __future__ import annotations

import asyncio
import contextlib
import time

from . import objects
from .apiserver import DEPLOYMENTS, PODS, REPLICASETS
from .endpoints import PodEndpoints
from .metrics_page import build_filler, family_name
from .model import KIND_TYPES, MetricsEndpoint, SimPod, Workload, WorkloadKind
from .store import ResourceType, Store, now_rfc3339
from .tasks import TaskSet


class Workloads:
    """The workloads by (namespace, name), and the pods' lifecycle."""

    def __init__(
        self,
        store: Store,
        endpoints: PodEndpoints,
        tasks: TaskSet,
        workloads: dict[tuple[str, str], Workload],
        deletion_grace_seconds: float,
    ) -> None:
        self.store = store
        self.endpoints = endpoints
        self._tasks = tasks
        self.workloads = workloads
        self.deletion_grace_seconds = deletion_grace_seconds

    def create(
        self,
        kind: WorkloadKind,
        namespace: str,
        name: str,
        replicas: int,
        labels: dict[str, str] | None,
        metrics: MetricsEndpoint | None,
        startup_seconds: float,
        requests: dict[str, str] | None = None,
    ) -> Workload:
        """Create the workload's object (and a Deployment's ReplicaSet) and start its
        pods; does not wait for them."""
        if (namespace, name) in self.workloads:
            raise ValueError(f"workload {namespace}/{name} exists")
        rtype = KIND_TYPES[kind]
        labels = dict(labels or {"app": name})
        wl = Workload(kind, rtype, namespace, name, labels, metrics, startup_seconds)
        wl.requests = dict(requests or {})
        wl.template_hash = objects.rand_suffix(10)
        self.endpoints.prepare_tls(wl)
        if metrics is not None:
            exclude = {family_name(metrics.metric)}
            wl._head, wl._tail = build_filler(metrics.page_size_bytes, exclude)
            wl.loads[metrics.metric] = 0.0
        self.workloads[(namespace, name)] = wl
        self.store.create(rtype, objects.workload_object(wl, replicas))
        if kind == "Deployment":
            wl.rs_name = f"{name}-{wl.template_hash}"
            dep = self.store.peek(DEPLOYMENTS, namespace, name)
            assert dep is not None
            rs = objects.workload_object(wl, replicas, rs_of=dep)
            self.store.create(REPLICASETS, rs)
        wl.history.append((time.time(), replicas))
        self._reconcile(wl)
        return wl

    def get(self, namespace: str, name: str) -> Workload:
        try:
            return self.workloads[(namespace, name)]
        except KeyError:
            raise KeyError(f"no workload {namespace}/{name} in the sandbox") from None

    def replicas(self, namespace: str, name: str) -> int:
        """The workload's ``spec.replicas``."""
        wl = self.get(namespace, name)
        obj = self.store.peek(wl.rtype, namespace, name)
        assert obj is not None
        return int(obj["spec"].get("replicas", 1))

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set ``spec.replicas`` like ``kubectl scale``."""
        wl = self.get(namespace, name)
        obj = self.store.get(wl.rtype, namespace, name)
        assert obj is not None
        obj["spec"]["replicas"] = replicas
        self.store.replace(wl.rtype, obj)
        self.on_spec(wl.rtype, namespace, name)

    def on_spec(self, rtype: ResourceType, namespace: str, name: str) -> None:
        """The API server's hook: a workload's spec was written."""
        wl = self.workloads.get((namespace, name))
        if wl is None or wl.rtype is not rtype:
            return
        replicas = self.replicas(namespace, name)
        if not wl.history or wl.history[-1][1] != replicas:
            wl.history.append((time.time(), replicas))
        if wl.kind == "Deployment" and wl.rs_name:
            rs = self.store.get(REPLICASETS, namespace, wl.rs_name)
            if rs is not None and rs["spec"].get("replicas") != replicas:
                rs["spec"]["replicas"] = replicas
                self.store.replace(REPLICASETS, rs)
        self._reconcile(wl)

    def _reconcile(self, wl: Workload) -> None:
        desired = self.replicas(wl.namespace, wl.name)
        live = wl.live_pods()
        if len(live) < desired:
            for _ in range(desired - len(live)):
                pod = self._create_pod(wl)
                pod._task = self._tasks.spawn(self._run_pod(pod))
        elif len(live) > desired:
            if wl.kind == "StatefulSet":
                victims = sorted(live, key=lambda p: -p.ordinal)
            else:  # not-ready first, then newest first, as ReplicaSets choose
                victims = sorted(live, key=lambda p: (p.ready, -p.created))
            for pod in victims[: len(live) - desired]:
                pod.terminating = True
                self._tasks.spawn(self._delete_pod(pod))
        self._update_status(wl)

    def _create_pod(self, wl: Workload) -> SimPod:
        if wl.kind == "StatefulSet":
            used = {p.ordinal for p in wl.pods.values()}
            ordinal = 0
            while ordinal in used:
                ordinal += 1
            name = f"{wl.name}-{ordinal}"
        else:
            ordinal = wl._next_ordinal
            prefix = wl.rs_name or wl.name
            name = f"{prefix}-{objects.rand_suffix(5)}"
            while name in wl.pods:
                name = f"{prefix}-{objects.rand_suffix(5)}"
        wl._next_ordinal += 1
        pod = SimPod(wl, name, ordinal)
        wl.pods[name] = pod
        if wl.kind == "Deployment":
            owner = self.store.peek(REPLICASETS, wl.namespace, wl.rs_name or "")
        else:
            owner = self.store.peek(wl.rtype, wl.namespace, wl.name)
        assert owner is not None
        self.store.create(PODS, objects.pod_object(wl, name, ordinal, owner))
        return pod

    def _write_pod(self, pod: SimPod, deleting: bool = False) -> None:
        obj = self.store.get(PODS, pod.namespace, pod.name)
        if obj is None:
            return
        obj["status"] = objects.pod_status(pod)
        if deleting:
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 30
        self.store.replace(PODS, obj)

    async def _run_pod(self, pod: SimPod) -> None:
        await asyncio.sleep(0)
        wl = pod.workload
        pod.ip = await self.endpoints.start(pod)
        pod.phase = "Running"
        pod.ready = wl.startup_seconds <= 0
        self._write_pod(pod)
        self._update_status(wl)
        if not pod.ready:
            await asyncio.sleep(wl.startup_seconds)
            pod.ready = True
            self._write_pod(pod)
            self._update_status(wl)

    async def _delete_pod(self, pod: SimPod) -> None:
        wl = pod.workload
        if pod._task is not None and not pod._task.done():
            pod._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pod._task
        pod.terminating = True
        pod.ready = False
        self._write_pod(pod, deleting=True)
        self._update_status(wl)
        await self.endpoints.stop(pod)
        await asyncio.sleep(self.deletion_grace_seconds)
        self.store.delete(PODS, pod.namespace, pod.name)
        wl.pods.pop(pod.name, None)
        if pod.ip:
            self.endpoints.release_ip(pod.ip)
        self._update_status(wl)

    def _update_status(self, wl: Workload) -> None:
        targets = [(wl.rtype, wl.name)]
        if wl.kind == "Deployment" and wl.rs_name:
            targets.append((REPLICASETS, wl.rs_name))
        for rtype, name in targets:
            obj = self.store.get(rtype, wl.namespace, name)
            if obj is None:
                continue
            status = objects.workload_status(wl, rtype, obj)
            if status != obj.get("status"):
                obj["status"] = status
                self.store.replace(rtype, obj)

    async def stop(self) -> None:
        """Stop every pod's metrics server (the tasks are cancelled before)."""
        pods = [p for wl in self.workloads.values() for p in wl.pods.values()]
        await asyncio.gather(*(self.endpoints.stop(p) for p in pods), return_exceptions=True)

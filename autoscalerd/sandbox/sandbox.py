"""The Sandbox: API server, simulated workloads and pods, kubeconfig."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import random
import secrets
import socket
import ssl
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
import trustme
import yaml
from aiohttp import web

from . import certs
from .apiserver import (
    CORE_EVENTS,
    DEPLOYMENTS,
    EVENTS_V1,
    LEASES,
    PODS,
    REPLICASETS,
    STATEFULSETS,
    WIDGETS,
    ApiServer,
    RequestRecord,
    WriteRecord,
)
from .faults import Faults, PodFault
from .metrics_page import build_filler, family_name, render_series
from .selectors import selector_to_string
from .store import ResourceType, Store, now_rfc3339

log = structlog.get_logger("autoscalerd.sandbox")

TlsMode = Literal["plain", "self-signed", "ca", "mtls"]
WorkloadKind = Literal["Deployment", "StatefulSet", "ReplicaSet", "Widget"]
_KIND_TYPES: dict[str, ResourceType] = {
    "Deployment": DEPLOYMENTS,
    "StatefulSet": STATEFULSETS,
    "ReplicaSet": REPLICASETS,
    "Widget": WIDGETS,
}
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _container(wl: Workload) -> dict[str, Any]:
    """The one container of a workload's pod template (and of its pods)."""
    container: dict[str, Any] = {
        "name": wl.name,
        "image": f"registry.example/{wl.name}:sandbox",
        "imagePullPolicy": "IfNotPresent",
        "resources": {},
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


def _rand(n: int) -> str:
    return "".join(random.choice(_HASH_ALPHABET) for _ in range(n))


@dataclass(frozen=True)
class MetricsEndpoint:
    """How a workload's pods serve their metrics.

    ``tls``: ``plain`` HTTP; ``self-signed`` (a certificate for ``localhost`` from a CA of
    the workload's own that nobody is given, like metrics-server); ``ca`` (signed by the
    sandbox metrics CA, for the DNS name ``server_name`` only, so clients that connect by
    IP must send that name; ``ip_sans=True`` adds each pod's IP); ``mtls`` (like ``ca``
    and the client must present a certificate from the metrics CA).
    ``token_required``: answer 401 without ``Authorization: Bearer``, 403 for a wrong
    token. ``page_size_bytes``: pad the page with realistic series to about that size."""

    port: int = 10250
    path: str = "/metrics"
    tls: TlsMode = "self-signed"
    token_required: bool = False
    metric: str = "go_threads"
    page_size_bytes: int = 0
    server_name: str | None = None
    ip_sans: bool = False

    @property
    def scheme(self) -> str:
        return "http" if self.tls == "plain" else "https"


@dataclass(eq=False)
class SimPod:
    """A simulated pod. ``url`` is its metrics URL once it runs."""

    workload: Workload = field(repr=False)
    name: str = ""
    ordinal: int = 0
    ip: str | None = None
    phase: str = "Pending"
    ready: bool = False
    terminating: bool = False
    requests: int = 0  # requests its metrics endpoint received
    created: float = field(default_factory=time.monotonic)
    _runner: web.ServerRunner | None = field(default=None, repr=False)
    _site: web.TCPSite | None = field(default=None, repr=False)
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def namespace(self) -> str:
        return self.workload.namespace

    @property
    def listening(self) -> bool:
        return self._site is not None

    @property
    def url(self) -> str | None:
        ep = self.workload.metrics
        if ep is None or self.ip is None:
            return None
        return f"{ep.scheme}://{self.ip}:{ep.port}{ep.path}"


@dataclass(eq=False)
class Workload:
    """A scale target and its pods. TLS material for scraping its pods:
    ``ca_file`` (the CA to verify with, None for plain/self-signed), ``server_name``,
    ``client_cert_file``/``client_key_file`` (mTLS), ``token``/``token_file``."""

    kind: str
    rtype: ResourceType
    namespace: str
    name: str
    labels: dict[str, str]
    metrics: MetricsEndpoint | None
    startup_seconds: float
    pods: dict[str, SimPod] = field(default_factory=dict, repr=False)
    loads: dict[str, float] = field(default_factory=dict)
    pod_values: dict[tuple[str, str], float] = field(default_factory=dict)
    history: list[tuple[float, int]] = field(default_factory=list)  # (time.time(), replicas)
    ca_file: Path | None = None
    server_name: str | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    token: str | None = None
    token_file: Path | None = None
    self_signed_cert_file: Path | None = None
    rs_name: str | None = None
    template_hash: str = ""
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)
    _cert_dir: Path | None = field(default=None, repr=False)
    _head: str = field(default="", repr=False)
    _tail: str = field(default="", repr=False)
    _next_ordinal: int = 0

    @property
    def selector(self) -> str:
        """The label selector of its pods as a string (what /scale status.selector says)."""
        return selector_to_string({"matchLabels": self.labels})

    def live_pods(self) -> list[SimPod]:
        return [p for p in self.pods.values() if not p.terminating]

    def ready_pods(self) -> list[SimPod]:
        return [p for p in self.pods.values() if p.ready and not p.terminating]


class Sandbox:
    """See the package docstring."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        ip_base: str | None = None,
        api_host: str = "127.0.0.1",
        api_port: int = 0,
        token: str | None = None,
        deletion_grace_seconds: float = 0.2,
        watch_timeout_seconds: float = 1800.0,
        bookmark_interval_seconds: float = 5.0,
        history_size: int = 2000,
    ) -> None:
        if not api_host.startswith("127."):
            raise ValueError("the sandbox listens on loopback only")
        self.workdir = Path(workdir).resolve()
        if ip_base is None:
            ip_base = f"127.{random.randint(16, 250)}"
        octets = ip_base.strip(".").split(".")
        if octets[0] != "127" or len(octets) not in (2, 3) or not all(o.isdigit() for o in octets):
            raise ValueError("ip_base must be 127.X or 127.X.Y")
        self.ip_base = ".".join(octets)
        self.api_host = api_host
        self.api_port = api_port
        self.token = token or secrets.token_urlsafe(24)
        self.deletion_grace_seconds = deletion_grace_seconds
        self.store = Store(history_size)
        self.faults = Faults(self)
        self._api = ApiServer(
            self.store,
            self.faults,
            self.token,
            self._on_workload_spec,
            watch_timeout_seconds,
            bookmark_interval_seconds,
        )
        self.workloads: dict[tuple[str, str], Workload] = {}
        self._ips = self._ip_candidates()
        self._ips_in_use: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self.token_file = self.workdir / "token"
        self.serviceaccount_dir = self.workdir / "serviceaccount"
        pki = self.workdir / "pki"
        self.api_ca_file = pki / "api-ca.crt"
        self.api_client_cert_file = pki / "api-client.crt"
        self.api_client_key_file = pki / "api-client.key"
        self.metrics_ca_file = pki / "metrics-ca.crt"
        self.metrics_client_cert_file = pki / "metrics-client.crt"
        self.metrics_client_key_file = pki / "metrics-client.key"

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        self._api_ca = trustme.CA(organization_name="autoscalerd sandbox API")
        certs.write_ca(self._api_ca, self.api_ca_file)
        server = certs.issue(
            self._api_ca, pki, "api-server", "127.0.0.1", "localhost", self.api_host
        )
        client = certs.issue(
            self._api_ca, pki, "api-client", "sandbox-admin", common_name="sandbox-admin"
        )
        assert client.cert_file == self.api_client_cert_file
        self._metrics_ca = trustme.CA(organization_name="autoscalerd sandbox metrics")
        certs.write_ca(self._metrics_ca, self.metrics_ca_file)
        certs.issue(
            self._metrics_ca, pki, "metrics-client", "autoscalerd", common_name="autoscalerd"
        )
        ctx = certs.server_context(server, client_ca=self.api_ca_file)
        await self._api.start(self.api_host, self.api_port, ctx)
        self.serviceaccount_dir.mkdir(parents=True, exist_ok=True)
        (self.serviceaccount_dir / "ca.crt").write_bytes(self.api_ca_file.read_bytes())
        (self.serviceaccount_dir / "namespace").write_text("kube-system")
        self._write_token_files()
        self._write_kubeconfig()
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._api.stop()
        pods = [p for wl in self.workloads.values() for p in wl.pods.values()]
        await asyncio.gather(*(self._stop_endpoint(p) for p in pods), return_exceptions=True)

    def _write_token_files(self) -> None:
        for path in (self.token_file, self.serviceaccount_dir / "token"):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(self.token)
            tmp.chmod(0o600)
            tmp.replace(path)  # atomic, like the kubelet's projected volume update

    def rotate_token(self, grace_seconds: float = 0.0) -> str:
        """Issue a new bearer token (written to ``token_file``, the service-account
        ``token`` and the kubeconfig's static user); the old one stays valid for
        ``grace_seconds`` and then answers 401. Returns the new token."""
        old = self.token
        self.token = secrets.token_urlsafe(24)
        self._api.tokens[self.token] = None
        self._api.tokens[old] = time.monotonic() + grace_seconds
        self._write_token_files()
        self._write_kubeconfig()
        return self.token

    def incluster_env(self) -> dict[str, str]:
        """The environment a pod would have (``KUBERNETES_SERVICE_HOST``/``_PORT``); the
        service-account files (token, ca.crt, namespace) are in ``serviceaccount_dir``."""
        return {
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(self._api.port),
        }

    @property
    def api_url(self) -> str:
        return f"https://{self.api_host}:{self._api.port}"

    @property
    def api_request_count(self) -> int:
        """How many requests the API server received (all verbs, also failed ones)."""
        return self._api.requests

    @property
    def requests(self) -> list[RequestRecord]:
        """The last 20,000 API requests (method, path, query, status), oldest first."""
        return list(self._api.request_log)

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now."""
        return len(self.store.watchers)

    @property
    def writes(self) -> list[WriteRecord]:
        """Every write request (POST/PUT/PATCH/DELETE) the API received, in order."""
        return list(self._api.writes)

    def scale_writes(
        self, namespace: str | None = None, name: str | None = None
    ) -> list[WriteRecord]:
        """The writes to a ``/scale`` subresource (optionally of one target)."""
        out = []
        for w in self._api.writes:
            parts = w.path.strip("/").split("/")
            if parts[-1] != "scale":
                continue
            if namespace is not None and parts[-4] != namespace:
                continue
            if name is not None and parts[-2] != name:
                continue
            out.append(w)
        return out

    @property
    def events(self) -> list[dict[str, Any]]:
        """Events recorded, core/v1 and events.k8s.io/v1 together, oldest first."""
        items = self.store.list(CORE_EVENTS) + self.store.list(EVENTS_V1)
        return sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def event_reasons(self, namespace: str | None = None, name: str | None = None) -> list[str]:
        """Reasons of the events about an object (``involvedObject``/``regarding``)."""
        out = []
        for ev in self.events:
            ref = ev.get("involvedObject") or ev.get("regarding") or {}
            if (
                namespace is not None
                and ref.get("namespace", ev["metadata"].get("namespace")) != namespace
            ):
                continue
            if name is not None and ref.get("name") != name:
                continue
            out.append(ev.get("reason", ""))
        return out

    @property
    def leases(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o for o in self.store.list(LEASES)
        }

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.get(LEASES, namespace, name)

    # -- workloads ---------------------------------------------------------------------
    async def add_deployment(
        self,
        namespace: str,
        name: str,
        replicas: int = 1,
        *,
        labels: dict[str, str] | None = None,
        metrics: MetricsEndpoint | None = None,
        startup_seconds: float = 0.0,
        wait_ready: bool = True,
    ) -> Workload:
        """A Deployment (with its ReplicaSet) of ``replicas`` pods labelled ``labels``
        (default ``{"app": name}``). Returns once the pods are Ready when ``wait_ready``."""
        return await self.add_workload(
            "Deployment", namespace, name, replicas, labels=labels, metrics=metrics,
            startup_seconds=startup_seconds, wait_ready=wait_ready,
        )  # fmt: skip

    async def add_statefulset(
        self, namespace: str, name: str, replicas: int = 1, **kw: Any
    ) -> Workload:
        return await self.add_workload("StatefulSet", namespace, name, replicas, **kw)

    async def add_replicaset(
        self, namespace: str, name: str, replicas: int = 1, **kw: Any
    ) -> Workload:
        return await self.add_workload("ReplicaSet", namespace, name, replicas, **kw)

    async def add_widget(self, namespace: str, name: str, replicas: int = 1, **kw: Any) -> Workload:
        """A custom resource ``widgets.example.com/v1`` with a /scale subresource."""
        return await self.add_workload("Widget", namespace, name, replicas, **kw)

    async def add_workload(
        self,
        kind: WorkloadKind,
        namespace: str,
        name: str,
        replicas: int = 1,
        *,
        labels: dict[str, str] | None = None,
        metrics: MetricsEndpoint | None = None,
        startup_seconds: float = 0.0,
        wait_ready: bool = True,
    ) -> Workload:
        if (namespace, name) in self.workloads:
            raise ValueError(f"workload {namespace}/{name} exists")
        rtype = _KIND_TYPES[kind]
        labels = dict(labels or {"app": name})
        wl = Workload(kind, rtype, namespace, name, labels, metrics, startup_seconds)
        wl.template_hash = _rand(10)
        self._prepare_tls(wl)
        if metrics is not None:
            exclude = {family_name(metrics.metric)}
            wl._head, wl._tail = build_filler(metrics.page_size_bytes, exclude)
            wl.loads[metrics.metric] = 0.0
        self.workloads[(namespace, name)] = wl
        self.store.create(rtype, self._workload_object(wl, replicas))
        if kind == "Deployment":
            wl.rs_name = f"{name}-{wl.template_hash}"
            dep = self.store.peek(DEPLOYMENTS, namespace, name)
            assert dep is not None
            rs = self._workload_object(wl, replicas, rs_of=dep)
            self.store.create(REPLICASETS, rs)
        wl.history.append((time.time(), replicas))
        self._reconcile(wl)
        if wait_ready:
            await self.wait_for_replicas(namespace, name, replicas, timeout=startup_seconds + 30)
        return wl

    def _workload_object(
        self, wl: Workload, replicas: int, rs_of: dict[str, Any] | None = None
    ) -> dict[str, Any]:
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
            meta["ownerReferences"] = [self._owner_ref(rs_of)]
            annotations["deployment.kubernetes.io/revision"] = "1"
        elif wl.kind == "Deployment":
            annotations["deployment.kubernetes.io/revision"] = "1"
        if annotations:
            meta["annotations"] = annotations
        container = _container(wl)
        template = {"metadata": {"labels": pod_labels}, "spec": {"containers": [container]}}
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

    @staticmethod
    def _owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _workload(self, namespace: str, name: str) -> Workload:
        try:
            return self.workloads[(namespace, name)]
        except KeyError:
            raise KeyError(f"no workload {namespace}/{name} in the sandbox") from None

    def replicas(self, namespace: str, name: str) -> int:
        """The workload's ``spec.replicas`` (what the autoscaler last set)."""
        wl = self._workload(namespace, name)
        obj = self.store.peek(wl.rtype, namespace, name)
        assert obj is not None
        return int(obj["spec"].get("replicas", 1))

    def ready_replicas(self, namespace: str, name: str) -> int:
        return len(self._workload(namespace, name).ready_pods())

    def pods(self, namespace: str, name: str, include_terminating: bool = False) -> list[SimPod]:
        """The workload's pods, oldest first."""
        wl = self._workload(namespace, name)
        pods = list(wl.pods.values()) if include_terminating else wl.live_pods()
        return sorted(pods, key=lambda p: p.created)

    def replica_history(self, namespace: str, name: str) -> list[tuple[float, int]]:
        """(time.time(), spec.replicas) at creation and at every change."""
        return list(self._workload(namespace, name).history)

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set ``spec.replicas`` like ``kubectl scale`` (not recorded in ``writes``)."""
        wl = self._workload(namespace, name)
        obj = self.store.get(wl.rtype, namespace, name)
        assert obj is not None
        obj["spec"]["replicas"] = replicas
        self.store.replace(wl.rtype, obj)
        self._on_workload_spec(wl.rtype, namespace, name)

    async def wait_for_replicas(
        self, namespace: str, name: str, replicas: int, timeout: float = 10.0, ready: bool = True
    ) -> None:
        """Wait until the workload has exactly ``replicas`` pods, all Ready (or, with
        ``ready=False``, all Running, Ready or not) and none terminating; raises
        TimeoutError."""
        wl = self._workload(namespace, name)
        deadline = time.monotonic() + timeout
        while True:
            running = [p for p in wl.live_pods() if p.phase == "Running"]
            pods = wl.ready_pods() if ready else running
            if len(pods) == replicas and len(wl.pods) == replicas:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{namespace}/{name}: {len(pods)} pods, wanted {replicas} "
                    f"(spec.replicas={self.replicas(namespace, name)})"
                )
            await asyncio.sleep(0.02)

    async def wait_for_spec_replicas(
        self, namespace: str, name: str, replicas: int, timeout: float = 10.0
    ) -> None:
        """Wait until ``spec.replicas`` equals ``replicas``; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while self.replicas(namespace, name) != replicas:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{namespace}/{name}: spec.replicas={self.replicas(namespace, name)}, "
                    f"wanted {replicas}"
                )
            await asyncio.sleep(0.02)

    # -- load model --------------------------------------------------------------------
    def set_load(self, namespace: str, name: str, metric: str, total: float) -> None:
        """Total demand for ``metric`` (a name or a series like ``m{label="x"}``), spread
        evenly over the Ready pods: each reports ``total / ready``; pods not Ready report 0."""
        self._workload(namespace, name).loads[metric] = float(total)

    def set_pod_value(self, namespace: str, pod: str, metric: str, value: float | None) -> None:
        """Make one pod report ``value`` for ``metric`` whatever the load (None: back to
        the load model)."""
        for wl in self.workloads.values():
            if wl.namespace == namespace and pod in wl.pods:
                if value is None:
                    wl.pod_values.pop((pod, metric), None)
                else:
                    wl.pod_values[(pod, metric)] = float(value)
                    wl.loads.setdefault(metric, 0.0)
                return
        raise KeyError(f"no pod {namespace}/{pod}")

    def pod_metric_values(self, pod: SimPod) -> dict[str, float]:
        wl = pod.workload
        ready = len(wl.ready_pods())
        values = {}
        for metric, total in wl.loads.items():
            override = wl.pod_values.get((pod.name, metric))
            if override is not None:
                values[metric] = override
            elif pod.ready and not pod.terminating and ready:
                values[metric] = total / ready
            else:
                values[metric] = 0.0
        return values

    def metrics_page(self, pod: SimPod) -> str:
        wl = pod.workload
        return wl._head + render_series(self.pod_metric_values(pod)) + wl._tail

    # -- controller --------------------------------------------------------------------
    def _on_workload_spec(self, rtype: ResourceType, namespace: str, name: str) -> None:
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

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _reconcile(self, wl: Workload) -> None:
        desired = self.replicas(wl.namespace, wl.name)
        live = wl.live_pods()
        if len(live) < desired:
            for _ in range(desired - len(live)):
                pod = self._create_pod(wl)
                pod._task = self._spawn(self._run_pod(pod))
        elif len(live) > desired:
            if wl.kind == "StatefulSet":
                victims = sorted(live, key=lambda p: -p.ordinal)
            else:  # not-ready first, then newest first, as ReplicaSets choose
                victims = sorted(live, key=lambda p: (p.ready, -p.created))
            for pod in victims[: len(live) - desired]:
                pod.terminating = True
                self._spawn(self._delete_pod(pod))
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
            name = f"{prefix}-{_rand(5)}"
            while name in wl.pods:
                name = f"{prefix}-{_rand(5)}"
        wl._next_ordinal += 1
        pod = SimPod(wl, name, ordinal)
        wl.pods[name] = pod
        if wl.kind == "Deployment":
            owner = self.store.peek(REPLICASETS, wl.namespace, wl.rs_name or "")
        else:
            owner = self.store.peek(wl.rtype, wl.namespace, wl.name)
        assert owner is not None
        labels = dict(wl.labels)
        if wl.kind == "Deployment":
            labels["pod-template-hash"] = wl.template_hash
        if wl.kind == "StatefulSet":
            labels["statefulset.kubernetes.io/pod-name"] = name
            labels["apps.kubernetes.io/pod-index"] = str(ordinal)
        container = _container(wl)
        obj = {
            "metadata": {
                "name": name,
                "namespace": wl.namespace,
                "labels": labels,
                "ownerReferences": [self._owner_ref(owner)],
            },
            "spec": {
                "containers": [container],
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
        self.store.create(PODS, obj)
        return pod

    def _pod_status(self, pod: SimPod) -> dict[str, Any]:
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

    def _write_pod(self, pod: SimPod, deleting: bool = False) -> None:
        obj = self.store.get(PODS, pod.namespace, pod.name)
        if obj is None:
            return
        obj["status"] = self._pod_status(pod)
        if deleting:
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 30
        self.store.replace(PODS, obj)

    async def _run_pod(self, pod: SimPod) -> None:
        await asyncio.sleep(0)
        wl = pod.workload
        pod.ip = await self._start_endpoint(pod)
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
        await self._stop_endpoint(pod)
        await asyncio.sleep(self.deletion_grace_seconds)
        self.store.delete(PODS, pod.namespace, pod.name)
        wl.pods.pop(pod.name, None)
        if pod.ip:
            self._ips_in_use.discard(pod.ip)
        self._update_status(wl)

    def _update_status(self, wl: Workload) -> None:
        live = wl.live_pods()
        ready = len(wl.ready_pods())
        targets = [(wl.rtype, wl.name)]
        if wl.kind == "Deployment" and wl.rs_name:
            targets.append((REPLICASETS, wl.rs_name))
        for rtype, name in targets:
            obj = self.store.get(rtype, wl.namespace, name)
            if obj is None:
                continue
            status = copy.deepcopy(obj.get("status") or {})
            status["replicas"] = len(live)
            if wl.kind == "Widget":
                status["selector"] = wl.selector
            else:
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
            if status != obj.get("status"):
                obj["status"] = status
                self.store.replace(rtype, obj)

    # -- pod endpoints -----------------------------------------------------------------
    def _ip_candidates(self) -> Iterator[str]:
        octets = self.ip_base.split(".")
        while True:
            if len(octets) == 3:
                for last in range(2, 255):
                    yield f"{self.ip_base}.{last}"
            else:
                for third in range(256):
                    for last in range(2, 255):
                        yield f"{self.ip_base}.{third}.{last}"

    def _next_ip(self) -> str:
        for _ in range(70000):
            ip = next(self._ips)
            if ip not in self._ips_in_use and ip != self.api_host:
                self._ips_in_use.add(ip)
                return ip
        raise RuntimeError(f"no free loopback address under {self.ip_base}")

    def _prepare_tls(self, wl: Workload) -> None:
        ep = wl.metrics
        if ep is None:
            return
        d = self.workdir / "pki" / f"{wl.namespace}_{wl.name}"
        d.mkdir(parents=True, exist_ok=True)
        wl._cert_dir = d
        if ep.token_required:
            wl.token = secrets.token_urlsafe(24)
            wl.token_file = d / "token"
            wl.token_file.write_text(wl.token)
        if ep.tls == "self-signed":
            own_ca = trustme.CA(organization_name=f"{wl.name}-ca@{int(time.time())}")
            files = certs.issue(
                own_ca, d, "serving", "localhost", "127.0.0.1",
                common_name=f"localhost@{int(time.time())}", include_root=True,
            )  # fmt: skip
            wl.self_signed_cert_file = files.cert_file
            wl._ssl = certs.server_context(files)
        elif ep.tls in ("ca", "mtls"):
            wl.server_name = ep.server_name or f"{wl.name}.{wl.namespace}.svc"
            wl.ca_file = self.metrics_ca_file
            if ep.tls == "mtls":
                wl.client_cert_file = self.metrics_client_cert_file
                wl.client_key_file = self.metrics_client_key_file
            if not ep.ip_sans:
                files = certs.issue(self._metrics_ca, d, "serving", wl.server_name)
                wl._ssl = self._ca_context(files, ep)

    def _ca_context(self, files: certs.CertFiles, ep: MetricsEndpoint) -> ssl.SSLContext:
        if ep.tls == "mtls":
            return certs.server_context(files, self.metrics_ca_file, require_client_cert=True)
        return certs.server_context(files)

    def _pod_ssl(self, pod: SimPod, ip: str) -> ssl.SSLContext | None:
        wl, ep = pod.workload, pod.workload.metrics
        if ep is None or ep.tls == "plain":
            return None
        if wl._ssl is not None:
            return wl._ssl
        assert wl._cert_dir is not None and wl.server_name is not None
        files = certs.issue(self._metrics_ca, wl._cert_dir, f"serving-{ip}", wl.server_name, ip)
        return self._ca_context(files, ep)

    async def _start_endpoint(self, pod: SimPod) -> str:
        """Allocate the pod's loopback IP and start its metrics server there, skipping
        addresses whose port is taken."""
        ep = pod.workload.metrics
        for _ in range(8000):  # another sandbox may hold thousands of addresses of this base
            ip = self._next_ip()
            if ep is None:
                return ip
            pod.ip = ip
            pod._ssl = self._pod_ssl(pod, ip)
            fault = self.faults.for_pod(pod.namespace, pod.name, pod.workload.name)
            if fault is not None and fault.mode == "refuse":
                if self._port_free(ip, ep.port):
                    return ip
                continue
            try:
                await self._listen(pod)
                return ip
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                    raise
                log.debug("sandbox address taken, skipping", ip=ip, port=ep.port)
        raise RuntimeError("could not find a free loopback address for a pod")

    @staticmethod
    def _port_free(ip: str, port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind((ip, port))
            except OSError:
                return False
        return True

    async def _listen(self, pod: SimPod) -> None:
        ep = pod.workload.metrics
        assert ep is not None and pod.ip is not None
        if pod._runner is None:
            server = web.Server(lambda request: self._serve_pod(pod, request))
            runner = web.ServerRunner(
                server, access_log=None, shutdown_timeout=0.2, handle_signals=False
            )
            await runner.setup()
            pod._runner = runner
        site = web.TCPSite(pod._runner, pod.ip, ep.port, ssl_context=pod._ssl, backlog=512)
        try:
            await site.start()
        except OSError:
            await pod._runner.cleanup()
            pod._runner = None
            raise
        pod._site = site

    async def _relisten(self, pod: SimPod) -> None:
        try:
            await self._listen(pod)
        except OSError as exc:
            log.warning("sandbox pod cannot listen again", pod=pod.name, ip=pod.ip, error=str(exc))

    async def _unlisten(self, pod: SimPod) -> None:
        if pod._site is not None:
            site, pod._site = pod._site, None
            await site.stop()

    async def _stop_endpoint(self, pod: SimPod) -> None:
        await self._unlisten(pod)
        if pod._runner is not None:
            runner, pod._runner = pod._runner, None
            await runner.cleanup()

    def _pod_faults_changed(self) -> None:
        """Start or stop listening where a ``refuse`` fault appeared or went away."""
        for wl in self.workloads.values():
            if wl.metrics is None:
                continue
            for pod in wl.live_pods():
                if pod.ip is None or pod.phase != "Running":
                    continue
                fault = self.faults.for_pod(pod.namespace, pod.name, wl.name)
                refuse = fault is not None and fault.mode == "refuse"
                if refuse and pod.listening:
                    self._spawn(self._stop_endpoint(pod))
                elif not refuse and not pod.listening:
                    self._spawn(self._relisten(pod))

    async def _serve_pod(self, pod: SimPod, request: web.BaseRequest) -> web.StreamResponse:
        pod.requests += 1
        ep = pod.workload.metrics
        assert ep is not None
        fault: PodFault | None = self.faults.for_pod(pod.namespace, pod.name, pod.workload.name)
        if fault is not None:
            fault.hits += 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.mode == "error":
                return web.Response(status=fault.status, text=f"injected error {fault.status}\n")
            if fault.mode == "garbage":
                return web.Response(
                    body=b"<html><body>502 Bad Gateway</body></html>\n\x00\xfe{{{ not prometheus\n",
                    content_type="text/plain",
                )
            if fault.mode == "reset":
                transport = request.transport
                if transport is not None:
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                    transport.abort()
                raise asyncio.CancelledError
        if request.path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if request.path != ep.path:
            return web.Response(status=404, text="404 page not found\n")
        if ep.token_required:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return web.Response(status=401, text="Unauthorized\n")
            if auth != f"Bearer {pod.workload.token}":
                return web.Response(
                    status=403,
                    text=f'forbidden: User "system:anonymous" cannot get path "{ep.path}"\n',
                )
        return web.Response(
            body=self.metrics_page(pod).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    # -- kubeconfig --------------------------------------------------------------------
    def _exec_plugin(self) -> dict[str, Any]:
        """A credential exec plugin that prints an ExecCredential with the current token
        (read from ``token_file`` at each call), valid for 10 minutes."""
        script = (
            "import datetime,json,sys;"
            "exp=(datetime.datetime.now(datetime.timezone.utc)+datetime.timedelta(minutes=10))"
            ".strftime('%Y-%m-%dT%H:%M:%SZ');"
            "print(json.dumps({'apiVersion':'client.authentication.k8s.io/v1',"
            "'kind':'ExecCredential','status':{'token':open(sys.argv[1]).read().strip(),"
            "'expirationTimestamp':exp}}))"
        )
        return {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-c", script, str(self.token_file)],
            "interactiveMode": "Never",
            "provideClusterInfo": False,
        }

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sandbox",
                    "cluster": {
                        "server": self.api_url,
                        "certificate-authority": str(self.api_ca_file),
                    },
                }
            ],
            "users": [
                {"name": "sandbox-admin", "user": {"token": self.token}},
                {"name": "sandbox-exec", "user": {"exec": self._exec_plugin()}},
                {
                    "name": "sandbox-cert",
                    "user": {
                        "client-certificate": str(self.api_client_cert_file),
                        "client-key": str(self.api_client_key_file),
                    },
                },
            ],
            "contexts": [
                {"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox-admin", "namespace": "default"}},
                {"name": "sandbox-cert", "context": {"cluster": "sandbox", "user": "sandbox-cert", "namespace": "default"}},
                {"name": "sandbox-exec", "context": {"cluster": "sandbox", "user": "sandbox-exec", "namespace": "default"}},
            ],
            "current-context": "sandbox",
            "preferences": {},
        }  # fmt: skip
        self.kubeconfig_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.kubeconfig_path.chmod(0o600)

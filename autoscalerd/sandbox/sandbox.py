"""The Sandbox facade: an API server, simulated workloads and pods, and the files a
client needs (kubeconfig, tokens, certificates), started and stopped together.

The work is done by the parts it composes: ``credentials`` (CAs, token files,
kubeconfig), ``apiserver`` over the ``store``, ``workloads`` (the controller: pods and
their lifecycle), ``endpoints`` (each pod's metrics server), ``faults``, ``load`` (what
each pod reports) and ``waiting``; this class keeps the public API in one place.
"""

from __future__ import annotations

import random
import secrets
import time
from pathlib import Path
from typing import Any

from . import load
from .apiserver import CORE_EVENTS, EVENTS_V1, LEASES, ApiServer, RequestRecord, WriteRecord
from .credentials import Credentials
from .endpoints import PodEndpoints
from .faults import Faults
from .metrics_apis import MetricsApis
from .model import MetricsEndpoint, SimPod, TlsMode, Workload, WorkloadKind
from .store import Store
from .tasks import TaskSet
from .waiting import wait_until
from .workloads import Workloads

__all__ = ["MetricsEndpoint", "Sandbox", "SimPod", "TlsMode", "Workload", "WorkloadKind"]


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
        self.store = Store(history_size)
        self.faults = Faults(self)
        self.workloads: dict[tuple[str, str], Workload] = {}
        self._tasks = TaskSet()
        self._creds = Credentials(self.workdir)
        self._endpoints = PodEndpoints(
            self.ip_base, api_host, self._creds, self.faults, self.workloads, self._tasks
        )
        self._controller = Workloads(
            self.store, self._endpoints, self._tasks, self.workloads, deletion_grace_seconds
        )
        self._api = ApiServer(
            self.store,
            self.faults,
            self.token,
            self._controller.on_spec,
            watch_timeout_seconds,
            bookmark_interval_seconds,
        )
        # -- issue 12: metrics.k8s.io, custom.metrics.k8s.io, external.metrics.k8s.io --
        self.metrics_apis = MetricsApis(self.workloads)
        self._api.aggregated.append(self.metrics_apis)
        self._started = False
        creds = self._creds
        self.kubeconfig_path = creds.kubeconfig_path
        self.token_file = creds.token_file
        self.serviceaccount_dir = creds.serviceaccount_dir
        self.api_ca_file = creds.api_ca_file
        self.api_client_cert_file = creds.api_client_cert_file
        self.api_client_key_file = creds.api_client_key_file
        self.metrics_ca_file = creds.metrics_ca_file
        self.metrics_client_cert_file = creds.metrics_client_cert_file
        self.metrics_client_key_file = creds.metrics_client_key_file

    @property
    def api_ca(self):
        """The CA (trustme) that signs the API server's and its clients' certificates: tests
        issue further client certificates with it (available once started)."""
        return self._creds.api_ca

    @property
    def deletion_grace_seconds(self) -> float:
        """How long a deleted pod stays (terminating) before it is gone."""
        return self._controller.deletion_grace_seconds

    @deletion_grace_seconds.setter
    def deletion_grace_seconds(self, seconds: float) -> None:
        self._controller.deletion_grace_seconds = seconds

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        ctx = self._creds.issue(self.api_host)
        await self._api.start(self.api_host, self.api_port, ctx)
        self._creds.write_serviceaccount()
        self._creds.write_token_files(self.token)
        self._creds.write_kubeconfig(self.api_url, self.token)
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._tasks.cancel_all()
        await self._api.stop()
        await self._controller.stop()

    def rotate_token(self, grace_seconds: float = 0.0) -> str:
        """Issue a new bearer token (written to ``token_file``, the service-account
        ``token`` and the kubeconfig's static user); the old one stays valid for
        ``grace_seconds`` and then answers 401. Returns the new token."""
        old = self.token
        self.token = secrets.token_urlsafe(24)
        self._api.tokens[self.token] = None
        self._api.tokens[old] = time.monotonic() + grace_seconds
        self._creds.write_token_files(self.token)
        self._creds.write_kubeconfig(self.api_url, self.token)
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
        requests: dict[str, str] | None = None,
    ) -> Workload:
        """A Deployment (with its ReplicaSet) of ``replicas`` pods labelled ``labels``
        (default ``{"app": name}``). Returns once the pods are Ready when ``wait_ready``."""
        return await self.add_workload(
            "Deployment", namespace, name, replicas, labels=labels, metrics=metrics,
            startup_seconds=startup_seconds, wait_ready=wait_ready, requests=requests,
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
        requests: dict[str, str] | None = None,
    ) -> Workload:
        wl = self._controller.create(
            kind, namespace, name, replicas, labels, metrics, startup_seconds, requests
        )
        if wait_ready:
            await self.wait_for_replicas(namespace, name, replicas, timeout=startup_seconds + 30)
        return wl

    def replicas(self, namespace: str, name: str) -> int:
        """The workload's ``spec.replicas`` (what the autoscaler last set)."""
        return self._controller.replicas(namespace, name)

    def ready_replicas(self, namespace: str, name: str) -> int:
        return len(self._controller.get(namespace, name).ready_pods())

    def pods(self, namespace: str, name: str, include_terminating: bool = False) -> list[SimPod]:
        """The workload's pods, oldest first."""
        wl = self._controller.get(namespace, name)
        pods = list(wl.pods.values()) if include_terminating else wl.live_pods()
        return sorted(pods, key=lambda p: p.created)

    def replica_history(self, namespace: str, name: str) -> list[tuple[float, int]]:
        """(time.time(), spec.replicas) at creation and at every change."""
        return list(self._controller.get(namespace, name).history)

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set ``spec.replicas`` like ``kubectl scale`` (not recorded in ``writes``)."""
        self._controller.scale(namespace, name, replicas)

    async def wait_for_replicas(
        self, namespace: str, name: str, replicas: int, timeout: float = 10.0, ready: bool = True
    ) -> None:
        """Wait until the workload has exactly ``replicas`` pods, all Ready (or, with
        ``ready=False``, all Running, Ready or not) and none terminating; raises
        TimeoutError."""
        wl = self._controller.get(namespace, name)

        def counted() -> int:
            if ready:
                return len(wl.ready_pods())
            return len([p for p in wl.live_pods() if p.phase == "Running"])

        await wait_until(
            lambda: counted() == replicas and len(wl.pods) == replicas,
            timeout,
            lambda: (
                f"{namespace}/{name}: {counted()} pods, wanted {replicas} "
                f"(spec.replicas={self.replicas(namespace, name)})"
            ),
        )

    async def wait_for_spec_replicas(
        self, namespace: str, name: str, replicas: int, timeout: float = 10.0
    ) -> None:
        """Wait until ``spec.replicas`` equals ``replicas``; raises TimeoutError."""
        await wait_until(
            lambda: self.replicas(namespace, name) == replicas,
            timeout,
            lambda: (
                f"{namespace}/{name}: spec.replicas={self.replicas(namespace, name)}, "
                f"wanted {replicas}"
            ),
        )

    # -- load model --------------------------------------------------------------------
    def set_load(self, namespace: str, name: str, metric: str, total: float) -> None:
        """Total demand for ``metric`` (a name or a series like ``m{label="x"}``), spread
        evenly over the Ready pods: each reports ``total / ready``; pods not Ready report 0."""
        self._controller.get(namespace, name).loads[metric] = float(total)

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

    def set_counter_rate(self, namespace: str, name: str, series: str, total: float) -> None:
        """Make counter ``series`` (``requests_total{code="200"}``, or a histogram's
        ``x_bucket{le="0.5"}``) grow by ``total`` per second over the Ready pods together."""
        self._controller.get(namespace, name).counter_rates[series] = float(total)

    def reset_counter(self, namespace: str, pod: str, series: str) -> None:
        """Start one pod's counter again from 0, as a restarted process does."""
        for wl in self.workloads.values():
            if wl.namespace == namespace and pod in wl.pods:
                load.pod_counter_values(wl.pods[pod])  # count up to now at the old value
                wl.counters[(pod, series)] = 0.0
                return
        raise KeyError(f"no pod {namespace}/{pod}")

    def pod_metric_values(self, pod: SimPod) -> dict[str, float]:
        return load.pod_metric_values(pod)

    def metrics_page(self, pod: SimPod) -> str:
        return load.metrics_page(pod)

    # -- fault injection glue ----------------------------------------------------------
    def _pod_faults_changed(self) -> None:
        """Called by ``faults`` when pod faults change (a ``refuse`` opens or closes)."""
        self._endpoints.faults_changed()

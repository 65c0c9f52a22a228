"""What the sandbox simulates: workloads, their pods, and how the pods serve metrics.

Plain data; the controller (``workloads``) and the pod endpoints (``endpoints``) act on it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web

from .apiserver import DEPLOYMENTS, REPLICASETS, STATEFULSETS, WIDGETS
from .selectors import selector_to_string
from .store import ResourceType

TlsMode = Literal["plain", "self-signed", "ca", "mtls"]
WorkloadKind = Literal["Deployment", "StatefulSet", "ReplicaSet", "Widget"]
KIND_TYPES: dict[str, ResourceType] = {
    "Deployment": DEPLOYMENTS,
    "StatefulSet": STATEFULSETS,
    "ReplicaSet": REPLICASETS,
    "Widget": WIDGETS,
}


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
    counter_rates: dict[str, float] = field(default_factory=dict)
    """Counter series → total increase per second, spread over the Ready pods (issue 13)."""
    counters: dict[tuple[str, str], float] = field(default_factory=dict)
    """(pod, counter series) → value at `counters_at`."""
    counters_at: float | None = None
    """`time.monotonic()` the counters were last brought up to."""
    history: list[tuple[float, int]] = field(default_factory=list)  # (time.time(), replicas)
    ca_file: Path | None = None
    server_name: str | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    token: str | None = None
    token_file: Path | None = None
    self_signed_cert_file: Path | None = None
    rs_name: str | None = None
    requests: dict[str, str] = field(default_factory=dict)
    """The container's `resources.requests` (`{"cpu": "500m"}`; issue 12, HPA utilization)."""
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

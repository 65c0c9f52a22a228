"""The Kubernetes adapter: the only importer of kubernetes_asyncio.

Daemon-facing API (no kubernetes_asyncio type crosses this boundary):

- `connect(kubeconfig, context, in_cluster, api_timeout) -> KubeClient`
- `KubeClient.get_scale / set_replicas -> ScaleInfo`
- `KubeClient.pods.acquire(namespace, selector) -> PodCache` (`pods() -> list[PodInfo]`)
- `KubeClient.record_event(...)`
- `KubeClient.leader_elector(LeaderElection) -> LeaderElector`
- `KubeClient.credentials_rejected -> CredentialsRejected | None` (every call answered 401)
- errors: `KubeError` and its subclasses (see `autoscalerd.kube.errors`)
"""

from autoscalerd.kube.client import KubeClient, connect
from autoscalerd.kube.credentials import CREDENTIALS_REJECTED, CredentialsRejected
from autoscalerd.kube.errors import (
    KubeConfigError,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeTooManyRequests,
    KubeUnauthorized,
    KubeUnavailable,
    Op,
)
from autoscalerd.kube.events import EventReason, EventSettings, EventType
from autoscalerd.kube.lease import LeaderElector
from autoscalerd.kube.pods import PodCache, PodCaches, PodInfo, WatchSettings
from autoscalerd.kube.scale import RetryPolicy, ScaleInfo

__all__ = [
    "CREDENTIALS_REJECTED",
    "CredentialsRejected",
    "EventReason",
    "EventSettings",
    "EventType",
    "KubeClient",
    "KubeConfigError",
    "KubeConflict",
    "KubeError",
    "KubeForbidden",
    "KubeInvalid",
    "KubeNotFound",
    "KubeTooManyRequests",
    "KubeUnauthorized",
    "KubeUnavailable",
    "LeaderElector",
    "Op",
    "PodCache",
    "PodCaches",
    "PodInfo",
    "RetryPolicy",
    "ScaleInfo",
    "WatchSettings",
    "connect",
]

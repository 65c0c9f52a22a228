"""`KubeClient`: the daemon's one handle on the Kubernetes API.

```python
client = await connect(kubeconfig, context, in_cluster, api_timeout=10.0)
try:
    scale = await client.get_scale("default", target)
    cache = client.pods.acquire("default", scale.selector)
    ...
    await client.set_replicas("default", target, 4, observed=scale, deadline=...)
    await client.record_event("default", target, "Normal", "SuccessfulRescale", "...")
finally:
    await client.close()
```
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import structlog

from autoscalerd.config.model import LeaderElection, ScaleTargetRef
from autoscalerd.kube._transport import Transport
from autoscalerd.kube.credentials import SERVICE_ACCOUNT_DIR, Credentials, load_credentials
from autoscalerd.kube.errors import Op
from autoscalerd.kube.events import EventRecorder, EventSettings, EventType
from autoscalerd.kube.lease import LeaderElector, default_identity
from autoscalerd.kube.pods import PodCaches, WatchSettings
from autoscalerd.kube.scale import RetryPolicy, ScaleInfo, ScaleOps

log = structlog.get_logger(__name__)

__all__ = ["KubeClient", "connect"]


async def connect(
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
    api_timeout: float = 10.0,
    *,
    identity: str | None = None,
    watch: WatchSettings | None = None,
    retry: RetryPolicy | None = None,
    events: EventSettings | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> KubeClient:
    """Load credentials and return a client; nothing is sent to the server yet.

    `in_cluster=None` is auto (service account when `KUBERNETES_SERVICE_HOST` is set and no
    kubeconfig is given). Raises `KubeConfigError` when no credentials can be loaded. Call
    `server_version()` to check that the API answers.
    """
    creds = await load_credentials(
        kubeconfig, context, in_cluster, service_account_dir=service_account_dir
    )
    return KubeClient(
        creds, api_timeout=api_timeout, identity=identity, watch=watch, retry=retry, events=events
    )


class KubeClient:
    """Credentials, one `ApiClient`, and the operations the daemon needs. Close it when done."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        api_timeout: float = 10.0,
        identity: str | None = None,
        watch: WatchSettings | None = None,
        retry: RetryPolicy | None = None,
        events: EventSettings | None = None,
    ) -> None:
        from kubernetes_asyncio.client import ApiClient

        asyncio.get_running_loop()  # the aiohttp session must be created inside the loop
        self._credentials = credentials
        self.source = credentials.source
        self.server: str = str(credentials.configuration.host)
        self.default_namespace = credentials.default_namespace
        self.in_cluster = credentials.source == "in-cluster"
        self.identity = identity or default_identity()
        api_client: Any = ApiClient(configuration=credentials.configuration)
        api_client.user_agent = "autoscalerd"
        self._api_client = api_client
        self._t = Transport(
            api_client,
            api_timeout=api_timeout,
            on_unauthorized=credentials.invalidate_token,
        )
        self._scale = ScaleOps(self._t, retry)
        self._events = EventRecorder(self._t, instance=self.identity, settings=events)
        self.pods = PodCaches(self._t, watch)
        """Shared watch caches: `pods.acquire(namespace, selector)` / `await pods.release(c)`."""
        self._electors: list[LeaderElector] = []
        self._closed = False

    @property
    def api_timeout(self) -> float:
        return self._t.api_timeout

    async def server_version(self) -> str:
        """`GET /version` → `gitVersion` (e.g. `v1.31.0`): proves the API answers."""
        doc = await self._t.get_path(Op("get", "/version"), "/version")
        return str(doc.get("gitVersion") or "")

    async def get_scale(
        self, namespace: str, target: ScaleTargetRef, *, deadline: float | None = None
    ) -> ScaleInfo:
        """Read `/scale` of the target. Raises `KubeError` (one call, no retries)."""
        return await self._scale.get_scale(namespace, target, deadline=deadline)

    async def set_replicas(
        self,
        namespace: str,
        target: ScaleTargetRef,
        replicas: int,
        *,
        observed: ScaleInfo | None = None,
        deadline: float | None = None,
    ) -> ScaleInfo:
        """Patch `/scale` to `replicas` with retries (see `ScaleOps.set_replicas`).

        `deadline` is event-loop time (`loop.time()`): pass `elector.leader_deadline` while
        leading so nothing is written after leadership may have passed to another process.
        """
        return await self._scale.set_replicas(
            namespace, target, replicas, observed=observed, deadline=deadline
        )

    async def record_event(
        self,
        namespace: str,
        involved: ScaleTargetRef,
        type: EventType,
        reason: str,
        message: str,
        *,
        uid: str | None = None,
    ) -> None:
        """Record a core/v1 Event on the target (aggregated); failures are only logged."""
        await self._events.record(namespace, involved, type, reason, message, uid=uid)

    def leader_elector(
        self, settings: LeaderElection, *, identity: str | None = None
    ) -> LeaderElector:
        """A (not yet started) elector on the configured Lease; stopped by `close()` too.

        The Lease lives in `settings.lease_namespace`, else the pod's namespace in cluster,
        else `default`.
        """
        namespace = settings.lease_namespace or (
            self.default_namespace if self.in_cluster else "default"
        )
        elector = LeaderElector(
            self._t, settings, namespace=namespace, identity=identity or self.identity
        )
        self._electors.append(elector)
        return elector

    async def close(self) -> None:
        """Stop caches and electors (releasing a held lease), flush events, close the session."""
        if self._closed:
            return
        self._closed = True
        for elector in self._electors:
            with contextlib.suppress(Exception):
                await elector.stop()
        await self.pods.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._events.flush(), timeout=self._t.api_timeout)
        await self._api_client.close()
        log.debug("kube client closed", server=self.server)

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

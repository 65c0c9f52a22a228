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

Connection pools. kubernetes_asyncio's `ApiClient` has one aiohttp connector limited to
`Configuration.connection_pool_maxsize` (100) connections, and a watch holds its connection
for as long as it streams: with one pool, 100 watches would leave no connection for
anything else, and every `/scale` read, Event and Lease renewal would wait for its timeout.
So the client keeps three `ApiClient`s, each with its own connector:

- **calls** (request/response: `/scale`, Events, pod LISTs, discovery): bounded by
  `connection_pool_maxsize`; each connection is held at most `api_timeout`;
- **streams** (pod watches, one per namespace): no limit, one connection per watch;
- **leases** (leader election, created by the first `leader_elector()`): two connections of
  its own, so a renewal never queues behind watches *or* behind a burst of ordinary calls
  (a leader that cannot renew in time steps down).

All three are built from shallow copies of the one `Configuration`: they share its
`api_key` dict, so a token refreshed before a call on any of them (a token file re-read, an
exec plugin re-run, the refresh forced by a 401 on any pool) is the token all of them send
next; a new client certificate from an exec plugin is loaded into the TLS context of each
pool, and their idle connections (authenticated with the old one) are closed.

`credentials_rejected` is the `credentials_rejected` problem while every call is answered
401 (see `autoscalerd.kube.credentials`), None otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ssl
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from autoscalerd.config.model import LeaderElection, ScaleTargetRef
from autoscalerd.kube._transport import Transport
from autoscalerd.kube.credentials import (
    SERVICE_ACCOUNT_DIR,
    Credentials,
    CredentialsRejected,
    load_credentials,
)
from autoscalerd.kube.errors import Op
from autoscalerd.kube.events import EventRecorder, EventSettings, EventType
from autoscalerd.kube.lease import LeaderElector, default_identity
from autoscalerd.kube.metrics_api import MetricsApi, PodUsage
from autoscalerd.kube.podautoscalers import PodAutoscalerFeed, patch_status
from autoscalerd.kube.pods import PodCaches, WatchSettings
from autoscalerd.kube.scale import RetryPolicy, ScaleInfo, ScaleOps

log = structlog.get_logger(__name__)

__all__ = ["KubeClient", "connect"]

STREAM_POOL_SIZE = 0
"""Connections for watches: 0 = no limit (each watch needs exactly one, for its lifetime)."""
LEASE_POOL_SIZE = 2
"""Connections for leader election (one renewal at a time; one spare for a release)."""


def make_api_client(configuration: Any, pool_size: int | None = None) -> Any:
    """An `ApiClient` with its own connection pool of `pool_size` connections (0 = no limit;
    None = the configuration's `connection_pool_maxsize`).

    The `Configuration` is copied shallowly: the copy shares `api_key` (the dict a token
    refresh writes to) with the original, so every pool sends the current token; only the
    pool size differs. The environment's proxy is pinned on
    the original first, so it is resolved (and logged) once for all the pools.
    """
    from kubernetes_asyncio.client import ApiClient

    _pin_env_proxy(configuration)
    conf = copy.copy(configuration)
    if pool_size is not None:
        conf.connection_pool_maxsize = pool_size
    api_client: Any = ApiClient(configuration=conf)
    api_client.user_agent = "autoscalerd"
    # kubernetes_asyncio opens its aiohttp session with `trust_env=True`, which makes every
    # request look up ~/.netrc and the proxy variables in a worker thread (two thread hops
    # per call: ~4 % of the daemon's CPU at 100 policies). The proxy is resolved once above
    # instead; netrc credentials are not something the Kubernetes API takes.
    api_client.rest_client.pool_manager._trust_env = False
    return api_client


def reload_client_cert(api_client: Any, cert_file: str, key_file: str) -> None:
    """Load a new client certificate into the pool's TLS context (used for new connections)
    and close its idle connections, which were authenticated with the old one (client-go's
    rotating dialer does the same). Connections in use (watches) finish on the old one."""
    connector = api_client.rest_client.pool_manager.connector
    ssl_context = getattr(connector, "_ssl", None)  # built by kubernetes_asyncio's RESTClient
    if isinstance(ssl_context, ssl.SSLContext):
        ssl_context.load_cert_chain(cert_file, key_file)
    idle = getattr(connector, "_conns", None)  # aiohttp: key -> deque[(protocol, last used)]
    if isinstance(idle, dict):
        for conns in list(idle.values()):
            for proto, _ in conns:
                proto.close()
        idle.clear()


def _pin_env_proxy(conf: Any) -> None:
    """Resolve `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` for the API server once, as kubectl does.

    A kubeconfig `proxy-url` (already in `conf.proxy`) wins over the environment, as in
    client-go. Credentials in the proxy URL become a `Proxy-Authorization` header.
    """
    if conf.proxy:
        return
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        proxy, auth = get_env_proxy_for_url(URL(str(conf.host)))
    except LookupError:  # no proxy variable for this scheme, or NO_PROXY matches the host
        return
    conf.proxy = str(proxy)
    if auth is not None:
        conf.proxy_headers = {**(conf.proxy_headers or {}), "Proxy-Authorization": auth.encode()}
    log.info("using a proxy for the Kubernetes API from the environment", proxy=str(proxy))


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
    """Credentials, the connection pools (see the module doc), and the operations the daemon
    needs. Close it when done."""

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
        asyncio.get_running_loop()  # the aiohttp sessions must be created inside the loop
        self._credentials = credentials
        self.source = credentials.source
        self.server: str = str(credentials.configuration.host)
        self.default_namespace = credentials.default_namespace
        self.in_cluster = credentials.source == "in-cluster"
        self.identity = identity or default_identity()
        self._api_timeout = api_timeout
        self._api_client = self._make_api_client()
        self._t = self._transport(self._api_client)
        self._stream_api_client = self._make_api_client(STREAM_POOL_SIZE)
        self._stream_t = self._transport(self._stream_api_client)
        self._lease_api_client: Any = None
        self._lease_t: Transport | None = None
        self._scale = ScaleOps(self._t, retry)
        self._events = EventRecorder(self._t, instance=self.identity, settings=events)
        self.pods = PodCaches(self._t, watch, stream_transport=self._stream_t)
        """Shared watch caches: `pods.acquire(namespace, selector)` / `await pods.release(c)`."""
        self._electors: list[LeaderElector] = []
        self._feeds: list[PodAutoscalerFeed] = []
        self._watch_settings = watch
        self._closed = False
        self.metrics_api = MetricsApi(self._t)
        """metrics.k8s.io / custom / external metrics reads (issue 12)."""

    def _make_api_client(self, pool_size: int | None = None) -> Any:
        api_client = make_api_client(self._credentials.configuration, pool_size)
        self._credentials.on_client_cert(partial(reload_client_cert, api_client))
        return api_client

    def _transport(self, api_client: Any) -> Transport:
        return Transport(api_client, api_timeout=self._api_timeout, auth=self._credentials)

    @property
    def credentials_rejected(self) -> CredentialsRejected | None:
        """The `credentials_rejected` problem while every API call is answered 401 (with the
        fix in `.message`; `.since` is event-loop time), None once a call is accepted."""
        return self._credentials.rejection

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

    # -- issue 12: the metrics APIs (kube/metrics_api.py) --
    async def pod_metrics(
        self, namespace: str, *, now: float, max_age: float
    ) -> Mapping[str, PodUsage]:
        return await self.metrics_api.pod_metrics(namespace, now=now, max_age=max_age)

    async def custom_pod_metric(
        self, namespace: str, metric: str, selector: str
    ) -> dict[str, float]:
        return await self.metrics_api.custom_pod_metric(namespace, metric, selector)

    async def external_metric(
        self, namespace: str, metric: str, label_selector: str
    ) -> list[float]:
        return await self.metrics_api.external_metric(namespace, metric, label_selector)

    def pod_autoscalers(
        self, namespaces: Sequence[str] = (), label_selector: str = ""
    ) -> PodAutoscalerFeed:
        """A (not yet started) feed of PodAutoscaler objects (cluster mode); stopped by
        `close()` too."""
        feed = PodAutoscalerFeed(
            self._t, self._stream_t, namespaces, label_selector, self._watch_settings
        )
        self._feeds.append(feed)
        return feed

    async def patch_pod_autoscaler_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        deadline: float | None = None,
    ) -> None:
        """Merge-patch a PodAutoscaler's `.status` (status subresource); raises `KubeError`."""
        await patch_status(self._t, namespace, name, status, deadline=deadline)

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
        if self._lease_t is None:
            self._lease_api_client = self._make_api_client(LEASE_POOL_SIZE)
            self._lease_t = self._transport(self._lease_api_client)
        elector = LeaderElector(
            self._lease_t, settings, namespace=namespace, identity=identity or self.identity
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
        self.metrics_api.close()
        for feed in self._feeds:
            with contextlib.suppress(Exception):
                await feed.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._events.flush(), timeout=self._t.api_timeout)
        for api_client in (self._api_client, self._stream_api_client, self._lease_api_client):
            if api_client is not None:
                with contextlib.suppress(Exception):
                    await api_client.close()
        await self._credentials.close()
        log.debug("kube client closed", server=self.server)

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

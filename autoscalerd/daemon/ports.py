"""The ports of the daemon: what the reconciler and the supervisor need from the world.

`PolicyReconciler` and `Supervisor` depend on these Protocols, not on `KubeClient`,
`Scraper` or the event loop's clock, so the tests drive them with the hand-written fakes in
`tests/fakes.py` (Knative's fake pod counter, httpx's `MockTransport`) and step time by hand.
The real classes satisfy them structurally; the supervisor's wiring assigns them to these
types, so mypy checks that they still do.

A Protocol costs nothing per call: the reconciler calls the real objects' methods directly,
with no wrapper in between (the tick runs about 1,000 scrapes a second in the benchmark).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from autoscalerd.config.model import LeaderElection, ScaleTargetRef
from autoscalerd.kube.credentials import CredentialsRejected
from autoscalerd.kube.events import EventType
from autoscalerd.kube.metrics_api import PodUsage
from autoscalerd.kube.pods import PodInfo
from autoscalerd.kube.scale import ScaleInfo
from autoscalerd.scrape.client import ScrapeOutcome, ScrapeStats, ScrapeTarget

__all__ = [
    "LOOP_CLOCK",
    "Clock",
    "Cluster",
    "Elector",
    "Kube",
    "LoopClock",
    "PodAutoscalerSource",
    "PodView",
    "PodViews",
    "Scrape",
    "SystemdNotify",
]


class Clock(Protocol):
    """Time as the daemon reads it: `now()` for decisions and deadlines (monotonic seconds,
    the event loop's time), `wall()` for what people read (seconds since the epoch)."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep_until(self, when: float) -> None:
        """Return at `now() >= when` (at once if it is already)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's clock (the only `Clock` outside the tests)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        """Sleep until loop time `when` exactly: `asyncio.sleep` takes a delay and re-adds
        the current time, so equal deadlines would become timers a few microseconds apart
        (and the policies of one tick slot would no longer wake up together)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        handle = loop.call_at(when, _wake, waiter)
        try:
            await waiter
        finally:
            handle.cancel()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


LOOP_CLOCK = LoopClock()


class PodView(Protocol):
    """The pods of one namespace matching one selector (`kube.pods.PodCache`)."""

    @property
    def selector(self) -> str: ...

    @property
    def synced(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    def pods(self) -> list[PodInfo]: ...


ViewT = TypeVar("ViewT", bound=PodView)


class PodViews(Protocol[ViewT]):
    """Shared pod caches, one per (namespace, selector) (`kube.pods.PodCaches`); a view is
    released to the pool that made it."""

    def acquire(self, namespace: str, selector: str) -> ViewT: ...

    async def release(self, cache: ViewT) -> None: ...


class Kube(Protocol):
    """What a reconciler asks of the Kubernetes API (`kube.client.KubeClient`).

    Every call raises `KubeError` (or a subclass: `KubeConflict`, `KubeTooManyRequests`…)
    when it fails; `record_event` only logs its failures.
    """

    @property
    def pods(self) -> PodViews[Any]: ...

    async def get_scale(self, namespace: str, target: ScaleTargetRef) -> ScaleInfo: ...

    async def set_replicas(
        self,
        namespace: str,
        target: ScaleTargetRef,
        replicas: int,
        *,
        observed: ScaleInfo | None = None,
        deadline: float | None = None,
    ) -> ScaleInfo:
        """Patch `/scale`; `deadline` is `Clock.now()` time after which nothing is written."""
        ...

    async def record_event(
        self,
        namespace: str,
        involved: ScaleTargetRef,
        type: EventType,
        reason: str,
        message: str,
        *,
        uid: str | None = None,
    ) -> None: ...

    # -- issue 12: the metrics APIs (kube/metrics_api.py) --
    async def pod_metrics(
        self, namespace: str, *, now: float, max_age: float
    ) -> Mapping[str, PodUsage]:
        """metrics.k8s.io PodMetrics of the namespace: one list per `max_age`, shared."""
        ...

    async def custom_pod_metric(
        self, namespace: str, metric: str, selector: str
    ) -> dict[str, float]:
        """custom.metrics.k8s.io `pods/*/METRIC` with a label selector: {pod: value}."""
        ...

    async def external_metric(
        self, namespace: str, metric: str, label_selector: str
    ) -> list[float]:
        """external.metrics.k8s.io `METRIC` with a label selector: the items' values."""
        ...


class Elector(Protocol):
    """Lease-based leader election (`kube.lease.LeaderElector`)."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_deadline(self) -> float | None: ...

    def on_change(self, callback: Callable[[bool], None]) -> None: ...

    def start(self) -> None: ...


class PodAutoscalerSource(Protocol):
    """PodAutoscaler objects from the API, kept current (`kube.podautoscalers.PodAutoscalerFeed`)."""

    @property
    def generation(self) -> int:
        """Changes with every change of an object other than of its `.status`."""
        ...

    @property
    def synced(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    def objects(self) -> dict[tuple[str, str], dict[str, Any]]: ...

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def wait_changed(self, generation: int) -> int: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class Cluster(Kube, Protocol):
    """What the supervisor asks of the Kubernetes API besides the reconcilers' calls."""

    @property
    def server(self) -> str:
        """The API server's URL (for the log)."""
        ...

    @property
    def source(self) -> str:
        """Where the credentials came from (for the log)."""
        ...

    @property
    def credentials_rejected(self) -> CredentialsRejected | None:
        """Set while every API call is answered 401 (the `credentials_rejected` problem)."""
        ...

    async def server_version(self) -> str: ...

    def leader_elector(self, settings: LeaderElection) -> Elector: ...

    def pod_autoscalers(
        self, namespaces: Sequence[str] = (), label_selector: str = ""
    ) -> PodAutoscalerSource:
        """Cluster mode (issue 14): a not yet started feed of PodAutoscaler objects."""
        ...

    async def patch_pod_autoscaler_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        deadline: float | None = None,
    ) -> None: ...

    async def close(self) -> None:
        """Stop watches and electors (releasing a held Lease), flush events."""
        ...


class Scrape(Protocol):
    """Scrapes pods' metric endpoints (`scrape.client.Scraper`)."""

    stats: ScrapeStats
    """Requests, connections opened and late answers since this scraper started."""

    async def scrape(
        self, targets: Sequence[ScrapeTarget], *, timeout: float
    ) -> list[ScrapeOutcome]:
        """One outcome per target, in order; a failed target is an outcome, never a raise."""
        ...

    async def close(self) -> None: ...


class SystemdNotify(Protocol):
    """systemd's notify protocol (`daemon.notify.Notifier`)."""

    @property
    def watchdog_interval(self) -> float | None: ...

    def ready(self, status: str = "") -> bool: ...

    def reloading(self) -> bool: ...

    def stopping(self) -> bool: ...

    def status(self, text: str) -> bool: ...

    def watchdog(self) -> bool: ...

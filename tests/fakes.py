"""Hand-written fakes of the daemon's ports (`autoscalerd/daemon/ports.py`).

Small and scripted, as Knative's fake pod counter and httpx's `MockTransport`: a test sets
what the world answers, runs the code under test, and reads what it did. No mocking
framework, nothing patched.

- `ManualClock`: time moves only when the test calls `advance()`/`set()`.
- `FakeKube`: a target's `/scale` and its pods; scripted errors on reads and writes
  (`KubeConflict` 409, `KubeTooManyRequests` 429…); every write and Event recorded.
- `FakeScraper`: a scripted value or error per (pod, metric); every call recorded.
- `FakeElector`, `FakeNotifier`: leadership flipped by hand; systemd messages recorded.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from autoscalerd.config.model import LeaderElection, ScaleTargetRef
from autoscalerd.kube.credentials import CredentialsRejected
from autoscalerd.kube.errors import KubeConflict, KubeError, KubeTooManyRequests
from autoscalerd.kube.metrics_api import PodUsage
from autoscalerd.kube.pods import PodInfo
from autoscalerd.kube.scale import ScaleInfo
from autoscalerd.scrape.client import ScrapeOutcome, ScrapeStats, ScrapeTarget
from autoscalerd.scrape.errors import ScrapeError, ScrapeErrorKind

__all__ = [
    "FakeElector",
    "FakeKube",
    "FakeNotifier",
    "FakePodView",
    "FakeScraper",
    "ManualClock",
    "ScaleWrite",
    "conflict",
    "pod",
    "scrape_error",
    "too_many_requests",
]


# -- time ------------------------------------------------------------------------------------


class ManualClock:
    """A `Clock` stepped by hand: sleepers wake when `advance()` reaches their time."""

    def __init__(self, start: float = 1000.0, wall: float = 1_767_225_600.0) -> None:
        self._now = start
        self._wall_offset = wall - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._asleep: dict[str, float] = {}
        """Task name → when it wakes, for the tasks asleep now."""

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), waiter))
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        self._asleep[name] = when
        try:
            await waiter
        finally:
            if self._asleep.get(name) == when:
                del self._asleep[name]

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + seconds)

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    def set(self, now: float) -> None:
        """Move to `now` (never back) and wake every sleeper due by then."""
        assert now >= self._now, f"time goes forward: {now} < {self._now}"
        self._now = now
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)

    def asleep_until(self, task_name: str) -> float | None:
        """When the task of that name wakes up, or None when it is not asleep on this clock."""
        return self._asleep.get(task_name)

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock now."""
        return sum(1 for _, _, w in self._sleepers if not w.done())

    @property
    def next_wakeup(self) -> float | None:
        pending = [when for when, _, w in self._sleepers if not w.done()]
        return min(pending) if pending else None


# -- Kubernetes ------------------------------------------------------------------------------


def pod(name: str, ip: str = "", *, ready: bool = True, phase: str = "Running") -> PodInfo:
    """A pod that counts (Running, Ready, with an IP) unless told otherwise."""
    return PodInfo(name=name, ip=ip or f"10.0.0.{zlib.crc32(name.encode()) % 250 + 1}", phase=phase,
                   ready=ready, deleting=False)  # fmt: skip


def conflict(message: str = "the object has been modified") -> KubeConflict:
    return KubeConflict(f"409 Conflict: {message}", status=409, reason="Conflict")


def too_many_requests(retry_after: float | None = 1.0) -> KubeTooManyRequests:
    return KubeTooManyRequests(
        "429 Too Many Requests: the API server is throttling", reason="TooManyRequests",
        retry_after=retry_after,
    )  # fmt: skip


@dataclass(frozen=True)
class ScaleWrite:
    namespace: str
    target: str
    replicas: int
    observed: ScaleInfo | None
    deadline: float | None


class FakePodView:
    """A `PodView` on the fake's pods (always the current list)."""

    def __init__(self, kube: FakeKube, namespace: str, selector: str) -> None:
        self._kube = kube
        self.namespace = namespace
        self.selector = selector

    @property
    def synced(self) -> bool:
        return self._kube.pods_synced

    @property
    def last_error(self) -> str | None:
        return self._kube.pods_error

    def pods(self) -> list[PodInfo]:
        return list(self._kube.pod_list)


class FakePodViews:
    def __init__(self, kube: FakeKube) -> None:
        self._kube = kube
        self.acquired: list[FakePodView] = []
        self.released: list[FakePodView] = []

    def acquire(self, namespace: str, selector: str) -> FakePodView:
        view = FakePodView(self._kube, namespace, selector)
        self.acquired.append(view)
        return view

    async def release(self, cache: FakePodView) -> None:
        self.released.append(cache)

    @property
    def held(self) -> list[FakePodView]:
        return [v for v in self.acquired if v not in self.released]


class FakeKube:
    """A `Cluster` with one scale target (any name) and its pods.

    `scale.replicas` follows the writes; `get_errors`/`write_errors` are raised first, one
    per call, in order. `on_write` runs inside `set_replicas` before it answers.
    """

    def __init__(self, replicas: int = 1, pods: Sequence[PodInfo] = (), *,
                 selector: str = "app=web") -> None:  # fmt: skip
        self.scale = ScaleInfo(replicas=replicas, selector=selector, resource_version="1",
                               status_replicas=replicas, uid="uid-1")  # fmt: skip
        self.pod_list: list[PodInfo] = list(pods)
        self.pods_synced = True
        self.pods_error: str | None = None
        self.pods = FakePodViews(self)
        self.get_errors: list[KubeError] = []
        self.write_errors: list[KubeError] = []
        self.on_write: Callable[[], Awaitable[None]] | None = None
        self.scale_reads = 0
        self.writes: list[ScaleWrite] = []
        self.events: list[tuple[str, str, str]] = []
        """(type, reason, message) of every Event recorded."""
        # the supervisor's side
        self.server = "https://fake-apiserver:6443"
        self.source = "fake"
        self.credentials_rejected: CredentialsRejected | None = None
        self.version_errors: list[KubeError] = []
        self.version_calls = 0
        self.electors: list[FakeElector] = []
        self.closed = False
        self._metrics_init()
        # cluster mode (issue 14)
        self.podautoscalers = FakePodAutoscalers()
        self.status_writes: list[tuple[str, str, dict[str, Any]]] = []
        """(namespace, name, status) of every PodAutoscaler status patch."""
        self.status_errors: list[KubeError] = []

    def scale_by_hand(self, replicas: int) -> None:
        """`kubectl scale`: the target's replicas change behind the daemon's back."""
        self._set(replicas)

    def _set(self, replicas: int) -> ScaleInfo:
        version = str(int(self.scale.resource_version) + 1)
        self.scale = replace(self.scale, replicas=replicas, resource_version=version)
        return self.scale

    async def get_scale(self, namespace: str, target: ScaleTargetRef) -> ScaleInfo:
        self.scale_reads += 1
        if self.get_errors:
            raise self.get_errors.pop(0)
        return self.scale

    async def set_replicas(
        self,
        namespace: str,
        target: ScaleTargetRef,
        replicas: int,
        *,
        observed: ScaleInfo | None = None,
        deadline: float | None = None,
    ) -> ScaleInfo:
        if self.on_write is not None:
            await self.on_write()
        if self.write_errors:
            raise self.write_errors.pop(0)
        self.writes.append(ScaleWrite(namespace, target.name, replicas, observed, deadline))
        return self._set(replicas)

    async def record_event(
        self,
        namespace: str,
        involved: ScaleTargetRef,
        type: str,
        reason: str,
        message: str,
        *,
        uid: str | None = None,
    ) -> None:
        self.events.append((type, reason, message))

    @property
    def event_reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    # -- issue 12: the metrics APIs; answers set by the test, errors raised first, in order --
    usage: dict[str, PodUsage]
    custom: dict[str, dict[str, float]]
    external: dict[str, list[float]]

    def _metrics_init(self) -> None:
        self.usage = {}
        self.custom = {}
        self.external = {}
        self.metrics_errors: list[KubeError] = []
        self.metrics_calls: list[tuple[str, ...]] = []

    async def pod_metrics(
        self, namespace: str, *, now: float, max_age: float
    ) -> Mapping[str, PodUsage]:
        self.metrics_calls.append(("pod_metrics", namespace))
        if self.metrics_errors:
            raise self.metrics_errors.pop(0)
        return dict(self.usage)

    async def custom_pod_metric(
        self, namespace: str, metric: str, selector: str
    ) -> dict[str, float]:
        self.metrics_calls.append(("custom", namespace, metric, selector))
        if self.metrics_errors:
            raise self.metrics_errors.pop(0)
        return dict(self.custom.get(metric, {}))

    async def external_metric(
        self, namespace: str, metric: str, label_selector: str
    ) -> list[float]:
        self.metrics_calls.append(("external", namespace, metric, label_selector))
        if self.metrics_errors:
            raise self.metrics_errors.pop(0)
        return list(self.external.get(metric, []))

    async def server_version(self) -> str:
        self.version_calls += 1
        if self.version_errors:
            raise self.version_errors.pop(0)
        return "v1.31.0-fake"

    def leader_elector(self, settings: LeaderElection) -> FakeElector:
        elector = FakeElector()
        self.electors.append(elector)
        return elector

    def pod_autoscalers(
        self, namespaces: Sequence[str] = (), label_selector: str = ""
    ) -> FakePodAutoscalers:
        self.podautoscalers.scope = (tuple(namespaces), label_selector)
        return self.podautoscalers

    async def patch_pod_autoscaler_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        deadline: float | None = None,
    ) -> None:
        if self.status_errors:
            raise self.status_errors.pop(0)
        self.status_writes.append((namespace, name, dict(status)))
        self.podautoscalers.merge_status(namespace, name, status)

    async def close(self) -> None:
        self.closed = True


class FakePodAutoscalers:
    """A `PodAutoscalerSource`: the test puts and deletes objects; status patches merge in."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.generation = 0
        self.synced = True
        self.last_error: str | None = None
        self.started = False
        self.scope: tuple[tuple[str, ...], str] = ((), "")
        self._changed = asyncio.Event()
        self._uids = itertools.count(1)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (uid, generation and creationTimestamp filled in)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (meta["namespace"], meta["name"])
        old = self._objects.get(key)
        if old is None:
            meta["uid"] = f"pa-uid-{next(self._uids)}"
            meta["generation"] = 1
            meta.setdefault("creationTimestamp", f"2026-01-01T00:00:{len(self._objects):02d}Z")
        else:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            bump = old.get("spec") != obj.get("spec")
            meta["generation"] = old["metadata"]["generation"] + (1 if bump else 0)
            if "status" in old:
                obj["status"] = old["status"]
        self._objects[key] = obj
        self._bump()
        return obj

    def delete(self, namespace: str, name: str) -> None:
        del self._objects[(namespace, name)]
        self._bump()

    def merge_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        obj = self._objects.get((namespace, name))
        if obj is None:
            return
        merged = dict(obj.get("status") or {})
        for k, v in status.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        obj["status"] = merged

    def _bump(self) -> None:
        self.generation += 1
        self._changed.set()

    def objects(self) -> dict[tuple[str, str], dict[str, Any]]:
        return dict(self._objects)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((namespace, name))

    async def wait_changed(self, generation: int) -> int:
        while self.generation == generation:
            self._changed.clear()
            await self._changed.wait()
        return self.generation

    def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False


class FakeElector:
    """An `Elector` whose leadership the test flips with `set_leading()`."""

    def __init__(self) -> None:
        self.is_leader = False
        self.leader_deadline: float | None = None
        self.started = False
        self._callbacks: list[Callable[[bool], None]] = []

    def on_change(self, callback: Callable[[bool], None]) -> None:
        self._callbacks.append(callback)

    def start(self) -> None:
        self.started = True

    def set_leading(self, leading: bool, deadline: float | None = None) -> None:
        changed = leading != self.is_leader
        self.is_leader = leading
        self.leader_deadline = deadline if leading else None
        if changed:
            for callback in self._callbacks:
                callback(leading)


# -- scraping --------------------------------------------------------------------------------


def scrape_error(kind: ScrapeErrorKind = ScrapeErrorKind.CONNECT_REFUSED,
                 message: str = "connection refused") -> ScrapeError:  # fmt: skip
    return ScrapeError(kind, "https://10.0.0.1:8000/metrics", message)


class FakeScraper:
    """A `Scrape` answering from `answers[(pod, metric)]`: a value, or a `ScrapeError`.

    A pod without an answer is an `absent` error (never 0). `during` runs inside each
    `scrape()` call before it answers (to change the world mid-tick).
    """

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], float | ScrapeError | tuple[Any, ...]] = {}
        """A tuple answer is `(label sets, values)`: the series of a derived source."""
        self.calls: list[tuple[list[ScrapeTarget], float]] = []
        self.during: Callable[[], Awaitable[None]] | None = None
        self.closed = False
        self.stats = ScrapeStats()

    def set(self, metric: str, **values: float | ScrapeError | tuple[Any, ...]) -> None:
        """`set("requests", web_0=10, web_1=scrape_error())`: pod names with `_` for `-`."""
        for name, value in values.items():
            self.answers[(name.replace("_", "-"), metric)] = value

    async def scrape(
        self, targets: Sequence[ScrapeTarget], *, timeout: float
    ) -> list[ScrapeOutcome]:
        self.calls.append((list(targets), timeout))
        if self.during is not None:
            await self.during()
        outcomes: list[ScrapeOutcome] = []
        for target in targets:
            answer = self.answers.get((target.pod, target.source.target_metric))
            if answer is None:
                answer = ScrapeError(ScrapeErrorKind.ABSENT, target.pod, "no such series")
            if isinstance(answer, ScrapeError):
                outcomes.append(ScrapeOutcome(target=target, value=None, error=answer,
                                              duration_seconds=0.001))  # fmt: skip
            elif isinstance(answer, tuple):  # (label sets, values): a derived source, issue 13
                outcomes.append(ScrapeOutcome(target=target, value=sum(answer[1]), error=None,
                                              duration_seconds=0.001, matched=len(answer[0]),
                                              series=answer))  # fmt: skip
            else:
                outcomes.append(ScrapeOutcome(target=target, value=answer, error=None,
                                              duration_seconds=0.001, matched=1))  # fmt: skip
        return outcomes

    async def close(self) -> None:
        self.closed = True


# -- systemd ---------------------------------------------------------------------------------


@dataclass
class FakeNotifier:
    """A `SystemdNotify` that records what it would send."""

    watchdog_interval: float | None = None
    sent: list[str] = field(default_factory=list)

    def _send(self, line: str) -> bool:
        self.sent.append(line)
        return True

    def ready(self, status: str = "") -> bool:
        return self._send(f"READY=1 {status}".strip())

    def reloading(self) -> bool:
        return self._send("RELOADING=1")

    def stopping(self) -> bool:
        return self._send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self._send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1")

    def count(self, prefix: str) -> int:
        return sum(1 for line in self.sent if line.startswith(prefix))

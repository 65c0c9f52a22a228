"""Watch-based pod caches: one watch per namespace, shared by every selector in it.

`PodCaches.acquire(namespace, selector)` returns a `PodCache`: a view of the namespace's
pods filtered client-side by the label selector (`autoscalerd.kube.selectors`), as
client-go's informers do. 100 policies in one namespace need one watch, not 100; the
namespace watch is reference-counted and stops when its last view is released. Views with
the same (namespace, selector) are one object, reference-counted too.

Each namespace watch is an asyncio task running the list/watch loop of
`autoscalerd.kube.list_watch`: LIST (paginated), then WATCH from the list's resourceVersion
with bookmarks, re-LIST on 410 Gone, reconnect with jittered back-off, every read bounded so
a half-open connection cannot hang the cache. LISTs go through the client's call pool,
watches through its stream pool (see `autoscalerd.kube.client`).

Memory: only `PodInfo` (name, IP, phase, readiness, deletion flag, labels) is kept per pod
of the namespace, once, with interned label strings; views hold references to it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import structlog

from autoscalerd.kube._transport import JSON, Transport
from autoscalerd.kube.errors import Op
from autoscalerd.kube.list_watch import ListWatch, Target, WatchSettings
from autoscalerd.kube.quantity import parse_quantity
from autoscalerd.kube.selectors import Selector, SelectorError, parse_selector

log = structlog.get_logger(__name__)

__all__ = ["PodCache", "PodCaches", "PodInfo", "WatchSettings"]


@dataclass(frozen=True, slots=True)
class PodInfo:
    name: str
    ip: str
    """`status.podIP`, `""` until assigned."""
    phase: str
    ready: bool
    """Condition `Ready` is `True`."""
    deleting: bool
    """`metadata.deletionTimestamp` is set."""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    cpu_request_millis: float | None = field(default=None, compare=False)
    """Sum of the containers' `resources.requests.cpu` in millicores; None when a container
    has none (HPA cpu utilization needs every one, as in Kubernetes)."""

    @property
    def counts(self) -> bool:
        """Whether the pod counts for scaling (DESIGN §3): Running, Ready, has an IP, not deleting."""
        return self.phase == "Running" and self.ready and bool(self.ip) and not self.deleting


def _intern(value: object) -> str:
    # Label keys and values repeat across pods (app=web, pod-template-hash=...): one copy.
    return sys.intern(str(value))


def pod_info(obj: JSON) -> PodInfo:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    labels = meta.get("labels") or {}
    return PodInfo(
        name=str(meta.get("name", "")),
        ip=str(status.get("podIP") or ""),
        phase=str(status.get("phase") or ""),
        ready=ready,
        deleting=meta.get("deletionTimestamp") is not None,
        labels=MappingProxyType({_intern(k): _intern(v) for k, v in labels.items()}),
        cpu_request_millis=_cpu_request_millis(obj.get("spec") or {}),
    )


def _cpu_request_millis(spec: JSON) -> float | None:
    """The pod's summed cpu requests (millicores), None if a container has none (issue 12)."""
    total = 0.0
    containers = spec.get("containers") or []
    for c in containers:
        request = ((c.get("resources") or {}).get("requests") or {}).get("cpu")
        if request is None:
            return None
        try:
            total += parse_quantity(request) * 1000.0
        except ValueError:
            return None
    return total if containers else None


class PodCache:
    """The pods of one namespace matching one label selector: a view on the namespace's
    shared watch (`PodCaches.acquire` makes them; don't construct one yourself)."""

    def __init__(
        self,
        source: _NamespaceWatch | None,
        namespace: str,
        selector: str,
        parsed: Selector | None,
        *,
        error: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.selector = selector
        self._source = source
        self._parsed = parsed
        self._error = error
        self._pods: dict[str, PodInfo] = {}
        self._sorted: list[PodInfo] | None = []
        self.generation = 0
        """Incremented on every change of this view's pod set; cheap to poll."""

    # -- public --------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once a LIST succeeded and until a later re-LIST fails (never for a malformed
        selector)."""
        return self._source is not None and self._source.lw.synced

    @property
    def last_error(self) -> str | None:
        """The last list/watch failure (None once a list or watch succeeded since), or why
        the selector cannot be used."""
        return self._source.lw.last_error if self._source is not None else self._error

    @property
    def relists(self) -> int:
        """How many times the namespace was listed (1 after the first sync)."""
        return self._source.lw.relists if self._source is not None else 0

    def pods(self) -> list[PodInfo]:
        """The cached pods matching the selector (any phase), sorted by name."""
        if self._sorted is None:
            self._sorted = [self._pods[k] for k in sorted(self._pods)]
        return list(self._sorted)

    async def wait_synced(self, timeout: float | None = None) -> bool:
        if self._source is None:
            await asyncio.sleep(timeout or 0)
            return False
        try:
            async with asyncio.timeout(timeout):
                await self._source.synced_event.wait()
        except TimeoutError:
            return False
        return True

    async def wait_changed(self, generation: int, timeout: float | None = None) -> int:
        """Wait until `self.generation` differs from `generation`; return the new value."""
        if self._source is None:
            if generation == self.generation:
                await asyncio.sleep(timeout or 0)
            return self.generation
        changed = self._source.changed
        try:
            async with asyncio.timeout(timeout):
                async with changed:
                    await changed.wait_for(lambda: self.generation != generation)
        except TimeoutError:
            pass
        return self.generation

    def __repr__(self) -> str:
        return f"<PodCache {self.namespace}/{self.selector} pods={len(self._pods)}>"

    # -- fed by the namespace watch ------------------------------------------------------

    def _matches(self, info: PodInfo) -> bool:
        return self._parsed is not None and self._parsed.matches(info.labels)

    def _update(self, name: str, info: PodInfo | None) -> bool:
        """One pod changed (None: gone); True when this view's set changed."""
        if info is not None and self._matches(info):
            if self._pods.get(name) == info:
                return False
            self._pods[name] = info
        elif self._pods.pop(name, None) is None:
            return False  # neither before nor now in this view
        self.generation += 1
        self._sorted = None
        return True

    def _reset(self, pods: Mapping[str, PodInfo]) -> bool:
        """The whole namespace was (re-)listed; True when this view's set changed."""
        mine = {name: info for name, info in pods.items() if self._matches(info)}
        if mine == self._pods:
            return False
        self._pods = mine
        self.generation += 1
        self._sorted = None
        return True


class _NamespaceWatch:
    """All pods of one namespace (only their `PodInfo`), kept current by one list/watch
    loop (`kube/list_watch.py`, this is its `Store`), feeding the views attached to it."""

    def __init__(
        self,
        transport: Transport,
        stream_transport: Transport,
        namespace: str,
        settings: WatchSettings,
    ) -> None:
        self.namespace = namespace
        self._pods: dict[str, PodInfo] = {}
        self._views: list[PodCache] = []
        self.synced_event = asyncio.Event()
        self.changed = asyncio.Condition()
        target = Target(
            list_fn=transport.core.list_namespaced_pod,
            watch_fn=stream_transport.core.list_namespaced_pod,
            args=(namespace,),
            list_op=Op("list", "pods", "", namespace),
            watch_op=Op("watch", "pods", "", namespace),
            noun="pod",
            log_fields={"namespace": namespace},
            what=f"pods in {namespace}",
        )
        self.lw = ListWatch(target, self, transport, stream_transport, settings)

    def attach(self, view: PodCache) -> None:
        self._views.append(view)
        view._reset(self._pods)

    def detach(self, view: PodCache) -> None:
        if view in self._views:
            self._views.remove(view)

    @property
    def unused(self) -> bool:
        return not self._views

    # -- Store of the list/watch loop ------------------------------------------------------

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def entry(self, obj: JSON) -> tuple[str, PodInfo]:
        info = pod_info(obj)
        return info.name, info

    def reset(self, entries: dict[str, PodInfo]) -> bool:
        self._pods = entries
        self.synced_event.set()
        changed = False
        for view in self._views:
            changed = view._reset(entries) or changed
        return changed

    def update(self, kind: str, obj: JSON) -> bool:
        pod = pod_info(obj)
        name = pod.name
        info: PodInfo | None = pod
        if kind == "DELETED":
            if self._pods.pop(name, None) is None:
                return False
            info = None
        elif kind in ("ADDED", "MODIFIED"):
            if self._pods.get(name) == pod:
                return False
            self._pods[name] = pod
        else:
            return False
        changed = False
        for view in self._views:
            changed = view._update(name, info) or changed
        return changed


class PodCaches:
    """Pod caches by (namespace, selector), reference-counted, on one watch per namespace.

    `acquire` returns the view for (namespace, selector), starting the namespace's watch if
    it is the first view there; `release` drops a reference, and the watch stops when the
    namespace's last view is released.
    """

    def __init__(
        self,
        transport: Transport,
        settings: WatchSettings | None = None,
        *,
        stream_transport: Transport | None = None,
    ) -> None:
        self._t = transport
        self._stream_t = stream_transport or transport
        self._settings = settings or WatchSettings()
        self._caches: dict[tuple[str, str], tuple[PodCache, int]] = {}
        self._watches: dict[str, _NamespaceWatch] = {}

    def acquire(self, namespace: str, selector: str) -> PodCache:
        """Return the cache for (namespace, selector), sharing the namespace's watch.

        An empty selector is refused (`ValueError`): it would select every pod of the
        namespace. A malformed one gives a cache that never syncs, with the parse error as
        its `last_error` (what the API server's 400 answer used to give), and no watch.
        """
        if not selector.strip():
            raise ValueError(f"empty pod selector in namespace {namespace}")
        key = (namespace, selector)
        entry = self._caches.get(key)
        if entry is not None:
            self._caches[key] = (entry[0], entry[1] + 1)
            return entry[0]
        try:
            parsed = parse_selector(selector)
        except SelectorError as exc:
            cache = PodCache(None, namespace, selector, None, error=str(exc))
            self._caches[key] = (cache, 1)
            log.warning("pod selector refused", namespace=namespace, error=str(exc))
            return cache
        watch = self._watches.get(namespace)
        if watch is None:
            watch = _NamespaceWatch(self._t, self._stream_t, namespace, self._settings)
            self._watches[namespace] = watch
            watch.lw.start(f"pod watch {namespace}")
            log.info("pod watch started", namespace=namespace)
        cache = PodCache(watch, namespace, selector, parsed)
        watch.attach(cache)
        self._caches[key] = (cache, 1)
        log.info("pod cache started", namespace=namespace, selector=selector)
        return cache

    async def release(self, cache: PodCache) -> None:
        key = (cache.namespace, cache.selector)
        entry = self._caches.get(key)
        if entry is None or entry[0] is not cache:
            return
        if entry[1] > 1:
            self._caches[key] = (cache, entry[1] - 1)
            return
        del self._caches[key]
        log.info("pod cache stopped", namespace=cache.namespace, selector=cache.selector)
        watch = cache._source
        if watch is None:
            return
        watch.detach(cache)
        if watch.unused and self._watches.get(watch.namespace) is watch:
            del self._watches[watch.namespace]
            await watch.lw.stop()
            log.info("pod watch stopped", namespace=watch.namespace)

    def active(self) -> list[PodCache]:
        """The caches in use (one per distinct namespace and selector)."""
        return [c for c, _ in self._caches.values()]

    def watched_namespaces(self) -> list[str]:
        """The namespaces with a running pod watch, sorted."""
        return sorted(self._watches)

    async def close(self) -> None:
        watches = list(self._watches.values())
        self._caches.clear()
        self._watches.clear()
        await asyncio.gather(*(w.lw.stop() for w in watches), return_exceptions=True)

"""Watch-based pod caches: one watch per namespace, shared by every selector in it.

`PodCaches.acquire(namespace, selector)` returns a `PodCache`: a view of the namespace's
pods filtered client-side by the label selector (`autoscalerd.kube.selectors`), as
client-go's informers do. 100 policies in one namespace need one watch, not 100; the
namespace watch is reference-counted and stops when its last view is released. Views with
the same (namespace, selector) are one object, reference-counted too.

Each namespace watch is an asyncio task: LIST (paginated), then WATCH from the list's
resourceVersion with `allowWatchBookmarks`, re-LIST on 410 Gone (an ERROR event with code
410, or a 410 answer), reconnect with jittered backoff when the stream drops or fails. The
server ends each watch after `timeoutSeconds`; the client bounds every read (`sock_read`) a
little beyond that, so a half-open connection cannot hang the cache. LISTs go through the
client's call pool, watches through its stream pool (see `autoscalerd.kube.client`).

Memory: only `PodInfo` (name, IP, phase, readiness, deletion flag, labels) is kept per pod
of the namespace, once, with interned label strings; views hold references to it.

kubernetes_asyncio's `watch.Watch` is deliberately not used: it builds an extra `ApiClient()`
from the *global default* Configuration (only to deserialize models), retries 410 just once,
and turns every event into generated model objects. We read the stream ourselves through the
client's own ApiClient.

About 520 lines: the shared namespace watch (list, resume, 410 re-list, bookmarks, back-off)
and the per-selector views it feeds are one state machine.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog

from autoscalerd.kube._transport import JSON, Transport
from autoscalerd.kube.errors import KubeError, Op
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


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Timings of the list/watch loop (seconds)."""

    watch_timeout: tuple[float, float] = (60.0, 90.0)
    """Server-side `timeoutSeconds` of each watch, drawn uniformly from this range."""
    read_grace: float = 15.0
    """A watch with no byte for `timeoutSeconds + read_grace` is dropped (half-open guard)."""
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    list_page_size: int = 500
    """LIST in pages of this many pods (`limit`/`continue`); 0 = one answer."""


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


class _Gone(Exception):
    """The resourceVersion we watch from is too old: re-list."""


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
        return self._source is not None and self._source.synced

    @property
    def last_error(self) -> str | None:
        """The last list/watch failure (None once a list or watch succeeded since), or why
        the selector cannot be used."""
        return self._source.last_error if self._source is not None else self._error

    @property
    def relists(self) -> int:
        """How many times the namespace was listed (1 after the first sync)."""
        return self._source.relists if self._source is not None else 0

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
    loop, feeding the views attached to it."""

    def __init__(
        self,
        transport: Transport,
        stream_transport: Transport,
        namespace: str,
        settings: WatchSettings,
    ) -> None:
        self.namespace = namespace
        self._t = transport
        self._stream_t = stream_transport
        self._settings = settings
        self._pods: dict[str, PodInfo] = {}
        self._views: list[PodCache] = []
        self.synced = False
        self.synced_event = asyncio.Event()
        self.changed = asyncio.Condition()
        self.last_error: str | None = None
        self.relists = 0
        self._task: asyncio.Task[None] | None = None

    def attach(self, view: PodCache) -> None:
        self._views.append(view)
        view._reset(self._pods)

    def detach(self, view: PodCache) -> None:
        if view in self._views:
            self._views.remove(view)

    @property
    def unused(self) -> bool:
        return not self._views

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"pod watch {self.namespace}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # -- loop ----------------------------------------------------------------------------

    def _op(self, verb: str) -> Op:
        return Op(verb, "pods", "", self.namespace)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _list(self) -> str:
        pods: dict[str, PodInfo] = {}
        page_size = self._settings.list_page_size
        kwargs: dict[str, Any] = {"limit": page_size} if page_size > 0 else {}
        while True:
            doc = await self._t.call(
                self._op("list"), self._t.core.list_namespaced_pod, self.namespace, **kwargs
            )
            for obj in doc.get("items") or []:
                info = pod_info(obj)
                pods[info.name] = info
            meta = doc.get("metadata") or {}
            token = meta.get("continue")
            if not token or page_size <= 0:
                break
            kwargs["_continue"] = str(token)  # an expired token answers 410: re-list
        self._pods = pods
        self.synced = True
        self.synced_event.set()
        self.last_error = None
        self.relists += 1
        changed = False
        for view in self._views:
            changed = view._reset(pods) or changed
        if changed:
            await self._notify()
        return str(meta.get("resourceVersion") or "")

    async def _watch(self, resource_version: str) -> str:
        lo, hi = self._settings.watch_timeout
        server_timeout = int(random.uniform(lo, hi)) or 1
        read_timeout = server_timeout + self._settings.read_grace
        # Booleans as "true": kubernetes_asyncio would urlencode True as "True", which Go's
        # ParseBool accepts but stricter servers (and proxies) may not.
        kwargs: dict[str, Any] = {
            "watch": "true",
            "allow_watch_bookmarks": "true",
            "timeout_seconds": server_timeout,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        async with self._stream_t.stream(
            self._op("watch"),
            self._stream_t.core.list_namespaced_pod,
            self.namespace,
            read_timeout=read_timeout,
            **kwargs,
        ) as events:
            async for event in events:
                resource_version = await self._apply(event, resource_version)
                self.last_error = None
        return resource_version

    async def _apply(self, event: JSON, resource_version: str) -> str:
        kind = str(event.get("type", ""))
        obj = event.get("object")
        if not isinstance(obj, dict):
            return resource_version
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone(str(obj.get("message") or "resource version too old"))
            raise KubeError(
                f"watch pods in {self.namespace}: error event {code}: {obj.get('message')}",
                op=self._op("watch"),
                status=code if isinstance(code, int) else None,
                reason=obj.get("reason"),
            )
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "") or resource_version
        if kind == "BOOKMARK":
            return rv
        pod = pod_info(obj)
        name = pod.name
        info: PodInfo | None = pod
        if kind == "DELETED":
            if self._pods.pop(name, None) is None:
                return rv
            info = None
        elif kind in ("ADDED", "MODIFIED"):
            if self._pods.get(name) == pod:
                return rv
            self._pods[name] = pod
        else:
            return rv
        changed = False
        for view in self._views:
            changed = view._update(name, info) or changed
        if changed:
            await self._notify()
        return rv

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        gone = 0
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._list()
                started = loop.time()
                rv = await self._watch(rv)
                gone = 0
                # A watch that ended normally (server-side timeout): watch again from rv.
                # One that ends at once, again and again, must not spin: back off.
                if loop.time() - started < 1.0:
                    failures += 1
                    await asyncio.sleep(self._delay(failures))
                else:
                    failures = 0
            except asyncio.CancelledError:
                raise
            except (_Gone, KubeError) as exc:
                if isinstance(exc, _Gone) or exc.status == 410:
                    log.info(
                        "pod watch expired, re-listing", namespace=self.namespace, reason=str(exc)
                    )
                    rv = None
                    gone += 1
                    if gone > 1:  # 410s in a row (watch or paginated list): don't spin
                        await asyncio.sleep(self._delay(gone - 1))
                    continue
                gone = 0
                failures += 1
                first = self.last_error != str(exc)
                self.last_error = str(exc)
                if rv is None and self.synced:
                    self.synced = False  # a re-list failed: the cache may be stale
                (log.warning if first else log.debug)(
                    "pod watch failed, retrying",
                    namespace=self.namespace,
                    error=str(exc),
                    attempt=failures,
                )
                await asyncio.sleep(self._delay(failures))
                if failures >= 3:
                    rv = None  # after repeated watch failures, resync with a full list
            except Exception as exc:  # a bug must not kill the cache silently
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("pod watch error", namespace=self.namespace)
                rv = None
                await asyncio.sleep(self._delay(failures))

    def _delay(self, failures: int) -> float:
        s = self._settings
        ceiling = min(s.backoff_max, s.backoff_base * 2.0 ** max(0, failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


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
            watch.start()
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
            await watch.stop()
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
        await asyncio.gather(*(w.stop() for w in watches), return_exceptions=True)

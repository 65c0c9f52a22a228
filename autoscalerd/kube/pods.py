"""A watch-based cache of the pods behind one label selector, shared by the policies using it.

Each cache is an asyncio task: LIST, then WATCH from the list's resourceVersion with
`allowWatchBookmarks`, re-LIST on 410 Gone (an ERROR event with code 410, or a 410 answer),
reconnect with jittered backoff when the stream drops or fails. The server ends each watch
after `timeoutSeconds`; the client bounds every read (`sock_read`) a little beyond that, so a
half-open connection cannot hang the cache.

kubernetes_asyncio's `watch.Watch` is deliberately not used: it builds an extra `ApiClient()`
from the *global default* Configuration (only to deserialize models), retries 410 just once,
and turns every event into generated model objects. We read the stream ourselves through the
client's own ApiClient.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog

from autoscalerd.kube._transport import JSON, Transport
from autoscalerd.kube.errors import KubeError, Op

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
        labels=MappingProxyType({str(k): str(v) for k, v in labels.items()}),
    )


class _Gone(Exception):
    """The resourceVersion we watch from is too old: re-list."""


class PodCache:
    """The pods of one namespace matching one label selector, kept current by a watch."""

    def __init__(
        self,
        transport: Transport,
        namespace: str,
        selector: str,
        settings: WatchSettings | None = None,
        *,
        stream_transport: Transport | None = None,
    ) -> None:
        self.namespace = namespace
        self.selector = selector
        self._t = transport
        self._stream_t = stream_transport or transport
        self._settings = settings or WatchSettings()
        self._pods: dict[str, PodInfo] = {}
        self._synced = False
        self._synced_event = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        """The last list/watch failure, or None once a list or watch succeeded since."""
        self.generation = 0
        """Incremented on every change of the pod set; cheap to poll."""
        self.relists = 0
        """How many times the cache listed (1 after the first sync); useful for tests/metrics."""

    # -- public --------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once a LIST succeeded and until a later re-LIST fails."""
        return self._synced

    def pods(self) -> list[PodInfo]:
        """All cached pods (any phase), sorted by name."""
        return [self._pods[k] for k in sorted(self._pods)]

    async def wait_synced(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._synced_event.wait()
        except TimeoutError:
            return False
        return True

    async def wait_changed(self, generation: int, timeout: float | None = None) -> int:
        """Wait until `self.generation` differs from `generation`; return the new value."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: self.generation != generation)
        except TimeoutError:
            pass
        return self.generation

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self._run(), name=f"podcache {self.namespace}/{self.selector}"
            )

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
        self.generation += 1
        async with self._changed:
            self._changed.notify_all()

    async def _list(self) -> str:
        doc = await self._t.call(
            self._op("list"),
            self._t.core.list_namespaced_pod,
            self.namespace,
            label_selector=self.selector,
        )
        pods = {}
        for obj in doc.get("items") or []:
            info = pod_info(obj)
            pods[info.name] = info
        changed = pods != self._pods
        self._pods = pods
        self._synced = True
        self._synced_event.set()
        self.last_error = None
        self.relists += 1
        if changed:
            await self._notify()
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, resource_version: str) -> str:
        lo, hi = self._settings.watch_timeout
        server_timeout = int(random.uniform(lo, hi)) or 1
        read_timeout = server_timeout + self._settings.read_grace
        # Booleans as "true": kubernetes_asyncio would urlencode True as "True", which Go's
        # ParseBool accepts but stricter servers (and proxies) may not.
        kwargs: dict[str, Any] = {
            "label_selector": self.selector,
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
        info = pod_info(obj)
        if kind == "DELETED":
            if self._pods.pop(info.name, None) is not None:
                await self._notify()
        elif kind in ("ADDED", "MODIFIED") and self._pods.get(info.name) != info:
            self._pods[info.name] = info
            await self._notify()
        return rv

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._list()
                started = loop.time()
                rv = await self._watch(rv)
                # A watch that ended normally (server-side timeout): watch again from rv.
                # One that ends at once, again and again, must not spin: back off.
                if loop.time() - started < 1.0:
                    failures += 1
                    await asyncio.sleep(self._delay(failures))
                else:
                    failures = 0
            except _Gone as exc:
                log.info(
                    "pod watch expired, re-listing",
                    namespace=self.namespace,
                    selector=self.selector,
                    reason=str(exc),
                )
                rv = None
                failures += 1
                if failures > 1:  # two 410s in a row: don't spin
                    await asyncio.sleep(self._delay(failures - 1))
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 410:
                    rv = None
                    log.info("pod watch gone, re-listing", namespace=self.namespace)
                    continue
                failures += 1
                first = self.last_error != str(exc)
                self.last_error = str(exc)
                if rv is None and self._synced:
                    self._synced = False  # a re-list failed: the cache may be stale
                (log.warning if first else log.debug)(
                    "pod watch failed, retrying",
                    namespace=self.namespace,
                    selector=self.selector,
                    error=str(exc),
                    attempt=failures,
                )
                await asyncio.sleep(self._delay(failures))
                if failures >= 3:
                    rv = None  # after repeated watch failures, resync with a full list
            except Exception as exc:  # a bug must not kill the cache silently
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("pod cache error", namespace=self.namespace, selector=self.selector)
                rv = None
                await asyncio.sleep(self._delay(failures))

    def _delay(self, failures: int) -> float:
        s = self._settings
        ceiling = min(s.backoff_max, s.backoff_base * 2.0 ** max(0, failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class PodCaches:
    """One `PodCache` per (namespace, selector), reference-counted: `acquire` starts it (or
    shares a running one), `release` stops it when its last user lets go."""

    def __init__(
        self,
        transport: Transport,
        settings: WatchSettings | None = None,
        *,
        stream_transport: Transport | None = None,
    ) -> None:
        self._t = transport
        self._stream_t = stream_transport
        self._settings = settings
        self._caches: dict[tuple[str, str], tuple[PodCache, int]] = {}

    def acquire(self, namespace: str, selector: str) -> PodCache:
        """Return the running cache for (namespace, selector), starting one if needed.

        An empty selector is refused: it would select every pod of the namespace.
        """
        if not selector.strip():
            raise ValueError(f"empty pod selector in namespace {namespace}")
        key = (namespace, selector)
        entry = self._caches.get(key)
        if entry is None:
            cache = PodCache(
                self._t, namespace, selector, self._settings, stream_transport=self._stream_t
            )
            cache.start()
            self._caches[key] = (cache, 1)
            log.info("pod cache started", namespace=namespace, selector=selector)
            return cache
        self._caches[key] = (entry[0], entry[1] + 1)
        return entry[0]

    async def release(self, cache: PodCache) -> None:
        key = (cache.namespace, cache.selector)
        entry = self._caches.get(key)
        if entry is None or entry[0] is not cache:
            return
        if entry[1] > 1:
            self._caches[key] = (cache, entry[1] - 1)
            return
        del self._caches[key]
        await cache.stop()
        log.info("pod cache stopped", namespace=cache.namespace, selector=cache.selector)

    def active(self) -> list[PodCache]:
        return [c for c, _ in self._caches.values()]

    async def close(self) -> None:
        caches = [c for c, _ in self._caches.values()]
        self._caches.clear()
        await asyncio.gather(*(c.stop() for c in caches), return_exceptions=True)

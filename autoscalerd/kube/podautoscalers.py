"""AIbrix `PodAutoscaler` objects from the API (cluster mode, DESIGN §8): list and watch them,
write their status.

`PodAutoscalerFeed` keeps the objects of every namespace (one cluster-wide list/watch) or of
the named ones (one per namespace), optionally filtered by a label selector on the server,
with the pod cache's discipline (`kube/pods.py`): LIST (paginated), WATCH from its
resourceVersion with bookmarks, re-LIST on 410 Gone, reconnect with jittered, bounded
back-off, every read bounded so a half-open connection cannot hang it.

Only what the daemon needs of an object is kept: apiVersion, kind, the metadata that names
and claims it (name, namespace, uid, generation, labels, annotations without kubectl's
`last-applied-configuration`, creationTimestamp), `spec` and `status`. `generation` counts
changes of anything but `.status`, so the daemon's own status writes do not wake it up;
`.status` is kept current in place (the status writer starts from it after a leader change).

`patch_status` writes `.status` through the `status` subresource as a JSON merge patch, one
call, bounded by the API timeout and the leader's deadline.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from autoscalerd.kube._transport import JSON, Transport
from autoscalerd.kube.errors import KubeError, Op
from autoscalerd.kube.pods import WatchSettings

log = structlog.get_logger(__name__)

__all__ = ["GROUP", "PLURAL", "VERSION", "PodAutoscalerFeed", "patch_status", "slim"]

GROUP = "autoscaling.aibrix.ai"
VERSION = "v1alpha1"
PLURAL = "podautoscalers"
API_VERSION = f"{GROUP}/{VERSION}"
MERGE_PATCH = "application/merge-patch+json"
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
_KEPT_META = ("name", "namespace", "uid", "generation", "labels", "creationTimestamp")

Key = tuple[str, str]


def slim(obj: JSON) -> JSON:
    """The part of an object the daemon uses (see the module doc)."""
    meta = obj.get("metadata") or {}
    out_meta: dict[str, Any] = {k: meta[k] for k in _KEPT_META if k in meta}
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        out_meta["annotations"] = {
            k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS
        }
    out: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion") or API_VERSION,
        "kind": obj.get("kind") or "PodAutoscaler",
        "metadata": out_meta,
    }
    if "spec" in obj:
        out["spec"] = obj["spec"]
    if "status" in obj:
        out["status"] = obj["status"]
    return out


def _without_status(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k != "status"}


class _Gone(Exception):
    """The resourceVersion we watch from is too old: re-list."""


class _Scope:
    """One list/watch loop: every namespace (`namespace` None) or one."""

    def __init__(self, feed: PodAutoscalerFeed, namespace: str | None) -> None:
        self.feed = feed
        self.namespace = namespace
        self.objects: dict[Key, JSON] = {}
        self.synced = False
        self.last_error: str | None = None
        self.relists = 0
        self.task: asyncio.Task[None] | None = None

    def _op(self, verb: str) -> Op:
        return Op(verb, "podautoscalers", "autoscaling.aibrix.ai", self.namespace or "")

    def _method(self, t: Transport) -> tuple[Any, tuple[Any, ...]]:
        if self.namespace is None:
            return t.custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        return t.custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, PLURAL)

    def _selector_kwargs(self) -> dict[str, Any]:
        sel = self.feed.label_selector
        return {"label_selector": sel} if sel else {}

    async def list(self) -> str:
        t = self.feed._t
        fn, args = self._method(t)
        page = self.feed.settings.list_page_size
        kwargs: dict[str, Any] = self._selector_kwargs()
        if page > 0:
            kwargs["limit"] = page
        objects: dict[Key, JSON] = {}
        while True:
            doc = await t.call(self._op("list"), fn, *args, **kwargs)
            for item in doc.get("items") or []:
                if isinstance(item, dict):
                    obj = slim(item)
                    meta = obj["metadata"]
                    objects[(str(meta.get("namespace", "")), str(meta.get("name", "")))] = obj
            meta = doc.get("metadata") or {}
            token = meta.get("continue")
            if not token or page <= 0:
                break
            kwargs["_continue"] = str(token)
        changed = {k: _without_status(v) for k, v in objects.items()} != {
            k: _without_status(v) for k, v in self.objects.items()
        }
        self.objects = objects
        self.synced = True
        self.last_error = None
        self.relists += 1
        self.feed._changed(changed or self.relists == 1)
        return str(meta.get("resourceVersion") or "")

    async def watch(self, rv: str) -> str:
        s = self.feed.settings
        lo, hi = s.watch_timeout
        server_timeout = int(random.uniform(lo, hi)) or 1
        kwargs: dict[str, Any] = {
            "watch": "true",
            "allow_watch_bookmarks": "true",
            "timeout_seconds": server_timeout,
            **self._selector_kwargs(),
        }
        if rv:
            kwargs["resource_version"] = rv
        t = self.feed._stream_t
        fn, args = self._method(t)
        async with t.stream(
            self._op("watch"), fn, *args, read_timeout=server_timeout + s.read_grace, **kwargs
        ) as events:
            async for event in events:
                rv = self.apply(event, rv)
                self.last_error = None
        return rv

    def apply(self, event: JSON, rv: str) -> str:
        kind = str(event.get("type", ""))
        obj = event.get("object")
        if not isinstance(obj, dict):
            return rv
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone(str(obj.get("message") or "resource version too old"))
            raise KubeError(
                f"watch podautoscalers: error event {code}: {obj.get('message')}",
                op=self._op("watch"),
                status=code if isinstance(code, int) else None,
                reason=obj.get("reason"),
            )
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or "") or rv
        if kind == "BOOKMARK":
            return new_rv
        item = slim(obj)
        meta = item["metadata"]
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if kind == "DELETED":
            if self.objects.pop(key, None) is not None:
                self.feed._changed(True)
        elif kind in ("ADDED", "MODIFIED"):
            old = self.objects.get(key)
            self.objects[key] = item
            self.feed._changed(old is None or _without_status(old) != _without_status(item))
        return new_rv

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = gone = 0
        rv: str | None = None
        where = self.namespace or "all namespaces"
        while True:
            try:
                if rv is None:
                    rv = await self.list()
                started = loop.time()
                rv = await self.watch(rv)
                gone = 0
                if loop.time() - started < 1.0:  # ended at once: don't spin
                    failures += 1
                    await asyncio.sleep(self.feed._delay(failures))
                else:
                    failures = 0
            except asyncio.CancelledError:
                raise
            except (_Gone, KubeError) as exc:
                if isinstance(exc, _Gone) or exc.status == 410:
                    log.info("podautoscaler watch expired, re-listing", scope=where)
                    rv = None
                    gone += 1
                    if gone > 1:
                        await asyncio.sleep(self.feed._delay(gone - 1))
                    continue
                gone = 0
                failures += 1
                first = self.last_error != str(exc)
                self.last_error = str(exc)
                (log.warning if first else log.debug)(
                    "podautoscaler watch failed, retrying",
                    scope=where,
                    error=str(exc),
                    attempt=failures,
                )
                await asyncio.sleep(self.feed._delay(failures))
                if failures >= 3:
                    rv = None
            except Exception as exc:  # a bug must not end the feed silently
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("podautoscaler watch error", scope=where)
                rv = None
                await asyncio.sleep(self.feed._delay(failures))


class PodAutoscalerFeed:
    """The PodAutoscaler objects in scope, kept current; `start()` it, `await stop()`."""

    def __init__(
        self,
        transport: Transport,
        stream_transport: Transport,
        namespaces: Sequence[str] = (),
        label_selector: str = "",
        settings: WatchSettings | None = None,
    ) -> None:
        self._t = transport
        self._stream_t = stream_transport
        self.label_selector = label_selector
        self.settings = settings or WatchSettings()
        self._scopes = [_Scope(self, ns) for ns in namespaces] or [_Scope(self, None)]
        self.generation = 0
        """Incremented on every change of an object other than of its `.status`."""
        self._event = asyncio.Event()

    @property
    def synced(self) -> bool:
        """Every scope has listed at least once (and its last re-list did not fail)."""
        return all(s.synced for s in self._scopes)

    @property
    def last_error(self) -> str | None:
        errors = [s.last_error for s in self._scopes if s.last_error]
        return errors[0] if errors else None

    @property
    def relists(self) -> int:
        return sum(s.relists for s in self._scopes)

    def objects(self) -> dict[Key, JSON]:
        """Every object in scope by (namespace, name) (slim copies; don't mutate them)."""
        out: dict[Key, JSON] = {}
        for scope in self._scopes:
            out.update(scope.objects)
        return out

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        for scope in self._scopes:
            obj = scope.objects.get((namespace, name))
            if obj is not None:
                return obj
        return None

    def _changed(self, changed: bool) -> None:
        if changed:
            self.generation += 1
            self._event.set()

    async def wait_changed(self, generation: int) -> int:
        """Wait until `generation` differs from the one given; return the new one."""
        while self.generation == generation:
            self._event.clear()
            await self._event.wait()
        return self.generation

    def start(self) -> None:
        for scope in self._scopes:
            if scope.task is None or scope.task.done():
                name = f"podautoscaler watch {scope.namespace or '*'}"
                scope.task = asyncio.get_running_loop().create_task(scope.run(), name=name)

    async def stop(self) -> None:
        tasks = [s.task for s in self._scopes if s.task is not None]
        for scope in self._scopes:
            scope.task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _delay(self, failures: int) -> float:
        s = self.settings
        ceiling = min(s.backoff_max, s.backoff_base * 2.0 ** max(0, failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


async def patch_status(
    t: Transport,
    namespace: str,
    name: str,
    status: Mapping[str, Any],
    *,
    deadline: float | None = None,
) -> JSON:
    """Merge-patch `.status` of one PodAutoscaler (one call; raises `KubeError`)."""
    return await t.call(
        Op("patch", "podautoscalers/status", "autoscaling.aibrix.ai", namespace, name),
        t.custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": dict(status)},
        deadline=deadline,
        _content_type=MERGE_PATCH,
    )

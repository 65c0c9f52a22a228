"""AIbrix `PodAutoscaler` objects from the API (cluster mode, DESIGN §8): list and watch them,
write their status.

`PodAutoscalerFeed` keeps the objects of every namespace (one cluster-wide list/watch) or of
the named ones (one per namespace), optionally filtered by a label selector on the server,
with the list/watch loop the pod caches use too (`kube/list_watch.py`): LIST (paginated),
WATCH from its resourceVersion with bookmarks, re-LIST on 410 Gone, reconnect with jittered,
bounded back-off, every read bounded so a half-open connection cannot hang it.

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
from collections.abc import Mapping, Sequence
from typing import Any

from autoscalerd.kube._transport import JSON, Transport
from autoscalerd.kube.errors import Op
from autoscalerd.kube.list_watch import ListWatch, Target, WatchSettings

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


class _Scope:
    """The objects of every namespace (`namespace` None) or of one, kept by one list/watch
    loop (`kube/list_watch.py`; this is its `Store`)."""

    def __init__(self, feed: PodAutoscalerFeed, namespace: str | None) -> None:
        self.feed = feed
        self.namespace = namespace
        self.objects: dict[Key, JSON] = {}
        t, st = feed._t, feed._stream_t
        method = "list_namespaced_custom_object" if namespace else "list_cluster_custom_object"
        target = Target(
            list_fn=getattr(t.custom, method),
            watch_fn=getattr(st.custom, method),
            args=(GROUP, VERSION, namespace, PLURAL) if namespace else (GROUP, VERSION, PLURAL),
            list_op=Op("list", "podautoscalers", "autoscaling.aibrix.ai", namespace or ""),
            watch_op=Op("watch", "podautoscalers", "autoscaling.aibrix.ai", namespace or ""),
            noun="podautoscaler",
            log_fields={"scope": namespace or "all namespaces"},
            what=PLURAL,
            kwargs={"label_selector": feed.label_selector} if feed.label_selector else {},
        )
        self.lw = ListWatch(target, self, t, st, feed.settings)

    def entry(self, obj: JSON) -> tuple[Key, JSON]:
        item = slim(obj)
        meta = item["metadata"]
        return (str(meta.get("namespace", "")), str(meta.get("name", ""))), item

    def reset(self, entries: dict[Key, JSON]) -> bool:
        changed = {k: _without_status(v) for k, v in entries.items()} != {
            k: _without_status(v) for k, v in self.objects.items()
        }
        self.objects = entries
        return changed or self.lw.relists == 1

    def update(self, kind: str, obj: JSON) -> bool:
        key, item = self.entry(obj)
        if kind == "DELETED":
            return self.objects.pop(key, None) is not None
        if kind in ("ADDED", "MODIFIED"):
            old = self.objects.get(key)
            self.objects[key] = item
            return old is None or _without_status(old) != _without_status(item)
        return False

    async def notify(self) -> None:
        self.feed._changed()


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
        return all(s.lw.relists > 0 for s in self._scopes)

    @property
    def last_error(self) -> str | None:
        errors = [s.lw.last_error for s in self._scopes if s.lw.last_error]
        return errors[0] if errors else None

    @property
    def relists(self) -> int:
        return sum(s.lw.relists for s in self._scopes)

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

    def _changed(self) -> None:
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
            scope.lw.start(f"podautoscaler watch {scope.namespace or '*'}")

    async def stop(self) -> None:
        await asyncio.gather(*(s.lw.stop() for s in self._scopes))


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

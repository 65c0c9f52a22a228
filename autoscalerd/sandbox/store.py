"""In-memory object store with a global resourceVersion counter, a bounded event history
per resource and watchers, like etcd behind the real API server."""

from __future__ import annotations

import asyncio
import builtins
import copy
import secrets
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .selectors import Requirement, field_matches, matches


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    verbs: tuple[str, ...] = ("get", "list", "watch")
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``deployments.apps``, as API error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass
class StoredEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None


class Gone(Exception):
    """The requested resourceVersion is older than the retained history."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")


@dataclass(eq=False)
class Watcher:
    rtype: ResourceType
    namespace: str | None
    labels: list[Requirement]
    fields: list[tuple[str, str, str]]
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return matches(self.labels, meta.get("labels")) and field_matches(self.fields, obj)

    def translate(self, ev: StoredEvent) -> str | None:
        """The event type this watcher sees (objects entering/leaving its selector
        appear as ADDED/DELETED, as in the real API), or None to skip it."""
        new_ok = self.matches(ev.obj)
        if ev.type == "ADDED":
            return "ADDED" if new_ok else None
        if ev.type == "DELETED":
            return "DELETED" if new_ok else None
        old_ok = self.matches(ev.old)
        if new_ok and old_ok:
            return "MODIFIED"
        if new_ok:
            return "ADDED"
        if old_ok:
            return "DELETED"
        return None


class Store:
    def __init__(self, history_size: int = 2000) -> None:
        self.rv = 100
        self.compacted_rv = 0
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._history: dict[tuple[str, str], deque[StoredEvent]] = {}
        self._history_size = history_size
        self.watchers: set[Watcher] = set()

    # -- reads -------------------------------------------------------------------------
    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._objects.get(rtype.key, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def peek(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        """Like get() without the copy: callers must not mutate the result."""
        return self._objects.get(rtype.key, {}).get((namespace, name))

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None = None,
        labels: list[Requirement] | None = None,
        fields: list[tuple[str, str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        out = []
        for (ns, _name), obj in sorted(self._objects.get(rtype.key, {}).items()):
            if namespace is not None and ns != namespace:
                continue
            if labels and not matches(labels, obj["metadata"].get("labels")):
                continue
            if fields and not field_matches(fields, obj):
                continue
            out.append(copy.deepcopy(obj))
        return out

    # -- writes ------------------------------------------------------------------------
    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def create(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object (caller checked it does not exist); fills the server-set
        metadata and returns a copy."""
        obj = copy.deepcopy(obj)
        obj["kind"] = rtype.kind
        obj["apiVersion"] = rtype.api_version
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta.setdefault("generation", 1)
        meta.pop("deletionTimestamp", None)
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        key = (meta.get("namespace", ""), meta["name"])
        self._objects.setdefault(rtype.key, {})[key] = obj
        self._emit(rtype, StoredEvent(rv, "ADDED", copy.deepcopy(obj), None))
        return copy.deepcopy(obj)

    def replace(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of an existing object; bumps resourceVersion, and
        generation when ``spec`` changed."""
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        old = self._objects[rtype.key][key]
        obj["kind"] = rtype.kind
        obj["apiVersion"] = rtype.api_version
        for k in ("uid", "creationTimestamp"):
            meta[k] = old["metadata"][k]
        generation = old["metadata"].get("generation", 1)
        if "spec" in old and obj.get("spec") != old.get("spec"):
            generation += 1
        meta["generation"] = generation
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        self._objects[rtype.key][key] = obj
        self._emit(rtype, StoredEvent(rv, "MODIFIED", copy.deepcopy(obj), copy.deepcopy(old)))
        return copy.deepcopy(obj)

    def delete(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._objects.get(rtype.key, {}).pop((namespace, name), None)
        if obj is None:
            return None
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        self._emit(rtype, StoredEvent(rv, "DELETED", copy.deepcopy(obj), None))
        return copy.deepcopy(obj)

    # -- history and watch ---------------------------------------------------------------
    def _emit(self, rtype: ResourceType, ev: StoredEvent) -> None:
        hist = self._history.setdefault(rtype.key, deque())
        hist.append(ev)
        while len(hist) > self._history_size:
            self.compacted_rv = max(self.compacted_rv, hist.popleft().rv)
        for w in list(self.watchers):
            if w.rtype.key == rtype.key:
                w.queue.put_nowait(("event", ev))

    def events_since(self, rtype: ResourceType, rv: int) -> builtins.list[StoredEvent]:
        """Events after ``rv``; raises Gone when ``rv`` is older than the history kept."""
        if rv < self.compacted_rv:
            raise Gone(rv, self.compacted_rv + 1)
        return [ev for ev in self._history.get(rtype.key, ()) if ev.rv > rv]

    def compact(self) -> None:
        """Forget all history: every resourceVersion seen so far becomes too old."""
        self.rv += 1  # as in a live cluster, where the revision moves on constantly
        self.compacted_rv = self.rv
        self._history.clear()

"""Kubernetes Events on scaled objects (`kubectl describe deploy/web` shows them).

core/v1 Events with `source.component=autoscalerd`, `reportingComponent` and UTC
`firstTimestamp`/`lastTimestamp`, aggregated like client-go's correlator: an event with the
same object, type, reason and message as one recorded within `AGGREGATE_WINDOW` bumps that
object's `count` (a PATCH) instead of creating a new object every tick, and such PATCHes are
sent at most every `MIN_PATCH_INTERVAL` per event (repeats in between are counted and sent
with the next one). A failure to record an event is logged, never raised.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

import structlog

from autoscalerd.config.model import ScaleTargetRef
from autoscalerd.kube._transport import Transport
from autoscalerd.kube.errors import KubeError, KubeNotFound, Op

log = structlog.get_logger(__name__)

__all__ = ["EventReason", "EventRecorder", "EventSettings", "EventType"]

EventType = Literal["Normal", "Warning"]


class EventReason(StrEnum):
    """The reasons autoscalerd records (HPA's names where HPA has one)."""

    SUCCESSFUL_RESCALE = "SuccessfulRescale"
    FAILED_RESCALE = "FailedRescale"
    FAILED_GET_METRICS = "FailedGetMetrics"
    FAILED_GET_SCALE = "FailedGetScale"


COMPONENT = "autoscalerd"
AGGREGATE_WINDOW = 600.0
MIN_PATCH_INTERVAL = 10.0
MAX_TRACKED = 4096
MAX_MESSAGE = 1024


@dataclass(frozen=True, slots=True)
class EventSettings:
    aggregate_window: float = AGGREGATE_WINDOW
    """Repeats within this many seconds of the first occurrence bump its count."""
    min_patch_interval: float = MIN_PATCH_INTERVAL
    """At most one count PATCH per event per this many seconds (repeats are counted)."""


def k8s_time(ts: float | None = None) -> str:
    """RFC 3339 UTC with seconds precision (`metav1.Time`)."""
    when = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class _Seen:
    name: str
    count: int
    sent_count: int
    first_seen: float
    """Loop time when the object was created."""
    last_sent: float
    """Loop time of the last create/patch."""
    lock: asyncio.Lock


_Key = tuple[str, str, str, str, str, str, str]


class EventRecorder:
    def __init__(
        self,
        transport: Transport,
        *,
        instance: str,
        settings: EventSettings | None = None,
    ) -> None:
        settings = settings or EventSettings()
        self._t = transport
        self.instance = instance
        self._window = settings.aggregate_window
        self._min_patch = settings.min_patch_interval
        self._seen: OrderedDict[_Key, _Seen] = OrderedDict()

    async def record(
        self,
        namespace: str,
        involved: ScaleTargetRef,
        type: EventType,
        reason: str,
        message: str,
        *,
        uid: str | None = None,
    ) -> None:
        """Record (or aggregate) an event on `involved`. Never raises `KubeError`."""
        reason = str(reason)
        message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
        key: _Key = (
            namespace,
            involved.api_version,
            involved.kind,
            involved.name,
            type,
            reason,
            message,
        )
        loop = asyncio.get_running_loop()
        seen = self._seen.get(key)
        if seen is not None and loop.time() - seen.first_seen > self._window:
            self._seen.pop(key, None)
            seen = None
        if seen is None:
            seen = _Seen("", 0, 0, loop.time(), 0.0, asyncio.Lock())
            self._seen[key] = seen
            while len(self._seen) > MAX_TRACKED:
                self._seen.popitem(last=False)
        self._seen.move_to_end(key)
        seen.count += 1
        async with seen.lock:
            if seen.sent_count >= seen.count:
                return  # a concurrent call already sent this repeat
            try:
                if seen.name:
                    if loop.time() - seen.last_sent < self._min_patch:
                        return  # counted; sent with the next patch
                    try:
                        await self._patch(namespace, seen)
                        return
                    except KubeNotFound:
                        pass  # expired by the server's event TTL: create a new one
                await self._create(namespace, involved, type, reason, message, uid, seen)
            except KubeError as exc:
                log.warning(
                    "could not record event",
                    namespace=namespace,
                    object=f"{involved.kind}/{involved.name}",
                    reason=reason,
                    error=str(exc),
                )

    async def _create(
        self,
        namespace: str,
        involved: ScaleTargetRef,
        type: EventType,
        reason: str,
        message: str,
        uid: str | None,
        seen: _Seen,
    ) -> None:
        now = time.time()
        name = f"{involved.name}.{time.time_ns():x}"
        ref: dict[str, str] = {
            "apiVersion": involved.api_version,
            "kind": involved.kind,
            "name": involved.name,
            "namespace": namespace,
        }
        if uid:
            ref["uid"] = uid
        count = max(1, seen.count)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": k8s_time(now),
            "lastTimestamp": k8s_time(now),
            "count": count,
        }
        await self._t.call(
            Op("create", "events", "", namespace, name),
            self._t.core.create_namespaced_event,
            namespace,
            body,
        )
        loop = asyncio.get_running_loop()
        seen.name = name
        seen.first_seen = loop.time()
        seen.sent_count = count
        seen.last_sent = loop.time()

    async def _patch(self, namespace: str, seen: _Seen) -> None:
        count = seen.count
        await self._t.call(
            Op("patch", "events", "", namespace, seen.name),
            self._t.core.patch_namespaced_event,
            seen.name,
            namespace,
            {"count": count, "lastTimestamp": k8s_time()},
            _content_type="application/merge-patch+json",
        )
        seen.sent_count = count
        seen.last_sent = asyncio.get_running_loop().time()

    async def flush(self) -> None:
        """Send counts of repeats still waiting for their patch (on shutdown)."""
        for key, seen in list(self._seen.items()):
            if seen.name and seen.count > seen.sent_count:
                async with seen.lock:
                    try:
                        await self._patch(key[0], seen)
                    except KubeError as exc:
                        log.debug("event flush failed", error=str(exc))

"""Read and write the `/scale` subresource of any target kind.

apps/v1 Deployment, StatefulSet and ReplicaSet (and core/v1 ReplicationController) go through
the typed API objects; every other kind goes through `CustomObjectsApi` with the plural found
by discovery (`GET /apis/{group}/{version}`, cached), always as a JSON merge patch — the
custom-object scale endpoint refuses strategic merge, and kubernetes_asyncio would otherwise
pick json-patch for a dict body.

Writes carry the resourceVersion that was read (`metadata.resourceVersion` in the patch), so a
concurrent change answers 409 and we re-read instead of overwriting blindly; a re-read that
already shows the wanted count writes nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from autoscalerd.config.model import ScaleTargetRef
from autoscalerd.kube._transport import JSON, Transport
from autoscalerd.kube.errors import (
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeTooManyRequests,
    KubeUnavailable,
    Op,
)

log = structlog.get_logger(__name__)

__all__ = ["RetryPolicy", "ScaleInfo", "ScaleOps"]

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "autoscalerd"
DISCOVERY_TTL_SECONDS = 600.0
DISCOVERY_MISS_TTL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ScaleInfo:
    """What `/scale` says about a target."""

    replicas: int
    """`spec.replicas`: the desired count (what we compare with and write)."""
    selector: str
    """`status.selector`: label selector of the target's pods (`""` when the target has none)."""
    resource_version: str
    status_replicas: int = 0
    """`status.replicas`: pods the controller currently has."""
    uid: str = ""
    """UID of the target object (a Scale's metadata is its parent's), for Events."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds of `set_replicas` retries; the total is also bounded by its deadline."""

    max_attempts: int = 6
    """Attempts after 429/5xx/network errors before giving up."""
    max_conflicts: int = 5
    """Re-reads after 409 before giving up."""
    base_delay: float = 0.2
    max_delay: float = 5.0
    default_budget: float = 30.0
    """Total time when the caller gives no deadline (seconds)."""

    def backoff(self, attempt: int) -> float:
        """Jittered exponential delay before retry number `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class _Route:
    group: str
    version: str
    plural: str
    typed: str | None
    """`apps.deployment`… when a typed method exists; None for CustomObjectsApi."""


_TYPED: dict[tuple[str, str], tuple[str, str]] = {
    ("apps", "Deployment"): ("deployments", "deployment"),
    ("apps", "StatefulSet"): ("statefulsets", "stateful_set"),
    ("apps", "ReplicaSet"): ("replicasets", "replica_set"),
    ("", "ReplicationController"): ("replicationcontrollers", "replication_controller"),
}


def _scale_info(doc: JSON) -> ScaleInfo:
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    status = doc.get("status") or {}
    return ScaleInfo(
        replicas=int(spec.get("replicas") or 0),
        selector=str(status.get("selector") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        status_replicas=int(status.get("replicas") or 0),
        uid=str(meta.get("uid") or ""),
    )


class ScaleOps:
    def __init__(self, transport: Transport, retry: RetryPolicy | None = None) -> None:
        self._t = transport
        self.retry = retry or RetryPolicy()
        self._discovery: dict[tuple[str, str], tuple[float, dict[str, tuple[str, bool]]]] = {}
        self._discovery_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- routing -------------------------------------------------------------------------

    async def _route(self, target: ScaleTargetRef, deadline: float | None) -> _Route:
        group, version = target.group, target.version
        typed = _TYPED.get((group, target.kind))
        if typed is not None and version == "v1":
            return _Route(group, version, typed[0], typed[1])
        plural = await self._plural(group, version, target.kind, deadline)
        return _Route(group, version, plural, None)

    async def _plural(self, group: str, version: str, kind: str, deadline: float | None) -> str:
        key = (group, version)
        loop = asyncio.get_running_loop()
        lock = self._discovery_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._discovery.get(key)
            kinds = cached[1] if cached else None
            age = loop.time() - cached[0] if cached else None
            stale = age is None or age > DISCOVERY_TTL_SECONDS
            missing = kinds is not None and kind not in kinds
            if stale or (missing and age is not None and age > DISCOVERY_MISS_TTL_SECONDS):
                kinds = await self._discover(group, version, deadline)
                self._discovery[key] = (loop.time(), kinds)
        assert kinds is not None
        found = kinds.get(kind)
        gv = f"{group}/{version}" if group else version
        if found is None:
            raise KubeNotFound(
                f"kind {kind} is not served by {gv} (is its CustomResourceDefinition installed?)",
                op=Op("get", "discovery", group),
            )
        plural, has_scale = found
        if not has_scale:
            raise KubeNotFound(
                f"{kind} ({plural}.{group or 'core'}) has no /scale subresource, so it cannot be "
                "scaled",
                op=Op("get", f"{plural}/scale", group),
            )
        return plural

    async def _discover(
        self, group: str, version: str, deadline: float | None
    ) -> dict[str, tuple[str, bool]]:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        op = Op("get", f"discovery {path}", group)
        timeout = None
        if deadline is not None:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            doc = await self._t.get_path(op, path, timeout=timeout)
        except KubeNotFound as exc:
            raise KubeNotFound(
                f"API group version {path} is not served (is the CRD installed?)", op=op, status=404
            ) from exc
        names = {str(r.get("name", "")) for r in doc.get("resources") or []}
        kinds: dict[str, tuple[str, bool]] = {}
        for res in doc.get("resources") or []:
            name = str(res.get("name", ""))
            if not name or "/" in name:
                continue
            kinds[str(res.get("kind", ""))] = (name, f"{name}/scale" in names)
        log.debug("kube discovery", path=path, kinds=sorted(kinds))
        return kinds

    # -- read ----------------------------------------------------------------------------

    async def get_scale(
        self, namespace: str, target: ScaleTargetRef, *, deadline: float | None = None
    ) -> ScaleInfo:
        route = await self._route(target, deadline)
        op = Op("get", f"{route.plural}/scale", route.group, namespace, target.name)
        fn, args = self._scale_method("get", route, namespace, target.name)
        return _scale_info(await self._t.call(op, fn, *args, deadline=deadline))

    def _scale_method(
        self, verb: str, route: _Route, namespace: str, name: str
    ) -> tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]:
        """The generated method for `verb` ("get" or "patch") on the target's `/scale`, and its
        leading arguments: the typed API of a built-in kind, else `CustomObjectsApi`."""
        if route.typed is not None:
            api = self._t.core if route.group == "" else self._t.apps
            typed_verb = "read" if verb == "get" else verb
            return getattr(api, f"{typed_verb}_namespaced_{route.typed}_scale"), (name, namespace)
        fn = getattr(self._t.custom, f"{verb}_namespaced_custom_object_scale")
        return fn, (route.group, route.version, namespace, route.plural, name)

    # -- write ---------------------------------------------------------------------------

    async def _patch(
        self,
        namespace: str,
        target: ScaleTargetRef,
        replicas: int,
        resource_version: str,
        deadline: float,
    ) -> ScaleInfo:
        route = await self._route(target, deadline)
        op = Op("patch", f"{route.plural}/scale", route.group, namespace, target.name)
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        kwargs: dict[str, Any] = {
            "deadline": deadline,
            "field_manager": FIELD_MANAGER,
            "_content_type": MERGE_PATCH,
        }
        fn, args = self._scale_method("patch", route, namespace, target.name)
        return _scale_info(await self._t.call(op, fn, *args, body, **kwargs))

    async def set_replicas(
        self,
        namespace: str,
        target: ScaleTargetRef,
        replicas: int,
        *,
        observed: ScaleInfo | None = None,
        deadline: float | None = None,
    ) -> ScaleInfo:
        """Make `spec.replicas` equal `replicas`; return the resulting `/scale`.

        Reads `/scale` first (unless `observed` is given and fresh), does nothing when the
        count is already right, else patches with the read resourceVersion. On 409 it
        re-reads and tries again; on 429 it waits `Retry-After` (or backs off); on 5xx,
        network errors and timeouts it backs off (jittered, exponential) and re-reads before
        writing again, so a write that did land is never repeated. Everything, waits
        included, ends by `deadline` (event-loop time; default now + 30 s): then the last
        error is raised. 404/403/401/4xx are raised at once.
        """
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.retry.default_budget
        failures = 0
        conflicts = 0
        current = observed
        while True:
            try:
                if current is None:
                    current = await self.get_scale(namespace, target, deadline=deadline)
                if current.replicas == replicas:
                    log.debug(
                        "scale already at target",
                        namespace=namespace,
                        target=target.name,
                        replicas=replicas,
                    )
                    return current
                result = await self._patch(
                    namespace, target, replicas, current.resource_version, deadline
                )
                log.debug(  # the caller logs the outcome with its policy's context
                    "scaled",
                    namespace=namespace,
                    kind=target.kind,
                    target=target.name,
                    replicas_from=current.replicas,
                    replicas_to=result.replicas,
                )
                return result
            except KubeConflict as exc:
                conflicts += 1
                current = None
                if conflicts > self.retry.max_conflicts:
                    raise
                delay = random.uniform(0, 0.05)
                log.info("scale conflict, re-reading", error=str(exc), conflicts=conflicts)
                last: KubeError = exc
            except KubeTooManyRequests as exc:
                failures += 1
                current = None
                delay = (
                    exc.retry_after if exc.retry_after is not None else self.retry.backoff(failures)
                )
                last = exc
            except KubeUnavailable as exc:
                failures += 1
                current = None
                delay = self.retry.backoff(failures)
                last = exc
            if failures >= self.retry.max_attempts:
                log.debug("scale gave up", error=str(last), attempts=failures)
                raise last
            if loop.time() + delay + 0.05 >= deadline:
                log.debug("scale gave up: deadline", error=str(last), attempts=failures)
                raise last
            log.info(
                "scale retry",
                error=str(last),
                attempt=failures + conflicts,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)

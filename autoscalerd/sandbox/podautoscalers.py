"""AIbrix's `PodAutoscaler` custom resource in the sandbox, with a `status` subresource.

As a CRD with `subresources: {status: {}}` behaves on a real API server:

- a write to the main resource (create, update, patch) never changes `.status` (create
  drops it; update and patch keep the stored one);
- a write to `/status` changes only `.status` (the rest of the body is ignored), and never
  bumps `metadata.generation`;
- both carry a resourceVersion (409 on a stale one), answer 404 for a missing object, and
  feed the same watch history as every other resource (ADDED/MODIFIED/DELETED, bookmarks,
  410 after compaction).

The API server routes `…/podautoscalers/NAME/status` here (`status_subresource`). Tests and
the demo create, edit and delete objects in-process with `create`, `edit_spec` and `delete`,
which go through the same store (so the daemon's watch sees them).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .store import ResourceType, Store

if TYPE_CHECKING:
    from aiohttp import web

    from .apiserver import ApiServer

__all__ = [
    "CUSTOM_RESOURCES",
    "PODAUTOSCALERS",
    "create",
    "delete",
    "describe",
    "edit_spec",
    "get",
    "keep_status",
    "status_subresource",
]

PODAUTOSCALERS = ResourceType(
    "autoscaling.aibrix.ai",
    "v1alpha1",
    "podautoscalers",
    "PodAutoscaler",
    verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    subresources=("status",),
    short_names=("pa",),
)
CUSTOM_RESOURCES = (PODAUTOSCALERS,)
"""Custom resources: list items keep kind/apiVersion, no strategic merge patch, `.status`
only through the subresource."""


def keep_status(current: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """A write to the main resource: `.status` stays what is stored (none on create)."""
    if current is not None and "status" in current:
        new["status"] = copy.deepcopy(current["status"])
    else:
        new.pop("status", None)


async def status_subresource(
    server: ApiServer, request: web.Request, rtype: ResourceType, namespace: str, name: str
) -> web.Response:
    """GET/PUT/PATCH `…/NAME/status`: only `.status` of the result is stored."""
    from aiohttp import web

    from .apiserver import ApiError, not_found

    method = request.method
    if method not in ("GET", "PUT", "PATCH"):
        raise ApiError(405, "the server does not allow this method on the requested resource")
    body = await server._json(request) if method != "GET" else None
    current = server.store.get(rtype, namespace, name)
    if current is None:
        raise not_found(rtype, name)
    if method == "GET":
        return web.json_response(current)
    if method == "PUT":
        if not isinstance(body, dict):
            raise ApiError(400, "the object provided is unrecognized (must be a JSON object)")
        edited = body
    else:
        edited = server._apply_patch(
            rtype, request.headers.get("Content-Type", ""), current, body, False
        )
    if not isinstance(edited, dict) or not isinstance(edited.get("metadata"), dict):
        raise ApiError(422, "the patch produced an invalid object")
    server._check_rv(rtype, name, current, edited)
    new = copy.deepcopy(current)
    if "status" in edited and edited["status"] is not None:
        new["status"] = edited["status"]
    else:
        new.pop("status", None)
    if new == current:
        return web.json_response(current)
    return web.json_response(server.store.replace(rtype, new))


# -- in-process helpers for tests and the demo --------------------------------------------


def create(store: Store, obj: dict[str, Any]) -> dict[str, Any]:
    """Create a PodAutoscaler as `kubectl apply` would (status dropped)."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", "default")
    if store.peek(PODAUTOSCALERS, meta["namespace"], meta["name"]) is not None:
        raise ValueError(f"podautoscaler {meta['namespace']}/{meta['name']} already exists")
    keep_status(None, obj)
    return store.create(PODAUTOSCALERS, obj)


def get(store: Store, namespace: str, name: str) -> dict[str, Any] | None:
    return store.get(PODAUTOSCALERS, namespace, name)


def edit_spec(
    store: Store,
    namespace: str,
    name: str,
    spec: dict[str, Any] | None = None,
    *,
    annotations: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """Merge `spec` into the object's spec (a None value removes a key) and set or remove
    annotations; `.status` is kept. Raises KeyError for a missing object."""
    current = store.get(PODAUTOSCALERS, namespace, name)
    if current is None:
        raise KeyError(f"podautoscaler {namespace}/{name} not found")
    new = copy.deepcopy(current)
    for key, value in (spec or {}).items():
        if value is None:
            new.setdefault("spec", {}).pop(key, None)
        else:
            new.setdefault("spec", {})[key] = value
    if annotations:
        ann = new["metadata"].setdefault("annotations", {})
        for key, val in annotations.items():
            if val is None:
                ann.pop(key, None)
            else:
                ann[key] = val
    if new == current:
        return current
    return store.replace(PODAUTOSCALERS, new)


def delete(store: Store, namespace: str, name: str) -> bool:
    return store.delete(PODAUTOSCALERS, namespace, name) is not None


def describe(obj: dict[str, Any]) -> str:
    """A `kubectl describe podautoscaler` style view of an object's spec and status."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    lines = [
        f"Name:          {meta.get('name')}",
        f"Namespace:     {meta.get('namespace')}",
        f"Annotations:   {', '.join(f'{k}: {v}' for k, v in (meta.get('annotations') or {}).items())}",
        f"Strategy:      {spec.get('scalingStrategy')}",
        f"Target:        {ref.get('kind')}/{ref.get('name')}",
        f"Min/Max:       {spec.get('minReplicas', 1)}/{spec.get('maxReplicas')}",
        "Status:",
        f"  Desired Scale:    {status.get('desiredScale', '<unset>')}",
        f"  Actual Scale:     {status.get('actualScale', '<unset>')}",
        f"  Last Scale Time:  {status.get('lastScaleTime', '<unset>')}",
        "  Conditions:",
        f"    {'Type':<16} {'Status':<7} {'Reason':<20} Message",
    ]
    for c in status.get("conditions") or []:
        lines.append(
            f"    {c.get('type', ''):<16} {c.get('status', ''):<7} {c.get('reason', ''):<20} "
            f"{c.get('message', '')}"
        )
    history = status.get("scalingHistory") or []
    if history:
        lines.append("  Scaling History:")
        for h in history:
            outcome = "ok" if h.get("success") else f"failed: {h.get('error')}"
            lines.append(
                f"    {h.get('timestamp')}  {h.get('previousScale')} -> {h.get('newScale')}  "
                f"{h.get('reason')}  {outcome}"
            )
    return "\n".join(lines)

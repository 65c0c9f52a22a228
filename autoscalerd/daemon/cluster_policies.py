"""Cluster mode (DESIGN §8): PodAutoscaler objects from the API become policies, beside the
files' policies.

`resolve` is the pure rule, run on every change of the objects (and on every reload of the
files). For each object in scope, in creation order (name as tie-break):

- not claimed (`claim: annotated` and no `autoscalerd.io/managed: "true"`): ignored, never
  written to — AIbrix's own controller (or nobody) owns it;
- invalid: never acted on; its verdict carries `validate`'s problems (`ValidSpec` False);
- the same namespace/name as a file's policy, or the same scale target as a file's policy
  or as an older object: not acted on, verdict `clash` (condition
  `MultiPodAutoscalerConflict`): the file, or the older object, keeps the target;
- else active: its policy joins the files' ones.

Parsing is cached per object (by everything but `.status`), so a status write or a resync
costs a dictionary comparison, not a validation.

`ClusterPolicies` feeds the supervisor: it starts the feed, and after each change calls
`on_change()` (the supervisor re-applies its policies: an added object starts, an edited one
is retuned in place or restarted, a deleted one stops at once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from autoscalerd.config.model import PodAutoscalerSettings, Policy
from autoscalerd.config.pod_autoscaler_object import (
    claimed,
    policy_from_object,
    spec_message,
    valid_spec_reason,
)
from autoscalerd.config.problems import Problem
from autoscalerd.daemon.ports import PodAutoscalerSource

__all__ = ["ClusterPolicies", "Verdict", "resolve"]

log = structlog.get_logger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the daemon does with one claimed object, and why (for its status)."""

    namespace: str
    name: str
    uid: str
    generation: int
    state: str
    """`active`, `invalid` or `clash`."""
    policy: Policy | None = None
    """The object's policy (also when it clashes; None when invalid)."""
    reason: str = "AsExpected"
    """`ValidSpec` reason when invalid; `NameClash`/`TargetClash` when clashing."""
    message: str = ""

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


def _without_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "status"}


class _ParseCache:
    def __init__(self) -> None:
        self._entries: dict[Key, tuple[dict[str, Any], Policy | None, list[Problem]]] = {}

    def parse(self, key: Key, obj: Mapping[str, Any]) -> tuple[Policy | None, list[Problem]]:
        body = _without_status(obj)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == body:
            return hit[1], hit[2]
        policy, problems = policy_from_object(obj)
        self._entries[key] = (body, policy, problems)
        return policy, problems

    def keep_only(self, keys: set[Key]) -> None:
        for key in [k for k in self._entries if k not in keys]:
            del self._entries[key]


def _order(item: tuple[Key, Mapping[str, Any]]) -> tuple[str, str, str]:
    meta = item[1].get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), item[0][0], item[0][1])


def resolve(
    objects: Mapping[Key, Mapping[str, Any]],
    file_policies: Sequence[Policy],
    claim: str,
    cache: _ParseCache | None = None,
) -> dict[Key, Verdict]:
    """The verdict on every claimed object (see the module doc); pure."""
    cache = cache or _ParseCache()
    file_keys = {p.key: p for p in file_policies}
    targets: dict[tuple[str, str, str, str], str] = {}
    for p in file_policies:
        targets[(p.namespace, p.target.group, p.target.kind, p.target.name)] = (
            f"the policy {p.key} in {p.where}" if p.where else f"the policy {p.key}"
        )
    out: dict[Key, Verdict] = {}
    for key, obj in sorted(objects.items(), key=_order):
        if not claimed(obj, claim):
            continue
        meta = obj.get("metadata") or {}
        base = Verdict(
            namespace=key[0],
            name=key[1],
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            state="active",
        )
        policy, problems = cache.parse(key, obj)
        if policy is None:
            out[key] = replace(
                base,
                state="invalid",
                reason=valid_spec_reason(problems),
                message=spec_message(problems),
            )
            continue
        if policy.key in file_keys:
            where = file_keys[policy.key].where
            out[key] = replace(
                base,
                state="clash",
                policy=policy,
                reason="NameClash",
                message=f"a policy named {policy.key} is also defined in "
                f"{where or 'a configuration file'}; the file's policy is in force and this "
                "object is not acted on: rename one of them",
            )
            continue
        target = (policy.namespace, policy.target.group, policy.target.kind, policy.target.name)
        if target in targets:
            out[key] = replace(
                base,
                state="clash",
                policy=policy,
                reason="TargetClash",
                message=f"{policy.target.kind} {policy.namespace}/{policy.target.name} is "
                f"already scaled by {targets[target]}; two autoscalers on one target would "
                "fight, so this object is not acted on: delete one of them",
            )
            continue
        targets[target] = f"the PodAutoscaler object {policy.key}"
        out[key] = replace(base, policy=policy)
    cache.keep_only(set(objects))
    return out


class ClusterPolicies:
    """The objects' side of the supervisor's policy set (see the module doc)."""

    def __init__(
        self,
        feed: PodAutoscalerSource,
        settings: PodAutoscalerSettings,
        on_change: Callable[[], None],
    ) -> None:
        self.feed = feed
        self.settings = settings
        self._on_change = on_change
        self._cache = _ParseCache()
        self.verdicts: dict[Key, Verdict] = {}

    def reconfigure(self, settings: PodAutoscalerSettings) -> None:
        """A reload changed the DaemonConfig: a new claim rule applies at once; other
        namespaces or another label selector need a restart (the watches are open)."""
        old, self.settings = self.settings, settings
        if (old.namespaces, old.label_selector) != (settings.namespaces, settings.label_selector):
            log.warning(
                "podAutoscalers.namespaces and labelSelector take effect after a restart; "
                "the running watches keep the old ones",
                running_namespaces=list(old.namespaces) or "all",
                running_label_selector=old.label_selector or None,
            )

    @property
    def problem(self) -> dict[str, str] | None:
        """The watch's failure, for `/status` (None while it works)."""
        error = self.feed.last_error
        if error is None:
            return None
        return {
            "problem": "podautoscalers_watch",
            "message": f"cannot list or watch PodAutoscaler objects: {error}; objects are "
            "not acted on until it works (RBAC: list and watch on "
            "podautoscalers.autoscaling.aibrix.ai; deploy/kubernetes/podautoscalers)",
        }

    def policies(self, file_policies: Sequence[Policy]) -> list[Policy]:
        """Recompute the verdicts against the files' policies; the active objects' policies."""
        old = self.verdicts
        new = resolve(self.feed.objects(), file_policies, self.settings.claim, self._cache)
        self.verdicts = new
        for key, verdict in new.items():
            before = old.get(key)
            if before is not None and (before.state, before.message, before.generation) == (
                verdict.state,
                verdict.message,
                verdict.generation,
            ):
                continue
            fields = {"podautoscaler": f"{key[0]}/{key[1]}", "generation": verdict.generation}
            if verdict.state == "active":
                log.info("podautoscaler object in force", **fields)
            elif verdict.state == "invalid":
                log.warning(
                    "podautoscaler object is invalid; not acted on",
                    problems=verdict.message,
                    **fields,
                )
            else:
                log.warning("podautoscaler object not acted on", why=verdict.message, **fields)
        for key in old.keys() - new.keys():
            log.info("podautoscaler object gone or no longer claimed", podautoscaler="/".join(key))
        return [v.policy for v in new.values() if v.state == "active" and v.policy is not None]

    async def run(self) -> None:
        """Start the feed and apply every change (an eternal root task)."""
        self.feed.start()
        generation = self.feed.generation
        try:
            while True:
                generation = await self.feed.wait_changed(generation)
                self._on_change()
        finally:
            await self.feed.stop()

"""Cluster mode (DESIGN §8): the status of each claimed PodAutoscaler object, written back.

`build_status` (pure) turns what the daemon knows of one object — its verdict
(`cluster_policies.Verdict`), what its reconciler last saw (`Observation`), the status it
had — into AIbrix's status: `desiredScale`, `actualScale`, `lastScaleTime`, `conditions`
(`ValidSpec`, `AbleToScale`, `ScalingActive`, `Ready`, plus `MultiPodAutoscalerConflict` on
a clash; each a `metav1.Condition` with all five fields, `lastTransitionTime` kept while the
condition's status does not change), `scalingHistory` (`ScalingHistory`, AIbrix's rule) and
`scheduledBounds` (None until schedules exist: issue 13 plugs in at `scheduled_bounds`).

Nothing in it moves by itself: no counters, no "last checked" times, and `desiredScale`
keeps the last decided value through ticks without data. So the status changes only when
something an operator would want to read changed, and `StatusWriter` writes only then —
never once per tick. It runs one pass per scrape interval, by the leader only (and never in
`--dry-run`), each write a merge patch through the status subresource bounded by the API
timeout and the leader's deadline, a few at a time. It also records Events on the object
(Warning `InvalidSpec`, `MultiPodAutoscalerConflict`, `FailedRescale`; Normal
`SuccessfulRescale`) when the status it writes shows them first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from autoscalerd.config.model import Policy, ScaleTargetRef
from autoscalerd.daemon.cluster_policies import ClusterPolicies, Verdict
from autoscalerd.daemon.ports import Clock, Cluster
from autoscalerd.daemon.reconciler import PolicyReconciler
from autoscalerd.kube.errors import KubeError, KubeNotFound

__all__ = [
    "HISTORY_LIMIT",
    "Observation",
    "ScalingHistory",
    "StatusWriter",
    "build_status",
    "observe",
]

log = structlog.get_logger(__name__)

HISTORY_LIMIT = 5
"""AIbrix's `scalingHistory` MaxItems."""
HISTORY_MIN_SECONDS = 5.0
"""AIbrix's rule: a new entry only if more than 5 s passed since the last one, or the new
scale, the success or the error differ from the last entry's."""
WRITE_CONCURRENCY = 8
PA_API_VERSION = "autoscaling.aibrix.ai/v1alpha1"
CONDITION_TYPES = ("ValidSpec", "AbleToScale", "ScalingActive", "Ready")


def rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Observation:
    """What one object's reconciler last saw (`observe`)."""

    desired: int | None = None
    actual: int | None = None
    last_scale: Mapping[str, Any] | None = None
    """The last successful scale: `time` (RFC 3339), `from`, `to`, `reason`."""
    scale_error: str | None = None
    """Reading `/scale` fails (FailedGetScale)."""
    write_error: str | None = None
    """Writing `/scale` fails (FailedUpdateScale)."""
    reason: str | None = None
    """The last decision's reason (`no-data`, `stable`, `clamped-max`…)."""


def observe(reconciler: PolicyReconciler) -> Observation:
    st = reconciler.status()
    return Observation(
        desired=st.get("desired_replicas"),
        actual=st.get("current_replicas"),
        last_scale=st.get("last_scale"),
        scale_error=reconciler.problems.message("scale"),
        write_error=reconciler.problems.message("write"),
        reason=st.get("reason"),
    )


@dataclass
class ScalingHistory:
    """`status.scalingHistory` of one object: at most 5 entries, oldest first."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    _last_success: tuple[Any, ...] | None = None
    _last_error: str | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> ScalingHistory:
        raw = (status or {}).get("scalingHistory")
        entries = [dict(e) for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        return cls(entries=entries[-HISTORY_LIMIT:])

    def see(self, obs: Observation, wall: float, *, first: bool = False) -> list[dict[str, Any]]:
        """Add what `obs` shows that is new (the entries added are returned). `first`: only
        remember the current state (what is already in the object's history stays)."""
        added: list[dict[str, Any]] = []
        ls = obs.last_scale
        success = (ls.get("time"), ls.get("from"), ls.get("to")) if ls else None
        if success is not None and success != self._last_success:
            self._last_success = success
            if not first:
                assert ls is not None
                entry = {
                    "timestamp": str(ls.get("time")),
                    "previousScale": int(ls.get("from") or 0),
                    "newScale": int(ls.get("to") or 0),
                    "reason": str(ls.get("reason") or ""),
                    "success": True,
                }
                added += self._add(entry, wall)
        if obs.write_error != self._last_error:
            self._last_error = obs.write_error
            if obs.write_error is not None and not first:
                entry = {
                    "timestamp": rfc3339(wall),
                    "previousScale": obs.actual or 0,
                    "newScale": obs.desired or 0,
                    "reason": obs.reason or "",
                    "success": False,
                    "error": obs.write_error[:500],
                }
                added += self._add(entry, wall)
        return added

    def _add(self, entry: dict[str, Any], wall: float) -> list[dict[str, Any]]:
        if self.entries:
            last = self.entries[-1]
            try:
                last_wall = datetime.strptime(
                    str(last.get("timestamp")), "%Y-%m-%dT%H:%M:%SZ"
                ).replace(tzinfo=UTC)
                recent = wall - last_wall.timestamp() <= HISTORY_MIN_SECONDS
            except ValueError:
                recent = False
            same = all(last.get(k) == entry.get(k) for k in ("newScale", "success", "error"))
            if recent and same:
                return []
        self.entries.append(entry)
        del self.entries[:-HISTORY_LIMIT]
        return [entry]


def _condition(
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    previous: Mapping[str, Mapping[str, Any]],
    wall: float,
) -> dict[str, Any]:
    before = previous.get(type_)
    since = rfc3339(wall)
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        since = str(before["lastTransitionTime"])
    return {
        "type": type_,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


def build_status(
    verdict: Verdict,
    obs: Observation | None,
    previous: Mapping[str, Any] | None,
    history: ScalingHistory,
    wall: float,
    *,
    desired: int | None = None,
    scheduled_bounds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The object's status (pure; see the module doc). `previous` is the status it has (for
    `lastTransitionTime`); `desired` the last decided replica count (sticky)."""
    prev_conditions = {
        str(c.get("type")): c
        for c in (previous or {}).get("conditions") or []
        if isinstance(c, dict)
    }
    gen = verdict.generation

    def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return _condition(type_, status, reason, message, gen, prev_conditions, wall)

    out: dict[str, Any] = {
        "desiredScale": None,
        "actualScale": None,
        "lastScaleTime": None,
        "scheduledBounds": None,
        "scalingHistory": list(history.entries) or None,
    }
    if verdict.state == "invalid":
        why = f"the spec is invalid: {verdict.reason}"
        out["conditions"] = [
            cond("ValidSpec", "False", verdict.reason, verdict.message),
            cond("AbleToScale", "False", "InvalidSpec", why),
            cond("ScalingActive", "False", "InvalidSpec", why),
            cond("Ready", "False", "InvalidSpec", why),
        ]
        return out
    valid = cond("ValidSpec", "True", "AsExpected", "the spec is valid")
    if verdict.state == "clash":
        why = "not acted on: MultiPodAutoscalerConflict"
        out["conditions"] = [
            valid,
            cond("MultiPodAutoscalerConflict", "True", verdict.reason, verdict.message),
            cond("AbleToScale", "False", "MultiPodAutoscalerConflict", why),
            cond("ScalingActive", "False", "MultiPodAutoscalerConflict", why),
            cond("Ready", "False", "MultiPodAutoscalerConflict", why),
        ]
        return out
    obs = obs or Observation()
    policy = verdict.policy
    target = f"{policy.target.kind}/{policy.target.name}" if policy else "the target"
    if obs.scale_error is not None:
        able = cond("AbleToScale", "False", "FailedGetScale", obs.scale_error)
    elif obs.write_error is not None:
        able = cond("AbleToScale", "False", "FailedUpdateScale", obs.write_error)
    elif obs.actual is None:
        able = cond("AbleToScale", "Unknown", "AwaitingScale", f"{target}/scale not read yet")
    else:
        able = cond("AbleToScale", "True", "SucceededGetScale", f"{target}/scale answers")
    if desired is None or obs.actual is None:
        active = cond(
            "ScalingActive",
            "Unknown",
            "AwaitingMetrics",
            f"no decision yet ({obs.reason})" if obs.reason else "no decision yet",
        )
    elif desired != obs.actual:
        active = cond(
            "ScalingActive",
            "True",
            "ReconcilingScaleDiff",
            f"desired={desired}, actual={obs.actual}",
        )
    else:
        active = cond("ScalingActive", "False", "Stable", f"desired={desired}, actual={obs.actual}")
    if able["status"] != "True":
        ready = cond("Ready", "False", "UnableToScale", able["message"])
    elif active["status"] == "True":
        ready = cond("Ready", "False", "ScalingInProgress", active["message"])
    elif active["status"] == "Unknown":
        ready = cond("Ready", "Unknown", "AwaitingMetrics", active["message"])
    else:
        ready = cond("Ready", "True", "ScalingStable", active["message"])
    out["conditions"] = [valid, able, active, ready]
    out["desiredScale"] = desired
    out["actualScale"] = obs.actual
    if obs.last_scale:
        out["lastScaleTime"] = obs.last_scale.get("time")
    out["scheduledBounds"] = dict(scheduled_bounds) if scheduled_bounds else None
    return out


def _comparable(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status without its null fields (what the object holds after a merge patch)."""
    return {k: v for k, v in (status or {}).items() if v is not None}


@dataclass
class _ObjectState:
    uid: str
    history: ScalingHistory
    desired: int | None = None
    written: dict[str, Any] | None = None
    evented: tuple[str, str] | None = None


class StatusWriter:
    """Writes the claimed objects' status when it changed (see the module doc)."""

    def __init__(
        self,
        kube: Cluster,
        policies: ClusterPolicies,
        reconciler: Callable[[str], PolicyReconciler | None],
        clock: Clock,
        interval: Callable[[], float],
        may_write: Callable[[], tuple[bool, float | None]],
        *,
        dry_run: bool = False,
        scheduled_bounds: Callable[[Policy], Mapping[str, Any] | None] = lambda _p: None,
    ) -> None:
        self.kube = kube
        self.policies = policies
        self._reconciler = reconciler
        self.clock = clock
        self._interval = interval
        self._may_write = may_write
        self.dry_run = dry_run
        self.scheduled_bounds = scheduled_bounds
        """Issue 13 (schedules): the active schedule's bounds of a policy, for
        `status.scheduledBounds` (`activeSchedule`, `effectiveMinReplicas`,
        `effectiveMaxReplicas`); None while no schedule is active."""
        self._state: dict[tuple[str, str], _ObjectState] = {}
        self.writes = 0
        self.failures = 0
        self._failing: set[tuple[str, str]] = set()

    async def run(self) -> None:
        """One pass per interval, forever."""
        while True:
            await self.step()
            await self.clock.sleep(self._interval())

    async def step(self) -> int:
        """One pass: update every object's state, write the changed statuses (leader only).
        Returns how many writes were made."""
        verdicts = self.policies.verdicts
        for key in [k for k in self._state if k not in verdicts]:
            del self._state[key]
        wall = self.clock.wall()
        allowed, deadline = self._may_write()
        allowed = allowed and not self.dry_run
        pending: list[tuple[Verdict, dict[str, Any], list[dict[str, Any]]]] = []
        for key, verdict in verdicts.items():
            obj = self.policies.feed.get(*key)
            current = (obj or {}).get("status")
            state = self._state.get(key)
            if state is None or state.uid != verdict.uid:
                history = ScalingHistory.from_status(current)
                state = self._state[key] = _ObjectState(verdict.uid, history)
                previous = (current or {}).get("desiredScale")
                if isinstance(previous, int) and not isinstance(previous, bool):
                    state.desired = previous  # a restart does not forget it
                first = True
            else:
                first = False
            obs = None
            added: list[dict[str, Any]] = []
            if verdict.state == "active" and verdict.policy is not None:
                reconciler = self._reconciler(verdict.policy.key)
                if reconciler is not None and reconciler.policy.key == verdict.policy.key:
                    obs = observe(reconciler)
                    added = state.history.see(obs, wall, first=first)
                    if obs.desired is not None:
                        state.desired = obs.desired
                if obs is None or (obs.actual is None and obs.scale_error is None):
                    continue  # not ticked yet: nothing new to say (no write after a restart)
            bounds = (
                self.scheduled_bounds(verdict.policy)
                if verdict.state == "active" and verdict.policy is not None
                else None
            )
            base = state.written if state.written is not None else current
            status = build_status(
                verdict,
                obs,
                base,
                state.history,
                wall,
                desired=state.desired,
                scheduled_bounds=bounds,
            )
            if not allowed:  # a new leader starts from what the object holds
                state.written = None
                state.history = ScalingHistory.from_status(current)
                continue
            if _comparable(status) == _comparable(base):
                continue
            pending.append((verdict, status, added))
        if not pending:
            return 0
        sem = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def write(item: tuple[Verdict, dict[str, Any], list[dict[str, Any]]]) -> int:
            async with sem:
                return await self._write(*item, deadline=deadline)

        results = await asyncio.gather(*(write(item) for item in pending))
        return sum(results)

    async def _write(
        self,
        verdict: Verdict,
        status: dict[str, Any],
        added: list[dict[str, Any]],
        *,
        deadline: float | None,
    ) -> int:
        key = verdict.key
        state = self._state.get(key)
        try:
            await self.kube.patch_pod_autoscaler_status(
                verdict.namespace, verdict.name, status, deadline=deadline
            )
        except KubeNotFound:
            return 0  # deleted meanwhile: the feed will say so
        except KubeError as exc:
            self.failures += 1
            if key not in self._failing:
                self._failing.add(key)
                log.warning(
                    "cannot write the podautoscaler's status; retrying next interval",
                    podautoscaler=f"{key[0]}/{key[1]}",
                    error=str(exc),
                    fix=exc.rbac_hint() if hasattr(exc, "rbac_hint") else None,
                )
            return 0
        if key in self._failing:
            self._failing.discard(key)
            log.info("podautoscaler status written again", podautoscaler=f"{key[0]}/{key[1]}")
        self.writes += 1
        ready: dict[str, Any] = next((c for c in status["conditions"] if c["type"] == "Ready"), {})
        log.info(
            "podautoscaler status written",
            podautoscaler=f"{key[0]}/{key[1]}",
            ready=ready.get("status"),
            reason=ready.get("reason"),
            desired=status.get("desiredScale"),
            actual=status.get("actualScale"),
        )
        if state is not None:
            state.written = _comparable(status)
            await self._events(verdict, state, added)
        return 1

    async def _events(
        self, verdict: Verdict, state: _ObjectState, added: list[dict[str, Any]]
    ) -> None:
        ref = ScaleTargetRef(api_version=PA_API_VERSION, kind="PodAutoscaler", name=verdict.name)
        record = self.kube.record_event
        seen = (verdict.state, verdict.message)
        if seen != state.evented:
            state.evented = seen
            if verdict.state == "invalid":
                await record(
                    verdict.namespace,
                    ref,
                    "Warning",
                    "InvalidSpec",
                    verdict.message,
                    uid=verdict.uid or None,
                )
            elif verdict.state == "clash":
                await record(
                    verdict.namespace,
                    ref,
                    "Warning",
                    "MultiPodAutoscalerConflict",
                    verdict.message,
                    uid=verdict.uid or None,
                )
        for entry in added:
            if entry.get("success"):
                await record(
                    verdict.namespace,
                    ref,
                    "Normal",
                    "SuccessfulRescale",
                    f"New size: {entry['newScale']}; reason: {entry['reason']}",
                    uid=verdict.uid or None,
                )
            else:
                await record(
                    verdict.namespace,
                    ref,
                    "Warning",
                    "FailedRescale",
                    f"New size: {entry['newScale']}; error: {entry.get('error')}",
                    uid=verdict.uid or None,
                )

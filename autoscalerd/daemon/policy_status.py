"""What `/status` (and cluster mode's `status.scheduledBounds`) says about one policy: built
from a reconciler's state after its last tick. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from autoscalerd.config.model import Policy
from autoscalerd.scaling.autoscaler import Decision

__all__ = ["aibrix_scheduled_bounds", "policy_status", "utc"]


def utc(wall: float) -> str:
    """Unix seconds as an RFC 3339 UTC time to the second (`2026-11-30T02:00:00Z`)."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def policy_status(
    policy: Policy,
    decision: Decision | None,
    *,
    decided_at: float | None,
    current_replicas: int | None,
    ready: int,
    not_ready: int,
    last_scale: dict[str, Any] | None,
    errors: list[str],
    ticks: int,
    late_ticks: int,
) -> dict[str, Any]:
    """One policy's object in `/status` (DESIGN §4)."""
    p = policy
    d = decision
    metrics: dict[str, float | None] = {}
    for i, source in enumerate(p.sources):
        metrics[source.target_metric] = d.values[i] if d is not None and i < len(d.values) else None
    return {
        "namespace": p.namespace,
        "name": p.name,
        "strategy": p.strategy.value,
        "target": f"{p.target.kind}/{p.target.name}",
        "min_replicas": p.min_replicas,
        "max_replicas": p.max_replicas,
        "current_replicas": current_replicas,
        "desired_replicas": d.desired if d is not None else None,
        "ready_pods": ready,
        "not_ready_pods": not_ready,
        "metrics": metrics,
        "targets": {s.target_metric: s.target_value for s in p.sources},
        "mode": (d.mode or None) if d is not None else None,
        "reason": d.reason if d is not None else None,
        "detail": d.detail if d is not None else None,
        "last_decision_time": utc(decided_at) if decided_at is not None else None,
        "last_scale": last_scale,
        "last_error": errors[0] if errors else None,
        "errors": errors[:20],
        "ticks": ticks,
        "late_ticks": late_ticks,
        # issue 13: AIbrix status.scheduledBounds
        "scheduled_bounds": _scheduled_bounds(d) if p.schedules else None,
    }


def aibrix_scheduled_bounds(policy: Policy, decision: Decision | None) -> dict[str, Any] | None:
    """AIbrix's `status.scheduledBounds` of a decision (cluster mode writes it), for a policy
    with `spec.schedules`; None otherwise or before the first decision."""
    bounds = _scheduled_bounds(decision) if policy.schedules else None
    if bounds is None:
        return None
    out = {
        "effectiveMinReplicas": bounds["effective_min_replicas"],
        "effectiveMaxReplicas": bounds["effective_max_replicas"],
    }
    if bounds["active_schedule"] is not None:
        out["activeSchedule"] = bounds["active_schedule"]
    return out


def _scheduled_bounds(d: Decision | None) -> dict[str, Any] | None:
    if d is None or d.bounds is None:
        return None
    return {
        "active_schedule": d.schedule,
        "effective_min_replicas": d.bounds[0],
        "effective_max_replicas": d.bounds[1],
    }

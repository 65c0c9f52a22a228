"""HPA: the Kubernetes Horizontal Pod Autoscaler algorithm, computed in the daemon.

Three stages, as in `pkg/controller/podautoscaler/{replica_calculator,horizontal}.go`:

1. `hpa_replicas` — the replica calculator for one metric (type `Pods`, `AverageValue` target `T`):

       usage = total / answered;  r = usage / T
       no unready pods on a scale-up and no missing pods:
           (1 − downTol) ≤ r ≤ (1 + upTol)  → current          (inclusive band)
           otherwise                         → ceil(r × answered)
       otherwise recompute r' over answered + missing (+ not-ready when r > 1) pods, where a
       missing pod counts as T when r < 1 (scale-down) and 0 when r ≥ 1, a not-ready pod as 0:
           r' in the band, or r' on the other side of 1 than r → current
           n = ceil(r' × pods);  n moves against r'            → current;  else n

   Arithmetic is float64 as in Kubernetes: the band test is `1 − down ≤ r ≤ 1 + up`, so 100 pods
   at exactly r = 1.1 (per pod 11, T 10) stay put, and outside the band `ceil(1.1 × 100)` is
   `ceil(110.00000000000001) = 111`. (Kubernetes truncates pod values to milli-units first; we
   keep the floats.)

2. `HpaStabilizer` — stabilization windows over the calculator's proposals:

       up   = min(proposal, proposals in (now − upWindow, now])
       down = max(proposal, proposals in (now − downWindow, now])
       result = current;  result < up → up;  result > down → down

   The history is seeded with the current replica count on the first tick (Kubernetes
   `maybeInitScaleDownStabilizationWindow`), so a new policy does not scale down within its
   first scale-down window.

3. `HpaRateLimiter` — `behavior` rate policies, over the scale events of each period:

       periodStart = current − (scale-ups in period) + (scale-downs in period)
       up:   Pods → periodStart + v;  Percent → ceil(periodStart × (1 + v/100))
       down: Pods → periodStart − v;  Percent → trunc(periodStart × (1 − v/100))
       selectPolicy Max takes the largest change, Min the smallest, Disabled none.

   A scale-up is capped at max(current, limit) and at maxReplicas; a scale-down at
   min(current, limit) and at minReplicas.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from autoscalerd.config.model import HpaBehavior, HpaRules
from autoscalerd.scaling.window import MaxWindow, MinWindow

__all__ = ["HpaProposal", "HpaRateLimiter", "HpaStabilizer", "hpa_replicas"]


@dataclass(frozen=True, kw_only=True, slots=True)
class HpaProposal:
    desired: int
    reason: str
    """`scale-up`, `scale-down`, `within-tolerance` or `missing-pods` (the missing/unready
    adjustment cancelled the change)."""
    ratio: float
    """Usage ratio over the pods that answered."""


def _within(ratio: float, up_tolerance: float, down_tolerance: float) -> bool:
    return (1.0 - down_tolerance) <= ratio <= (1.0 + up_tolerance)


def hpa_replicas(
    *,
    current: int,
    total: float,
    answered: int,
    missing: int = 0,
    not_ready: int = 0,
    target: float,
    up_tolerance: float = 0.1,
    down_tolerance: float = 0.1,
) -> HpaProposal:
    """Return the Kubernetes replica proposal for one metric (see the module docstring).

    `total` is the sum of the values of the `answered` pods; `missing` counted pods did not
    answer; `not_ready` pods exist but are not Ready. Precondition: `answered > 0`.
    """
    if answered <= 0:
        raise ValueError("hpa_replicas needs at least one pod that answered")
    ratio = (total / answered) / target
    scale_up_with_unready = not_ready > 0 and ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if _within(ratio, up_tolerance, down_tolerance):
            return HpaProposal(desired=current, reason="within-tolerance", ratio=ratio)
        desired = math.ceil(ratio * answered)
        return HpaProposal(desired=desired, reason=_direction(desired, current), ratio=ratio)

    pods = answered
    adjusted_total = total
    if missing > 0:
        pods += missing
        if ratio < 1.0:
            adjusted_total += missing * target
    if scale_up_with_unready:
        pods += not_ready
    new_ratio = (adjusted_total / pods) / target
    if (
        _within(new_ratio, up_tolerance, down_tolerance)
        or (ratio > 1.0 and new_ratio < 1.0)
        or (ratio < 1.0 and new_ratio > 1.0)
    ):
        return HpaProposal(desired=current, reason="missing-pods", ratio=ratio)
    desired = math.ceil(new_ratio * pods)
    if (new_ratio < 1.0 and desired > current) or (new_ratio > 1.0 and desired < current):
        return HpaProposal(desired=current, reason="missing-pods", ratio=ratio)
    return HpaProposal(desired=desired, reason=_direction(desired, current), ratio=ratio)


def _direction(desired: int, current: int) -> str:
    if desired > current:
        return "scale-up"
    if desired < current:
        return "scale-down"
    return "within-tolerance"


class HpaStabilizer:
    """Stabilization windows over proposals (also used for APA's cooldowns)."""

    __slots__ = ("_down", "_seeded", "_up")

    def __init__(self, up_window_seconds: float, down_window_seconds: float) -> None:
        self._up = MinWindow(up_window_seconds)
        self._down = MaxWindow(down_window_seconds)
        self._seeded = False

    def stabilize(self, now: float, current: int, proposal: int) -> int:
        """Return the stabilized recommendation and remember `proposal` at `now`."""
        if not self._seeded:
            self._seeded = True
            self._up.record(now, current)
            self._down.record(now, current)
        up_seen = self._up.value(now)
        down_seen = self._down.value(now)
        up = proposal if up_seen is None else min(proposal, int(up_seen))
        down = proposal if down_seen is None else max(proposal, int(down_seen))
        self._up.record(now, proposal)
        self._down.record(now, proposal)
        result = current
        if result < up:
            result = up
        if result > down:
            result = down
        return result


_NO_UP_LIMIT = 2**31 - 1
"""Rules without policies do not limit (Kubernetes' validation requires one, ours may not)."""
_NO_DOWN_LIMIT = -(2**31)


class HpaRateLimiter:
    """`behavior` rate policies with the scale events of their periods."""

    __slots__ = ("_behavior", "_downs", "_ups")

    def __init__(self, behavior: HpaBehavior) -> None:
        self._behavior = behavior
        self._ups: deque[tuple[float, int]] = deque()
        self._downs: deque[tuple[float, int]] = deque()

    def limit(
        self, now: float, current: int, desired: int, min_replicas: int, max_replicas: int
    ) -> tuple[int, str]:
        """Return `desired` within the rate policies and bounds, and why it changed (or "")."""
        if desired > current:
            rules = self._behavior.scale_up
            limit = self._up_limit(now, current, rules)
            if limit < current:  # earlier scale-ups used the budget: hold, never go down
                limit = current
            allowed, why = (max_replicas, "clamped-max")
            if allowed > limit:
                allowed, why = limit, _limit_reason(rules)
            if desired > allowed:
                return allowed, why
        elif desired < current:
            rules = self._behavior.scale_down
            limit = self._down_limit(now, current, rules)
            if limit > current:
                limit = current
            allowed, why = (min_replicas, "clamped-min")
            if allowed < limit:
                allowed, why = limit, _limit_reason(rules)
            if desired < allowed:
                return allowed, why
        return desired, ""

    def record(self, now: float, old: int, new: int) -> None:
        """Remember a scale from `old` to `new` replicas at `now`."""
        if new > old:
            self._ups.append((now, new - old))
        elif new < old:
            self._downs.append((now, old - new))

    def _changes(self, now: float, period: float, events: deque[tuple[float, int]]) -> int:
        cutoff = now - period
        return sum(change for t, change in events if t > cutoff)

    def _prune(self, now: float) -> None:
        for events, rules in (
            (self._ups, self._behavior.scale_up),
            (self._downs, self._behavior.scale_down),
        ):
            longest = max((p.period_seconds for p in rules.policies), default=0.0)
            while events and events[0][0] <= now - longest:
                events.popleft()

    def _period_start(self, now: float, current: int, period: float) -> int:
        return (
            current
            - self._changes(now, period, self._ups)
            + self._changes(now, period, self._downs)
        )

    def _up_limit(self, now: float, current: int, rules: HpaRules) -> int:
        self._prune(now)
        if rules.select_policy == "Disabled":
            return current
        pick_min = rules.select_policy == "Min"
        result: int | None = None
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                proposed = start + policy.value
            else:
                proposed = math.ceil(start * (1 + policy.value / 100))
            if result is None:
                result = proposed
            else:
                result = min(result, proposed) if pick_min else max(result, proposed)
        return result if result is not None else _NO_UP_LIMIT

    def _down_limit(self, now: float, current: int, rules: HpaRules) -> int:
        self._prune(now)
        if rules.select_policy == "Disabled":
            return current
        pick_min_change = rules.select_policy == "Min"
        result: int | None = None
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                proposed = start - policy.value
            else:
                proposed = math.trunc(start * (1 - policy.value / 100))
            if result is None:
                result = proposed
            else:
                result = max(result, proposed) if pick_min_change else min(result, proposed)
        return result if result is not None else _NO_DOWN_LIMIT


def _limit_reason(rules: HpaRules) -> str:
    return "scaling-disabled" if rules.select_policy == "Disabled" else "rate-limited"

"""APA: AIbrix's fluctuation-tolerance autoscaler (HCPA, Huo et al. 2023; AIbrix PR #223).

Per source and tick, with `T` the target value per pod:

    perPod = windowMean(total) / ready                 # ready == 0 → no answer
    r      = perPod / T
    r > 1 + upTol:    desired = min(ceil(ready × r), ceil(upRate × ready))
    r < 1 − downTol:  desired = max(ceil(ready × r), floor(ready / downRate))
    otherwise:        desired = current                # the band edges are "no change"

The comparisons are strict, so a ratio of exactly `1 + upTol` (or `1 − downTol`) changes nothing.

One guard beyond AIbrix: the answer never moves against the metric. When pods are still
starting (`ready < current`), `ceil(ready × r)` can be below `current` although `r > 1`; that
answer is raised to `current` (and a "down" answer above `current` is lowered to it), so new,
not-yet-ready pods are never killed by a scale-UP signal (cf. AIbrix #2670).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscalerd.config.model import ApaParams
from autoscalerd.scaling.window import MeanWindow

__all__ = ["ApaRecommendation", "ApaSource", "apa_scale"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ApaRecommendation:
    desired: int
    reason: str
    """`scale-up`, `scale-down`, `within-tolerance`, `rate-limited`, or `awaiting-ready` (the
    metric points one way but the answer from ready pods alone would move the other)."""
    ratio: float


def apa_scale(
    *,
    ready: int,
    current: int,
    per_pod: float,
    target: float,
    up_tolerance: float,
    down_tolerance: float,
    max_scale_up_rate: float,
    max_scale_down_rate: float,
) -> ApaRecommendation:
    """Return the APA answer for one tick (formulas in the module docstring)."""
    if target <= 0:  # AIbrix #1879; the config model forbids it, kept for direct callers
        return ApaRecommendation(desired=current, reason="within-tolerance", ratio=math.nan)
    ratio = per_pod / target
    if ratio > 1 + up_tolerance:
        wanted = math.ceil(ready * ratio)
        limit = math.ceil(max_scale_up_rate * ready)
        desired = min(wanted, limit)
        reason = "rate-limited" if limit < wanted else "scale-up"
        if desired < current:
            desired, reason = current, "awaiting-ready"
    elif ratio < 1 - down_tolerance:
        wanted = math.ceil(ready * ratio)
        limit = math.floor(ready / max_scale_down_rate)
        desired = max(wanted, limit)
        reason = "rate-limited" if limit > wanted else "scale-down"
        if desired > current:
            desired, reason = current, "awaiting-ready"
    else:
        desired, reason = current, "within-tolerance"
    return ApaRecommendation(desired=desired, reason=reason, ratio=ratio)


class ApaSource:
    """The APA state of one metric source: one window of totals."""

    __slots__ = ("params", "target", "window")

    def __init__(self, params: ApaParams, target: float) -> None:
        self.params = params
        self.target = target
        self.window = MeanWindow(params.window_seconds)

    def record(self, now: float, total: float) -> None:
        self.window.record(now, total)

    def recommend(self, now: float, ready: int, current: int) -> ApaRecommendation | None:
        """Evaluate at `now`; None when no pod is ready or the window is empty."""
        average = self.window.average(now)
        if average is None or ready <= 0:
            return None
        p = self.params
        return apa_scale(
            ready=ready,
            current=current,
            per_pod=average / ready,
            target=self.target,
            up_tolerance=p.up_fluctuation_tolerance,
            down_tolerance=p.down_fluctuation_tolerance,
            max_scale_up_rate=p.max_scale_up_rate,
            max_scale_down_rate=p.max_scale_down_rate,
        )

"""KPA: Knative's Pod Autoscaler on metric TOTALS (AIbrix Gen1 semantics, anchors' bugs fixed).

One `KpaSource` per metric source holds that source's stable and panic windows and its panic
memory. Each tick (with data) records the tick's total, then computes, with `T` the target value
per pod and `stable`/`panic` the window means of the total:

    readyF   = max(1, ready)
    maxUp    = ceil(maxScaleUpRate × readyF)
    maxDown  = floor(readyF / maxScaleDownRate)
    dspc     = ceil(stable / T);   dppc = ceil(panic / T)
    dS       = min(max(dspc, maxDown), maxUp);   dP = min(max(dppc, maxDown), maxUp)
    activationScale > 1:  d ∈ {dS, dP} with raw > 0 and d < activationScale → activationScale
    over     = dppc / readyF ≥ panicThreshold
    over                                        → panicTime = now   (enter or extend panic)
    in panic and panicTime + stableWindow < now → leave panic, maxPanicPods = 0
    desired  = dS;  in panic: desired = maxPanicPods = max(maxPanicPods, dS, dP)

Totals, not per-pod means: `ceil(total / T)` is the number of pods that serve the whole demand
at the target value each. (AIbrix v0.5+ divides the per-pod MEAN by T, so three pods at twice the
target ask for 2 replicas; here they ask for 6.)

Panic never scales down: while panicking the answer is the highest seen since panic began.
A state created while the target already has more than one ready pod starts in panic with
`maxPanicPods = ready` (`start_in_panic`), so a restarted daemon whose windows are still empty
cannot shrink a busy service.

The policy-level parts (largest source wins, scale-down delay, scale-to-zero grace, clamping)
live in `autoscalerd.scaling.autoscaler`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscalerd.config.model import KpaParams
from autoscalerd.scaling.window import MeanWindow

__all__ = ["KpaRecommendation", "KpaSource", "KpaStep", "kpa_step"]


@dataclass(frozen=True, kw_only=True, slots=True)
class KpaStep:
    """The stateless part of one KPA evaluation (before panic memory)."""

    dspc: int
    """Desired pods from the stable window, unbounded: ceil(stable / T)."""
    dppc: int
    """Desired pods from the panic window, unbounded: ceil(panic / T)."""
    stable_desired: int
    """dS: dspc within [maxDown, maxUp], then activation scale."""
    panic_desired: int
    """dP: dppc within [maxDown, maxUp], then activation scale."""
    max_up: int
    max_down: int
    over_threshold: bool
    """dppc / max(1, ready) ≥ panicThreshold: enter (or extend) panic."""


def kpa_step(
    *, ready: int, stable_average: float, panic_average: float, target: float, params: KpaParams
) -> KpaStep:
    """Compute the stateless KPA quantities for one tick (formulas in the module docstring)."""
    ready_f = max(1, ready)
    max_up = math.ceil(params.max_scale_up_rate * ready_f)
    max_down = math.floor(ready_f / params.max_scale_down_rate)
    dspc = math.ceil(stable_average / target)
    dppc = math.ceil(panic_average / target)
    d_s = min(max(dspc, max_down), max_up)
    d_p = min(max(dppc, max_down), max_up)
    activation = params.activation_scale
    if activation > 1:
        if dspc > 0 and d_s < activation:
            d_s = activation
        if dppc > 0 and d_p < activation:
            d_p = activation
    return KpaStep(
        dspc=dspc,
        dppc=dppc,
        stable_desired=d_s,
        panic_desired=d_p,
        max_up=max_up,
        max_down=max_down,
        over_threshold=dppc / ready_f >= params.panic_threshold,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class KpaRecommendation:
    """One source's answer for one tick."""

    desired: int
    panic: bool
    reason: str
    """`stable`, `panic`, `rate-limited` (maxUp/maxDown bound the answer) or `activation-scale`."""
    stable_average: float
    panic_average: float
    step: KpaStep


class KpaSource:
    """The KPA state of one metric source: two windows of totals and the panic memory."""

    __slots__ = (
        "max_panic_pods",
        "panic_since",
        "panic_window",
        "params",
        "stable_window",
        "target",
    )

    def __init__(
        self,
        params: KpaParams,
        target: float,
        *,
        panic_since: float | None = None,
        max_panic_pods: int = 0,
    ) -> None:
        self.params = params
        self.target = target
        self.stable_window = MeanWindow(params.stable_window_seconds)
        self.panic_window = MeanWindow(params.panic_window_seconds)
        self.panic_since = panic_since
        """Last time the panic condition held (Knative `panicTime`); None = not in panic."""
        self.max_panic_pods = max_panic_pods

    @property
    def in_panic(self) -> bool:
        return self.panic_since is not None

    def start_in_panic(self, now: float, ready: int) -> None:
        """Begin in panic holding `ready` pods when more than one is ready (Knative, AIbrix #515)."""
        if ready > 1:
            self.panic_since = now
            self.max_panic_pods = ready

    def record(self, now: float, total: float) -> None:
        """Record this tick's total into both windows."""
        self.stable_window.record(now, total)
        self.panic_window.record(now, total)

    def recommend(self, now: float, ready: int) -> KpaRecommendation | None:
        """Evaluate the windows at `now`; None when they hold no sample."""
        stable = self.stable_window.average(now)
        panic = self.panic_window.average(now)
        if stable is None or panic is None:
            return None
        return self.step(now, ready, stable, panic)

    def step(
        self, now: float, ready: int, stable_average: float, panic_average: float
    ) -> KpaRecommendation:
        """Apply one evaluation with given window means, updating the panic memory."""
        s = kpa_step(
            ready=ready,
            stable_average=stable_average,
            panic_average=panic_average,
            target=self.target,
            params=self.params,
        )
        if s.over_threshold:
            self.panic_since = now
        elif (
            self.panic_since is not None
            and self.panic_since + self.params.stable_window_seconds < now
        ):
            self.panic_since = None
            self.max_panic_pods = 0
        if self.panic_since is not None:
            desired = max(s.stable_desired, s.panic_desired)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            raw = max(s.dspc, s.dppc)
            desired_held = self.max_panic_pods
            reason = "panic"
            if desired_held == desired and desired != raw:
                reason = _bound_reason(raw, desired, s)
            return KpaRecommendation(
                desired=desired_held,
                panic=True,
                reason=reason,
                stable_average=stable_average,
                panic_average=panic_average,
                step=s,
            )
        reason = (
            "stable" if s.stable_desired == s.dspc else _bound_reason(s.dspc, s.stable_desired, s)
        )
        return KpaRecommendation(
            desired=s.stable_desired,
            panic=False,
            reason=reason,
            stable_average=stable_average,
            panic_average=panic_average,
            step=s,
        )


def _bound_reason(raw: int, bounded: int, s: KpaStep) -> str:
    if bounded > raw and raw > 0 and bounded > s.max_down:
        return "activation-scale"
    return "rate-limited"

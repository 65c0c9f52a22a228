"""One autoscaler per policy: ticks in, decisions out; deterministic, no clock, no I/O.

Per tick (`Autoscaler.decide`), in this order:

1. **Target at zero.** `current_replicas == 0` while `minReplicas > 0`: somebody scaled the
   target to zero by hand; leave it alone (`desired=None`, reason `target-at-zero`). Nothing is
   recorded.
2. **Samples → values.** For KPA/APA each source's value is the tick's *total* over the ready
   pods, estimated from the pods that answered (`estimate_total`): as is when every ready pod
   answered, `total / answered × ready` when at least half did, otherwise no data. HPA takes the
   raw sum of the pods that answered and handles missing pods itself (Kubernetes rules). A value
   is recorded into that source's windows; a source without data records nothing.
3. **Out of bounds.** `current > maxReplicas` → `maxReplicas` (`clamped-max`); `current <
   minReplicas` → `minReplicas` (`clamped-min`); the algorithm does not run this tick (as in
   Kubernetes and AIbrix), but the samples of step 2 are kept.
4. **One recommendation per source.** A source without data has none, unless the policy has a
   `fallback` and the source has gone `failure_threshold` consecutive ticks without data: then
   it recommends `fallback.replicas` (KEDA's behaviour; it goes through the steps below like any
   other recommendation, so it is never below what a working source asks for).
5. **Combine.** No recommendation at all → `desired=None`, reason `no-data` (never a scale
   down). Otherwise the largest recommendation wins. If any source lacks data and the winner is
   below `current`, the answer is `current` (`partial-data`): missing data forbids scaling down.
6. **Strategy post-processing.** KPA: scale-to-zero grace, then the scale-down delay window.
   APA: cooldown (stabilization) windows. HPA: stabilization windows, then `behavior` rates.
7. **Clamp** to `[minReplicas, maxReplicas]` (`clamped-max`, `clamped-min`), the bounds of the
   active schedule window when there is one (steps 1 and 3 use them too; at zero replicas a
   window with its own `minReplicas` warms the target up, as in AIbrix).

A decision is only a recommendation: the caller reports a scale it actually made with
`applied(now, old, new)`, and only those count as scale events for HPA rate policies (as the
HPA controller records an event after a successful update). A decision that is not written
(dry run, a follower, a failed write) does not use up a rate budget.

Reasons (`Decision.reason`, machine-readable): `target-at-zero`, `no-data`, `partial-data`,
`fallback`, `clamped-max`, `clamped-min`, `schedule-max`, `schedule-min` (clamped by the
bounds of the active `spec.schedules` window, `scaling/schedules.py`; its name is in
`Decision.schedule` and the detail); KPA `stable`, `panic`, `rate-limited`,
`activation-scale`, `scale-to-zero-grace`, `scale-down-delayed`; APA and HPA `scale-up`,
`scale-down`, `within-tolerance`, `rate-limited`, `stabilized`; APA `awaiting-ready`;
HPA `missing-pods`, `scaling-disabled`.

About 540 lines: the decision pipeline shared by KPA, APA and HPA (inputs, missing data,
bounds and schedules, fallback, several sources, the applied-scale record) is one sequence
that reads best in one place; each algorithm lives in its own module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from autoscalerd.config.model import Policy, Strategy
from autoscalerd.scaling.apa import ApaSource
from autoscalerd.scaling.hpa import HpaRateLimiter, HpaStabilizer, hpa_replicas
from autoscalerd.scaling.kpa import KpaSource
from autoscalerd.scaling.schedules import Bounds, effective_bounds
from autoscalerd.scaling.window import MaxWindow

__all__ = [
    "Autoscaler",
    "Decision",
    "SourceSample",
    "Tick",
    "estimate_total",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceSample:
    """One metric source at one tick."""

    total: float | None
    """Sum of the values of the pods that answered; None when no pod answered."""
    answered: int = 0
    """Pods that answered."""
    missing: int = 0
    """Counted (ready) pods whose scrape failed: missing, never zero."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Tick:
    """Everything one decision looks at."""

    now: float
    """Seconds: monotonic in the daemon, trace time in `simulate`."""
    current_replicas: int
    """The target's `spec.replicas` (from `/scale`)."""
    ready: int
    """Counted pods: Running, Ready, with an IP, not being deleted."""
    not_ready: int = 0
    """Pods that exist but are not Ready yet (HPA: 0 on a scale-up)."""
    samples: tuple[SourceSample, ...]
    """One per `policy.sources`, same order."""
    wall: float | None = None
    """Unix seconds, for `spec.schedules` (None: the spec's bounds apply)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """The answer for one tick."""

    desired: int | None
    """Replicas to set, already within [min, max]; None = no decision this tick, leave it."""
    reason: str
    """Short and machine-readable (see the module docstring)."""
    mode: str
    """`stable` or `panic` for KPA, `""` otherwise."""
    values: tuple[float | None, ...]
    """Per source, the metric total the algorithm used (None = no data)."""
    detail: str = ""
    """Human-readable explanation."""
    schedule: str | None = None
    """The `spec.schedules` window in force (its bounds replaced the spec's), if any."""
    bounds: tuple[int, int] | None = None
    """(min, max) replicas in force this tick."""


def estimate_total(sample: SourceSample, ready: int) -> float | None:
    """Return the source's total over `ready` pods, or None when it cannot be trusted.

    Every ready pod answered (or more: a total given for zero ready pods, as `simulate`'s demand
    is) → the total as is. At least half answered → mean × ready = `total / answered × ready`.
    Fewer than half → None: extrapolating from a minority is guessing.
    """
    total = sample.total
    if total is None:
        return None
    if sample.answered >= ready:
        return total
    if sample.answered > 0 and 2 * sample.answered >= ready:
        return total / sample.answered * ready
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class _Recommendation:
    """Replicas asked for, by one source or after a step of the policy, and why."""

    desired: int
    reason: str
    detail: str = ""


class _WindowedSource(Protocol):
    def record(self, now: float, total: float) -> None: ...


def _record_estimated_totals(
    sources: Sequence[_WindowedSource], tick: Tick
) -> tuple[float | None, ...]:
    """KPA and APA: each source's estimated total (`estimate_total`), recorded into that
    source's windows when there is one."""
    values = tuple(estimate_total(sample, tick.ready) for sample in tick.samples)
    for source, value in zip(sources, values, strict=True):
        if value is not None:
            source.record(tick.now, value)
    return values


class _Engine(Protocol):
    def begin(self, tick: Tick) -> None: ...
    def observe(self, tick: Tick) -> tuple[float | None, ...]: ...
    def recommend(self, index: int, tick: Tick, value: float) -> _Recommendation | None: ...
    def finish(self, tick: Tick, rec: _Recommendation) -> _Recommendation: ...
    def scaled(self, now: float, old: int, new: int) -> None: ...
    def mode(self) -> str: ...
    def summary(self) -> dict[str, object]: ...


class _KpaEngine:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.params = policy.kpa
        self.sources = [KpaSource(policy.kpa, s.target_value) for s in policy.sources]
        delay = policy.kpa.scale_down_delay_seconds
        self.delay = MaxWindow(delay) if delay > 0 else None
        self.zero_since: float | None = None
        """Start of the current run of ticks whose demand was 0 on every source with data."""

    def begin(self, tick: Tick) -> None:
        for s in self.sources:
            s.start_in_panic(tick.now, tick.ready)

    def observe(self, tick: Tick) -> tuple[float | None, ...]:
        values = _record_estimated_totals(self.sources, tick)
        present = [v for v in values if v is not None]
        if any(v > 0 for v in present):
            self.zero_since = None
        elif present and self.zero_since is None:
            self.zero_since = tick.now
        return values

    def recommend(self, index: int, tick: Tick, value: float) -> _Recommendation | None:
        r = self.sources[index].recommend(tick.now, tick.ready)
        if r is None:
            return None
        s = r.step
        return _Recommendation(
            desired=r.desired,
            reason=r.reason,
            detail=(
                f"stable={r.stable_average:.6g} panic={r.panic_average:.6g} "
                f"dspc={s.dspc} dppc={s.dppc} bounds=[{s.max_down},{s.max_up}] ready={tick.ready}"
            ),
        )

    def finish(self, tick: Tick, rec: _Recommendation) -> _Recommendation:
        desired, reason = rec.desired, rec.reason
        grace = self.params.scale_to_zero_grace_period_seconds
        if (
            desired == 0
            and self.policy.min_replicas == 0
            and tick.current_replicas > 0
            and (self.zero_since is None or tick.now - self.zero_since < grace)
        ):
            desired, reason = 1, "scale-to-zero-grace"
        if self.delay is not None:
            self.delay.record(tick.now, desired)
            held = int(self.delay.value(tick.now) or desired)
            if held > desired:
                desired, reason = held, "scale-down-delayed"
        return _Recommendation(desired=desired, reason=reason, detail=rec.detail)

    def scaled(self, now: float, old: int, new: int) -> None:
        pass

    def mode(self) -> str:
        return "panic" if any(s.in_panic for s in self.sources) else "stable"

    def summary(self) -> dict[str, object]:
        return {
            "stable_window_seconds": self.params.stable_window_seconds,
            "panic_window_seconds": self.params.panic_window_seconds,
            "scale_down_delay_seconds": self.params.scale_down_delay_seconds,
            "panic_since": [s.panic_since for s in self.sources],
            "max_panic_pods": [s.max_panic_pods for s in self.sources],
            "zero_demand_since": self.zero_since,
        }


class _ApaEngine:
    def __init__(self, policy: Policy) -> None:
        self.params = policy.apa
        self.sources = [ApaSource(policy.apa, s.target_value) for s in policy.sources]
        self.stabilizer = HpaStabilizer(
            policy.apa.scale_up_cooldown_seconds, policy.apa.scale_down_cooldown_seconds
        )

    def begin(self, tick: Tick) -> None:
        pass

    def observe(self, tick: Tick) -> tuple[float | None, ...]:
        return _record_estimated_totals(self.sources, tick)

    def recommend(self, index: int, tick: Tick, value: float) -> _Recommendation | None:
        source = self.sources[index]
        r = source.recommend(tick.now, tick.ready, tick.current_replicas)
        if r is None:
            return None
        return _Recommendation(
            desired=r.desired,
            reason=r.reason,
            detail=f"ratio={r.ratio:.6g} window={source.window.count(tick.now)} ready={tick.ready}",
        )

    def finish(self, tick: Tick, rec: _Recommendation) -> _Recommendation:
        stabilized = self.stabilizer.stabilize(tick.now, tick.current_replicas, rec.desired)
        if stabilized != rec.desired:
            return _Recommendation(desired=stabilized, reason="stabilized", detail=rec.detail)
        return rec

    def scaled(self, now: float, old: int, new: int) -> None:
        pass

    def mode(self) -> str:
        return ""

    def summary(self) -> dict[str, object]:
        return {
            "window_seconds": self.params.window_seconds,
            "scale_up_cooldown_seconds": self.params.scale_up_cooldown_seconds,
            "scale_down_cooldown_seconds": self.params.scale_down_cooldown_seconds,
        }


class _HpaEngine:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        behavior = policy.hpa.behavior
        self.behavior = behavior
        self.stabilizer = HpaStabilizer(
            behavior.scale_up.stabilization_window_seconds,
            behavior.scale_down.stabilization_window_seconds,
        )
        self.rates = HpaRateLimiter(behavior)

    def begin(self, tick: Tick) -> None:
        pass

    def observe(self, tick: Tick) -> tuple[float | None, ...]:
        return tuple(s.total if s.answered > 0 else None for s in tick.samples)

    def recommend(self, index: int, tick: Tick, value: float) -> _Recommendation | None:
        sample = tick.samples[index]
        p = hpa_replicas(
            current=tick.current_replicas,
            total=value,
            answered=sample.answered,
            missing=sample.missing,
            not_ready=tick.not_ready,
            target=self.policy.sources[index].target_value,
            up_tolerance=self.behavior.scale_up.tolerance,
            down_tolerance=self.behavior.scale_down.tolerance,
        )
        return _Recommendation(
            desired=p.desired,
            reason=p.reason,
            detail=(
                f"ratio={p.ratio:.6g} answered={sample.answered} missing={sample.missing} "
                f"not_ready={tick.not_ready}"
            ),
        )

    def finish(self, tick: Tick, rec: _Recommendation) -> _Recommendation:
        current = tick.current_replicas
        desired, reason = rec.desired, rec.reason
        stabilized = self.stabilizer.stabilize(tick.now, current, desired)
        if stabilized != desired:
            desired, reason = stabilized, "stabilized"
        limited, why = self.rates.limit(
            tick.now, current, desired, self.policy.min_replicas, self.policy.max_replicas
        )
        if why:
            desired, reason = limited, why
        return _Recommendation(desired=desired, reason=reason, detail=rec.detail)

    def scaled(self, now: float, old: int, new: int) -> None:
        self.rates.record(now, old, new)

    def mode(self) -> str:
        return ""

    def summary(self) -> dict[str, object]:
        return {
            "scale_up_stabilization_seconds": self.behavior.scale_up.stabilization_window_seconds,
            "scale_down_stabilization_seconds": (
                self.behavior.scale_down.stabilization_window_seconds
            ),
        }


def _engine(policy: Policy) -> _Engine:
    if policy.strategy is Strategy.KPA:
        return _KpaEngine(policy)
    if policy.strategy is Strategy.APA:
        return _ApaEngine(policy)
    return _HpaEngine(policy)


class Autoscaler:
    """The scaling state of one policy; `decide` is deterministic given the ticks."""

    def __init__(self, policy: Policy) -> None:
        if not policy.sources:
            raise ValueError(f"policy {policy.key} has no metric source")
        self.policy = policy
        self._engine = _engine(policy)
        self._started = False
        self._failures = [0] * len(policy.sources)
        self._last: Decision | None = None
        self._last_now: float | None = None
        self._bounds = Bounds(min_replicas=policy.min_replicas, max_replicas=policy.max_replicas)

    def decide(self, tick: Tick) -> Decision:
        """Return the decision for `tick` (steps in the module docstring)."""
        p = self.policy
        n = len(p.sources)
        if len(tick.samples) != n:
            raise ValueError(
                f"tick has {len(tick.samples)} samples, policy {p.key} has {n} sources"
            )
        if self._last_now is not None and tick.now < self._last_now:
            raise ValueError(f"time went backwards: {tick.now} < {self._last_now}")
        self._last_now = tick.now
        current = tick.current_replicas
        self._bounds = bounds = effective_bounds(p, tick.wall)
        warm_up = bounds.schedule is not None and bounds.schedule.min_replicas
        if current == 0 and bounds.min_replicas > 0 and not warm_up:
            return self._done(
                Decision(
                    desired=None,
                    reason="target-at-zero",
                    mode=self._engine.mode(),
                    values=(None,) * n,
                    detail=f"replicas is 0 and minReplicas is {bounds.min_replicas}: left alone",
                )
            )
        if not self._started:
            self._started = True
            self._engine.begin(tick)
        values = self._engine.observe(tick)

        if current > bounds.max_replicas or current < bounds.min_replicas:
            self._count_failures(values)
            bound, why = _clamp(current, bounds)
            return self._emit(
                tick,
                _Recommendation(desired=bound, reason=why, detail="current replicas out of bounds"),
                values,
            )

        recs: list[_Recommendation] = []
        used: list[float | None] = []
        for index, value in enumerate(values):
            rec = None if value is None else self._engine.recommend(index, tick, value)
            used.append(None if rec is None else value)
            if rec is not None:
                recs.append(rec)
        self._count_failures(used)
        lacking = False
        fallback = p.fallback
        for index, value in enumerate(used):
            if value is not None:
                continue
            if fallback is not None and self._failures[index] >= fallback.failure_threshold:
                recs.append(
                    _Recommendation(
                        desired=fallback.replicas,
                        reason="fallback",
                        detail=(
                            f"source {index} without data for {self._failures[index]} ticks: "
                            f"fallback to {fallback.replicas}"
                        ),
                    )
                )
            else:
                lacking = True
        values = tuple(used)
        if not recs:
            return self._done(
                Decision(desired=None, reason="no-data", mode=self._engine.mode(), values=values)
            )
        best = _largest(recs)
        if lacking and best.desired < current:
            return self._emit(
                tick,
                _Recommendation(
                    desired=current,
                    reason="partial-data",
                    detail=f"a source has no data: no scale down (would be {best.desired})",
                ),
                values,
            )
        return self._emit(tick, self._engine.finish(tick, best), values)

    # -- helpers -------------------------------------------------------------------------

    def _count_failures(self, values: Sequence[float | None]) -> None:
        for i, v in enumerate(values):
            self._failures[i] = 0 if v is not None else self._failures[i] + 1

    def _emit(self, tick: Tick, rec: _Recommendation, values: tuple[float | None, ...]) -> Decision:
        desired, why = _clamp(rec.desired, self._bounds)
        reason = why or rec.reason
        return self._done(
            Decision(
                desired=desired,
                reason=reason,
                mode=self._engine.mode(),
                values=values,
                detail=rec.detail,
            )
        )

    def _done(self, decision: Decision) -> Decision:
        bounds = self._bounds
        if bounds.schedule is not None:
            note = (
                f"schedule {bounds.schedule.name}: replicas "
                f"[{bounds.min_replicas}, {bounds.max_replicas}]"
            )
            decision = replace(
                decision,
                schedule=bounds.schedule.name,
                detail=f"{decision.detail}; {note}" if decision.detail else note,
            )
        decision = replace(decision, bounds=(bounds.min_replicas, bounds.max_replicas))
        self._last = decision
        return decision

    def applied(self, now: float, old: int, new: int) -> None:
        """The caller scaled the target from `old` to `new` replicas at `now` (the tick's time
        base): a scale event for HPA rate policies."""
        if new != old:
            self._engine.scaled(now, old, new)

    def retune(self, policy: Policy) -> bool:
        """Take `policy` in place when it differs from the current one only in its bounds
        and fallback (the algorithm's parameters and sources are the same), keeping the
        windows and the panic state; False (nothing changed) otherwise."""
        same = replace(
            self.policy,
            min_replicas=policy.min_replicas,
            max_replicas=policy.max_replicas,
            fallback=policy.fallback,
        )
        if same != policy:
            return False
        self.policy = policy
        engine: Any = self._engine
        if hasattr(engine, "policy"):  # KPA and HPA read the bounds from it
            engine.policy = policy
        return True

    def state_summary(self) -> Mapping[str, object]:
        """Return a JSON-friendly view of the state, for `/status`."""
        last = self._last
        return {
            "strategy": str(self.policy.strategy),
            "mode": self._engine.mode(),
            "consecutive_no_data": list(self._failures),
            "last_reason": last.reason if last else None,
            "last_desired": last.desired if last else None,
            **self._engine.summary(),
        }


def _clamp(replicas: int, bounds: Bounds) -> tuple[int, str]:
    """`replicas` within the bounds in force, and `clamped-max`/`clamped-min` when it had to
    move ("" when it did not); `schedule-max`/`schedule-min` when a schedule's override moved
    it."""
    schedule = bounds.schedule
    if replicas > bounds.max_replicas:
        by_schedule = schedule is not None and schedule.max_replicas is not None
        return bounds.max_replicas, "schedule-max" if by_schedule else "clamped-max"
    if replicas < bounds.min_replicas:
        by_schedule = schedule is not None and schedule.min_replicas is not None
        return bounds.min_replicas, "schedule-min" if by_schedule else "clamped-min"
    return replicas, ""


def _largest(recs: Sequence[_Recommendation]) -> _Recommendation:
    best = recs[0]
    for r in recs[1:]:
        if r.desired > best.desired:
            best = r
    return best

"""One reconciler per policy: resolve pods → scrape → record → decide → apply, every interval.

Each step's failure stays inside its policy and its tick: a failing API call, pod or endpoint
is logged once when it starts (and once when it ends, `problems.py`), counted in the metrics,
shown in `/status`, and never turned into a metric value of 0. A tick without data makes no
decision.

The reconciler reaches the world only through the ports in `ports.py` (`Kube`, `Scrape`,
`Clock`), handed over in the `DaemonContext`; when it ticks is `tick_grid.py`'s business, when
it reads `/scale` again `scale_refresh.py`'s.

About 520 lines: one tick's steps in order (read /scale, count pods, scrape, sample the other
sources, decide, apply, record), each short; the pieces with a job of their own already live
beside it (tick_grid, scale_refresh, scrape_targets, problems, sources, signals,
effective_sources, policy_status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from autoscalerd.config.model import DaemonConfig, MetricSource, Policy
from autoscalerd.daemon.effective_sources import effective_source, insecure_sources
from autoscalerd.daemon.policy_status import aibrix_scheduled_bounds, policy_status, utc
from autoscalerd.daemon.ports import LOOP_CLOCK, Clock, Kube, PodView, Scrape
from autoscalerd.daemon.problems import SCRAPE_PREFIX, Problems
from autoscalerd.daemon.scale_refresh import scale_is_fresh
from autoscalerd.daemon.scrape_targets import ScrapeTargets
from autoscalerd.daemon.signals import DerivedSignals
from autoscalerd.daemon.sources import Query, SamplingEnv, SourceSampler
from autoscalerd.daemon.tick_grid import next_tick, tick_phase
from autoscalerd.kube.errors import KubeError
from autoscalerd.kube.pods import PodInfo
from autoscalerd.kube.scale import ScaleInfo
from autoscalerd.scaling.autoscaler import Autoscaler, Decision, SourceSample, Tick
from autoscalerd.scrape.client import ScrapeOutcome
from autoscalerd.server.history import HistoryStore, Point
from autoscalerd.server.metrics import DaemonMetrics

__all__ = ["DaemonContext", "PolicyReconciler", "effective_source"]

log = structlog.get_logger(__name__)

_NO_SAMPLE = SourceSample(total=None)

POD_LIST_GRACE_SECONDS = 30.0
"""A pod cache that has not listed within this time is reported as an error."""


@dataclass
class DaemonContext:
    """What every reconciler shares; fields are swapped in place on reload."""

    kube: Kube
    scraper: Scrape
    metrics: DaemonMetrics
    daemon: DaemonConfig
    dry_run: bool = False
    insecure_default: bool = False
    write_permission: Callable[[], tuple[bool, float | None]] = field(default=lambda: (True, None))
    """(may write, deadline in `clock.now()` time): leader election plugs in here."""
    clock: Clock = LOOP_CLOCK
    history: HistoryStore | None = None
    """Per-policy ring buffers behind /history and /ui (None: --history-seconds 0)."""
    query: Query | None = None
    """Runs `prometheus` sources' queries (issue 12; the supervisor wires the real one)."""


class PolicyReconciler:
    """Runs one policy. `run()` ticks until cancelled; `tick()` is one round."""

    def __init__(self, policy: Policy, ctx: DaemonContext) -> None:
        self.policy = policy
        self.ctx = ctx
        self.autoscaler = Autoscaler(policy)
        self.log = log.bind(policy=policy.key, target=f"{policy.target.kind}/{policy.target.name}")
        self._scale: ScaleInfo | None = None
        self._scale_read_at = -1e18
        self._live_pods: int | None = None
        """Pods behind the selector that are not being deleted, at the last tick."""
        self._cache: PodView | None = None
        self._cache_since = 0.0
        self.problems = Problems(self.log, self._warning_event)
        self._last_decision: Decision | None = None
        self._last_decision_at: float | None = None
        """Wall-clock time of the last decision (formatted only when /status asks)."""
        self._last_scale: dict[str, Any] | None = None
        self._last_logged_desired: int | None = None
        self._ready = 0
        self._not_ready = 0
        self.ticks = 0
        self.late_ticks = 0
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._sources_stamp: tuple[DaemonConfig, bool] | None = None
        self._sources: tuple[MetricSource, ...] = ()
        self._targets = ScrapeTargets()
        # -- issue 12: sources other than `pod` (daemon/sources.py); pod sources by index --
        self._sampler = SourceSampler(policy, self.problems)
        self._pod_indexes = tuple(i for i, s in enumerate(policy.sources) if s.type == "pod")
        self._pod_sources: tuple[MetricSource, ...] = ()
        self._signals = DerivedSignals(policy.sources)  # issue 13: rate(), histogram_quantile()
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}
        """This policy's children of the labelled metrics, by (id(metric), extra label values):
        `labels()` takes a lock and builds a key on every call."""
        # -- issue 15 (seeing it): targets and "data since" as metrics, for dashboards/alerts
        ctx.metrics.policy_started(policy.namespace, policy.name, policy.sources, ctx.clock.wall())

    # -- lifecycle ------------------------------------------------------------------------

    def warn_insecure_sources(self) -> None:
        """Log once per source that skips TLS verification (the explicit bypass)."""
        ctx = self.ctx
        for i, source, origin in insecure_sources(self.policy, ctx.daemon, ctx.insecure_default):
            self.log.warning(
                "TLS verification is OFF for this metric source: anyone on the path can "
                "forge its metrics; set tlsConfig.caFile (and serverName) to verify instead",
                source=i,
                metric=source.target_metric,
                port=source.port,
                endpoint=source.endpoint or None,
                set_by=origin,
                where=str(source.where) if source.where else None,
            )

    async def run(self) -> None:
        clock = self.ctx.clock
        self.warn_insecure_sources()
        interval = self.ctx.daemon.scrape_interval_seconds
        phase = tick_phase(self.policy.key)
        next_at = next_tick(clock.now(), interval, phase)
        await clock.sleep_until(next_at)
        try:
            while True:
                now = clock.now()
                lag = max(0.0, now - next_at)
                self.ctx.metrics.tick_lag_seconds.observe(lag)
                if lag > 0.1 * interval:
                    self.late_ticks += 1
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug must not kill the policy's loop
                    self.problems.report("internal", f"internal error: {exc!r}")
                    self.log.exception("tick failed")
                interval = self.ctx.daemon.scrape_interval_seconds
                now = clock.now()
                next_at = next_tick(max(now, next_at), interval, phase)
                await clock.sleep_until(next_at)
        finally:
            await self.close()

    def _side_task(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a fire-and-forget call (event, cache release) holding a reference to it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def close(self) -> None:
        """Cancel the side calls still running (and wait for them: no task outlives its
        policy), then release the pod cache."""
        side = list(self._side_tasks)
        for task in side:
            task.cancel()
        if side:
            await asyncio.gather(*side, return_exceptions=True)
        if self._cache is not None:
            cache, self._cache = self._cache, None
            try:
                await self.ctx.kube.pods.release(cache)
            except Exception:  # pragma: no cover - shutdown path
                pass

    # -- one tick ---------------------------------------------------------------------------

    async def tick(self) -> Decision | None:
        now = self.ctx.clock.now()
        self.ticks += 1

        scale = await self._read_scale(now)
        if scale is None:
            return None
        self._child(self.ctx.metrics.current_replicas).set(scale.replicas)

        pods = self._pods(scale, now)
        if pods is None:
            return None
        counted: list[PodInfo] = []
        not_ready: list[PodInfo] = []
        for pod in pods:
            if pod.counts:
                counted.append(pod)
            elif not pod.deleting:
                not_ready.append(pod)
        self._ready, self._not_ready = len(counted), len(not_ready)
        self._live_pods = len(counted) + len(not_ready)
        self._child(self.ctx.metrics.ready_pods).set(len(counted))

        samples = await self._scrape(counted)
        decision = self.autoscaler.decide(
            Tick(
                now=now,
                current_replicas=scale.replicas,
                ready=len(counted),
                not_ready=len(not_ready),
                samples=samples,
                wall=self.ctx.clock.wall() if self.policy.schedules else None,
            )
        )
        self._record_decision(decision)
        if decision.desired is not None and decision.desired != scale.replicas:
            await self._apply(scale, decision, now)
        return decision

    async def _read_scale(self, now: float) -> ScaleInfo | None:
        scale = self._scale
        if scale is not None and scale_is_fresh(
            now - self._scale_read_at, scale.replicas, self._live_pods
        ):
            return scale
        p = self.policy
        try:
            self._scale = await self.ctx.kube.get_scale(p.namespace, p.target)
        except KubeError as exc:
            self.problems.report(
                "scale", f"cannot read the scale of the target: {exc}", event="FailedGetScale"
            )
            self._scale = None
            return None
        self._scale_read_at = now
        self.problems.resolved("scale")
        return self._scale

    def _pods(self, scale: ScaleInfo, now: float) -> list[PodInfo] | None:
        p = self.policy
        if not scale.selector:
            self.problems.report(
                "pods",
                "the target's /scale has no status.selector, so its pods cannot be found; "
                "the workload controller must publish one",
            )
            return None
        if self._cache is None or self._cache.selector != scale.selector:
            old = self._cache
            self._cache = self.ctx.kube.pods.acquire(p.namespace, scale.selector)
            self._cache_since = now
            if old is not None:
                self._side_task(self.ctx.kube.pods.release(old))
        if not self._cache.synced:
            if now - self._cache_since > POD_LIST_GRACE_SECONDS:
                err = self._cache.last_error
                self.problems.report(
                    "pods", f"cannot list the pods ({scale.selector}): {err or 'no answer yet'}"
                )
            return None
        self.problems.resolved("pods")
        return self._cache.pods()

    async def _scrape(self, counted: list[PodInfo]) -> tuple[SourceSample, ...]:
        p = self.policy
        ctx = self.ctx
        sources = self._effective_sources()
        targets = self._targets.build(self._pod_sources, counted)
        others: dict[int, tuple[SourceSample, str]] = {}
        if self._sampler.indexes:  # issue 12: the other sources, beside the pod scrapes
            outcomes, others = await asyncio.gather(
                self._scrape_pods(targets), self._sampler.sample(sources, counted, self._env())
            )
        else:
            outcomes = (
                await ctx.scraper.scrape(targets, timeout=ctx.daemon.scrape_timeout_seconds)
                if targets
                else []
            )
        n = len(counted)
        samples: list[SourceSample] = [_NO_SAMPLE] * len(p.sources)
        results: dict[str, int] = {}
        for i, (other, result) in others.items():
            samples[i] = other
            results[result] = results.get(result, 0) + 1
        observe = ctx.metrics.scrape_duration_seconds.observe
        scrape_errors = False
        for k, i in enumerate(self._pod_indexes):
            source = p.sources[i]
            total = 0.0
            answered = 0
            pod_outcomes = outcomes[k * n : (k + 1) * n]
            for pod, outcome in zip(counted, pod_outcomes, strict=True):
                observe(outcome.duration_seconds)
                if outcome.error is None and outcome.value is not None:
                    total += outcome.value
                    answered += 1
                    continue
                scrape_errors = True
                kind = str(getattr(outcome.error, "kind", "error"))
                results[kind] = results.get(kind, 0) + 1
                self.problems.report(
                    f"{SCRAPE_PREFIX}{pod.name}:{i}",
                    str(outcome.error),
                    pod=pod.name,
                    metric=source.target_metric,
                    event="FailedGetMetrics",
                )
            results["ok"] = results.get("ok", 0) + answered
            if self._signals.derived(i):  # issue 13: per-pod series into the signal's window
                samples[i] = self._signals.sample(i, ctx.clock.now(), counted, pod_outcomes)
                self._signals.report(i, source, self.problems)
                continue
            samples[i] = SourceSample(
                total=total if answered else None, answered=answered, missing=n - answered
            )
        for result, count in results.items():
            if count:
                self._child(ctx.metrics.scrapes_total, result).inc(count)
        if scrape_errors or self.problems.any_scrape:
            self._settle_scrape_problems(counted, outcomes, n)
        return tuple(samples)

    def _settle_scrape_problems(
        self, counted: list[PodInfo], outcomes: list[ScrapeOutcome], n: int
    ) -> None:
        """Log recoveries of pods that failed before, and forget pods that are gone."""
        live: set[str] = set()
        for k, i in enumerate(self._pod_indexes):
            for pod, outcome in zip(counted, outcomes[k * n : (k + 1) * n], strict=True):
                key = f"{SCRAPE_PREFIX}{pod.name}:{i}"
                live.add(key)
                if outcome.error is None and self.problems.has(key):
                    self.problems.resolved(key, pod=pod.name)
        self.problems.forget_scrapes_except(live)  # the pod is gone: forget its problem quietly

    def _child(self, metric: Any, *extra: str) -> Any:
        """This policy's child of a labelled metric (namespace, name, *extra), cached."""
        key = (id(metric), extra)
        child = self._series.get(key)
        if child is None:
            p = self.policy
            child = self._series[key] = metric.labels(p.namespace, p.name, *extra)
        return child

    def _effective_sources(self) -> tuple[MetricSource, ...]:
        """The sources with defaults filled in, rebuilt only when the daemon settings change
        (the scraper caches its per-page work by source object, so keep them stable)."""
        ctx = self.ctx
        stamp = (ctx.daemon, ctx.insecure_default)
        if self._sources_stamp != stamp:
            self._sources_stamp = stamp
            self._sources = tuple(
                effective_source(s, ctx.daemon, ctx.insecure_default) for s in self.policy.sources
            )
            self._pod_sources = tuple(self._sources[i] for i in self._pod_indexes)
        return self._sources

    # -- issue 12: sampling the sources other than `pod` (daemon/sources.py) --

    async def _scrape_pods(self, targets: list[Any]) -> list[ScrapeOutcome]:
        if not targets:
            return []
        return await self.ctx.scraper.scrape(
            targets, timeout=self.ctx.daemon.scrape_timeout_seconds
        )

    def _env(self) -> SamplingEnv:
        ctx = self.ctx
        return SamplingEnv(
            kube=ctx.kube,
            scraper=ctx.scraper,
            query=ctx.query,
            daemon=ctx.daemon,
            now=ctx.clock.now(),
            selector=self._scale.selector if self._scale is not None else "",
        )

    def _record_decision(self, decision: Decision) -> None:
        p = self.policy
        m = self.ctx.metrics
        labels = (p.namespace, p.name)
        prev = self._last_decision.mode if self._last_decision is not None else ""
        self._last_decision = decision
        self._last_decision_at = self.ctx.clock.wall()
        self._child(m.decisions_total, decision.reason).inc()
        for source, value in zip(p.sources, decision.values, strict=False):
            if value is not None:
                self._child(m.metric_value, source.target_metric).set(value)
                continue
            # No data: the series goes away rather than showing a stale value.
            if self._series.pop((id(m.metric_value), (source.target_metric,)), None) is not None:
                try:
                    m.metric_value.remove(*labels, source.target_metric)
                except KeyError:
                    pass
        if decision.desired is not None:
            self._child(m.desired_replicas).set(decision.desired)
        # -- issue 15 (seeing it): the data timestamp for alerts, one point for /history --
        if any(v is not None for v in decision.values):
            self._child(m.last_data_timestamp_seconds).set(self._last_decision_at)
        if self.ctx.history is not None:
            self.ctx.history.record(
                p.key,
                self.ctx.clock.now(),
                interval=self.ctx.daemon.scrape_interval_seconds,
                names=[s.target_metric for s in p.sources],
                targets=[s.target_value for s in p.sources],
                point=Point(
                    values=decision.values,
                    ready=self._ready,
                    desired=decision.desired,
                    panic=decision.mode == "panic",
                    schedule=decision.schedule is not None,
                    error=self.problems.active,
                ),
            )
        if decision.mode:
            self._child(m.panic_mode).set(1 if decision.mode == "panic" else 0)
        if decision.mode and prev and decision.mode != prev:
            if decision.mode == "panic":
                self.log.info("entering panic mode", detail=decision.detail)
            else:
                self.log.info("leaving panic mode", detail=decision.detail)

    async def _apply(self, scale: ScaleInfo, decision: Decision, now: float) -> None:
        assert decision.desired is not None
        p = self.policy
        ctx = self.ctx
        desired = decision.desired
        direction = "up" if desired > scale.replicas else "down"
        if ctx.dry_run:
            self._child(ctx.metrics.scale_operations_total, direction, "dry_run").inc()
            if self._last_logged_desired != desired:
                self._last_logged_desired = desired
                self.log.info(
                    "would scale (dry run)",
                    current=scale.replicas,
                    desired=desired,
                    reason=decision.reason,
                    detail=decision.detail,
                )
            return
        allowed, deadline = ctx.write_permission()
        if not allowed:
            return
        started = ctx.clock.now()
        try:
            info = await ctx.kube.set_replicas(
                p.namespace, p.target, desired, observed=scale, deadline=deadline
            )
        except KubeError as exc:
            self._child(ctx.metrics.scale_operations_total, direction, "error").inc()
            self.problems.report(
                "write", f"cannot scale to {desired}: {exc}", event="FailedRescale"
            )
            self._scale = None  # re-read before the next attempt
            return
        self._child(ctx.metrics.scale_operations_total, direction, "ok").inc()
        self.autoscaler.applied(now, scale.replicas, info.replicas)
        self.problems.resolved("write")
        self._scale = info
        self._scale_read_at = ctx.clock.now()
        self._last_scale = {
            "time": utc(ctx.clock.wall()),
            "from": scale.replicas,
            "to": info.replicas,
            "reason": decision.reason,
        }
        self.log.info(
            "scaled",
            old=scale.replicas,
            new=info.replicas,
            reason=decision.reason,
            detail=decision.detail,
            mode=decision.mode or None,
            seconds=round(ctx.clock.now() - started, 3),
        )
        await ctx.kube.record_event(
            p.namespace,
            p.target,
            "Normal",
            "SuccessfulRescale",
            f"New size: {info.replicas}; reason: {decision.reason}"
            + (f" ({decision.detail})" if decision.detail else ""),
            uid=scale.uid or None,
        )

    # -- problems ----------------------------------------------------------------------------

    def _warning_event(self, reason: str, message: str) -> None:
        """Record a Warning Event on the target for a new problem, unless we may not write."""
        if self.ctx.dry_run or not self.ctx.write_permission()[0]:
            return
        p = self.policy
        self._side_task(
            self.ctx.kube.record_event(p.namespace, p.target, "Warning", reason, message[:1000])
        )

    def retune(self, policy: Policy) -> bool:
        """Issue 14: take an edited policy in place when only its bounds or fallback changed
        (windows and panic state kept); False when it needs a new reconciler."""
        if policy.key != self.policy.key or not self.autoscaler.retune(policy):
            return False
        self.policy = policy
        self.log.info(
            "policy bounds changed; windows and panic state kept",
            min_replicas=policy.min_replicas,
            max_replicas=policy.max_replicas,
        )
        return True

    # -- /status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return policy_status(
            self.policy,
            self._last_decision,
            decided_at=self._last_decision_at,
            current_replicas=self._scale.replicas if self._scale is not None else None,
            ready=self._ready,
            not_ready=self._not_ready,
            last_scale=self._last_scale,
            errors=self.problems.messages(),
            ticks=self.ticks,
            late_ticks=self.late_ticks,
        )

    def scheduled_bounds(self) -> dict[str, Any] | None:
        """AIbrix's `status.scheduledBounds` of the last decision (cluster mode writes it)."""
        return aibrix_scheduled_bounds(self.policy, self._last_decision)

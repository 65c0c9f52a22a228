"""One reconciler per policy: resolve pods → scrape → record → decide → apply, every interval.

Each step's failure stays inside its policy and its tick: a failing API call, pod or endpoint
is logged once when it starts (and once when it ends), counted in the metrics, shown in
`/status`, and never turned into a metric value of 0. A tick without data makes no decision.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from autoscalerd.config.model import DaemonConfig, MetricSource, Policy, TLSConfig
from autoscalerd.kube.client import KubeClient
from autoscalerd.kube.errors import KubeError
from autoscalerd.kube.pods import PodCache, PodInfo
from autoscalerd.kube.scale import ScaleInfo
from autoscalerd.scaling.autoscaler import Autoscaler, Decision, SourceSample, Tick
from autoscalerd.scrape.client import ScrapeOutcome, Scraper, ScrapeTarget
from autoscalerd.server.history import HistoryStore, Point
from autoscalerd.server.metrics import DaemonMetrics

__all__ = ["DaemonContext", "PolicyReconciler", "effective_source"]

log = structlog.get_logger(__name__)

SCALE_REFRESH_SECONDS = 15.0
"""Re-read `/scale` at least this often (the HPA's sync period), without one API call per
policy per tick; sooner when the pods disagree with it (`SCALE_RECHECK_SECONDS`)."""
SCALE_RECHECK_SECONDS = 2.0
"""Re-read `/scale` this often while the number of live pods behind the selector differs from
the replicas last read: a `kubectl scale`, another controller or our own write changing the
pods shows there within seconds. (Also during rollouts and while new pods start, which is a
read every two seconds for that while.) 100 steady policies make ~7 reads a second, not 100."""
POD_LIST_GRACE_SECONDS = 30.0
"""A pod cache that has not listed within this time is reported as an error."""


def effective_source(
    source: MetricSource, daemon: DaemonConfig, insecure_default: bool
) -> MetricSource:
    """The source with DaemonConfig defaults (and `--insecure-skip-tls-verify`) filled in.

    Precedence: the source's own setting, then the DaemonConfig's, then the command-line flag.
    The DaemonConfig's token applies to https sources only (never sent in clear text).
    """
    base = daemon.tls
    if insecure_default and base.insecure_skip_verify is None:
        base = replace(base, insecure_skip_verify=True)
    https = source.protocol == "https"
    tls = source.tls.merged_over(base) if https else TLSConfig()
    auth = source.authorization or (daemon.authorization if https else None)
    return replace(source, tls=tls, authorization=auth)


@dataclass
class DaemonContext:
    """What every reconciler shares; fields are swapped in place on reload."""

    kube: KubeClient
    scraper: Scraper
    metrics: DaemonMetrics
    daemon: DaemonConfig
    dry_run: bool = False
    insecure_default: bool = False
    write_permission: Callable[[], tuple[bool, float | None]] = field(default=lambda: (True, None))
    """(may write, deadline in loop time): leader election plugs in here."""
    history: HistoryStore | None = None
    """Per-policy ring buffers behind /history and /ui (None: --history-seconds 0)."""


TICK_SLOTS = 10
"""Policies tick in this many slots per interval (at 1 s: every 100 ms, a tenth of them).

Measured at 100 policies x 10 pods (bench/README-daemon.md): one phase per policy spread the
work over ~100 loop wake-ups a second, each handling a few responses, and cost ~40 % more CPU
per scrape than ticking all policies together; ticking all together made one burst of 1,000
scrapes a second (late ticks, RSS +150 MiB). Slots batch each tenth of the policies into one
wake-up and keep every burst small."""


def tick_phase(key: str) -> float:
    """A policy's stable slot within the scrape interval, as a fraction in [0, 1)."""
    return (zlib.crc32(key.encode()) % TICK_SLOTS) / TICK_SLOTS


def next_tick(after: float, interval: float, phase: float) -> float:
    """The first time strictly after `after` on the grid `phase*interval + k*interval`.

    The grid is absolute (k counts from loop time 0), so the policies of one slot get equal
    times, their timers fire in the same loop iteration, and their scrapes go out together;
    a tick that overran skips the slots it missed instead of bursting.
    """
    offset = phase * interval
    return offset + (math.floor((after - offset) / interval) + 1) * interval


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Sleep until loop time `when` exactly (`asyncio.sleep` takes a delay and re-adds the
    current time, so equal deadlines would become timers a few microseconds apart)."""
    waiter: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(when, _wake, waiter)
    try:
        await waiter
    finally:
        handle.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _utc_now() -> str:
    return _utc(time.time())


def _utc(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
        self._cache: PodCache | None = None
        self._cache_since = 0.0
        self._errors: dict[str, str] = {}
        """Current problems by key (`scale`, `pods`, `scrape:<pod>:<i>`, `write`): message."""
        self._last_decision: Decision | None = None
        self._last_decision_at: float | None = None
        """Wall-clock time of the last decision (formatted only when /status asks)."""
        self._last_scale: dict[str, Any] | None = None
        self._last_logged_desired: int | None = None
        self._ready = 0
        self._not_ready = 0
        self._warned_insecure = False
        self.ticks = 0
        self.late_ticks = 0
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._sources_stamp: tuple[DaemonConfig, bool] | None = None
        self._sources: tuple[MetricSource, ...] = ()
        self._targets: list[ScrapeTarget] = []
        self._targets_for: tuple[tuple[MetricSource, ...], list[PodInfo]] = ((), [])
        """The pods and sources `_targets` was built from (reused while they are the same)."""
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}
        """This policy's children of the labelled metrics, by (id(metric), extra label values):
        `labels()` takes a lock and builds a key on every call."""
        # -- issue 15 (seeing it): targets and "data since" as metrics, for dashboards/alerts
        ctx.metrics.policy_started(policy.namespace, policy.name, policy.sources, time.time())

    # -- lifecycle ------------------------------------------------------------------------

    def warn_insecure_sources(self) -> None:
        """Log once per source that skips TLS verification (the explicit bypass)."""
        for i, source in enumerate(self.policy.sources):
            eff = effective_source(source, self.ctx.daemon, self.ctx.insecure_default)
            if eff.protocol == "https" and eff.tls.insecure_skip_verify:
                origin = (
                    "tlsConfig.insecureSkipVerify"
                    if source.tls.insecure_skip_verify
                    else "DaemonConfig tlsConfig.insecureSkipVerify"
                    if self.ctx.daemon.tls.insecure_skip_verify
                    else "--insecure-skip-tls-verify"
                )
                self.log.warning(
                    "TLS verification is OFF for this metric source: anyone on the path can "
                    "forge its metrics; set tlsConfig.caFile (and serverName) to verify instead",
                    source=i,
                    metric=source.target_metric,
                    port=source.port,
                    set_by=origin,
                    where=str(source.where) if source.where else None,
                )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.warn_insecure_sources()
        interval = self.ctx.daemon.scrape_interval_seconds
        phase = tick_phase(self.policy.key)
        next_at = next_tick(loop.time(), interval, phase)
        await _sleep_until(loop, next_at)
        try:
            while True:
                now = loop.time()
                lag = max(0.0, now - next_at)
                self.ctx.metrics.tick_lag_seconds.observe(lag)
                if lag > 0.1 * interval:
                    self.late_ticks += 1
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug must not kill the policy's loop
                    self._problem("internal", f"internal error: {exc!r}")
                    self.log.exception("tick failed")
                interval = self.ctx.daemon.scrape_interval_seconds
                now = loop.time()
                next_at = next_tick(max(now, next_at), interval, phase)
                await _sleep_until(loop, next_at)
        finally:
            await self.close()

    def _side_task(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a fire-and-forget call (event, cache release) holding a reference to it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def close(self) -> None:
        for task in list(self._side_tasks):
            task.cancel()
        if self._cache is not None:
            cache, self._cache = self._cache, None
            try:
                await self.ctx.kube.pods.release(cache)
            except Exception:  # pragma: no cover - shutdown path
                pass

    # -- one tick ---------------------------------------------------------------------------

    async def tick(self) -> Decision | None:
        loop = asyncio.get_running_loop()
        now = loop.time()
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
            )
        )
        self._record_decision(decision)
        if decision.desired is not None and decision.desired != scale.replicas:
            await self._apply(scale, decision, now)
        return decision

    async def _read_scale(self, now: float) -> ScaleInfo | None:
        scale = self._scale
        if scale is not None:
            age = now - self._scale_read_at
            if age < SCALE_REFRESH_SECONDS and (
                self._live_pods in (None, scale.replicas) or age < SCALE_RECHECK_SECONDS
            ):
                return scale
        p = self.policy
        try:
            self._scale = await self.ctx.kube.get_scale(p.namespace, p.target)
        except KubeError as exc:
            self._problem(
                "scale", f"cannot read the scale of the target: {exc}", event="FailedGetScale"
            )
            self._scale = None
            return None
        self._scale_read_at = now
        self._resolved("scale")
        return self._scale

    def _pods(self, scale: ScaleInfo, now: float) -> list[PodInfo] | None:
        p = self.policy
        if not scale.selector:
            self._problem(
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
                err = getattr(self._cache, "last_error", None)
                self._problem(
                    "pods", f"cannot list the pods ({scale.selector}): {err or 'no answer yet'}"
                )
            return None
        self._resolved("pods")
        return self._cache.pods()

    async def _scrape(self, counted: list[PodInfo]) -> tuple[SourceSample, ...]:
        p = self.policy
        ctx = self.ctx
        targets = self._scrape_targets(self._effective_sources(), counted)
        outcomes = (
            await ctx.scraper.scrape(targets, timeout=ctx.daemon.scrape_timeout_seconds)
            if targets
            else []
        )
        n = len(counted)
        samples: list[SourceSample] = []
        results: dict[str, int] = {}
        observe = ctx.metrics.scrape_duration_seconds.observe
        scrape_errors = False
        for i, source in enumerate(p.sources):
            total = 0.0
            answered = 0
            for pod, outcome in zip(counted, outcomes[i * n : (i + 1) * n], strict=True):
                observe(outcome.duration_seconds)
                if outcome.error is None and outcome.value is not None:
                    total += outcome.value
                    answered += 1
                    continue
                scrape_errors = True
                kind = str(getattr(outcome.error, "kind", "error"))
                results[kind] = results.get(kind, 0) + 1
                self._problem(
                    f"scrape:{pod.name}:{i}",
                    str(outcome.error),
                    pod=pod.name,
                    metric=source.target_metric,
                    event="FailedGetMetrics",
                )
            results["ok"] = results.get("ok", 0) + answered
            samples.append(
                SourceSample(
                    total=total if answered else None, answered=answered, missing=n - answered
                )
            )
        for result, count in results.items():
            if count:
                self._child(ctx.metrics.scrapes_total, result).inc(count)
        if scrape_errors or self._scrape_problems:
            self._settle_scrape_problems(counted, outcomes, n)
        return tuple(samples)

    def _settle_scrape_problems(
        self, counted: list[PodInfo], outcomes: list[ScrapeOutcome], n: int
    ) -> None:
        """Log recoveries of pods that failed before, and forget pods that are gone."""
        live: set[str] = set()
        for i in range(len(self.policy.sources)):
            for pod, outcome in zip(counted, outcomes[i * n : (i + 1) * n], strict=True):
                key = f"scrape:{pod.name}:{i}"
                live.add(key)
                if outcome.error is None and key in self._errors:
                    self._resolved(key, pod=pod.name)
        for key in [k for k in self._errors if k.startswith("scrape:") and k not in live]:
            del self._errors[key]  # the pod is gone: forget its problem quietly

    @property
    def _scrape_problems(self) -> bool:
        return any(k.startswith("scrape:") for k in self._errors)

    def _scrape_targets(
        self, sources: tuple[MetricSource, ...], counted: list[PodInfo]
    ) -> list[ScrapeTarget]:
        """One target per (source, pod), source-major; rebuilt only when a pod or a source
        changed (pod objects are replaced, never mutated, when the watch reports a change)."""
        old_sources, old_pods = self._targets_for
        if (
            old_sources is sources
            and len(old_pods) == len(counted)
            and all(a is b for a, b in zip(old_pods, counted, strict=True))
        ):
            return self._targets
        self._targets = [
            ScrapeTarget(pod=pod.name, ip=pod.ip, source=source)
            for source in sources
            for pod in counted
        ]
        self._targets_for = (sources, counted)
        return self._targets

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
        return self._sources

    def _record_decision(self, decision: Decision) -> None:
        p = self.policy
        m = self.ctx.metrics
        labels = (p.namespace, p.name)
        prev = self._last_decision.mode if self._last_decision is not None else ""
        self._last_decision = decision
        self._last_decision_at = time.time()
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
                asyncio.get_running_loop().time(),
                interval=self.ctx.daemon.scrape_interval_seconds,
                names=[s.target_metric for s in p.sources],
                targets=[s.target_value for s in p.sources],
                point=Point(
                    values=decision.values,
                    ready=self._ready,
                    desired=decision.desired,
                    panic=decision.mode == "panic",
                    error=bool(self._errors),
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
        started = time.monotonic()
        try:
            info = await ctx.kube.set_replicas(
                p.namespace, p.target, desired, observed=scale, deadline=deadline
            )
        except KubeError as exc:
            self._child(ctx.metrics.scale_operations_total, direction, "error").inc()
            self._problem("write", f"cannot scale to {desired}: {exc}", event="FailedRescale")
            self._scale = None  # re-read before the next attempt
            return
        self._child(ctx.metrics.scale_operations_total, direction, "ok").inc()
        self.autoscaler.applied(now, scale.replicas, info.replicas)
        self._resolved("write")
        self._scale = info
        self._scale_read_at = asyncio.get_running_loop().time()
        self._last_scale = {
            "time": _utc_now(),
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
            seconds=round(time.monotonic() - started, 3),
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

    # -- problems, logged on change ----------------------------------------------------------

    def _problem(self, key: str, message: str, *, event: str | None = None, **fields: Any) -> None:
        if self._errors.get(key) == message:
            return
        self._errors[key] = message
        self.log.warning(message, **fields)
        if event is not None and not self.ctx.dry_run and self.ctx.write_permission()[0]:
            p = self.policy
            self._side_task(
                self.ctx.kube.record_event(p.namespace, p.target, "Warning", event, message[:1000])
            )

    def _resolved(self, key: str, **fields: Any) -> None:
        if self._errors.pop(key, None) is not None:
            self.log.info("recovered", step=key.split(":")[0], **fields)

    # -- /status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        p = self.policy
        d = self._last_decision
        metrics: dict[str, float | None] = {}
        for i, source in enumerate(p.sources):
            value = d.values[i] if d is not None and i < len(d.values) else None
            metrics[source.target_metric] = value
        errors = list(self._errors.values())
        return {
            "namespace": p.namespace,
            "name": p.name,
            "strategy": p.strategy.value,
            "target": f"{p.target.kind}/{p.target.name}",
            "min_replicas": p.min_replicas,
            "max_replicas": p.max_replicas,
            "current_replicas": self._scale.replicas if self._scale is not None else None,
            "desired_replicas": d.desired if d is not None else None,
            "ready_pods": self._ready,
            "not_ready_pods": self._not_ready,
            "metrics": metrics,
            "targets": {s.target_metric: s.target_value for s in p.sources},
            "mode": (d.mode or None) if d is not None else None,
            "reason": d.reason if d is not None else None,
            "detail": d.detail if d is not None else None,
            "last_decision_time": (
                _utc(self._last_decision_at) if self._last_decision_at is not None else None
            ),
            "last_scale": self._last_scale,
            "last_error": errors[0] if errors else None,
            "errors": errors[:20],
            "ticks": self.ticks,
            "late_ticks": self.late_ticks,
        }

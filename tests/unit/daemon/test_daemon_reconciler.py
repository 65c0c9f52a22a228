"""The reconciler's tick against fakes, time stepped by hand (`tests/fakes.py`).

Each test builds a small world (a target's `/scale`, its pods, what each pod's metrics page
says), ticks at chosen times and reads what the reconciler wrote, logged and reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog
from fakes import (
    FakeKube,
    FakeScraper,
    ManualClock,
    conflict,
    pod,
    scrape_error,
    too_many_requests,
)
from waiting import wait_for

from autoscalerd.config.load import load_config
from autoscalerd.config.model import DaemonConfig, Policy
from autoscalerd.daemon.reconciler import DaemonContext, PolicyReconciler
from autoscalerd.daemon.scale_refresh import SCALE_RECHECK_SECONDS, SCALE_REFRESH_SECONDS
from autoscalerd.daemon.scrape_targets import ScrapeTargets
from autoscalerd.daemon.tick_grid import next_tick, tick_phase
from autoscalerd.kube.errors import KubeError
from autoscalerd.server.metrics import DaemonMetrics

T0 = 1000.0
METRIC = "requests"


def policy_text(
    name: str = "web",
    *,
    strategy: str = "KPA",
    min_replicas: int = 1,
    max_replicas: int = 20,
    target_value: float = 10,
) -> str:
    return (
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\n"
        "kind: PodAutoscaler\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec:\n"
        f"  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}\n"
        f"  minReplicas: {min_replicas}\n"
        f"  maxReplicas: {max_replicas}\n"
        f"  scalingStrategy: {strategy}\n"
        "  metricsSources:\n"
        f"    - {{metricSourceType: pod, protocolType: http, port: '8000', path: /metrics,"
        f" targetMetric: {METRIC}, targetValue: '{target_value}'}}\n"
    )


def load_policy(tmp_path: Path, **kwargs: object) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(**kwargs))  # type: ignore[arg-type]
    (policy,) = load_config([str(path)]).policies
    return policy


@dataclass
class World:
    """A target with `replicas` and the given pods, seen through the fakes."""

    clock: ManualClock
    kube: FakeKube
    scraper: FakeScraper
    ctx: DaemonContext
    permission: list[tuple[bool, float | None]] = field(default_factory=lambda: [(True, None)])
    """The current answer of `write_permission()` (the test replaces `permission[0]`)."""

    reconcilers: list[PolicyReconciler] = field(default_factory=list)

    def reconciler(self, policy: Policy) -> PolicyReconciler:
        self.reconcilers.append(PolicyReconciler(policy, self.ctx))
        return self.reconcilers[-1]

    def counter(self, name: str, **labels: str) -> float:
        value = self.ctx.metrics.registry.get_sample_value(
            name, {"namespace": "default", "autoscaler": "web", **labels}
        )
        return value or 0.0


WORLDS: list[World] = []


@pytest.fixture(autouse=True)
async def _close_reconcilers() -> AsyncIterator[None]:
    """Close every reconciler a test made: its Event calls in flight end with it."""
    yield
    while WORLDS:
        for r in WORLDS.pop().reconcilers:
            await r.close()
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leaked == [], f"tasks outlived the test: {leaked}"


def make_world(replicas: int, pods: int, *, dry_run: bool = False) -> World:
    clock = ManualClock(T0)
    kube = FakeKube(replicas, [pod(f"web-{i}") for i in range(pods)])
    scraper = FakeScraper()
    ctx = DaemonContext(
        kube=kube, scraper=scraper, metrics=DaemonMetrics(), daemon=DaemonConfig(),
        dry_run=dry_run, clock=clock,
    )  # fmt: skip
    world = World(clock, kube, scraper, ctx)
    WORLDS.append(world)
    ctx.write_permission = lambda: world.permission[0]
    return world


@pytest.fixture
def logs() -> Iterator[list[dict[str, object]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def load(world: World, **per_pod: float | Exception) -> None:
    world.scraper.set(METRIC, **per_pod)  # type: ignore[arg-type]


# -- no data ---------------------------------------------------------------------------------


async def test_no_data_makes_no_decision_and_says_why_once(
    tmp_path: Path, logs: list[dict[str, object]]
) -> None:
    w = make_world(replicas=3, pods=3)
    load(w, web_0=scrape_error(), web_1=scrape_error(), web_2=scrape_error())
    r = w.reconciler(load_policy(tmp_path))

    first = await r.tick()
    w.clock.advance(1.0)
    second = await r.tick()

    assert first is not None and second is not None
    assert (first.desired, first.reason, first.values) == (None, "no-data", (None,))
    assert second.reason == "no-data"
    assert w.kube.writes == [], "no data is never a reason to scale"
    status = r.status()
    assert status["metrics"] == {METRIC: None}, "missing, never 0"
    assert len(status["errors"]) == 3 and "connection refused" in status["last_error"]
    warnings = [d for d in logs if d["log_level"] == "warning"]
    assert sorted(str(d["pod"]) for d in warnings) == ["web-0", "web-1", "web-2"], "once each"
    await wait_for(lambda: len(w.kube.events) == 3, what=lambda: str(w.kube.events))
    assert set(w.kube.event_reasons) == {"FailedGetMetrics"}
    assert w.counter("autoscalerd_scrapes_total", result="connect_refused") == 6


async def test_a_pod_that_answers_again_is_logged_as_recovered(
    tmp_path: Path, logs: list[dict[str, object]]
) -> None:
    w = make_world(replicas=1, pods=1)
    load(w, web_0=scrape_error())
    r = w.reconciler(load_policy(tmp_path))
    await r.tick()
    load(w, web_0=10)
    w.clock.advance(1.0)
    decision = await r.tick()
    assert decision is not None and decision.values == (10.0,)
    assert r.status()["errors"] == []
    assert [d["event"] for d in logs if d.get("step") == "scrape"] == ["recovered"]


# -- partial data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "answers", "value", "desired"),
    [
        # 4 ready pods, target 10 per pod.
        pytest.param("KPA", (30, 30, None, None), 120.0, 12, id="kpa-half-answered-mean-x-ready"),
        pytest.param("APA", (30, 30, None, None), 120.0, 8, id="apa-half-answered-rate-limited"),
        pytest.param("KPA", (30, 30, 30, None), 120.0, 12, id="kpa-three-of-four"),
        pytest.param("KPA", (30, None, None, None), None, None, id="kpa-fewer-than-half-no-data"),
        pytest.param("APA", (30, None, None, None), None, None, id="apa-fewer-than-half-no-data"),
        pytest.param("KPA", (10, 10, 10, 10), 40.0, None, id="kpa-all-answered-steady"),
    ],
)
async def test_partial_data(
    tmp_path: Path,
    strategy: str,
    answers: tuple[float | None, ...],
    value: float | None,
    desired: int | None,
) -> None:
    w = make_world(replicas=4, pods=4)
    load(w, **{f"web_{i}": (scrape_error() if a is None else a) for i, a in enumerate(answers)})
    r = w.reconciler(load_policy(tmp_path, strategy=strategy))

    decision = await r.tick()

    assert decision is not None
    assert decision.values == (value,)
    assert r.status()["metrics"] == {METRIC: value}
    if desired is None:
        assert w.kube.writes == []
    else:
        assert [x.replicas for x in w.kube.writes] == [desired]
        assert r.status()["last_scale"]["from"] == 4
    failed = sum(a is None for a in answers)
    assert len(r.status()["errors"]) == failed, "every failing pod is reported"


async def test_only_counted_pods_are_scraped(tmp_path: Path) -> None:
    w = make_world(replicas=3, pods=1)
    w.kube.pod_list += [pod("web-1", ready=False), pod("web-2", phase="Pending")]
    load(w, web_0=10, web_1=1000, web_2=1000)
    r = w.reconciler(load_policy(tmp_path))
    decision = await r.tick()
    assert decision is not None and decision.values == (10.0,)
    ((targets, timeout),) = w.scraper.calls
    assert [t.pod for t in targets] == ["web-0"]
    assert timeout == DaemonConfig().scrape_timeout_seconds
    assert (r.status()["ready_pods"], r.status()["not_ready_pods"]) == (1, 2)


def test_scrape_targets_are_rebuilt_only_when_a_pod_or_a_source_changes(tmp_path: Path) -> None:
    sources = load_policy(tmp_path).sources
    web0, web1 = pod("web-0"), pod("web-1")
    targets = ScrapeTargets()
    first = targets.build(sources, [web0, web1])
    assert [(t.pod, t.source) for t in first] == [("web-0", sources[0]), ("web-1", sources[0])]
    assert targets.build(sources, [web0, web1]) is first, "same pods, same sources: reused"
    moved = pod("web-1", "10.9.9.9")
    second = targets.build(sources, [web0, moved])
    assert second is not first and second[1].ip == "10.9.9.9", "a replaced pod: rebuilt"
    renewed = tuple(list(sources))  # equal, but new: the daemon settings changed
    assert targets.build(renewed, [web0, moved]) is not second, "new sources: rebuilt"


# -- writes that fail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "says"),
    [
        pytest.param(conflict, "409", id="409-conflict"),
        pytest.param(too_many_requests, "429", id="429-too-many-requests"),
    ],
)
async def test_a_failed_write_is_reported_and_retried_next_tick_after_a_reread(
    tmp_path: Path, error: Callable[[], KubeError], says: str
) -> None:
    w = make_world(replicas=1, pods=1)
    load(w, web_0=30)
    w.kube.write_errors.append(error())
    r = w.reconciler(load_policy(tmp_path))

    decision = await r.tick()

    assert decision is not None and decision.desired == 3
    assert w.kube.writes == []
    assert says in r.status()["last_error"] and "cannot scale to 3" in r.status()["last_error"]
    assert w.counter("autoscalerd_scale_operations_total", direction="up", result="error") == 1
    await wait_for(lambda: "FailedRescale" in w.kube.event_reasons)
    reads = w.kube.scale_reads

    w.clock.advance(1.0)  # next tick: /scale is read again before writing again
    await r.tick()

    assert w.kube.scale_reads == reads + 1
    assert [x.replicas for x in w.kube.writes] == [3]
    assert w.kube.writes[0].observed == w.kube.scale.__class__(
        replicas=1, selector="app=web", resource_version="1", status_replicas=1, uid="uid-1"
    )
    assert r.status()["errors"] == [], "the write problem is resolved"
    assert w.counter("autoscalerd_scale_operations_total", direction="up", result="ok") == 1
    await wait_for(lambda: "SuccessfulRescale" in w.kube.event_reasons)


# -- leadership ------------------------------------------------------------------------------


async def test_leadership_lost_between_decide_and_write_writes_nothing(tmp_path: Path) -> None:
    w = make_world(replicas=1, pods=1)
    load(w, web_0=30)
    r = w.reconciler(load_policy(tmp_path))
    w.permission[0] = (True, T0 + 10.0)

    async def lose_leadership() -> None:  # while the tick awaits its scrapes
        w.permission[0] = (False, None)

    w.scraper.during = lose_leadership
    decision = await r.tick()

    assert decision is not None and decision.desired == 3, "it still decides"
    assert w.kube.writes == [] and w.kube.events == [], "a follower writes nothing"
    assert r.status()["last_scale"] is None


async def test_the_leader_writes_with_its_lease_deadline(tmp_path: Path) -> None:
    w = make_world(replicas=1, pods=1)
    load(w, web_0=30)
    r = w.reconciler(load_policy(tmp_path))
    w.permission[0] = (True, T0 + 10.0)
    await r.tick()
    assert [(x.replicas, x.deadline) for x in w.kube.writes] == [(3, T0 + 10.0)]


async def test_a_follower_records_no_warning_events(tmp_path: Path) -> None:
    w = make_world(replicas=1, pods=1)
    w.permission[0] = (False, None)
    load(w, web_0=scrape_error())
    r = w.reconciler(load_policy(tmp_path))
    await r.tick()
    assert r.status()["last_error"] is not None
    assert w.kube.events == [] and not r._side_tasks


async def test_dry_run_decides_and_never_writes(tmp_path: Path) -> None:
    w = make_world(replicas=1, pods=1, dry_run=True)
    load(w, web_0=30)
    r = w.reconciler(load_policy(tmp_path))
    decision = await r.tick()
    assert decision is not None and decision.desired == 3
    assert w.kube.writes == []
    assert w.counter("autoscalerd_scale_operations_total", direction="up", result="dry_run") == 1


# -- a target scaled by hand -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pods_follow", "seen_after", "writes"),
    [
        # The pods behind the selector now disagree with the replicas last read: re-read
        # within SCALE_RECHECK_SECONDS. APA at 10 per pod over 3 ready pods at a total of 10:
        # one replica is enough, from 3.
        pytest.param(True, SCALE_RECHECK_SECONDS, [(3, 1)], id="pods-follow-reread-in-seconds"),
        # Nothing on the pods' side shows it yet: the periodic re-read finds it. One ready pod
        # at the target asks for 3 now: nothing to write (from a stale 1 it would write 3).
        pytest.param(False, SCALE_REFRESH_SECONDS, [], id="pods-unchanged-periodic-reread"),
    ],
)
async def test_a_target_scaled_by_hand_is_seen_on_the_reread(
    tmp_path: Path, pods_follow: bool, seen_after: float, writes: list[tuple[int, int]]
) -> None:
    w = make_world(replicas=1, pods=1)
    load(w, web_0=10, web_1=0, web_2=0)
    r = w.reconciler(load_policy(tmp_path, strategy="APA"))
    await r.tick()
    assert (w.kube.scale_reads, r.status()["current_replicas"]) == (1, 1)

    w.kube.scale_by_hand(3)  # kubectl scale --replicas=3
    if pods_follow:
        w.kube.pod_list += [pod("web-1"), pod("web-2")]
    now = T0
    while now + 1.0 < T0 + seen_after:  # every tick before the re-read uses the cached /scale
        now += 1.0
        w.clock.set(now)
        await r.tick()
        assert (w.kube.scale_reads, r.status()["current_replicas"]) == (1, 1), now - T0

    w.clock.set(T0 + seen_after)
    decision = await r.tick()

    assert w.kube.scale_reads == 2
    assert decision is not None and r.status()["current_replicas"] in (3, 1)
    assert [(x.observed.replicas if x.observed else None, x.replicas) for x in w.kube.writes] == (
        writes
    )
    if not writes:
        assert (decision.desired, r.status()["current_replicas"]) == (3, 3)


async def test_a_failed_scale_read_is_no_tick(tmp_path: Path) -> None:
    w = make_world(replicas=1, pods=1)
    w.kube.get_errors.append(KubeError("503: the API server is unavailable", status=503))
    load(w, web_0=10)
    r = w.reconciler(load_policy(tmp_path))
    assert await r.tick() is None
    assert w.scraper.calls == []
    assert "cannot read the scale of the target" in r.status()["last_error"]
    w.clock.advance(1.0)
    assert await r.tick() is not None, "read again next tick"
    assert r.status()["errors"] == [], "and the problem is over"


async def test_pods_not_listed_within_the_grace_are_an_error(tmp_path: Path) -> None:
    w = make_world(replicas=1, pods=1)
    w.kube.pods_synced = False
    w.kube.pods_error = "403 Forbidden: cannot list pods"
    r = w.reconciler(load_policy(tmp_path))
    assert await r.tick() is None
    assert r.status()["last_error"] is None, "still within the grace period"
    w.clock.advance(31.0)
    assert await r.tick() is None
    assert "cannot list the pods (app=web): 403 Forbidden" in r.status()["last_error"]


# -- the loop --------------------------------------------------------------------------------


async def test_run_ticks_on_its_slot_and_counts_late_ticks(tmp_path: Path) -> None:
    w = make_world(replicas=1, pods=1)
    load(w, web_0=10)
    policy = load_policy(tmp_path)
    r = w.reconciler(policy)
    first = next_tick(T0, 1.0, tick_phase(policy.key))
    task = asyncio.get_running_loop().create_task(r.run())
    try:
        await wait_for(lambda: w.clock.next_wakeup == first, what="asleep until its slot")
        assert r.ticks == 0
        w.clock.set(first)
        await wait_for(lambda: r.ticks == 1 and w.clock.next_wakeup == first + 1.0)
        assert r.late_ticks == 0
        w.clock.set(first + 1.0 + 0.5)  # half an interval late
        await wait_for(lambda: r.ticks == 2 and w.clock.next_wakeup == first + 2.0)
        assert r.late_ticks == 1
        w.clock.set(first + 5.2)  # overran: the missed slots are skipped, no burst
        await wait_for(lambda: r.ticks == 3 and w.clock.next_wakeup == first + 6.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert w.kube.pods.held == [], "the pod cache is released when the loop ends"


async def test_a_failing_tick_does_not_end_the_loop(tmp_path: Path) -> None:
    w = make_world(replicas=1, pods=1)
    load(w, web_0=10)
    policy = load_policy(tmp_path)
    r = w.reconciler(policy)
    calls = 0

    async def bug() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")

    w.scraper.during = bug
    first = next_tick(T0, 1.0, tick_phase(policy.key))
    task = asyncio.get_running_loop().create_task(r.run())
    try:
        await wait_for(lambda: w.clock.next_wakeup == first)
        w.clock.set(first)
        await wait_for(lambda: w.clock.next_wakeup == first + 1.0)
        assert "internal error: RuntimeError('a bug')" in r.status()["last_error"]
        w.clock.set(first + 1.0)
        await wait_for(lambda: r.ticks == 2 and r.status()["metrics"] == {METRIC: 10.0})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

"""The PodAutoscaler status (`daemon/status_writer.py`): `build_status` and the history rule
as tables, and `StatusWriter` against fakes — a real reconciler ticked by hand on a
`FakeKube`, time stepped by hand — writing only when something changed, by the leader only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import FakeKube, FakePodAutoscalers, FakeScraper, ManualClock, pod
from test_cluster_policies import obj

from autoscalerd.config.model import DaemonConfig, PodAutoscalerSettings
from autoscalerd.daemon.cluster_policies import ClusterPolicies, Verdict
from autoscalerd.daemon.reconciler import DaemonContext, PolicyReconciler
from autoscalerd.daemon.status_writer import (
    HISTORY_LIMIT,
    Observation,
    ScalingHistory,
    StatusWriter,
    build_status,
    rfc3339,
)
from autoscalerd.kube.errors import KubeUnavailable
from autoscalerd.server.metrics import DaemonMetrics

WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def verdict(state: str = "active", generation: int = 1) -> Verdict:
    policy = None
    if state != "invalid":
        from autoscalerd.config.pod_autoscaler_object import policy_from_object

        policy, _ = policy_from_object(obj("web"))
    return Verdict(
        "default", "web", "uid-web", generation, state, policy,
        "InvalidBounds" if state == "invalid" else "TargetClash",
        "spec.minReplicas: too high" if state == "invalid" else "Deployment default/web is taken",
    )  # fmt: skip


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("obs", "desired", "expected"),
    [
        (
            Observation(desired=2, actual=2, reason="stable"),
            2,
            {
                "ValidSpec": ("True", "AsExpected", "the spec is valid"),
                "AbleToScale": ("True", "SucceededGetScale", "Deployment/web/scale answers"),
                "ScalingActive": ("False", "Stable", "desired=2, actual=2"),
                "Ready": ("True", "ScalingStable", "desired=2, actual=2"),
            },
        ),
        (
            Observation(desired=None, actual=2, reason="no-data"),
            3,  # the last decided value, kept through a tick without data
            {
                "ValidSpec": ("True", "AsExpected", "the spec is valid"),
                "AbleToScale": ("True", "SucceededGetScale", "Deployment/web/scale answers"),
                "ScalingActive": ("True", "ReconcilingScaleDiff", "desired=3, actual=2"),
                "Ready": ("False", "ScalingInProgress", "desired=3, actual=2"),
            },
        ),
        (
            Observation(actual=None, scale_error="cannot read the scale: 404"),
            None,
            {
                "ValidSpec": ("True", "AsExpected", "the spec is valid"),
                "AbleToScale": ("False", "FailedGetScale", "cannot read the scale: 404"),
                "ScalingActive": ("Unknown", "AwaitingMetrics", "no decision yet"),
                "Ready": ("False", "UnableToScale", "cannot read the scale: 404"),
            },
        ),
        (
            Observation(desired=4, actual=2, write_error="cannot scale to 4: 403"),
            4,
            {
                "ValidSpec": ("True", "AsExpected", "the spec is valid"),
                "AbleToScale": ("False", "FailedUpdateScale", "cannot scale to 4: 403"),
                "ScalingActive": ("True", "ReconcilingScaleDiff", "desired=4, actual=2"),
                "Ready": ("False", "UnableToScale", "cannot scale to 4: 403"),
            },
        ),
        (
            Observation(actual=1, reason="no-data"),
            None,
            {
                "ValidSpec": ("True", "AsExpected", "the spec is valid"),
                "AbleToScale": ("True", "SucceededGetScale", "Deployment/web/scale answers"),
                "ScalingActive": ("Unknown", "AwaitingMetrics", "no decision yet (no-data)"),
                "Ready": ("Unknown", "AwaitingMetrics", "no decision yet (no-data)"),
            },
        ),
    ],
)
def test_conditions_of_an_active_object(
    obs: Observation, desired: int | None, expected: dict[str, tuple[str, str, str]]
) -> None:
    status = build_status(verdict(), obs, None, ScalingHistory(), WALL, desired=desired)
    assert conditions(status) == expected
    assert status["desiredScale"] == desired and status["actualScale"] == obs.actual
    for c in status["conditions"]:
        assert c["observedGeneration"] == 1 and c["lastTransitionTime"] == rfc3339(WALL)


def test_invalid_and_clashing_objects_say_why() -> None:
    invalid = build_status(verdict("invalid"), None, None, ScalingHistory(), WALL)
    assert conditions(invalid)["ValidSpec"] == (
        "False", "InvalidBounds", "spec.minReplicas: too high"
    )  # fmt: skip
    assert {c[0] for t, c in conditions(invalid).items() if t != "ValidSpec"} == {"False"}
    assert invalid["desiredScale"] is None and invalid["actualScale"] is None
    clash = build_status(verdict("clash"), None, None, ScalingHistory(), WALL)
    assert conditions(clash)["MultiPodAutoscalerConflict"] == (
        "True", "TargetClash", "Deployment default/web is taken"
    )  # fmt: skip
    assert conditions(clash)["Ready"][0] == "False"


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    obs = Observation(desired=2, actual=2)
    first = build_status(verdict(), obs, None, ScalingHistory(), WALL, desired=2)
    same = build_status(verdict(), obs, first, ScalingHistory(), WALL + 60, desired=2)
    assert same == first, "nothing changed: the same status, so no write"
    moved = Observation(desired=3, actual=2)
    flipped = build_status(verdict(), moved, first, ScalingHistory(), WALL + 90, desired=3)
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times["ScalingActive"] == times["Ready"] == rfc3339(WALL + 90)
    assert times["ValidSpec"] == times["AbleToScale"] == rfc3339(WALL)
    gen2 = build_status(verdict(generation=2), obs, first, ScalingHistory(), WALL + 99, desired=2)
    assert {c["observedGeneration"] for c in gen2["conditions"]} == {2}


def scaled(at: float, to: int, frm: int = 1) -> Observation:
    return Observation(
        desired=to,
        actual=to,
        last_scale={"time": rfc3339(at), "from": frm, "to": to, "reason": "stable"},
    )


def test_scaling_history_keeps_five_and_follows_aibrixs_rule() -> None:
    h = ScalingHistory()
    assert h.see(scaled(WALL, 2), WALL, first=True) == [], "what was before is not new"
    assert len(h.see(scaled(WALL + 1, 3, 2), WALL + 1)) == 1
    failed = Observation(desired=3, actual=3, write_error="cannot scale to 3: 409")
    assert len(h.see(failed, WALL + 2)) == 1, "success changed: a new entry at once"
    assert h.entries[-1]["success"] is False and "409" in h.entries[-1]["error"]
    assert len(h.see(scaled(WALL + 3, 3, 3), WALL + 3)) == 1, "success again"
    assert h.see(scaled(WALL + 4, 3, 3), WALL + 4) == [], "same scale within 5 s: skipped"
    for i in range(10):
        h.see(scaled(WALL + 100 + 10 * i, 4 + i, 3 + i), WALL + 100 + 10 * i)
    assert len(h.entries) == HISTORY_LIMIT
    assert [e["newScale"] for e in h.entries] == [9, 10, 11, 12, 13]


def test_history_starts_from_the_objects_own() -> None:
    entries = [{"timestamp": rfc3339(WALL), "newScale": i, "success": True} for i in range(7)]
    h = ScalingHistory.from_status({"scalingHistory": entries})
    assert [e["newScale"] for e in h.entries] == [2, 3, 4, 5, 6]


# -- the writer ---------------------------------------------------------------------------


class World:
    """One FakeKube target, its PodAutoscaler objects, reconcilers ticked by hand, a writer."""

    def __init__(self) -> None:
        self.clock = ManualClock(1000.0, wall=WALL)
        self.kube = FakeKube(1, [pod("web-0", "10.0.0.1")])
        self.scraper = FakeScraper()
        self.scraper.set("requests", web_0=10)
        self.leading = True
        self.ctx = DaemonContext(
            kube=self.kube,
            scraper=self.scraper,
            metrics=DaemonMetrics(),
            daemon=DaemonConfig(),
            clock=self.clock,
            write_permission=lambda: (self.leading, None),
        )
        self.feed: FakePodAutoscalers = self.kube.podautoscalers
        self.policies = ClusterPolicies(self.feed, PodAutoscalerSettings(), lambda: None)
        self.reconcilers: dict[str, PolicyReconciler] = {}
        self.writer = StatusWriter(
            self.kube,
            self.policies,
            self.reconcilers.get,
            self.clock,
            lambda: 1.0,
            self.ctx.write_permission,
        )

    def sync(self) -> None:
        """What the supervisor does on a change: reconcilers for the active objects."""
        for p in self.policies.policies([]):
            r = self.reconcilers.get(p.key)
            if r is None or not (r.policy == p or r.retune(p)):
                self.reconcilers[p.key] = PolicyReconciler(p, self.ctx)

    async def tick(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        for r in self.reconcilers.values():
            await r.tick()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    for r in w.reconcilers.values():
        await r.close()


async def test_writes_only_when_something_changed(world: World) -> None:
    world.feed.put(obj("web"))
    world.sync()
    assert await world.writer.step() == 0, "nothing to say before the first tick"
    await world.tick()
    assert await world.writer.step() == 1, "the first status"
    (ns, name, status) = world.kube.status_writes[-1]
    assert (ns, name, status["desiredScale"], status["actualScale"]) == ("default", "web", 1, 1)
    for _ in range(20):
        await world.tick()
        assert await world.writer.step() == 0, "a steady policy: never once per tick"

    world.scraper.set("requests", web_0=40)
    await world.tick()
    assert world.kube.writes, "the reconciler scaled"
    assert await world.writer.step() == 1
    status = world.kube.status_writes[-1][2]
    assert status["desiredScale"] == status["actualScale"] == world.kube.scale.replicas
    assert status["lastScaleTime"] == rfc3339(world.clock.wall())
    assert [e["newScale"] for e in status["scalingHistory"]] == [world.kube.scale.replicas]
    pa_events = [e for e in world.kube.events if e[1] == "SuccessfulRescale"]
    assert any(m.startswith(f"New size: {world.kube.scale.replicas}") for _, _, m in pa_events)
    assert await world.writer.step() == 0


async def test_a_restarted_daemon_does_not_rewrite_an_unchanged_status(world: World) -> None:
    world.feed.put(obj("web"))
    world.sync()
    await world.tick()
    assert await world.writer.step() == 1
    written = world.kube.status_writes[-1][2]
    # a new daemon: new reconciler, new writer, the object keeps what the old one wrote
    for r in world.reconcilers.values():
        await r.close()
    world.reconcilers.clear()
    world.writer = StatusWriter(
        world.kube, world.policies, world.reconcilers.get, world.clock, lambda: 1.0,
        world.ctx.write_permission,
    )  # fmt: skip
    world.sync()
    assert await world.writer.step() == 0
    await world.tick()
    assert await world.writer.step() == 0, "the same status: not written again"
    assert world.kube.status_writes[-1][2] == written


async def test_only_the_leader_writes_and_a_new_leader_starts_from_the_object(
    world: World,
) -> None:
    world.feed.put(obj("web"))
    world.sync()
    await world.tick()
    assert await world.writer.step() == 1
    world.leading = False
    world.feed.put(obj("web", maxReplicas=8))  # generation 2: the conditions change
    world.sync()
    await world.tick()
    assert await world.writer.step() == 0, "a follower never writes"
    world.leading = True
    assert await world.writer.step() == 1
    assert world.kube.status_writes[-1][2]["conditions"][0]["observedGeneration"] == 2
    assert await world.writer.step() == 0


async def test_a_failed_write_is_retried_and_logged_once(world: World) -> None:
    world.feed.put(obj("web"))
    world.sync()
    await world.tick()
    world.kube.status_errors = [KubeUnavailable("timed out"), KubeUnavailable("timed out")]
    assert await world.writer.step() == 0
    assert await world.writer.step() == 0
    assert await world.writer.step() == 1
    assert world.writer.failures == 2


async def test_invalid_objects_get_their_status_and_one_event(world: World) -> None:
    world.feed.put(obj("web", minReplicas=9))
    world.sync()
    assert world.reconcilers == {}, "never acted on"
    assert await world.writer.step() == 1
    status = world.kube.status_writes[-1][2]
    assert status["conditions"][0]["status"] == "False"
    assert status["conditions"][0]["message"].startswith("spec.minReplicas: minReplicas (9)")
    assert world.kube.event_reasons.count("InvalidSpec") == 1
    assert await world.writer.step() == 0
    world.feed.delete("default", "web")
    world.sync()
    assert await world.writer.step() == 0


async def test_dry_run_writes_nothing(world: World) -> None:
    world.writer.dry_run = True
    world.feed.put(obj("web"))
    world.sync()
    await world.tick()
    assert await world.writer.step() == 0 and world.kube.status_writes == []


async def test_run_steps_once_per_interval(world: World) -> None:
    world.feed.put(obj("web"))
    world.sync()
    await world.tick()
    task = asyncio.create_task(world.writer.run())
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(world.kube.status_writes) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

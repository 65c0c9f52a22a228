"""Lease leader election against the sandbox (short timings: 2 s / 1.5 s / 0.3 s)."""

from __future__ import annotations

import asyncio
import datetime
import re

import pytest
from kube_helpers import ClientFactory
from waiting import wait_until

from autoscalerd.config.model import LeaderElection
from autoscalerd.kube import KubeClient, LeaderElector
from autoscalerd.sandbox import Sandbox
from autoscalerd.sandbox.apiserver import LEASES

FAST = LeaderElection(
    lease_duration_seconds=2.0,
    renew_deadline_seconds=1.5,
    retry_period_seconds=0.3,
    lease_name="autoscalerd",
    lease_namespace="ops",
)


def parse_micro_time(value: str) -> float:
    """A Lease MicroTime (`2026-01-02T03:04:05.123456Z`) as a Unix timestamp."""
    return (
        datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=datetime.UTC)
        .timestamp()
    )


MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def two_electors(new_client: ClientFactory) -> tuple[LeaderElector, LeaderElector]:
    a = (await new_client(identity="pod-a")).leader_elector(FAST)
    b = (await new_client(identity="pod-b")).leader_elector(FAST)
    return a, b


def leaders(*electors: LeaderElector) -> list[str]:
    return [e.identity for e in electors if e.is_leader]


async def test_exactly_one_leads(sb: Sandbox, new_client: ClientFactory) -> None:
    a, b = await two_electors(new_client)
    changes: list[tuple[str, bool]] = []
    a.on_change(lambda leading: changes.append(("pod-a", leading)))
    b.on_change(lambda leading: changes.append(("pod-b", leading)))
    a.start()
    assert await a.wait_leading(3)
    b.start()
    # over several renewals, exactly one leads and it stays the same
    renewals: set[str] = set()

    def renewed_several_times() -> bool:
        assert leaders(a, b) == ["pod-a"]
        lease = sb.lease("ops", "autoscalerd")
        assert lease is not None
        renewals.add(lease["spec"]["renewTime"])
        return len(renewals) >= 4 and b.observed_holder == "pod-a"

    await wait_until(
        renewed_several_times,
        "four renewals by pod-a, with pod-b following it",
        state=lambda: (sorted(renewals), b.observed_holder),
    )
    assert changes == [("pod-a", True)]
    assert b.observed_holder == "pod-a"

    lease = sb.lease("ops", "autoscalerd")
    assert lease is not None
    spec = lease["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 2
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["renewTime"]) and MICRO_TIME.match(spec["acquireTime"])
    assert spec["renewTime"] > spec["acquireTime"]  # renewed since acquired
    deadline = a.leader_deadline
    assert deadline is not None
    assert 0 < deadline - asyncio.get_running_loop().time() <= FAST.renew_deadline_seconds


async def test_release_on_stop_hands_over_at_once(sb: Sandbox, new_client: ClientFactory) -> None:
    a, b = await two_electors(new_client)
    a.start()
    assert await a.wait_leading(3)
    b.start()
    await wait_until(  # b follows, trying to acquire
        lambda: b.observed_holder == "pod-a", "b follows pod-a", state=lambda: b.observed_holder
    )
    await a.stop()
    assert not a.is_leader
    released = sb.lease("ops", "autoscalerd")
    assert released is not None
    # released: the next retry of b finds no holder and need not wait out the lease
    assert released["spec"]["holderIdentity"] in ("", "pod-b")
    await wait_until(
        lambda: b.is_leader, "b leads", timeout=3, state=lambda: sb.lease("ops", "autoscalerd")
    )
    lease = sb.lease("ops", "autoscalerd")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "pod-b"
    assert lease["spec"]["leaseTransitions"] == 1


async def test_crashed_leader_is_replaced_within_the_lease_duration(
    sb: Sandbox, new_client: ClientFactory
) -> None:
    a, b = await two_electors(new_client)
    a.start()
    assert await a.wait_leading(3)
    b.start()
    await wait_until(
        lambda: b.observed_holder == "pod-a", "b follows pod-a", state=lambda: b.observed_holder
    )
    await a.stop(release=False)  # a crash: no more renewals, no release
    lease = sb.lease("ops", "autoscalerd")
    assert lease is not None and lease["spec"]["holderIdentity"] == "pod-a"
    last_renewal = parse_micro_time(lease["spec"]["renewTime"])
    await wait_until(
        lambda: b.is_leader, "b leads", timeout=5, state=lambda: sb.lease("ops", "autoscalerd")
    )
    lease = sb.lease("ops", "autoscalerd")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "pod-b"
    # it did wait for the crashed leader's lease to expire
    acquired = parse_micro_time(lease["spec"]["acquireTime"])
    assert acquired - last_renewal >= FAST.lease_duration_seconds
    assert lease["spec"]["leaseTransitions"] == 1


async def test_leader_that_cannot_renew_steps_down_by_the_renew_deadline(
    sb: Sandbox, new_client: ClientFactory
) -> None:
    kc = await new_client(identity="pod-a", api_timeout=5.0)
    a = kc.leader_elector(FAST)
    lost = asyncio.Event()
    a.on_change(lambda leading: None if leading else lost.set())
    a.start()
    assert await a.wait_leading(3)
    # the API hangs on every lease request: each call is bounded by the renew deadline
    sb.faults.add("*", r"/leases", status=None, delay=10.0, count=None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(lost.wait(), timeout=3)
    assert loop.time() - start <= FAST.renew_deadline_seconds + 0.1
    assert not a.is_leader
    assert a.leader_deadline is None
    sb.faults.clear()
    # it keeps campaigning and gets the (now expired) lease back
    assert await a.wait_leading(5)


async def test_leader_sees_another_holder_and_steps_down(sb: Sandbox, kc: KubeClient) -> None:
    a = kc.leader_elector(FAST, identity="pod-a")
    a.start()
    assert await a.wait_leading(3)
    # someone (wrongly) overwrites the lease: a must not keep believing it leads
    lease = sb.lease("ops", "autoscalerd")
    assert lease is not None
    lease["spec"]["holderIdentity"] = "intruder"
    sb.store.replace(LEASES, lease)
    await wait_until(
        lambda: not a.is_leader,
        "a steps down",
        timeout=2,
        state=lambda: (a.observed_holder, sb.lease("ops", "autoscalerd")),
    )


async def test_release_after_a_renewal_that_landed_late(sb: Sandbox, kc: KubeClient) -> None:
    """A renewal cancelled by the shutdown may still have been applied: the elector's copy of
    the lease is then one resourceVersion behind, and its release must not give up on 409."""
    a = kc.leader_elector(FAST, identity="pod-a")
    a.start()
    assert await a.wait_leading(3)
    lease = sb.lease("ops", "autoscalerd")
    assert lease is not None and lease["spec"]["holderIdentity"] == "pod-a"
    lease["spec"]["renewTime"] = "2030-01-01T00:00:00.000000Z"  # our own late renewal
    sb.store.replace(LEASES, lease)
    await a.stop()
    released = sb.lease("ops", "autoscalerd")
    assert released is not None
    assert released["spec"]["holderIdentity"] == "", released["spec"]
    assert released["spec"]["leaseDurationSeconds"] == 1


async def test_default_namespace_and_identity(sb: Sandbox, kc: KubeClient) -> None:
    e = kc.leader_elector(
        LeaderElection(
            lease_duration_seconds=2, renew_deadline_seconds=1.5, retry_period_seconds=0.3
        )
    )
    assert e.namespace == "default"  # out of cluster
    assert e.identity == kc.identity and e.identity
    async with e:
        assert await e.wait_leading(3)
    lease = sb.lease("default", "autoscalerd")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ""  # released on exit
    assert lease["spec"]["leaseDurationSeconds"] == 1


def test_invalid_timings_are_refused() -> None:
    from autoscalerd.kube.lease import validate

    validate(LeaderElection())
    with pytest.raises(ValueError, match="leaseDuration"):
        validate(LeaderElection(lease_duration_seconds=10, renew_deadline_seconds=10))
    with pytest.raises(ValueError, match="renewDeadline"):
        validate(LeaderElection(renew_deadline_seconds=2, retry_period_seconds=2))

"""Leader election with two real daemons against the sandbox: exactly one writes."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import FAST, policy_yaml, write

from autoscalerd.sandbox import MetricsEndpoint, Sandbox

pytestmark = pytest.mark.e2e

NS, NAME, METRIC = "kube-system", "metrics-server", "go_threads"
LEASE_SECONDS = 4.0
ELECTION = f"""\
apiVersion: autoscalerd.io/v1alpha1
kind: DaemonConfig
leaderElection:
  leaseDuration: {LEASE_SECONDS:g}s
  renewDeadline: 3s
  retryPeriod: 500ms
  leaseNamespace: default
"""


async def two_daemons(tmp_path: Path, sandbox: Sandbox, start_daemon: Any) -> tuple[Any, Any]:
    await sandbox.add_deployment(
        NS, NAME, replicas=1, labels={"k8s-app": "metrics-server"},
        metrics=MetricsEndpoint(port=10250, tls="self-signed", metric=METRIC),
    )  # fmt: skip
    sandbox.set_load(NS, NAME, METRIC, 20)
    policy = write(tmp_path, "p.yaml", policy_yaml(annotations=FAST))
    daemon_config = write(tmp_path, "daemon.yaml", ELECTION)
    args = ("--leader-elect", "--insecure-skip-tls-verify")
    a = await start_daemon(policy, daemon_config, args=args, env={"POD_NAME": "autoscalerd-a"})
    await a.wait_log(lambda d: d.get("event") == "leadership acquired")
    b = await start_daemon(policy, daemon_config, args=args, env={"POD_NAME": "autoscalerd-b"})
    await b.wait_status(lambda s: s["leader"] is False and s["policies"][0]["ticks"] >= 1)
    return a, b


def scaled(daemon: Any) -> list[dict[str, Any]]:
    return daemon.logs(lambda d: d.get("event") == "scaled")


async def test_exactly_one_daemon_writes(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    a, b = await two_daemons(tmp_path, sandbox, start_daemon)
    sandbox.set_load(NS, NAME, METRIC, 70)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=10)
    await b.wait_status(lambda s: s["policies"][0]["metrics"]["go_threads"] is not None)
    b_ticks = (await b.status())["policies"][0]["ticks"]
    await b.wait_status(lambda s: s["policies"][0]["ticks"] >= b_ticks + 2)  # b decided, too
    assert (await a.status())["leader"] is True
    assert (await b.status())["leader"] is False
    assert scaled(a) and not scaled(b), "only the leader writes"
    lease = sandbox.lease("default", "autoscalerd")
    assert lease is not None and lease["spec"]["holderIdentity"] == "autoscalerd-a"
    assert lease["spec"]["renewTime"].endswith("Z")
    assert await a.stop() == 0 and await b.stop() == 0


async def test_follower_takes_over_when_the_leader_is_killed(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    a, b = await two_daemons(tmp_path, sandbox, start_daemon)
    await a.stop(signal.SIGKILL)  # no release: b must wait for the lease to expire
    # b judges expiry by the time it has seen the lease unchanged: one lease duration.
    await b.wait_log(lambda d: d.get("event") == "leadership acquired", timeout=LEASE_SECONDS + 4)
    taken = b.logs(lambda d: d.get("event") == "lease taken over")
    assert taken and taken[0]["previous"] == "autoscalerd-a", "taken from the dead holder"
    sandbox.set_load(NS, NAME, METRIC, 70)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=10)
    assert scaled(b), "the new leader writes"
    lease = sandbox.lease("default", "autoscalerd")
    assert lease["spec"]["holderIdentity"] == "autoscalerd-b"
    assert lease["spec"]["leaseTransitions"] >= 1
    assert await b.stop() == 0


async def test_sigterm_hands_over_within_3_seconds(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    a, b = await two_daemons(tmp_path, sandbox, start_daemon)
    assert await a.stop(signal.SIGTERM) == 0
    assert a.logs(lambda d: d.get("event") == "lease released"), "a gave the lease up"
    lease = sandbox.lease("default", "autoscalerd")
    assert lease is not None and lease["spec"]["holderIdentity"] in ("", None, "autoscalerd-b")
    # A released lease is free at once: b takes it at its next attempt (every 0.5 s), well
    # before the lease duration an expiry would take.
    await b.wait_log(lambda d: d.get("event") == "leadership acquired", timeout=3.0)
    taken = b.logs(lambda d: d.get("event") == "lease taken over")
    assert taken and taken[0]["previous"] is None, "taken as free, not from a"
    assert await b.stop() == 0

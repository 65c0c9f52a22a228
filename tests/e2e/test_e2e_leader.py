"""Leader election with two real daemons against the sandbox: exactly one writes."""

from __future__ import annotations

import asyncio
import signal
import time
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
    return a, b


def scaled(daemon: Any) -> list[dict[str, Any]]:
    return daemon.logs(lambda d: d.get("event") == "scaled")


async def test_exactly_one_daemon_writes(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    a, b = await two_daemons(tmp_path, sandbox, start_daemon)
    sandbox.set_load(NS, NAME, METRIC, 70)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=10)
    await asyncio.sleep(2)
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
    await asyncio.sleep(1)
    killed = time.monotonic()
    await a.stop(signal.SIGKILL)
    await b.wait_log(lambda d: d.get("event") == "leadership acquired", timeout=LEASE_SECONDS + 4)
    took = time.monotonic() - killed
    assert took <= LEASE_SECONDS + 1.5, f"takeover took {took:.1f}s"
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
    await asyncio.sleep(1)
    stopped = time.monotonic()
    assert await a.stop(signal.SIGTERM) == 0
    await b.wait_log(lambda d: d.get("event") == "leadership acquired", timeout=5)
    took = time.monotonic() - stopped
    assert took <= 3.0, f"handover took {took:.1f}s"
    assert await b.stop() == 0

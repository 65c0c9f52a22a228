"""The real daemon against the sandbox with derived signals and schedules (issue 13).

The pods serve counters and a histogram the test drives (`Sandbox.set_counter_rate`,
`reset_counter`); the expected replica counts are worked out by hand in each test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import FAST, policy_yaml, write
from waiting import wait_for

from autoscalerd.sandbox import MetricsEndpoint, Sandbox

pytestmark = pytest.mark.e2e

NS, NAME = "default", "llm"
REQUESTS = 'requests_total{code="200"}'


async def llm(sb: Sandbox, replicas: int) -> Any:
    return await sb.add_deployment(
        NS,
        NAME,
        replicas=replicas,
        labels={"app": "llm"},
        metrics=MetricsEndpoint(port=8000, path="/metrics", tls="plain", metric="go_threads"),
    )


def policy(
    metric: str, target: float, *, replicas: tuple[int, int] = (1, 10), extra: str = ""
) -> str:
    return (
        policy_yaml(
            name=NAME,
            namespace=NS,
            target=NAME,
            protocol="http",
            port=8000,
            metric=f"'{metric}'",
            target_value=target,
            min_replicas=replicas[0],
            max_replicas=replicas[1],
            annotations=FAST,
        )
        + extra
    )


async def ticks(daemon: Any, n: int) -> dict[str, Any]:
    """`/status` of the one policy once it has ticked `n` more times."""
    start = (await daemon.status())["policies"][0]["ticks"]
    status = await daemon.wait_status(lambda s: s["policies"][0]["ticks"] >= start + n, timeout=15)
    return dict(status["policies"][0])


async def test_rate_scales_to_the_hand_computed_count(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await llm(sandbox, replicas=2)
    # 55 requests/s over all pods, 10 per pod wanted: ceil(55 / 10) = 6, whatever the pod count
    sandbox.set_counter_rate(NS, NAME, REQUESTS, 55.0)
    metric = f"rate({REQUESTS}[4s])"
    daemon = await start_daemon(write(tmp_path, "p.yaml", policy(metric, 10)))
    await sandbox.wait_for_spec_replicas(NS, NAME, 6, timeout=20)
    # Once the new pods' samples fill the window (4 s), the rate reads the load again; just
    # after the scale-up a loaded machine's scrape jitter can move one tick's value.
    await daemon.wait_status(
        lambda s: s["policies"][0]["metrics"][metric] == pytest.approx(55.0, rel=0.1),
        timeout=15,
    )
    await ticks(daemon, 2)
    assert sandbox.replicas(NS, NAME) == 6
    assert max(n for _, n in sandbox.replica_history(NS, NAME)) == 6
    assert await daemon.stop() == 0


async def test_a_counter_reset_on_one_pod_causes_no_scaling(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    workload = await llm(sandbox, replicas=3)
    # 25/s over 3 pods, 10 per pod wanted: ceil(2.5) = 3, the current count
    sandbox.set_counter_rate(NS, NAME, REQUESTS, 25.0)
    metric = f"rate({REQUESTS}[4s])"
    daemon = await start_daemon(write(tmp_path, "p.yaml", policy(metric, 10)))
    status = await daemon.wait_status(
        lambda s: s["policies"][0]["metrics"][metric] is not None, timeout=15
    )
    status = await ticks(daemon, 3)
    assert status["metrics"][metric] == pytest.approx(25.0, rel=0.1)
    pod = sorted(workload.pods)[0]
    sandbox.reset_counter(NS, pod, REQUESTS)  # a restart: 30-odd back to 0
    seen = []
    for _ in range(6):
        status = await ticks(daemon, 1)
        seen.append(status["metrics"][metric])
    assert all(v is not None and 20.0 <= v <= 30.0 for v in seen), seen
    assert sandbox.scale_writes(NS, NAME) == [], "no spurious scaling"
    assert sandbox.replicas(NS, NAME) == 3
    assert await daemon.stop() == 0


async def test_histogram_quantile_gives_the_hand_computed_total(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await llm(sandbox, replicas=2)
    # every observation is 0.15 s: buckets le=0.1 never move, le=0.2 and +Inf move together.
    # The median interpolates to 0.1 + (0.2 - 0.1) × 0.5 = 0.15 (Prometheus); the total is
    # 0.15 × 2 pods = 0.3, and a target of 0.12 per pod asks for ceil(0.3 / 0.12) = 3.
    for le, rate in (("0.1", 0.0), ("0.2", 40.0), ("0.5", 40.0), ("+Inf", 40.0)):
        sandbox.set_counter_rate(NS, NAME, f'ttft_seconds_bucket{{le="{le}"}}', rate)
    # (The sandbox's latency does not fall with more pods, so the daemon keeps adding them,
    # up to maxReplicas: the first step is the one worked out here.)
    metric = "histogram_quantile(0.5, ttft_seconds_bucket[4s])"
    daemon = await start_daemon(write(tmp_path, "p.yaml", policy(metric, 0.12)))
    status = await daemon.wait_status(
        lambda s: s["policies"][0]["metrics"][metric] is not None, timeout=15
    )
    ready = status["policies"][0]["ready_pods"]
    assert status["policies"][0]["metrics"][metric] == pytest.approx(0.15 * ready)
    await wait_for(lambda: sandbox.scale_writes(NS, NAME), timeout=15, what="a scale write")
    assert _replicas(sandbox.scale_writes(NS, NAME)[0]) == 3
    assert await daemon.stop() == 0


def _replicas(write_record: Any) -> int:
    return int(write_record.body["spec"]["replicas"])


async def test_a_schedule_window_covering_now_lifts_the_floor(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await llm(sandbox, replicas=1)
    sandbox.set_load(NS, NAME, "go_threads", 5)  # 5 of 20 per pod: one pod is plenty
    # A fixed-offset zone where it is about noon now, and a window around it.
    offset = 12 - datetime.now(UTC).hour
    zone = "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"
    extra = (
        "  schedules:\n"
        f"    - {{name: office-hours, timezone: {zone}, startTime: '10:00', endTime: '14:00',"
        " minReplicas: 3}\n"
    )
    daemon = await start_daemon(write(tmp_path, "p.yaml", policy("go_threads", 20, extra=extra)))
    await sandbox.wait_for_spec_replicas(NS, NAME, 3, timeout=15)
    status = await ticks(daemon, 2)
    assert status["scheduled_bounds"] == {
        "active_schedule": "office-hours",
        "effective_min_replicas": 3,
        "effective_max_replicas": 10,
    }
    assert sandbox.replicas(NS, NAME) == 3
    assert any(
        "schedule office-hours" in str(e.get("detail", ""))
        for e in daemon.logs(lambda d: d.get("event") == "scaled")
    )
    assert await daemon.stop() == 0

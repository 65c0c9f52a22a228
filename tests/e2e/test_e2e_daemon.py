"""The real `autoscalerd run` process against the sandbox cluster, as an operator would run it."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import FAST, policy_yaml, run_demo, write
from waiting import wait_for

from autoscalerd.sandbox import MetricsEndpoint, Sandbox

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "config/examples/metrics-server-kpa.yaml"
NS, NAME, METRIC = "kube-system", "metrics-server", "go_threads"


async def metrics_server(
    sb: Sandbox, *, tls: str = "self-signed", token: bool = False, replicas: int = 1
) -> Any:
    return await sb.add_deployment(
        NS,
        NAME,
        replicas=replicas,
        labels={"k8s-app": "metrics-server"},
        metrics=MetricsEndpoint(
            port=10250, path="/metrics", tls=tls, token_required=token, metric=METRIC
        ),  # type: ignore[arg-type]
    )


def max_replicas_seen(sb: Sandbox, ns: str = NS, name: str = NAME) -> int:
    return max(n for _, n in sb.replica_history(ns, name))


async def ticks_at_least(daemon: Any, n: int, timeout: float = 10.0) -> dict[str, Any]:
    """The daemon's `/status` once every policy has ticked at least `n` times."""
    status: dict[str, Any] = await daemon.wait_status(
        lambda s: bool(s["policies"]) and min(p["ticks"] for p in s["policies"]) >= n,
        timeout=timeout,
    )
    return status


async def more_ticks(daemon: Any, n: int) -> dict[str, Any]:
    """Wait until every policy has ticked `n` more times than now."""
    now = min(p["ticks"] for p in (await daemon.status())["policies"])
    return await ticks_at_least(daemon, now + n)


async def test_seed_policy_verbatim_with_insecure_flag(sandbox: Sandbox, start_daemon: Any) -> None:
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    daemon = await start_daemon(SEED, args=("--insecure-skip-tls-verify",))
    status = await ticks_at_least(daemon, 3)
    assert sandbox.replicas(NS, NAME) == 1, "1 pod at go_threads 20 = the target: stays at 1"
    assert status["policies"][0]["metrics"] == {"go_threads": 20.0}
    assert sandbox.scale_writes() == []

    sandbox.set_load(NS, NAME, METRIC, 70)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=10)
    await more_ticks(daemon, 2)  # decisions at 4 replicas and a load asking for more
    assert max_replicas_seen(sandbox) == 4, "never above maxReplicas"
    assert "SuccessfulRescale" in sandbox.event_reasons(NS, NAME)
    warning = daemon.logs(lambda d: "TLS verification is OFF" in d.get("event", ""))
    assert len(warning) == 1 and warning[0]["set_by"] == "--insecure-skip-tls-verify"
    assert await daemon.stop() == 0


async def test_seed_scales_back_down_with_short_windows(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 70)
    policy = write(tmp_path, "p.yaml", policy_yaml(annotations=FAST))
    daemon = await start_daemon(policy, args=("--insecure-skip-tls-verify",))
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=10)
    sandbox.set_load(NS, NAME, METRIC, 10)
    await sandbox.wait_for_spec_replicas(NS, NAME, 1, timeout=20)
    assert max_replicas_seen(sandbox) == 4
    assert await daemon.stop() == 0


async def test_self_signed_without_bypass_never_scales_and_says_why(
    sandbox: Sandbox, start_daemon: Any
) -> None:
    workload = await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 70)
    daemon = await start_daemon(SEED)
    pod = next(iter(workload.pods))
    line = await daemon.wait_log(lambda d: d.get("pod") == pod and d.get("level") == "warning")
    message = line["event"]
    assert line["policy"] == "kube-system/metric-server-autoscaler"
    assert "certificate" in message
    assert "caFile" in message and "insecureSkipVerify" in message, "the message names the fix"
    await ticks_at_least(daemon, 4)
    assert sandbox.scale_writes() == [], "no data is never a reason to scale"
    assert sandbox.replicas(NS, NAME) == 1
    same = daemon.logs(lambda d: d.get("pod") == pod and d.get("level") == "warning")
    assert len(same) == 1, "logged once, not every tick"
    status = (await daemon.status())["policies"][0]
    assert status["reason"] == "no-data" and "certificate" in status["last_error"]
    assert "FailedGetMetrics" in sandbox.event_reasons(NS, NAME)
    assert await daemon.stop() == 0


@pytest.mark.parametrize(
    ("tls", "token", "extra"),
    [
        pytest.param(
            "ca",
            False,
            "tlsConfig: {{caFile: {ca}, serverName: {server_name}}}\n",
            id="ca-file-and-server-name",
        ),
        pytest.param(
            "mtls",
            False,
            "tlsConfig: {{caFile: {ca}, serverName: {server_name}, certFile: {cert}, keyFile: {key}}}\n",
            id="mutual-tls",
        ),
        pytest.param(
            "ca",
            True,
            "tlsConfig: {{caFile: {ca}, serverName: {server_name}}}\n"
            "authorization: {{type: Bearer, credentialsFile: {token}}}\n",
            id="bearer-token",
        ),
    ],
)
async def test_verified_tls_variants_scale(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any, tls: str, token: bool, extra: str
) -> None:
    workload = await metrics_server(sandbox, tls=tls, token=token)
    sandbox.set_load(NS, NAME, METRIC, 70)
    source_extra = extra.format(
        ca=workload.ca_file,
        server_name=workload.server_name,
        cert=workload.client_cert_file,
        key=workload.client_key_file,
        token=workload.token_file,
    )
    policy = write(tmp_path, "p.yaml", policy_yaml(source_extra=source_extra))
    daemon = await start_daemon(policy)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=10)
    assert not daemon.logs(lambda d: d.get("level") == "warning"), "verified TLS: no warnings"
    assert await daemon.stop() == 0


async def test_broken_policy_does_not_stop_a_healthy_one(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await sandbox.add_deployment(
        "default", "web", replicas=1, labels={"app": "web"},
        metrics=MetricsEndpoint(port=8000, tls="plain", metric="requests"),
    )  # fmt: skip
    await sandbox.add_deployment(
        "default", "api", replicas=3, labels={"app": "api"},
        metrics=MetricsEndpoint(port=8000, tls="plain", metric="requests"),
    )  # fmt: skip
    sandbox.set_load("default", "web", "requests", 35)
    sandbox.set_load("default", "api", "requests", 1)  # would scale api down to 1
    sandbox.faults.workload("default", "api", "error", status=500)
    common = dict(
        namespace="default",
        protocol="http",
        port=8000,
        metric="requests",
        target_value=10,
        annotations=FAST,
    )
    text = (
        policy_yaml(name="web", target="web", **common)  # type: ignore[arg-type]
        + "---\n"
        + policy_yaml(name="api", target="api", **common)  # type: ignore[arg-type]
    )
    daemon = await start_daemon(write(tmp_path, "p.yaml", text))
    await sandbox.wait_for_spec_replicas("default", "web", 4, timeout=10)
    await ticks_at_least(daemon, 8)
    assert sandbox.replicas("default", "api") == 3, "no data never scales down"
    assert sandbox.scale_writes("default", "api") == []
    api = next(p for p in (await daemon.status())["policies"] if p["name"] == "api")
    assert api["reason"] == "no-data" and "500" in api["last_error"]
    assert await daemon.stop() == 0


async def test_one_failing_pod_of_three_is_missing_not_zero(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    workload = await sandbox.add_deployment(
        "default", "web", replicas=3, labels={"app": "web"},
        metrics=MetricsEndpoint(port=8000, tls="plain", metric="requests"),
    )  # fmt: skip
    sandbox.set_load("default", "web", "requests", 30)  # 10 per pod = the target
    sandbox.faults.pod("default", sorted(workload.pods)[0], "garbage")
    text = policy_yaml(namespace="default", name="web", target="web", protocol="http", port=8000,
                       metric="requests", target_value=10, annotations=FAST)  # fmt: skip
    daemon = await start_daemon(write(tmp_path, "p.yaml", text))
    await ticks_at_least(daemon, 9)  # past the 6 s stable window
    status = (await daemon.status())["policies"][0]
    assert status["metrics"]["requests"] == pytest.approx(30.0), "mean of 2 answering × 3 ready"
    assert sandbox.replicas("default", "web") == 3, "a failed pod is missing, never zero"
    assert await daemon.stop() == 0


async def test_api_faults_still_converge_without_duplicate_writes(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 70)
    scale_path = "/apis/apps/v1/namespaces/kube-system/deployments/metrics-server/scale"
    sandbox.faults.add("PATCH", scale_path, status=409, count=1)
    sandbox.faults.add("PATCH", scale_path, status=429, count=1, retry_after=1)
    sandbox.faults.add("PATCH", scale_path, status=503, count=1)
    sandbox.faults.add("GET", scale_path, status=500, count=2)
    daemon = await start_daemon(SEED, args=("--insecure-skip-tls-verify",))
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=20)
    await more_ticks(daemon, 2)  # ticks after the last write could only write it again
    ok = [w for w in sandbox.scale_writes(NS, NAME) if 200 <= w.status < 300]
    assert len(ok) == len({repr(w.body) for w in ok}), "each value written once"
    assert max_replicas_seen(sandbox) == 4
    assert await daemon.stop() == 0


async def test_watch_dropped_and_expired_pods_still_tracked(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    daemon = await start_daemon(
        write(tmp_path, "p.yaml", policy_yaml(annotations=FAST)),
        args=("--insecure-skip-tls-verify",),
    )
    await ticks_at_least(daemon, 2)
    sandbox.faults.drop_watches(abrupt=True)
    sandbox.faults.expire_watches()
    sandbox.set_load(NS, NAME, METRIC, 70)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=15)
    await sandbox.wait_for_replicas(NS, NAME, 4, timeout=10)
    # the pod cache must see the new pods
    await daemon.wait_status(lambda s: s["policies"][0]["ready_pods"] == 4)
    assert await daemon.stop() == 0


async def test_sigterm_stops_cleanly_within_5_seconds(sandbox: Sandbox, start_daemon: Any) -> None:
    await metrics_server(sandbox)
    daemon = await start_daemon(SEED, args=("--insecure-skip-tls-verify",))
    await ticks_at_least(daemon, 1)
    assert await daemon.stop(signal.SIGTERM, timeout=5.0) == 0  # killed (and failed) at 5 s
    assert daemon.logs(lambda d: d.get("event") == "stopping")[0]["signal"] == "SIGTERM"
    assert daemon.logs(lambda d: d.get("event") == "task did not stop in time") == []
    assert daemon.logs(lambda d: d.get("event") == "stopped"), "everything was closed"


async def test_sighup_with_broken_file_keeps_running(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    path = write(tmp_path, "p.yaml", policy_yaml())
    daemon = await start_daemon(path, args=("--insecure-skip-tls-verify",))
    await ticks_at_least(daemon, 2)
    path.write_text(policy_yaml().replace("maxReplicas: 4", "maxReplicas: many"))
    daemon.send(signal.SIGHUP)
    line = await daemon.wait_log(lambda d: d.get("event", "").startswith("reload failed"))
    assert any(":9: spec.maxReplicas: must be a whole number" in p for p in line["problems"])
    sandbox.set_load(NS, NAME, METRIC, 70)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=10)
    assert await daemon.stop() == 0


async def test_changed_file_reloads_and_keeps_unchanged_policies(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await metrics_server(sandbox)
    await sandbox.add_deployment(
        "default", "web", replicas=1, labels={"app": "web"},
        metrics=MetricsEndpoint(port=8000, tls="plain", metric="requests"),
    )  # fmt: skip
    sandbox.set_load(NS, NAME, METRIC, 70)
    sandbox.set_load("default", "web", "requests", 5)
    web = policy_yaml(namespace="default", name="web", target="web", protocol="http", port=8000, metric="requests", target_value=10)  # fmt: skip
    path = write(tmp_path, "p.yaml", policy_yaml() + "---\n" + web)
    daemon = await start_daemon(path, args=("--insecure-skip-tls-verify",))
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=10)
    before = {p["name"]: p["ticks"] for p in (await daemon.status())["policies"]}
    path.write_text(
        policy_yaml(max_replicas=2) + "---\n" + web
    )  # no signal: the file watch reloads
    await daemon.wait_log(lambda d: d.get("event") == "configuration reloaded", timeout=10)
    await sandbox.wait_for_spec_replicas(NS, NAME, 2, timeout=10)
    # the unchanged policy kept its reconciler and state (its tick count goes on)
    await daemon.wait_status(
        lambda s: {p["name"]: p["ticks"] for p in s["policies"]}["web"] > before["web"]
    )
    # only the bounds changed: retuned in place, windows kept (issue 14), not restarted
    retuned = daemon.logs(
        lambda d: d.get("event") == "policy bounds changed; windows and panic state kept"
    )
    assert [d["policy"] for d in retuned] == ["kube-system/metric-server-autoscaler"]
    assert not daemon.logs(lambda d: d.get("event") == "policy changed; restarting it")
    assert await daemon.stop() == 0


async def test_a_manual_scale_is_seen_within_seconds(sandbox: Sandbox, start_daemon: Any) -> None:
    """`/scale` is re-read every 15 s in steady state, and within seconds when the pods behind
    the selector stop matching the replicas last read: after a `kubectl scale` to 3 at a load
    that needs 1, the daemon scales from 3 (it could not, had it kept the 1 it read)."""
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    daemon = await start_daemon(SEED, args=("--insecure-skip-tls-verify",))
    await ticks_at_least(daemon, 2)
    await sandbox.scale(NS, NAME, 3)
    await wait_for(sandbox.scale_writes, timeout=8, what="the manual scale was not seen")
    last = (await daemon.status())["policies"][0]["last_scale"]
    assert last["from"] == 3 and last["to"] < 3
    assert await daemon.stop() == 0


async def test_dry_run_decides_but_never_writes(sandbox: Sandbox, start_daemon: Any) -> None:
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 70)
    daemon = await start_daemon(SEED, args=("--insecure-skip-tls-verify", "--dry-run"))
    line = await daemon.wait_log(lambda d: d.get("event") == "would scale (dry run)")
    assert line["desired"] == 4
    await ticks_at_least(daemon, 3)
    assert sandbox.writes == [] or all("events" not in w.path for w in sandbox.writes)
    assert sandbox.scale_writes() == []
    assert await daemon.stop() == 0


async def test_endpoints(sandbox: Sandbox, start_daemon: Any) -> None:
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    daemon = await start_daemon(SEED, args=("--insecure-skip-tls-verify",))
    await ticks_at_least(daemon, 2)
    assert (await daemon.get("/healthz"))[0] == 200
    assert (await daemon.get("/readyz"))[0] == 200
    code, text = await daemon.get("/metrics")
    assert code == 200
    for name in (
        'autoscalerd_scrapes_total{autoscaler="metric-server-autoscaler",namespace="kube-system",result="ok"}',
        "autoscalerd_scrape_duration_seconds_bucket",
        'autoscalerd_metric_value{autoscaler="metric-server-autoscaler",metric="go_threads",namespace="kube-system"} 20.0',
        'autoscalerd_desired_replicas{autoscaler="metric-server-autoscaler",namespace="kube-system"} 1.0',
        'autoscalerd_current_replicas{autoscaler="metric-server-autoscaler",namespace="kube-system"} 1.0',
        "# TYPE autoscalerd_scale_operations_total counter",
    ):
        assert name in text, name
    assert await daemon.stop() == 0


async def test_bad_config_exits_2_and_unreachable_api_is_not_ready(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    bad = write(
        tmp_path, "bad.yaml", policy_yaml().replace('targetValue: "20"', 'targetValue: "0"')
    )
    daemon = await start_daemon(bad, wait_ready=False)
    assert await asyncio.wait_for(daemon.proc.wait(), 15) == 2


async def test_status_command_prints_a_table(sandbox: Sandbox, start_daemon: Any) -> None:
    await metrics_server(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    daemon = await start_daemon(SEED, args=("--insecure-skip-tls-verify",))
    await ticks_at_least(daemon, 2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscalerd", "status", "--url", f"http://127.0.0.1:{daemon.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    header, row = out.decode().splitlines()[:2]
    assert header.split() == [
        "NAMESPACE",
        "NAME",
        "STRATEGY",
        "CURRENT",
        "DESIRED",
        "MODE",
        "METRICS",
        "LAST",
        "ERROR",
    ]
    assert row.split()[:7] == [
        "kube-system",
        "metric-server-autoscaler",
        "KPA",
        "1",
        "1",
        "stable",
        "go_threads=20",
    ]
    assert await daemon.stop() == 0


async def test_demo_command_shows_scaling() -> None:
    text = await run_demo("--duration", "14", timeout=90)
    history = next(line for line in text.splitlines() if "replicas over time" in line)
    assert history.split(":", 1)[1].strip().startswith("1 -> "), text  # it scaled up
    assert "never above maxReplicas: True" in text
    assert "daemon exit code: 0" in text


@pytest.mark.parametrize(
    ("kind", "api_version", "add"),
    [
        pytest.param("StatefulSet", "apps/v1", "add_statefulset", id="statefulset"),
        pytest.param("Widget", "example.com/v1", "add_widget", id="custom-resource"),
    ],
)
async def test_any_target_with_a_scale_subresource(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any, kind: str, api_version: str, add: str
) -> None:
    await getattr(sandbox, add)(
        "default", "db", replicas=1, labels={"app": "db"},
        metrics=MetricsEndpoint(port=8000, tls="plain", metric="requests"),
    )  # fmt: skip
    sandbox.set_load("default", "db", "requests", 35)
    text = policy_yaml(namespace="default", name="db", target="db", kind=kind, api_version=api_version,
                       protocol="http", port=8000, metric="requests", target_value=10)  # fmt: skip
    daemon = await start_daemon(write(tmp_path, "p.yaml", text))
    await sandbox.wait_for_spec_replicas("default", "db", 4, timeout=10)
    await wait_for(
        lambda: "SuccessfulRescale" in sandbox.event_reasons("default", "db"),
        timeout=5,
        what="the scale write is followed by an Event",
    )
    assert await daemon.stop() == 0

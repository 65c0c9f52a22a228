"""`autoscalerd demo`: the seed scenario, live, on this machine.

Starts the sandbox cluster with a `metrics-server` Deployment in `kube-system` whose pods serve
`go_threads` over HTTPS with self-signed certificates (as metrics-server does), runs the real
`autoscalerd run` process against it with the seed's KPA policy, varies the load, and prints
one line per second: load, ready pods, the daemon's decision and the replicas. Prints the
address of the daemon's `/ui` page, which is up for as long as the demo runs. Ends by itself
with a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

from autoscalerd.logconfig import configure_logging

__all__ = ["DEMO_POLICY", "load_at", "run_demo"]

NAMESPACE = "kube-system"
NAME = "metrics-server"
METRIC = "go_threads"

DEMO_POLICY = """\
# The seed's PodAutoscaler, with shorter windows so the demo shows a full cycle in a minute.
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata:
  name: metric-server-autoscaler
  namespace: kube-system
  annotations:
    kpa.autoscaling.aibrix.ai/stable-window: "12s"
    kpa.autoscaling.aibrix.ai/panic-window: "4s"
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: metrics-server
  minReplicas: 1
  maxReplicas: 4
  metricsSources:
    - metricSourceType: "pod"
      protocolType: "https"
      port: "10250"
      path: "/metrics"
      targetMetric: "go_threads"
      targetValue: "20"
      # metrics-server's certificate is self-signed: the bypass is explicit, per source,
      # and logged. With a CA-signed certificate, set caFile (and serverName) instead.
      tlsConfig:
        insecureSkipVerify: true
  scalingStrategy: "KPA"
"""

# (start as a fraction of the run, total go_threads over all pods)
LOAD_PROFILE = ((0.0, 18.0), (0.12, 45.0), (0.3, 75.0), (0.55, 30.0), (0.75, 12.0))


def load_at(fraction: float) -> float:
    """The total demand at a point of the run (a step profile: calm, rise, peak, fall)."""
    value = LOAD_PROFILE[0][1]
    for start, total in LOAD_PROFILE:
        if fraction >= start:
            value = total
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(
    *,
    duration: float = 60.0,
    workdir: str | None = None,
    log_format: str | None = None,
    log_level: str = "info",
    podautoscalers: bool = False,
) -> int:
    configure_logging("console", "warning")
    try:
        from autoscalerd.sandbox import MetricsEndpoint, Sandbox  # noqa: F401
    except ImportError as exc:  # trustme missing
        print(
            f"autoscalerd demo needs the sandbox extra: pip install 'autoscalerd[sandbox]' ({exc})",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_demo(duration, workdir, log_format, log_level, podautoscalers))
    except KeyboardInterrupt:
        return 130


async def _demo(
    duration: float,
    workdir: str | None,
    log_format: str | None,
    log_level: str,
    podautoscalers: bool = False,
) -> int:
    from autoscalerd.sandbox import MetricsEndpoint, Sandbox

    out = sys.stdout
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="autoscalerd-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    policy_file = root / "metrics-server-kpa.yaml"
    policy_file.write_text(DEMO_POLICY)
    log_file = root / "autoscalerd.log"
    port = _free_port()

    async with Sandbox(workdir=root / "sandbox") as sb:
        await sb.add_deployment(
            NAMESPACE,
            NAME,
            replicas=1,
            labels={"k8s-app": "metrics-server"},
            metrics=MetricsEndpoint(
                port=10250,
                path="/metrics",
                tls="self-signed",
                metric=METRIC,
                page_size_bytes=20_000,
            ),
            startup_seconds=1.0,
        )
        sb.set_load(NAMESPACE, NAME, METRIC, load_at(0.0))
        print(
            textwrap.dedent(
                f"""\
                autoscalerd demo: the seed scenario on a sandbox cluster (loopback only)
                  target   Deployment {NAMESPACE}/{NAME}, pods serve {METRIC} over HTTPS (self-signed)
                  policy   KPA, targetValue 20 per pod, 1..4 replicas   ({policy_file})
                  daemon   autoscalerd run --kubeconfig {sb.kubeconfig_path}
                  logs     {log_file}
                  ui       http://127.0.0.1:{port}/ui   (live while the demo runs; also: autoscalerd status --watch --url 127.0.0.1:{port})
                """
            ),
            file=out,
        )
        policy_args = ["-c", str(policy_file)]
        if podautoscalers:  # issue 14: the policy as a PodAutoscaler object, status written
            from autoscalerd.sandbox import podautoscalers as pa

            policy_args = ["--podautoscalers"]
            pa.create(sb.store, _demo_object())
            print(
                f"  cluster mode: the policy is the PodAutoscaler object {NAMESPACE}/{PA_NAME}"
                " (annotated autoscalerd.io/managed); its status is shown below\n",
                file=out,
            )
        cmd = [
            sys.executable,
            "-m",
            "autoscalerd",
            "run",
            *policy_args,
            "--kubeconfig",
            str(sb.kubeconfig_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            log_format or "json",
            "--log-level",
            log_level,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALERD_")}
        with open(log_file, "wb") as log_fh:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=log_fh, stderr=log_fh, stdin=asyncio.subprocess.DEVNULL, env=env
            )
            try:
                await _watch(sb, port, duration, out, podautoscalers)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(proc.wait(), 8)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
        _summary(sb, proc.returncode, log_file, out)
        if podautoscalers:
            from autoscalerd.sandbox import podautoscalers as pa

            obj = pa.get(sb.store, NAMESPACE, PA_NAME)
            print("\nkubectl describe podautoscaler (as the sandbox holds it):", file=out)
            print(textwrap.indent(pa.describe(obj or {}), "  "), file=out)
        return 0 if proc.returncode == 0 else 1


PA_NAME = "metric-server-autoscaler"


def _demo_object() -> dict[str, Any]:
    """DEMO_POLICY as an API object that this daemon claims."""
    import yaml

    obj: dict[str, Any] = yaml.safe_load(DEMO_POLICY)
    obj["metadata"]["annotations"]["autoscalerd.io/managed"] = "true"
    return obj


def _pa_status(sb: Any) -> str:
    from autoscalerd.sandbox import podautoscalers as pa

    status = (pa.get(sb.store, NAMESPACE, PA_NAME) or {}).get("status") or {}
    ready: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    return (
        f"status desired={status.get('desiredScale', '-')} actual={status.get('actualScale', '-')}"
        f" Ready={ready.get('status', '-')} ({ready.get('reason', '-')})"
    )


async def _watch(
    sb: Any, port: int, duration: float, out: Any, podautoscalers: bool = False
) -> None:
    url = f"http://127.0.0.1:{port}/status"
    header = f"{'time':>5}  {'load':>5}  {'ready':>5}  {'desired':>7}  {'replicas':>8}  {'mode':<6}  decision"
    print(header, file=out)
    print("-" * len(header), file=out)
    start = time.monotonic()
    last_load = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        second = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= duration:
                break
            load = load_at(elapsed / duration)
            if load != last_load:
                sb.set_load(NAMESPACE, NAME, METRIC, load)
                last_load = load
            policy: dict[str, Any] = {}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with http.get(url) as resp:
                    doc = json.loads(await resp.text())
                    policy = (doc.get("policies") or [{}])[0]
            ready = sb.ready_replicas(NAMESPACE, NAME)
            replicas = sb.replicas(NAMESPACE, NAME)
            desired = policy.get("desired_replicas")
            mode = policy.get("mode") or "-"
            decision = policy.get("last_error") or policy.get("detail") or "waiting for the daemon"
            if podautoscalers:
                decision = _pa_status(sb)
            print(
                f"{int(elapsed):>4}s  {load:>5g}  {ready:>5}  {desired if desired is not None else '-':>7}  "
                f"{replicas:>8}  {mode:<6}  {_clip(str(decision), 70)}",
                file=out,
                flush=True,
            )
            second += 1
            await asyncio.sleep(max(0.0, start + second - time.monotonic()))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary(sb: Any, returncode: int | None, log_file: Path, out: Any) -> None:
    history = sb.replica_history(NAMESPACE, NAME)
    changes = [n for _, n in history]
    writes = sb.scale_writes(NAMESPACE, NAME)
    print("", file=out)
    print("summary", file=out)
    print(f"  replicas over time: {' -> '.join(str(n) for n in changes) or 'unchanged'}", file=out)
    print(
        f"  scale writes: {len(writes)}; never above maxReplicas: {max(changes or [1]) <= 4}",
        file=out,
    )
    reasons = sb.event_reasons(NAMESPACE, NAME)
    if reasons:
        print(f"  events: {', '.join(sorted(set(reasons)))}", file=out)
    print(
        f"  daemon exit code: {returncode} (0 = clean stop on SIGTERM); log: {log_file}", file=out
    )

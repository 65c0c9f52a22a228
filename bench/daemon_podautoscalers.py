"""Cluster mode vs file mode: the same policies as PodAutoscaler objects or as a file.

The real `autoscalerd run` against the sandbox (in this process), N Deployments `app-0`… in
namespace `bench` with one plain-HTTP pod each at a steady load (each pod reports the
target: no scaling). Two runs on the same policies, one after the other:

- **file**: the N policies in a YAML file (`-c`);
- **cluster**: the same N policies as PodAutoscaler objects (`--podautoscalers`,
  `claim: all`), their status written back.

Each run waits until every policy has ticked (and, in cluster mode, until every object's
status says Ready), then measures for `--seconds`: the daemon's CPU (utime+stime from
/proc), the API requests it made per tick (all policies' ticks of one interval), and in
cluster mode the status writes per minute (goal: 0 at steady load: a status is written only
when it changes, never once per tick). Prints a JSON report; exits 1 when a steady run
wrote any status.

    python bench/daemon_podautoscalers.py                      # 500 objects, 60 s each
    python bench/daemon_podautoscalers.py --objects 20 --seconds 5 --warmup 3   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _daemon_common import DaemonProcess, cpu_seconds, policy_yaml

from autoscalerd.sandbox import MetricsEndpoint, Sandbox
from autoscalerd.sandbox import podautoscalers as pa

NS = "bench"
METRIC = "go_threads"
TARGET = 20.0


def daemon_config(claim_all: bool) -> str:
    text = "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nscrapeInterval: 1s\n"
    if claim_all:
        text += f"podAutoscalers: {{claim: all, namespaces: [{NS}]}}\n"
    return text


def policy(i: int) -> str:
    return policy_yaml(
        name=f"pa-{i}", namespace=NS, target=f"app-{i}", target_value=TARGET,
        protocol="http", port=8000, metric=METRIC,
    )  # fmt: skip


def status_writes(sb: Sandbox) -> int:
    return sum(1 for w in sb.writes if w.path.endswith("/status") and "podautoscalers" in w.path)


def all_ready(sb: Sandbox, n: int) -> bool:
    for i in range(n):
        status = (pa.get(sb.store, NS, f"pa-{i}") or {}).get("status") or {}
        ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
        if not ready or ready[0].get("status") != "True":
            return False
    return True


async def measure(
    sb: Sandbox, tmp: Path, mode: str, n: int, warmup: float, seconds: float
) -> dict[str, Any]:
    configs = [tmp / f"daemon-{mode}.yaml"]
    configs[0].write_text(daemon_config(mode == "cluster"))
    args: tuple[str, ...] = ()
    if mode == "file":
        path = tmp / "policies.yaml"
        path.write_text("---\n".join(policy(i) for i in range(n)))
        configs.append(path)
    else:
        import yaml

        for i in range(n):
            pa.create(sb.store, yaml.safe_load(policy(i)))
        args = ("--podautoscalers",)
    daemon = await DaemonProcess.start(
        sb.kubeconfig_path, configs, tmp / f"daemon-{mode}.log", extra_args=args
    )
    try:
        await daemon.wait_ready()
        t0 = time.monotonic()
        await daemon.wait_ticks(2, timeout=120)
        if mode == "cluster":
            while not all_ready(sb, n):
                if time.monotonic() - t0 > 120:
                    raise TimeoutError("objects not Ready after 120 s")
                await asyncio.sleep(0.2)
        settle_writes = status_writes(sb)
        await asyncio.sleep(warmup)
        status0 = await daemon.status()
        cpu0, req0, sw0, wall0 = (
            cpu_seconds(daemon.pid), sb.api_request_count, status_writes(sb), time.monotonic()
        )  # fmt: skip
        await asyncio.sleep(seconds)
        status1 = await daemon.status()
        cpu1, req1, sw1, wall1 = (
            cpu_seconds(daemon.pid), sb.api_request_count, status_writes(sb), time.monotonic()
        )  # fmt: skip
        elapsed = wall1 - wall0
        ticks = sum(p["ticks"] for p in status1["policies"]) - sum(
            p["ticks"] for p in status0["policies"]
        )
        rounds = ticks / max(1, n)
        return {
            "mode": mode,
            "policies": len(status1["policies"]),
            "seconds": round(elapsed, 1),
            "tick_rounds": round(rounds, 1),
            "daemon_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "api_requests_per_tick": round((req1 - req0) / max(1.0, rounds), 2),
            "status_writes_to_settle": settle_writes if mode == "cluster" else None,
            "status_writes_per_minute": round(60 * (sw1 - sw0) / elapsed, 2),
        }
    finally:
        await daemon.stop()
        if mode == "cluster":
            for i in range(n):
                pa.delete(sb.store, NS, f"pa-{i}")


async def amain(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-pa-") as d:
        tmp = Path(d)
        async with Sandbox(tmp / "sandbox") as sb:
            ep = MetricsEndpoint(port=8000, path="/metrics", tls="plain", metric=METRIC)
            for i in range(args.objects):
                await sb.add_deployment(NS, f"app-{i}", 1, metrics=ep)
                sb.set_load(NS, f"app-{i}", METRIC, TARGET)
            results = [
                await measure(sb, tmp, mode, args.objects, args.warmup, args.seconds)
                for mode in ("file", "cluster")
            ]
    file_cpu = results[0]["daemon_cpu_percent_of_one_core"]
    cluster_cpu = results[1]["daemon_cpu_percent_of_one_core"]
    report = {
        "objects": args.objects,
        "runs": results,
        "cluster_cpu_vs_file": round(cluster_cpu / file_cpu, 2) if file_cpu else None,
    }
    print(json.dumps(report, indent=2))
    return 0 if results[1]["status_writes_per_minute"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    return asyncio.run(amain(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

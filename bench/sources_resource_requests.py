"""API requests per tick of `resource` sources: 100 policies x 10 pods should cost ONE
PodMetrics list per namespace per interval, not one per pod (1,000) or per policy (100).

Starts the sandbox in this process with W Deployments x P pods spread over N namespaces, each
pod at a cpu load of its own; writes W `resource` (cpu, KPA) policies; runs the real
`autoscalerd run` process against the sandbox; after `--warmup` seconds counts, over
`--seconds`, the requests the sandbox received under /apis/metrics.k8s.io and all API requests,
and the ticks the policies made (from `/status`). Counts requests, so the figure does not
depend on the machine's load. Exits 1 when the lists exceed one per namespace per interval
(plus one per namespace for a window edge).

    .venv/bin/python bench/sources_resource_requests.py [--workloads 100] [--pods 10]
        [--namespaces 1] [--warmup 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoscalerd.sandbox import Sandbox

POLICY = """\
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata: {{name: {name}, namespace: {ns}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  minReplicas: 1
  maxReplicas: {pods}
  scalingStrategy: KPA
  metricsSources:
    - {{metricSourceType: resource, targetMetric: cpu, targetValue: "100"}}
---
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def counts(sb: Sandbox) -> tuple[int, int]:
    lists = sum(1 for r in sb.requests if r.path.startswith("/apis/metrics.k8s.io/"))
    return lists, sb.api_request_count


async def ticks(http: aiohttp.ClientSession, url: str) -> list[int]:
    async with http.get(url) as resp:
        doc: dict[str, Any] = json.loads(await resp.text())
    return [int(p["ticks"]) for p in doc["policies"]]


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    async with Sandbox(work / "sandbox") as sb:
        text = ""
        for i in range(args.workloads):
            ns, name = f"bench-{i % args.namespaces}", f"app-{i}"
            await sb.add_deployment(ns, name, args.pods, wait_ready=False)
            sb.set_load(ns, name, "cpu", 100.0 * args.pods)  # at the target: no scaling
            text += POLICY.format(name=name, ns=ns, pods=args.pods)
        for ns, name in sb.workloads:
            await sb.wait_for_replicas(ns, name, args.pods, timeout=120)
        policy = work / "policies.yaml"
        policy.write_text(text)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALERD_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "autoscalerd", "run", "-c", str(policy),
            "--kubeconfig", str(sb.kubeconfig_path), "--listen", f"127.0.0.1:{port}",
            "--log-format", "json", "--log-level", "warning",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/status"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if min(await ticks(http, url) or [0]) >= 2:
                            break
                    except (aiohttp.ClientError, OSError, ValueError):
                        pass
                    if time.monotonic() > deadline:
                        print("the daemon did not tick within 60 s", file=sys.stderr)
                        return 1
                    await asyncio.sleep(0.2)
                await asyncio.sleep(args.warmup)
                lists0, api0 = counts(sb)
                ticks0, t0 = await ticks(http, url), time.monotonic()
                await asyncio.sleep(args.seconds)
                lists1, api1 = counts(sb)
                ticks1, t1 = await ticks(http, url), time.monotonic()
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
    intervals = t1 - t0  # the default scrapeInterval is 1 s
    policy_ticks = sum(b - a for a, b in zip(ticks0, ticks1, strict=True))
    lists = lists1 - lists0
    per_ns_interval = lists / args.namespaces / intervals
    print(f"{args.workloads} resource policies x {args.pods} pods in {args.namespaces} "
          f"namespace(s), {intervals:.1f} s (~{intervals:.0f} intervals of 1 s)")  # fmt: skip
    print(f"  policy ticks:                 {policy_ticks}  ({policy_ticks / intervals:.1f}/s)")
    print(
        f"  PodMetrics lists:             {lists}  ({per_ns_interval:.2f} per namespace per interval)"
    )
    print(f"  per policy tick:              {lists / max(policy_ticks, 1):.4f} lists")
    print(f"  all API requests:             {api1 - api0}  ({(api1 - api0) / intervals:.1f}/s)")
    allowed = args.namespaces * (intervals + 1)
    if lists > allowed:
        print(f"GOAL NOT MET: {lists} lists > one per namespace per interval ({allowed:.0f})")
        return 1
    print("goal met: at most one PodMetrics list per namespace per interval")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", type=int, default=100)
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--namespaces", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: reaction time of the real daemon to a load step (issue 5, "Numbers").

One Deployment with one pod in the in-process sandbox, one KPA policy with target T
(default algorithm parameters, 1 s scrape interval). Each run:

1. reset: the Deployment back to 1 replica, load T (the pod reports T: desired = 1);
2. start a fresh `autoscalerd run` process (separate process, reads the sandbox kubeconfig),
   wait for /readyz and a few ticks (warm-up);
3. wait a random 0–1 s (so the step lands anywhere in the tick period), step the pod's
   metric to 3.5×T and note the time;
4. the reaction is the time from the step to the sandbox API receiving the first `/scale`
   write (the sandbox's write record, `time.time()` on both sides, same process); also
   reported: the time until a write reaches ceil(3.5) = 4 replicas (KPA's windows are means,
   so the first write may ask for less);
5. stop the daemon (SIGTERM).

Variants: HTTPS with the sandbox's self-signed certificate and `insecureSkipVerify: true`, and
plain HTTP. Prints min/median/max per variant; goal ≤ 3 s.

Run: .venv/bin/python bench/daemon_reaction.py [--runs 10] [--variants https,http]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _daemon_common import DaemonProcess, policy_yaml

from autoscalerd.sandbox import MetricsEndpoint, Sandbox

NS, METRIC = "bench", "go_threads"
GOAL_SECONDS = 3.0
FULL = 4  # ceil(3.5 x T / T)


async def one_run(
    sb: Sandbox, name: str, policy: Path, tmp: Path, target: float, warmup_ticks: int, i: int
) -> tuple[float, int, float]:
    """Returns (seconds from the step to the first /scale write, replicas it wrote, seconds
    from the step to the write that reaches `full` replicas)."""
    if sb.replicas(NS, name) != 1:
        await sb.scale(NS, name, 1)
    await sb.wait_for_replicas(NS, name, 1, timeout=15)
    sb.set_load(NS, name, METRIC, target)
    writes_before = len(sb.scale_writes(NS, name))
    daemon = await DaemonProcess.start(sb.kubeconfig_path, [policy], tmp / f"{name}-{i}.log")
    try:
        await daemon.wait_ready()
        await daemon.wait_ticks(warmup_ticks)
        if len(sb.scale_writes(NS, name)) != writes_before:
            raise RuntimeError("the daemon scaled during the warm-up (load = target)")
        await asyncio.sleep(random.uniform(0.0, 1.0))
        step_at = time.time()
        sb.set_load(NS, name, METRIC, 3.5 * target)
        deadline = time.monotonic() + 20
        while True:
            writes = [
                (w.time - step_at, int((w.body or {}).get("spec", {}).get("replicas", -1)))
                for w in sb.scale_writes(NS, name)[writes_before:]
                if w.time >= step_at
            ]
            full = [t for t, n in writes if n >= FULL]
            if full:
                return writes[0][0], writes[0][1], full[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{writes} 20 s after the step:\n{daemon.log_tail()}")
            await asyncio.sleep(0.002)
    finally:
        await daemon.stop()


async def variant(
    sb: Sandbox, tmp: Path, tls: str, runs: int, target: float, warmup_ticks: int
) -> list[tuple[float, float]]:
    name = f"react-{'http' if tls == 'plain' else 'https'}"
    ep = MetricsEndpoint(port=10250, path="/metrics", tls=tls, metric=METRIC)  # type: ignore[arg-type]
    await sb.add_deployment(NS, name, 1, metrics=ep)
    policy = tmp / f"{name}.yaml"
    protocol = "http" if tls == "plain" else "https"
    policy.write_text(
        policy_yaml(name=name, namespace=NS, target=name, target_value=target, protocol=protocol)
    )
    times: list[tuple[float, float]] = []
    for i in range(runs):
        first, replicas, full = await one_run(sb, name, policy, tmp, target, warmup_ticks, i)
        times.append((first, full))
        print(
            f"  {protocol:5} run {i + 1:2d}: first write {first * 1e3:7.1f} ms ({replicas} "
            f"replicas), {FULL} replicas written at {full * 1e3:7.1f} ms"
        )
    return times


async def amain(args: argparse.Namespace) -> int:
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="reaction-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with Sandbox(tmp / "sandbox") as sb:
            for v in args.variants.split(","):
                tls = {"https": "self-signed", "http": "plain"}[v.strip()]
                print(f"variant {v}: {args.runs} runs, target {args.target:g}, step to 3.5x")
                results[v] = await variant(sb, tmp, tls, args.runs, args.target, args.warmup_ticks)
    print()
    print("step to first /scale write (goal <= 3 s); in brackets: step to the write of 4 replicas")
    print(f"{'variant':8} {'runs':>4} {'min ms':>16} {'median ms':>16} {'max ms':>16}")
    ok = True
    for v, pairs in results.items():
        first = [a for a, _ in pairs]
        full = [b for _, b in pairs]
        passed = max(first) <= GOAL_SECONDS
        ok &= passed
        cells = [
            f"{f(first) * 1e3:7.1f} ({f(full) * 1e3:6.0f})" for f in (min, statistics.median, max)
        ]
        print(f"{v:8} {len(first):4d} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16}  ", end="")
        print("PASS" if passed else "FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per variant")
    ap.add_argument("--variants", default="https,http", help="comma-separated: https, http")
    ap.add_argument("--target", type=float, default=20.0, help="KPA targetValue T")
    ap.add_argument("--warmup-ticks", type=int, default=3, help="ticks before the step")
    args = ap.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what a derived signal costs the real daemon (issue 13).

100 KPA policies × 10 pods, 1 s interval, HTTPS (self-signed) pages of ~20 KiB that also hold
a 30-bucket histogram `ttft_seconds` whose counts grow. Two windows, one daemon each, on the
same sandbox and the same pages:

- **gauge**: every policy reads `go_threads` (the plain path: one summed value per page);
- **quantile**: every policy reads `histogram_quantile(0.95, ttft_seconds_bucket[10s])`
  (each pod's 30 bucket series with their labels, the window state, the quantile).

For each window, after a warm-up: the daemon's CPU (utime+stime, /proc) over the scrapes it
made (`autoscalerd_scrapes_total`), the share that succeeded, the connections it opened
(`autoscalerd_scrape_connections_total`, each a TLS handshake: a failed scrape can cost one)
and the late answers kept. The windows alternate (gauge, quantile, gauge, quantile:
--rounds 2); with --concurrent both daemons run at once, each at --interval (2 s), measured
over the same seconds, so a drift of the machine's speed hits both alike. The ratio is
quantile / gauge of the CPU per scrape summed over each kind's windows. Goal: ≤ 1.2×.
Policies have minReplicas = maxReplicas = pods, so nothing scales and both windows do the
same requests.

Run: .venv/bin/python bench/daemon_signals.py [--policies 100] [--pods 10] [--buckets 30]
     [--warmup 15] [--seconds 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_common import PYTHON, DaemonProcess, cpu_seconds, sum_counter

HERE = Path(__file__).resolve().parent
NS = "bench"
GAUGE = "go_threads"
QUANTILE = "'histogram_quantile(0.95, ttft_seconds_bucket[10s])'"
METRICS = {"gauge": GAUGE, "quantile": QUANTILE}


def policies_yaml(count: int, pods: int, metric: str, target: float) -> str:
    docs = []
    for i in range(count):
        docs.append(
            "apiVersion: autoscaling.aibrix.ai/v1alpha1\n"
            "kind: PodAutoscaler\n"
            f"metadata: {{name: app-{i}, namespace: {NS}}}\n"
            "spec:\n"
            f"  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: app-{i}}}\n"
            f"  minReplicas: {pods}\n"
            f"  maxReplicas: {pods}\n"
            "  scalingStrategy: KPA\n"
            "  metricsSources:\n"
            "    - metricSourceType: pod\n"
            "      protocolType: https\n"
            '      port: "10250"\n'
            "      path: /metrics\n"
            f"      targetMetric: {metric}\n"
            f'      targetValue: "{target}"\n'
            "      tlsConfig: {insecureSkipVerify: true}\n"
        )
    return "---\n".join(docs)


async def start_sandbox(args: argparse.Namespace, tmp: Path) -> tuple[Any, dict[str, Any]]:
    cmd = [PYTHON, str(HERE / "_daemon_sandbox.py"), "--workdir", str(tmp / "sandbox"),
           "--workloads", str(args.policies), "--pods", str(args.pods),
           "--histogram-buckets", str(args.buckets), *(["--vary-load"] if args.vary_load else []),
           "--duration", str(4 * (args.warmup + args.seconds) + 600)]  # fmt: skip
    err = open(tmp / "sandbox.log", "wb")  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL
    )
    err.close()
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 300)
    if not line:
        raise RuntimeError("sandbox failed:\n" + (tmp / "sandbox.log").read_text()[-3000:])
    return proc, json.loads(line)


async def measure(
    args: argparse.Namespace, tmp: Path, info: dict[str, Any], kinds: list[str], tag: str
) -> dict[str, dict[str, Any]]:
    """Run a daemon per kind (`gauge`, `quantile`) on the same pages and measure them over the
    same seconds. Several daemons are started one after the other, each warmed up: 2,000 TLS
    handshakes at once against the one sandbox process that serves every pod time out, for
    both daemons (see bench/README-daemon.md)."""
    # Concurrent daemons scrape at --interval: the sandbox serves the usual 1,000 pages a second.
    interval = args.interval if len(kinds) > 1 else 1.0
    head = (
        f"apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nscrapeInterval: {interval:g}s\n"
    )
    daemons: dict[str, DaemonProcess] = {}
    try:
        for kind in kinds:
            config = tmp / f"{kind}-{tag}.yaml"
            policies = policies_yaml(args.policies, args.pods, METRICS[kind], 1e9)
            config.write_text(head + "---\n" + policies)
            daemons[kind] = await DaemonProcess.start(
                info["kubeconfig"], [config], tmp / f"{kind}-{tag}.log"
            )
            await daemons[kind].wait_ready()
            await asyncio.sleep(args.warmup)
        before = {k: (await d.get("/metrics"))[1] for k, d in daemons.items()}
        c0 = {k: cpu_seconds(d.pid) for k, d in daemons.items()}
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        after = {k: (await d.get("/metrics"))[1] for k, d in daemons.items()}
        c1 = {k: cpu_seconds(d.pid) for k, d in daemons.items()}
        seconds = time.monotonic() - t0
        statuses = {k: await d.status() for k, d in daemons.items()}
    finally:
        for daemon in daemons.values():
            await daemon.stop()
    out = {}
    for kind in kinds:
        m0, m1 = before[kind], after[kind]

        def counted(series: str, m0: str = m0, m1: str = m1, **labels: str) -> float:
            return sum_counter(m1, series, **labels) - sum_counter(m0, series, **labels)

        scrapes = counted("autoscalerd_scrapes_total")
        ok = counted("autoscalerd_scrapes_total", result="ok")
        cpu = c1[kind] - c0[kind]
        values = [next(iter(p["metrics"].values())) for p in statuses[kind]["policies"]]
        out[kind] = {
            "metric": METRICS[kind].strip("'"),
            "seconds": round(seconds, 1),
            "scrapes": int(scrapes),
            "ok_fraction": round(ok / scrapes, 4) if scrapes else 0.0,
            "connections_opened": int(counted("autoscalerd_scrape_connections_total")),
            "late_answers_kept": int(
                counted("autoscalerd_scrape_late_answers_total", connection="kept")
            ),
            "cpu_seconds": round(cpu, 2),
            "cpu_percent_of_a_core": round(100 * cpu / seconds, 1),
            "cpu_us_per_scrape": round(1e6 * cpu / scrapes, 1) if scrapes else None,
            "policies_with_a_value": sum(1 for v in values if v is not None),
        }
    return out


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-signals-"))
    proc, info = await start_sandbox(args, tmp)
    windows: dict[str, list[dict[str, Any]]] = {"gauge": [], "quantile": []}
    try:
        print(f"sandbox ready: {args.policies} x {args.pods} pods, page {info['page_bytes']} B")
        groups = [list(METRICS)] if args.concurrent else [[kind] for kind in METRICS]
        for i in range(args.rounds):
            for kinds in groups:
                for kind, result in (await measure(args, tmp, info, kinds, str(i))).items():
                    windows[kind].append(result)
                    print(f"{kind}:".ljust(10), json.dumps(result))
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()

    def per_scrape(results: list[dict[str, Any]]) -> float | None:
        scrapes = sum(r["scrapes"] for r in results)
        return 1e6 * sum(r["cpu_seconds"] for r in results) / scrapes if scrapes else None

    gauge, quantile = per_scrape(windows["gauge"]), per_scrape(windows["quantile"])
    ratio = quantile / gauge if gauge and quantile else None
    clean = all(r["connections_opened"] == 0 for rs in windows.values() for r in rs)
    print(
        json.dumps(
            {
                "gauge_cpu_us_per_scrape": gauge and round(gauge, 1),
                "quantile_cpu_us_per_scrape": quantile and round(quantile, 1),
                "quantile_over_gauge_cpu_per_scrape": ratio and round(ratio, 3),
                "windows_per_kind": args.rounds,
                "no_new_connection_in_any_window": clean,
            }
        )
    )
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = (
        ratio is not None
        and ratio <= args.goal
        and all(r["policies_with_a_value"] > 0 for r in windows["quantile"])
    )
    print(f"goal quantile <= {args.goal}x gauge CPU per scrape: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--buckets", type=int, default=30)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--goal", type=float, default=1.2)
    ap.add_argument(
        "--rounds", type=int, default=2, help="windows of each kind, alternated (g, q, g, q)"
    )
    ap.add_argument(
        "--concurrent",
        action="store_true",
        help="run both daemons at once (each at --interval) instead of alternating windows",
    )
    ap.add_argument("--interval", type=float, default=2.0, help="scrape interval with --concurrent")
    ap.add_argument(
        "--constant-gauge",
        dest="vary_load",
        action="store_false",
        help="keep go_threads constant (by default it moves ±10 %% every second)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return asyncio.run(run(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

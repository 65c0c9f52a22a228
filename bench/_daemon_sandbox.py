"""Sandbox host for bench/daemon_scale.py: the sandbox cluster in its own process.

Starts `autoscalerd.sandbox.Sandbox` with W Deployments `app-0`… in namespace `bench`, P pods
each, every pod serving a ~20 KiB metrics-server-like page over HTTPS (self-signed) on its own
loopback address, load = target × pods (each pod reports the target: no scaling). Prints one
JSON line on stdout when everything is Ready (kubeconfig, control URL, workloads and their pod
URLs), then serves a plain-HTTP control endpoint `GET /stats` (scrapes served by the pods, API
requests, scale writes, open watches) until SIGTERM/SIGINT or `--duration` seconds.

`--histogram-buckets N` adds a histogram `ttft_seconds` of N buckets (the last `+Inf`) whose
counts grow with time on every pod (bench/daemon_signals.py).

`--hostile N` adds N Deployments `hostile-0`… of one plain-HTTP pod each whose endpoint does not
listen (a `refuse` pod fault): the pod has its loopback address, and bench/daemon_hostile.py
serves a misbehaving endpoint there itself (listed under "hostile" in the JSON line).

Usage: python bench/_daemon_sandbox.py --workdir DIR [--workloads 100] [--pods 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoscalerd.sandbox import MetricsEndpoint, Sandbox


def stats(sb: Sandbox) -> dict[str, Any]:
    pods = [p for wl in sb.workloads.values() for p in wl.pods.values()]
    # TLS handshakes the pods' endpoints completed: OpenSSL counts them per server context.
    contexts = {id(p._ssl): p._ssl for p in pods if p._ssl is not None}
    return {
        "tls_handshakes": sum(c.session_stats()["accept_good"] for c in contexts.values()),
        "time": time.time(),
        "pods": len(pods),
        "ready_pods": sum(1 for p in pods if p.ready),
        "pod_requests": sum(p.requests for p in pods),
        "api_requests": sb.api_request_count,
        "scale_writes": len(sb.scale_writes()),
        "open_watches": sb.open_watches,
        "replicas": {f"{ns}/{n}": sb.replicas(ns, n) for (ns, n) in sb.workloads},
    }


async def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    async with Sandbox(Path(args.workdir), ip_base=args.ip_base) as sb:
        tls = "plain" if args.plain else "self-signed"
        ep = MetricsEndpoint(
            port=args.port, path="/metrics", tls=tls, metric="go_threads",
            page_size_bytes=args.page_bytes,
        )  # fmt: skip
        for i in range(args.workloads):
            name = f"app-{i}"
            await sb.add_deployment("bench", name, args.pods, metrics=ep)
            sb.set_load("bench", name, "go_threads", args.target * args.pods)
            for j in range(args.histogram_buckets):  # bench/daemon_signals.py
                le = "+Inf" if j == args.histogram_buckets - 1 else f"{0.01 * 1.25**j:.4g}"
                rate = 10.0 * args.pods * min(1.0, (j + 1) / (args.histogram_buckets - 1))
                sb.set_counter_rate("bench", name, f'ttft_seconds_bucket{{le="{le}"}}', rate)
        hostile_ep = MetricsEndpoint(port=args.port, path="/metrics", tls="plain")
        for i in range(args.hostile):
            name = f"hostile-{i}"
            sb.faults.workload("bench", name, "refuse")  # its address is served by the bench
            await sb.add_deployment("bench", name, 1, metrics=hostile_ep)
            sb.set_load("bench", name, "go_threads", args.target)
        app = web.Application()

        async def handle_stats(request: web.Request) -> web.Response:
            return web.json_response(stats(sb))

        app.router.add_get("/stats", handle_stats)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        control_port = runner.addresses[0][1]
        sample = sb.pods("bench", "app-0")[0]
        page = sb.metrics_page(sample)
        info = {
            "ready": True,
            "setup_seconds": round(time.monotonic() - t0, 2),
            "kubeconfig": str(sb.kubeconfig_path),
            "control": f"http://127.0.0.1:{control_port}",
            "page_bytes": len(page.encode()),
            "workloads": [
                {
                    "namespace": wl.namespace,
                    "name": wl.name,
                    "pods": [p.url for p in sb.pods(wl.namespace, wl.name)],
                }
                for wl in sb.workloads.values()
                if not wl.name.startswith("hostile-")
            ],
            "hostile": [
                {"name": f"hostile-{i}", "ip": p.ip}
                for i in range(args.hostile)
                for p in sb.pods("bench", f"hostile-{i}")
            ],
        }
        print(json.dumps(info), flush=True)
        if args.vary_load:
            # The gauge moves every second (±10 %, each workload at its own phase), as a real
            # load metric does: a constant one lets the decision side skip work.
            async def vary() -> None:
                while True:
                    t = time.monotonic() - t0
                    for i in range(args.workloads):
                        swing = 1.0 + 0.1 * math.sin(2 * math.pi * t / 60 + i)
                        sb.set_load(
                            "bench", f"app-{i}", "go_threads", args.target * args.pods * swing
                        )
                    await asyncio.sleep(1.0)

            varying = asyncio.get_running_loop().create_task(vary())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        if args.vary_load:
            varying.cancel()
        await runner.cleanup()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--workloads", type=int, default=100)
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--port", type=int, default=10250)
    ap.add_argument("--page-bytes", type=int, default=20_000)
    ap.add_argument("--target", type=float, default=20.0)
    ap.add_argument("--plain", action="store_true", help="plain HTTP instead of self-signed TLS")
    ap.add_argument("--ip-base", default=None)
    ap.add_argument("--hostile", type=int, default=0, help="pods whose address the bench serves")
    ap.add_argument(
        "--histogram-buckets",
        type=int,
        default=0,
        help="add a counting histogram ttft_seconds with this many buckets to every pod",
    )
    ap.add_argument("--duration", type=float, default=600.0, help="stop after this long anyway")
    ap.add_argument("--vary-load", action="store_true", help="the gauge moves ±10 %% every second")
    args = ap.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

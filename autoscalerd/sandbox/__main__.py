"""``python -m autoscalerd.sandbox --workdir DIR [--duration S]``: start the seed scenario
(metrics-server Deployment in kube-system, self-signed TLS on 10250, go_threads) and
print the kubeconfig path, for manual experiments.

``--workloads N --pods M`` add N more Deployments ``app-0``… in namespace ``bench`` with
M pods each (for benchmarks); ``--info-file PATH`` writes what a client needs as JSON
(kubeconfig, API URL, CA files, and every workload's selector and pod URLs)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from .sandbox import MetricsEndpoint, Sandbox, TlsMode


def _info(sb: Sandbox) -> dict[str, Any]:
    return {
        "kubeconfig": str(sb.kubeconfig_path),
        "api_url": sb.api_url,
        "token_file": str(sb.token_file),
        "api_ca_file": str(sb.api_ca_file),
        "metrics_ca_file": str(sb.metrics_ca_file),
        "metrics_client_cert_file": str(sb.metrics_client_cert_file),
        "metrics_client_key_file": str(sb.metrics_client_key_file),
        "workloads": [
            {
                "kind": wl.kind,
                "namespace": wl.namespace,
                "name": wl.name,
                "selector": wl.selector,
                "server_name": wl.server_name,
                "token_file": str(wl.token_file) if wl.token_file else None,
                "pods": [p.url for p in sb.pods(wl.namespace, wl.name)],
            }
            for wl in sb.workloads.values()
        ],
    }


async def _run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="autoscalerd-sandbox-"))
    async with Sandbox(workdir, ip_base=args.ip_base) as sb:
        await sb.add_deployment(
            "kube-system",
            "metrics-server",
            replicas=args.replicas,
            labels={"k8s-app": "metrics-server"},
            metrics=MetricsEndpoint(port=10250, path="/metrics", tls="self-signed",
                                    metric="go_threads", page_size_bytes=20_000),
        )  # fmt: skip
        sb.set_load("kube-system", "metrics-server", "go_threads", args.load)
        for i in range(args.workloads):
            name = f"app-{i}"
            ep = MetricsEndpoint(
                port=10250, tls=args.tls, metric="go_threads", page_size_bytes=20_000
            )
            await sb.add_deployment("bench", name, args.pods, metrics=ep)
            sb.set_load("bench", name, "go_threads", args.load * args.pods)
        if args.info_file:
            Path(args.info_file).write_text(json.dumps(_info(sb), indent=2))
        print(f"kubeconfig: {sb.kubeconfig_path}")
        print(f"api server: {sb.api_url}  (token in {sb.token_file})")
        for pod in sb.pods("kube-system", "metrics-server"):
            print(f"pod {pod.name}: {pod.url}")
        if args.workloads:
            print(f"{args.workloads} workloads x {args.pods} pods in namespace bench")
        print(f"export KUBECONFIG={sb.kubeconfig_path}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoscalerd.sandbox", description=__doc__)
    parser.add_argument("--workdir", help="directory for kubeconfig and certificates")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--ip-base", default=None, help='pod addresses prefix, "127.X" or "127.X.Y"'
    )
    parser.add_argument("--replicas", type=int, default=1, help="metrics-server replicas")
    parser.add_argument("--load", type=float, default=20.0, help="go_threads demand per pod")
    parser.add_argument("--workloads", type=int, default=0, help="extra Deployments in 'bench'")
    parser.add_argument("--pods", type=int, default=10, help="pods per extra Deployment")
    tls_modes: list[TlsMode] = ["plain", "self-signed", "ca", "mtls"]
    parser.add_argument(
        "--tls", choices=tls_modes, default="self-signed", help="extra Deployments' TLS"
    )
    parser.add_argument("--info-file", help="write connection details as JSON here")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())

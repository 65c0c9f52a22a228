"""``python -m autoscalerd.sandbox --workdir DIR [--duration S]``: start the seed scenario
(metrics-server Deployment in kube-system, self-signed TLS on 10250, go_threads) and
print the kubeconfig path, for manual experiments."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path

from .sandbox import MetricsEndpoint, Sandbox


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
        print(f"kubeconfig: {sb.kubeconfig_path}")
        print(f"api server: {sb.api_url}  (token in {sb.token_file})")
        for pod in sb.pods("kube-system", "metrics-server"):
            print(f"pod {pod.name}: {pod.url}")
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
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--load", type=float, default=20.0, help="total go_threads demand")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())

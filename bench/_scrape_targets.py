"""Target fleet for bench/scrape_vs_prometheus.py: N HTTPS metric endpoints, one per loopback IP.

Runs in its own process so its CPU is not charged to either scraper. Serves the same ~20 KiB
metrics-server-like page on https://127.0.1.<i>:<port>/metrics with a self-signed certificate,
and a plain-HTTP control endpoint on 127.0.0.1:<control>/stats that reports, per User-Agent
product (`autoscalerd`, `Prometheus`), the requests served and the distinct client connections
seen (each new connection is one full TLS handshake: neither client resumes sessions here).

Usage: python bench/_scrape_targets.py CERT KEY --targets 200 --port 19443 --control 19080
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from collections import defaultdict
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scrape_pages import metrics_server_page


def target_ips(n: int) -> list[str]:
    """127.0.1.1 … then 127.0.2.1 …: one loopback address per target."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cert")
    ap.add_argument("key")
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--port", type=int, default=19443)
    ap.add_argument("--control", type=int, default=19080)
    args = ap.parse_args()
    body = metrics_server_page().encode()
    requests: dict[str, int] = defaultdict(int)
    connections: dict[str, set[tuple[str, int]]] = defaultdict(set)

    async def metrics(request: web.Request) -> web.Response:
        agent = request.headers.get("User-Agent", "?").split("/", 1)[0]
        requests[agent] += 1
        if request.transport is not None:
            connections[agent].add(request.transport.get_extra_info("peername")[:2])
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                agent: {"requests": requests[agent], "connections": len(connections[agent])}
                for agent in requests
            }
        )

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=True, access_log=None)
    await runner.setup()
    for ip in target_ips(args.targets):
        await web.TCPSite(runner, ip, args.port, ssl_context=ctx, backlog=256).start()
    control = web.Application()
    control.router.add_get("/stats", stats)
    control_runner = web.AppRunner(control, access_log=None)
    await control_runner.setup()
    await web.TCPSite(control_runner, "127.0.0.1", args.control).start()
    print(json.dumps({"ready": True, "page_bytes": len(body)}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

"""Our side of bench/scrape_vs_prometheus.py: the real `Scraper`, one round per interval.

Runs in its own process so the parent can read its CPU from /proc. Prints one JSON line per
round (values ok, failures, connections created so far) so the parent can report steady state.

Usage: python bench/_scrape_ours.py --targets 200 --port 19443 --interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _scrape_targets import target_ips

from autoscalerd.config.model import (
    DaemonConfig,
    MetricSource,
    SeriesSelector,
    TLSConfig,
)
from autoscalerd.scrape.client import Scraper, ScrapeTarget


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--port", type=int, default=19443)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--client", help="path of another client.py whose Scraper to run (A/B)")
    args = ap.parse_args()
    selector = SeriesSelector(metric="go_threads")
    source = MetricSource(
        protocol="https",
        port=args.port,
        path="/metrics",
        target_metric="go_threads",
        selector=selector,
        target_value=10.0,
        tls=TLSConfig(insecure_skip_verify=True),  # same as Prometheus's config in the bench
    )
    targets = [
        ScrapeTarget(pod=f"pod-{i}", ip=ip, source=source)
        for i, ip in enumerate(target_ips(args.targets))
    ]
    loop = asyncio.get_running_loop()
    scraper_class = Scraper
    if args.client:  # e.g. the previous aiohttp-based client, for a same-run before/after
        import importlib.util

        spec = importlib.util.spec_from_file_location("_scrape_ab_client", args.client)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        scraper_class = module.Scraper
    async with scraper_class(daemon=DaemonConfig()) as scraper:
        next_tick = loop.time()
        while True:
            outcomes = await scraper.scrape(targets, timeout=0.8 * args.interval)
            ok = sum(o.ok for o in outcomes)
            errors = sorted({o.error.kind.value for o in outcomes if o.error})
            print(
                json.dumps(
                    {
                        "t": time.time(),
                        "ok": ok,
                        "failed": len(outcomes) - ok,
                        "errors": errors,
                        "connections_created": scraper.stats.connections_created,
                        "requests": scraper.stats.requests,
                    }
                ),
                flush=True,
            )
            next_tick += args.interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

"""Standalone CPU measurement / profile of the `Scraper` against the bench target fleet.

Starts bench/_scrape_targets.py (own process, not counted), then in this process runs a
warm-up and N scrape rounds over all targets, either back to back or one per --interval, and
prints the process CPU seconds per scrape (time.process_time). With --profile it runs the
measured rounds under cProfile and prints the top functions by total and cumulative time.

Usage: .venv/bin/python bench/_scrape_profile.py [--targets 200] [--rounds 20] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _scrape_targets import target_ips
from scrape_vs_prometheus import write_cert

from autoscalerd.config.model import DaemonConfig, MetricSource, SeriesSelector, TLSConfig
from autoscalerd.scrape.client import Scraper, ScrapeTarget

HERE = Path(__file__).resolve().parent


def scraper_class(path: str | None) -> type[Scraper]:
    """`Scraper`, or the one defined in another copy of client.py (A/B against an old version)."""
    if path is None:
        return Scraper
    import importlib.util

    spec = importlib.util.spec_from_file_location("_scrape_ab_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    cls: type[Scraper] = module.Scraper
    return cls


async def run(args: argparse.Namespace) -> None:
    source = MetricSource(
        protocol="https",
        port=args.port,
        path="/metrics",
        target_metric="go_threads",
        selector=SeriesSelector(metric="go_threads"),
        target_value=10.0,
        tls=TLSConfig(insecure_skip_verify=True),
    )
    targets = [
        ScrapeTarget(pod=f"pod-{i}", ip=ip, source=source)  # same class in both versions
        for i, ip in enumerate(target_ips(args.targets))
    ]
    loop = asyncio.get_running_loop()
    async with scraper_class(args.client)(daemon=DaemonConfig()) as scraper:
        for _ in range(3):
            await scraper.scrape(targets, timeout=0.8 * args.interval)
        created = scraper.stats.connections_created
        profiler = cProfile.Profile() if args.profile else None
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = time.process_time()
        if profiler:
            profiler.enable()
        failed = 0
        next_tick = loop.time()
        for _ in range(args.rounds):
            outcomes = await scraper.scrape(targets, timeout=0.8 * args.interval)
            failed += sum(not o.ok for o in outcomes)
            if not args.back_to_back:
                next_tick += args.interval
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
        if profiler:
            profiler.disable()
        cpu = time.process_time() - cpu0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        user, system = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
        scrapes = args.rounds * len(targets)
        print(
            f"{scrapes} scrapes, {failed} failed, CPU {cpu:.3f}s, "
            f"{cpu / scrapes * 1e3:.4f} ms/scrape, new connections in window "
            f"{scraper.stats.connections_created - created}; user {user:.3f}s, system {system:.3f}s"
        )
        if profiler:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--back-to-back", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--client", help="path of another client.py to measure instead (A/B)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--port", type=int, default=19543)
    ap.add_argument("--control", type=int, default=19180)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scrape-prof-") as tmp:
        cert, key = write_cert(Path(tmp))
        fleet = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_scrape_targets.py"),
                cert,
                key,
                "--targets",
                str(args.targets),
                "--port",
                str(args.port),
                "--control",
                str(args.control),
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert fleet.stdout is not None
            if not json.loads(fleet.stdout.readline() or b"{}").get("ready"):
                raise SystemExit("fleet failed to start")
            asyncio.run(run(args))
        finally:
            fleet.terminate()
            fleet.wait(timeout=10)


if __name__ == "__main__":
    main()

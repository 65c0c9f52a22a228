"""Memory per kept-alive TLS connection of the scraper: RSS and tracemalloc before/after.

Starts the target fleet (`_scrape_targets.py`, N HTTPS endpoints on loopback IPs) in its own
process, then in this process scrapes all N once (N connections opened and kept alive), a few
more rounds, and reports the growth of RSS (VmRSS) and of Python allocations (tracemalloc)
per connection. `--http11 PATH` runs another copy of `scrape/http11.py` (e.g. the previous
one, `git show 2e4809b~1:autoscalerd/scrape/http11.py > /tmp/old_http11.py`) for an A/B.

Usage: python bench/_scrape_memory.py [--targets 1000] [--rounds 5] [--http11 PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _scrape_targets import target_ips  # noqa: E402


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(args: argparse.Namespace) -> dict[str, float]:
    from autoscalerd.config.model import DaemonConfig, MetricSource, SeriesSelector, TLSConfig
    from autoscalerd.scrape.client import Scraper, ScrapeTarget

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
        ScrapeTarget(pod=f"pod-{i}", ip=ip, source=source)
        for i, ip in enumerate(target_ips(args.targets))
    ]
    async with Scraper(daemon=DaemonConfig(max_concurrent_scrapes=args.targets)) as scraper:
        # One warm-up round on a single target: imports, caches, the shared buffers.
        await scraper.scrape(targets[:1], timeout=10)
        gc.collect()
        rss0 = rss_kib()
        tracemalloc.start()
        py0 = tracemalloc.get_traced_memory()[0]
        failed = 0
        for _ in range(args.rounds):
            outcomes = await scraper.scrape(targets, timeout=10)
            failed += sum(not o.ok for o in outcomes)
        gc.collect()
        py1 = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rss1 = rss_kib()
        if args.trim:  # what of the growth is freed-but-retained heap (glibc)
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        rss2 = rss_kib()
        conns = scraper._http.open_connections
        return {
            "connections": conns,
            "connections_created": scraper.stats.connections_created,
            "failed": failed,
            "rss_growth_mib": round((rss1 - rss0) / 1024, 1),
            "rss_kib_per_connection": round((rss1 - rss0) / max(1, conns - 1), 1),
            "rss_kib_per_connection_after_trim": round((rss2 - rss0) / max(1, conns - 1), 1),
            "python_kib_per_connection": round((py1 - py0) / 1024 / max(1, conns - 1), 2),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--port", type=int, default=19543)
    ap.add_argument("--control", type=int, default=19180)
    ap.add_argument("--trim", action="store_true", help="also report RSS after malloc_trim")
    ap.add_argument("--http11", help="path of another http11.py to run (A/B)")
    args = ap.parse_args()
    if args.http11:
        spec = importlib.util.spec_from_file_location("autoscalerd.scrape.http11", args.http11)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    import trustme

    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        ca.cert_pem.write_to_path(str(cert))
        ca.private_key_pem.write_to_path(str(key))
        fleet = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_scrape_targets.py"),
                str(cert),
                str(key),
                *("--targets", str(args.targets), "--port", str(args.port)),
                *("--control", str(args.control)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert fleet.stdout is not None
            fleet.stdout.readline()  # {"ready": true, ...}
            result = asyncio.run(run(args))
        finally:
            fleet.terminate()
            fleet.wait(timeout=10)
    result["http11"] = args.http11 or "autoscalerd/scrape/http11.py"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

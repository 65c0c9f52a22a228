"""In-process CPU of a derived signal's path vs a gauge's, on bench/daemon_signals.py's pages.

No sandbox, no sockets: the page shape of bench/_daemon_sandbox.py --histogram-buckets 30
(~21 KB, a 30-bucket `ttft_seconds` histogram whose counts grow) for 10 pods x N ticks, read
through exactly the daemon's code: `scrape/series.select_series` per page, then per tick
`daemon/signals.DerivedSignals.sample` (`scaling/signals.SignalState`); and the gauge path,
`scrape/parser.select_value` of `go_threads` on the same pages. Prints µs per scrape (best of
--repeat runs) and, with --profile, the top functions of the derived path.

Usage: .venv/bin/python bench/_signals_profile.py [--ticks 60] [--repeat 15] [--profile]
       [--fractional-counts]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import timeit
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoscalerd.config.signals import parse_target_metric
from autoscalerd.daemon.signals import DerivedSignals
from autoscalerd.sandbox.metrics_page import build_filler, render_series
from autoscalerd.scrape.parser import select_value
from autoscalerd.scrape.series import select_series

PODS = 10
BUCKETS = 30


def pages(ticks: int, *, fractional: bool = False) -> list[list[str]]:
    """Per tick, each pod's page (as bench/_daemon_sandbox.py renders it: whole bucket
    counts; `fractional`: the counter's 17-digit value, as the sandbox wrote it before)."""
    head, tail = build_filler(20_000, {"go_threads"})
    out = []
    for t in range(ticks):
        row = []
        for pod in range(PODS):
            counters = {}
            for j in range(BUCKETS):
                le = "+Inf" if j == BUCKETS - 1 else f"{0.01 * 1.25**j:.4g}"
                rate = 10.0 * min(1.0, (j + 1) / (BUCKETS - 1))
                counters[f'ttft_seconds_bucket{{le="{le}"}}'] = rate * (t + 1) * 1.0001 + pod * 0.37
            histogram = render_series(counters, kind="counter")
            if fractional:
                histogram = "".join(
                    f"{line.rpartition(' ')[0]} {counters[line.rpartition(' ')[0]]!r}\n"
                    if line.startswith("ttft")
                    else line + "\n"
                    for line in histogram.splitlines()
                )
            row.append(head + render_series({"go_threads": 20.0}) + histogram + tail)
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--fractional-counts",
        action="store_true",
        help="bucket counts as 17-digit fractions instead of whole numbers",
    )
    args = ap.parse_args()
    ticks = pages(args.ticks, fractional=args.fractional_counts)
    quantile = "histogram_quantile(0.95, ttft_seconds_bucket[10s])"
    qsel, qsig = parse_target_metric(quantile)
    gsel, _ = parse_target_metric("go_threads")
    source: Any = SimpleNamespace(signal=qsig)  # DerivedSignals reads only `signal`
    counted: list[Any] = [SimpleNamespace(name=f"pod-{i}") for i in range(PODS)]

    def gauge() -> None:
        for row in ticks:
            for text in row:
                select_value(text, gsel)

    def derived() -> None:
        signals = DerivedSignals([source])
        for t, row in enumerate(ticks):
            outcomes: list[Any] = []
            for text in row:
                _, series = select_series(text, qsel)
                outcomes.append(SimpleNamespace(error=None, series=series))
            signals.sample(0, float(t), counted, outcomes)

    scrapes = PODS * args.ticks
    print(f"page {len(ticks[0][0].encode())} B, {PODS} pods x {args.ticks} ticks")
    for label, fn in (("gauge (select_value)", gauge), ("derived (series + window)", derived)):
        best = min(timeit.repeat(fn, number=1, repeat=args.repeat))
        print(f"{label:26s} {1e6 * best / scrapes:7.1f} us per scrape")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(derived)
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())

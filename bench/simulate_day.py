"""Benchmark: `autoscalerd simulate` on a 24-hour, 1-second trace (86,400 rows) per strategy.

    .venv/bin/python bench/simulate_day.py                 # time KPA, APA and HPA
    .venv/bin/python bench/simulate_day.py --examples      # (re)write config/examples/traces/*

The trace is synthetic and deterministic (seeded): a diurnal demand curve with noise, bursts
and short gaps without data. Each run goes through `run_simulate` exactly as the CLI does
(CSV read and checked, every row decided, CSV written), so the figure is end to end.
The issue's bar is < 5 s for 86,400 rows.
"""

from __future__ import annotations

import argparse
import io
import math
import pathlib
import random
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscalerd.config.load import load_config  # noqa: E402
from autoscalerd.simulate import run_simulate  # noqa: E402

EXAMPLES = ROOT / "config" / "examples"
DAY_SECONDS = 86_400
BUDGET_SECONDS = 5.0
"""Issue 4: a day of 1 s ticks must simulate in under this."""
METRIC = "vllm:num_requests_running"


def day_demand(seed: int = 4) -> list[float | None]:
    """Running requests (total) for each second of a day: diurnal, noisy, bursty, with gaps."""
    rng = random.Random(seed)
    out: list[float | None] = []
    burst_until = -1
    burst = 0.0
    for t in range(DAY_SECONDS):
        base = 30 + 25 * math.sin(2 * math.pi * (t - 6 * 3600) / DAY_SECONDS)
        if t > burst_until and rng.random() < 1 / 3600:
            burst_until, burst = t + rng.randint(30, 300), rng.uniform(20, 60)
        value = max(0.0, base + (burst if t <= burst_until else 0.0) + rng.gauss(0, 3))
        out.append(None if rng.random() < 0.001 else round(value, 2))
    return out


def example_demand(kind: str) -> list[float | None]:
    """30 minutes of demand: ramp, a burst, a plateau, a drop (HPA: a 45 s scrape outage)."""
    rng = random.Random(kind)
    out: list[float | None] = []
    for t in range(1800):
        if t < 300:
            v = 10 + 30 * t / 300
        elif t < 600:
            v = 40
        elif t < 660:
            v = 90  # burst: KPA panics
        elif t < 1200:
            v = 30
        else:
            v = 6
        v = max(0.0, v + rng.gauss(0, 2))
        gap = kind == "hpa" and 1500 <= t < 1545
        out.append(None if gap else round(v, 1))
    return out


def write_trace(path: pathlib.Path, values: list[float | None]) -> None:
    with path.open("w") as f:
        f.write(f"time,{METRIC}\n")
        for t, v in enumerate(values):
            f.write(f"{t},{'' if v is None else v}\n")


def write_examples() -> None:
    for kind in ("kpa", "apa", "hpa"):
        path = EXAMPLES / "traces" / f"{kind}-demand.csv"
        write_trace(path, example_demand(kind))
        print(f"wrote {path.relative_to(ROOT)}")


def bench() -> int:
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        trace = pathlib.Path(tmp) / "day.csv"
        write_trace(trace, day_demand())
        print(f"trace: {DAY_SECONDS} rows, 1 s apart ({trace.stat().st_size / 1e6:.1f} MB)")
        for kind in ("kpa", "apa", "hpa"):
            config = load_config([str(EXAMPLES / f"{kind}-example.yaml")])
            out, err = io.StringIO(), io.StringIO()
            start = time.perf_counter()
            code = run_simulate(
                config,
                str(trace),
                output=None,
                plot=None,
                policy=None,
                pod_startup=20.0,
                stdout=out,
                stderr=err,
            )
            elapsed = time.perf_counter() - start
            worst = max(worst, elapsed)
            if code != 0:
                print(err.getvalue(), file=sys.stderr)
                return code
            rows = out.getvalue().count("\n") - 1
            print(
                f"{kind.upper()}: {rows} rows in {elapsed:.2f} s "
                f"({elapsed / rows * 1e6:.1f} µs/row)"
            )
    verdict = "OK" if worst < BUDGET_SECONDS else "TOO SLOW"
    print(f"slowest {worst:.2f} s, budget {BUDGET_SECONDS:.0f} s: {verdict}")
    return 0 if worst < BUDGET_SECONDS else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", action="store_true", help="write the example traces")
    args = parser.parse_args()
    if args.examples:
        write_examples()
        return 0
    return bench()


if __name__ == "__main__":
    raise SystemExit(main())

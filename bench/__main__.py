"""Run the benchmarks (`python -m bench`, what `make bench` runs).

    python -m bench                      every benchmark, quick mode (short windows)
    python -m bench --list               names, what they measure, quick arguments
    python -m bench NAME [NAME…]         only these (quick mode)
    python -m bench --full NAME          the script's own defaults (the figures in the READMEs)
    python -m bench NAME -- ARGS…        quick arguments replaced by ARGS (one NAME only)

Each benchmark runs as its own process (`python bench/<name>.py …`) with a time limit; a
failing one (non-zero exit: a goal not met, or an error) does not stop the others, and the
exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    quick: tuple[str, ...]
    limit: float
    """Seconds before the run is stopped (quick mode; full mode gets 10×)."""


BENCHES = [
    Bench(
        "parser_vs_prometheus_client",
        "exposition parser vs prometheus_client's (README-scrape.md)",
        ("--seconds", "0.5"),
        120,
    ),
    Bench(
        "simulate_day",
        "a day at 1 s through `simulate`, per strategy (README-scaling.md)",
        (),
        120,
    ),
    Bench(
        "scrape_vs_prometheus",
        "Scraper vs Prometheus CPU per scrape, 200 HTTPS targets (README-scrape.md)",
        ("--seconds", "10", "--warmup", "5"),
        120,
    ),
    Bench(
        "daemon_reaction",
        "real daemon: load step 3.5x -> /scale write, HTTPS and HTTP (README-daemon.md)",
        ("--runs", "3"),
        240,
    ),
    Bench(
        "daemon_scale",
        "real daemon, 100 policies x 10 HTTPS pods vs Prometheus (README-daemon.md)",
        ("--warmup", "10", "--seconds", "20"),
        300,
    ),
    Bench(
        "daemon_hostile",
        "real daemon, 1,000 healthy + 20 hostile pods: peak RSS, CPU per healthy scrape",
        ("--warmup", "10", "--seconds", "20"),
        300,
    ),
    Bench(
        "daemon_podautoscalers",
        "real daemon, the same policies as PodAutoscaler objects vs a file: status writes, API requests per tick, CPU",
        ("--objects", "20", "--warmup", "3", "--seconds", "5"),
        240,
    ),
    Bench(
        "daemon_history",
        "real daemon, 100 policies x 10 pods: /history buffers off vs on vs an open /ui (README-daemon.md)",
        ("--warmup", "5", "--seconds", "15"),
        420,
    ),
    Bench(
        "sources_resource_requests",
        "real daemon, 100 resource (cpu) policies x 10 pods: PodMetrics lists per tick",
        ("--workloads", "20", "--pods", "3", "--warmup", "3", "--seconds", "5"),
        180,
    ),
    Bench(
        "daemon_signals",
        "real daemon, 100 policies x 10 pods: histogram_quantile (30 buckets) vs gauge CPU per scrape",
        ("--warmup", "5", "--seconds", "15", "--rounds", "1"),
        300,
    ),
    Bench(
        "daemon_starved",
        "real daemon, 100 policies x 10 HTTPS pods starved of CPU: timeouts, handshakes, recovery",
        ("--warmup", "5", "--calm", "5", "--starve", "10", "--after", "10"),
        300,
    ),
]
BY_NAME = {b.name: b for b in BENCHES}


def run(bench: Bench, args: list[str], limit: float) -> tuple[int | None, float]:
    cmd = [sys.executable, str(HERE / f"{bench.name}.py"), *args]
    print(f"\n=== {bench.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=HERE.parent)
    try:
        code: int | None = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"=== {bench.name}: stopped after {limit:g} s", flush=True)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        code = None
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    return code, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] | None = None
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--full", action="store_true", help="the scripts' default (long) settings")
    args = ap.parse_args(argv)
    if args.list:
        for b in BENCHES:
            print(f"{b.name:30} {b.what}")
            print(f"{'':30} quick: {' '.join(b.quick) or '(defaults)'}")
        return 0
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; see --list")
    if extra is not None and len(args.names) != 1:
        ap.error("arguments after -- need exactly one NAME")
    chosen = [BY_NAME[n] for n in args.names] or BENCHES
    results = []
    for b in chosen:
        bench_args = extra if extra is not None else ([] if args.full else list(b.quick))
        limit = b.limit * (10 if args.full or extra is not None else 1)
        results.append((b.name, *run(b, bench_args, limit)))
    print("\n=== summary")
    for name, code, seconds in results:
        verdict = "ok" if code == 0 else "stopped (time limit)" if code is None else f"exit {code}"
        print(f"{name:30} {verdict:22} {seconds:6.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())

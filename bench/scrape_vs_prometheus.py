"""Benchmark: CPU per scrape of autoscalerd's Scraper vs Prometheus, side by side.

Starts, each in its own process:
- the target fleet (bench/_scrape_targets.py): N HTTPS endpoints on N loopback addresses
  (127.0.1.1, 127.0.1.2, …), self-signed certificate, a ~20 KiB metrics-server-like page;
- our scraper (bench/_scrape_ours.py): the real `Scraper`, one round per interval;
- Prometheus (Debian package `prometheus`), `scrape_interval` = the interval,
  `tls_config.insecure_skip_verify: true` (ours is configured the same way).

After a warm-up it reads both scrapers' CPU (utime+stime from /proc/<pid>/stat, all threads)
and the fleet's per-client counters (requests served, distinct TCP+TLS connections), waits the
measurement window, reads them again and prints CPU seconds per scrape, the ratio, and the TLS
handshakes made during the window (steady state; goal 0).

Run: .venv/bin/python bench/scrape_vs_prometheus.py [--targets 200] [--seconds 40] [--warmup 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _prometheus import prometheus_config

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def fleet_stats(control: int) -> dict[str, dict[str, int]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{control}/stats", timeout=5) as resp:
        result: dict[str, dict[str, int]] = json.load(resp)
    return result


def write_cert(directory: Path) -> tuple[str, str]:
    """A self-signed certificate (a trustme CA's own, like metrics-server's generated one)."""
    import trustme

    ca = trustme.CA()
    cert, key = directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(cert))
    ca.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=40.0, help="measurement window")
    ap.add_argument("--warmup", type=float, default=10.0, help="excluded start-up period")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--port", type=int, default=19443)
    ap.add_argument("--control", type=int, default=19080)
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument(
        "--client",
        help="run the Scraper of another client.py as 'ours' (e.g. an old version, for A/B)",
    )
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from _scrape_targets import target_ips

    ips = target_ips(args.targets)
    have_prometheus = Path(args.prometheus).exists()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="scrape-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cert, key = write_cert(tmp)
        try:
            fleet = subprocess.Popen(
                [
                    PYTHON,
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
            procs["fleet"] = fleet
            assert fleet.stdout is not None
            ready = json.loads(fleet.stdout.readline() or b"{}")
            if not ready.get("ready"):
                print("target fleet failed to start", file=sys.stderr)
                return 1
            print(
                f"fleet: {args.targets} HTTPS targets on 127.0.1.x:{args.port}, "
                f"page {ready['page_bytes'] / 1024:.1f} KiB, self-signed; interval "
                f"{args.interval:g}s; warm-up {args.warmup:g}s, window {args.seconds:g}s"
            )
            procs["ours"] = subprocess.Popen(
                [
                    PYTHON,
                    str(HERE / "_scrape_ours.py"),
                    "--targets",
                    str(args.targets),
                    "--port",
                    str(args.port),
                    "--interval",
                    str(args.interval),
                    *(["--client", args.client] if args.client else []),
                ],
                stdout=subprocess.PIPE,
            )
            if have_prometheus:
                config = tmp / "prometheus.yml"
                prometheus_config(config, [f"{ip}:{args.port}" for ip in ips], args.interval)
                procs["prometheus"] = subprocess.Popen(
                    [
                        args.prometheus,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp / 'data'}",
                        "--web.listen-address=127.0.0.1:19090",
                        "--log.level=warn",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=open(tmp / "prometheus.log", "wb"),  # noqa: SIM115
                )
            else:
                print(
                    f"PROMETHEUS NOT FOUND at {args.prometheus}: install the Debian package "
                    "`prometheus` (apt-get install -y prometheus); measuring ours only."
                )
            time.sleep(args.warmup)
            scrapers = [n for n in ("ours", "prometheus") if n in procs]
            for name in scrapers:
                if procs[name].poll() is not None:
                    print(f"{name} exited early with {procs[name].returncode}", file=sys.stderr)
                    return 1
            cpu0 = {n: cpu_seconds(procs[n].pid) for n in scrapers}
            fleet_cpu0 = cpu_seconds(fleet.pid)
            stats0 = fleet_stats(args.control)
            time.sleep(args.seconds)
            cpu1 = {n: cpu_seconds(procs[n].pid) for n in scrapers}
            fleet_cpu1 = cpu_seconds(fleet.pid)
            stats1 = fleet_stats(args.control)
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        ours_out = procs["ours"].stdout.read().decode().splitlines() if procs["ours"].stdout else []

    agents = {"ours": "autoscalerd", "prometheus": "Prometheus"}
    print()
    print(
        f"{'scraper':12} {'scrapes':>8} {'CPU s':>8} {'CPU ms/scrape':>14} "
        f"{'CPU % of a core':>16} {'new TLS conns':>14}"
    )
    per_scrape: dict[str, float] = {}
    for name in scrapers:
        agent = agents[name]
        s0 = stats0.get(agent, {"requests": 0, "connections": 0})
        s1 = stats1.get(agent, {"requests": 0, "connections": 0})
        scrapes = s1["requests"] - s0["requests"]
        cpu = cpu1[name] - cpu0[name]
        handshakes = s1["connections"] - s0["connections"]
        per_scrape[name] = cpu / scrapes if scrapes else float("nan")
        print(
            f"{name:12} {scrapes:8d} {cpu:8.2f} {per_scrape[name] * 1e3:14.3f} "
            f"{100 * cpu / args.seconds:15.1f}% {handshakes:14d}"
        )
    print(f"{'(fleet)':12} {'':8} {fleet_cpu1 - fleet_cpu0:8.2f}   target servers, not counted")
    rounds = [json.loads(line) for line in ours_out if line.startswith("{")]
    failed = sum(r["failed"] for r in rounds)
    print(
        f"ours: {len(rounds)} rounds, {failed} failed scrapes in total "
        f"{sorted({e for r in rounds for e in r['errors']})}"
    )
    if "prometheus" in per_scrape:
        ratio = per_scrape["ours"] / per_scrape["prometheus"]
        print(
            f"ratio ours/Prometheus CPU per scrape: {ratio:.3f}× (goal ≤ 0.25×): "
            f"{'PASS' if ratio <= 0.25 else 'FAIL'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

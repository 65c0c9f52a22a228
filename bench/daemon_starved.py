"""Benchmark: the daemon starved of CPU for a while, and how it comes back (late answers).

100 KPA policies × 10 HTTPS pods (self-signed, ~20 KiB pages), 1 s interval, the real daemon
against the benchmark sandbox on the same machine. After a warm-up, three phases:

- **calm** (--calm seconds): nothing else runs;
- **starved** (--starve seconds): it begins with the pods (the sandbox process) stopped
  (SIGSTOP) for --pause seconds, as an overloaded endpoint, a node under pressure or a long GC
  pause would: every scrape in flight passes its 0.8 s deadline at once; and --hogs busy
  processes (`while True: pass`) compete for the CPU for the whole phase;
- **after** (--after seconds): the hogs are gone.

Every --slot seconds it reads the daemon's `autoscalerd_scrapes_total` (by result) and the TLS
handshakes the pods' endpoints completed (OpenSSL's server-side count in the sandbox), and
prints per slot and per phase: scrapes, the share that succeeded, timeouts, handshakes per
second, and the daemon's CPU. The question: does a moment of starvation turn into a spiral of
handshakes and timeouts that outlives it? "recovered" is the first slot after the hogs stop
whose scrapes all but 1 % succeeded, and its handshakes.

Compare two trees on the same sandbox and benchmark code with BENCH_DAEMON_TREE=<checkout>
(the daemon runs from there).

Run: .venv/bin/python bench/daemon_starved.py [--policies 100] [--pods 10] [--hogs 2] [--pause 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_common import (
    DAEMON_CONFIG_1S,
    PYTHON,
    REPO,
    DaemonProcess,
    cpu_seconds,
    sum_counter,
)
from daemon_signals import policies_yaml, start_sandbox

HOG = "while True: pass"


async def sandbox_stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, timeout=30) as response:
        return await response.json()  # type: ignore[no-any-return]


async def sample(daemon: DaemonProcess, stats_url: str) -> dict[str, float]:
    _, metrics = await daemon.get("/metrics", timeout=30.0)
    sandbox = await sandbox_stats(stats_url)
    return {
        "time": time.monotonic(),
        "cpu": cpu_seconds(daemon.pid),
        "scrapes": sum_counter(metrics, "autoscalerd_scrapes_total"),
        "ok": sum_counter(metrics, "autoscalerd_scrapes_total", result="ok"),
        "timeouts": sum_counter(metrics, "autoscalerd_scrapes_total", result="timeout"),
        "handshakes": float(sandbox["tls_handshakes"]),
    }


def delta(a: dict[str, float], b: dict[str, float], phase: str) -> dict[str, Any]:
    seconds = b["time"] - a["time"]
    scrapes = b["scrapes"] - a["scrapes"]
    return {
        "phase": phase,
        "seconds": round(seconds, 1),
        "scrapes": int(scrapes),
        "ok_fraction": round((b["ok"] - a["ok"]) / scrapes, 4) if scrapes else None,
        "timeouts": int(b["timeouts"] - a["timeouts"]),
        "handshakes_per_s": round((b["handshakes"] - a["handshakes"]) / seconds, 1),
        "daemon_cpu_percent": round(100 * (b["cpu"] - a["cpu"]) / seconds, 1),
    }


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-starved-"))
    args.buckets = 0
    args.vary_load = False
    args.seconds = args.calm + args.starve + args.after
    proc, info = await start_sandbox(args, tmp)
    hogs: list[asyncio.subprocess.Process] = []
    slots: list[dict[str, Any]] = []
    try:
        stats_url = info["control"] + "/stats"
        print(f"daemon tree: {REPO}")
        print(f"sandbox ready: {args.policies} x {args.pods} pods, page {info['page_bytes']} B")
        config = tmp / "policies.yaml"
        config.write_text(
            DAEMON_CONFIG_1S + "---\n" + policies_yaml(args.policies, args.pods, "go_threads", 1e9)
        )
        daemon = await DaemonProcess.start(info["kubeconfig"], [config], tmp / "daemon.log")
        try:
            await daemon.wait_ready()
            await asyncio.sleep(args.warmup)
            marks: dict[str, dict[str, float]] = {}
            last = await sample(daemon, stats_url)
            print(f"after the warm-up: {last['handshakes']:.0f} TLS handshakes so far")
            phases = [("calm", args.calm), ("starved", args.starve), ("after", args.after)]
            for phase, seconds in phases:
                if phase == "starved":
                    hogs = [
                        await asyncio.create_subprocess_exec(PYTHON, "-c", HOG)
                        for _ in range(args.hogs)
                    ]
                    if args.pause > 0:
                        os.kill(proc.pid, signal.SIGSTOP)
                        await asyncio.sleep(args.pause)
                        os.kill(proc.pid, signal.SIGCONT)
                if phase == "after":
                    for hog in hogs:
                        hog.kill()
                        await hog.wait()
                    hogs = []
                marks[phase] = last
                end = time.monotonic() + seconds
                while time.monotonic() < end - 0.5:
                    await asyncio.sleep(min(args.slot, end - time.monotonic()))
                    now = await sample(daemon, stats_url)
                    slot = delta(last, now, phase)
                    slots.append(slot)
                    print("slot:", json.dumps(slot))
                    last = now
            marks["end"] = last
        finally:
            await daemon.stop()
    finally:
        for hog in hogs:
            with contextlib.suppress(ProcessLookupError):
                hog.kill()
            await hog.wait()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()
    names = ["calm", "starved", "after", "end"]
    for a, b in itertools.pairwise(names):
        print("phase:", json.dumps(delta(marks[a], marks[b], a)))
    after = [s for s in slots if s["phase"] == "after"]
    recovered = next(
        (i for i, s in enumerate(after) if s["ok_fraction"] and s["ok_fraction"] >= 0.99), None
    )
    print(
        json.dumps(
            {
                "recovered_after_s": None if recovered is None else round(args.slot * recovered, 1),
                "handshakes_per_s_in_last_after_slot": after[-1]["handshakes_per_s"]
                if after
                else None,
            }
        )
    )
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--hogs", type=int, default=2, help="busy processes while starved")
    ap.add_argument("--pause", type=float, default=1.5, help="SIGSTOP the pods this long")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--calm", type=float, default=15.0)
    ap.add_argument("--starve", type=float, default=30.0)
    ap.add_argument("--after", type=float, default=30.0)
    ap.add_argument("--slot", type=float, default=5.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

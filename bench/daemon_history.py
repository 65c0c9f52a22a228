"""Benchmark: what the /history ring buffers (and an open /ui page) cost the daemon (issue 15).

The same sandbox as bench/daemon_scale.py (100 KPA policies x 10 HTTPS pods, 1 s interval),
then the real `autoscalerd run` three times in turn against it, each measured over the same
window after a warm-up, from /proc (CPU utime+stime, VmRSS, VmHWM):

- `off`: `--history-seconds 0` (no buffers);
- `on`: `--history-seconds 3600` (the default: one hour, allocated in full at the first tick,
  so RSS shows the whole bound at once);
- `on+ui`: as `on`, with this driver doing what one open /ui page does every interval
  (`GET /status` and `GET /history?seconds=…` of every policy), after one full-hour
  `GET /history` (the page's first load), whose time and size are reported too.

Prints CPU (% of a core and ms per tick), RSS and peak RSS per mode and the differences to
`off`; the expected buffer size is policies x 3,600 x 9 bytes. A run is shorter than the
hour, so the page's first load above carries only the minutes recorded; a full hour is
measured in-process too (`full_hour_render`): the snapshot that runs on the event loop, the
rendering to JSON (the daemon runs it on the loop, in ~5 ms slices between which the ticks
run), and the answer's size. Exit 1 when a goal of the
daemon benchmark is missed: every policy every interval (late ticks ≤ 1 %) and peak RSS
≤ 250 MiB.

Run: .venv/bin/python bench/daemon_history.py [--policies 100] [--pods 10] [--warmup 15]
     [--seconds 60] [--modes off,on,on+ui]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_common import (
    DAEMON_CONFIG_1S,
    DaemonProcess,
    cpu_seconds,
    memory_mib,
    policy_yaml,
)
from daemon_scale import NS, start_sandbox

MODES = ("off", "on", "on+ui")
HISTORY_POINT_BYTES = 9
"""One point of a one-metric policy (autoscalerd/server/history.py)."""


async def page_load(url: str, timeout: float = 60.0) -> dict[str, Any]:
    """The page's first /history: every policy, the whole buffer."""
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
        http.get(url + "/history") as resp,
    ):
        body = await resp.read()
        status = resp.status
    return {"status": status, "seconds": time.monotonic() - t0, "bytes": len(body)}


async def open_page(url: str, stop: asyncio.Event, interval: float = 1.0) -> int:
    """What an open /ui page does every interval; returns the refreshes made."""
    n = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while not stop.is_set():
            t0 = time.monotonic()
            for path in ("/status", f"/history?seconds={3 * interval + 1:g}"):
                async with http.get(url + path) as resp:
                    await resp.read()
            n += 1
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - t0)))
            except TimeoutError:
                pass
    return n


def full_hour_render(policies: int) -> dict[str, float]:
    """Time `/history` of every policy over a full hour of points, in this process."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from autoscalerd.server.history import HistoryStore, Point

    store = HistoryStore(3600)
    keys = [f"{NS}/app-{i}" for i in range(policies)]
    store.sync(keys)
    for key in keys:
        for t in range(3600):
            point = Point(values=(20.0 + t % 7,), ready=10, desired=10 + t % 3, panic=t % 50 < 5)
            store.record(key, float(t), interval=1.0, names=["go_threads"], targets=[20.0],
                         point=point)  # fmt: skip
    t0 = time.perf_counter()
    snaps = [store.snapshot(k, now=3599.5, seconds=3600) for k in keys]
    t1 = time.perf_counter()
    body = json.dumps({"policies": [s.render(0.0) for s in snaps if s is not None]},
                      separators=(",", ":"))  # fmt: skip
    t2 = time.perf_counter()
    return {
        "policies": policies,
        "snapshot_ms_on_the_loop": round(1e3 * (t1 - t0), 1),
        "render_json_ms": round(1e3 * (t2 - t1), 1),
        "answer_mib": round(len(body) / 2**20, 2),
        "buffers_mib": round(store.nbytes() / 2**20, 2),
    }


async def run_mode(
    mode: str, args: argparse.Namespace, kubeconfig: str, policies: Path, tmp: Path
) -> dict[str, Any]:
    seconds = "0" if mode == "off" else "3600"
    daemon = await DaemonProcess.start(
        kubeconfig,
        [policies],
        tmp / f"daemon-{mode}.log",
        extra_args=("--history-seconds", seconds),
    )
    out: dict[str, Any] = {"mode": mode}
    try:
        await daemon.wait_ready(timeout=120)
        await daemon.wait_ticks(2, timeout=120)
        await asyncio.sleep(args.warmup)
        stop = asyncio.Event()
        page: asyncio.Task[int] | None = None
        if mode == "on+ui":
            out["first_page_load"] = await page_load(daemon.url)
            page = asyncio.get_running_loop().create_task(open_page(daemon.url, stop))
        s0 = await daemon.status()
        c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        c1, t1 = cpu_seconds(daemon.pid), time.monotonic()
        s1 = await daemon.status()
        stop.set()
        if page is not None:
            out["page_refreshes"] = await page
        before = {(p["namespace"], p["name"]): p for p in s0["policies"]}
        ticks = late = 0
        for p in s1["policies"]:
            b = before[(p["namespace"], p["name"])]
            ticks += p["ticks"] - b["ticks"]
            late += p["late_ticks"] - b["late_ticks"]
        window = t1 - t0
        out.update(
            {
                "window_seconds": round(window, 1),
                "ticks_per_policy_per_second": round(ticks / len(s1["policies"]) / window, 3),
                "late_fraction": round(late / ticks, 4) if ticks else None,
                "cpu_percent_of_a_core": round(100 * (c1 - c0) / window, 1),
                "cpu_ms_per_tick": round(1e3 * (c1 - c0) / ticks, 3) if ticks else None,
                **{k: round(v, 1) for k, v in memory_mib(daemon.pid).items()},
            }
        )
        if daemon.proc.returncode is not None:
            raise RuntimeError(f"daemon exited:\n{daemon.log_tail()}")
    finally:
        await daemon.stop()
    return out


def print_results(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    expected = args.policies * 3600 * HISTORY_POINT_BYTES / 2**20
    print(f"\n== {args.policies} policies x {args.pods} pods, window {args.seconds:g} s ==")
    print(f"expected history buffers: {expected:.1f} MiB (policies x 3,600 x 9 bytes)")
    print(f"{'mode':8} {'CPU % core':>10} {'ms/tick':>8} {'RSS MiB':>8} {'peak MiB':>9} "
          f"{'ticks/p/s':>9} {'late %':>7}")  # fmt: skip
    base = next((r for r in results if r["mode"] == "off"), None)
    for r in results:
        late = r["late_fraction"]
        print(
            f"{r['mode']:8} {r['cpu_percent_of_a_core']:>10} {r['cpu_ms_per_tick']:>8} "
            f"{r.get('VmRSS', 0):>8} {r.get('VmHWM', 0):>9} "
            f"{r['ticks_per_policy_per_second']:>9} {100 * late if late is not None else '-':>7}"
        )
    if base is not None:
        for r in results:
            if r is base:
                continue
            print(
                f"{r['mode']} - off: CPU {r['cpu_percent_of_a_core'] - base['cpu_percent_of_a_core']:+.1f}"
                f" % of a core, RSS {r.get('VmRSS', 0) - base.get('VmRSS', 0):+.1f} MiB"
            )
    for r in results:
        if "first_page_load" in r:
            f = r["first_page_load"]
            print(
                f"first page load (GET /history, every policy, whole buffer): HTTP {f['status']},"
                f" {f['seconds'] * 1e3:.0f} ms, {f['bytes'] / 1024:.0f} KiB;"
                f" then {r['page_refreshes']} refreshes"
            )


async def amain(args: argparse.Namespace) -> int:
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}; choose from {MODES}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="daemon-history-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox, info = await start_sandbox(args, tmp)
        try:
            policies = tmp / "policies.yaml"
            policies.write_text(
                DAEMON_CONFIG_1S
                + "".join(
                    "---\n" + policy_yaml(name=w["name"], namespace=NS, target=w["name"],
                                          max_replicas=args.pods * 2)
                    for w in info["workloads"]
                )
            )  # fmt: skip
            for mode in modes:
                r = await run_mode(mode, args, info["kubeconfig"], policies, tmp)
                print(json.dumps(r), flush=True)
                results.append(r)
        finally:
            if sandbox.returncode is None:
                sandbox.terminate()
                await sandbox.wait()
    print_results(results, args)
    ok = all((r["late_fraction"] or 0) <= 0.01 and r.get("VmHWM", 0) <= 250 for r in results)
    full = full_hour_render(args.policies)
    print(
        f"full hour of {full['policies']} policies: /history snapshot {full['snapshot_ms_on_the_loop']}"
        f" ms on the loop, render + JSON {full['render_json_ms']} ms (on the loop, in slices),"
        f" {full['answer_mib']} MiB answer; buffers {full['buffers_mib']} MiB"
    )
    print(f"goals (late ticks ≤ 1 %, peak RSS ≤ 250 MiB): {'PASS' if ok else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"modes": results, "full_hour": full}, indent=2))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--pods", type=int, default=10, help="pods per policy")
    ap.add_argument("--page-bytes", type=int, default=20_000)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement window per mode")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, in this order")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    args.max_runtime = 600 + 3 * len(MODES) * (args.warmup + args.seconds)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())

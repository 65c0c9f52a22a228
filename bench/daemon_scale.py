"""Benchmark: the real daemon at scale, side by side with Prometheus (issue 5, "Numbers").

100 KPA policies × 10 pods = 1,000 HTTPS metric endpoints (self-signed certificate, ~20 KiB
metrics-server-like page) in the sandbox, 1 s scrape interval. Three processes besides this
driver, each measured from /proc:

- the sandbox host (bench/_daemon_sandbox.py): API server + 1,000 pod endpoints;
- `autoscalerd run` with the 100 policies (`tlsConfig.insecureSkipVerify: true`);
- Prometheus (Debian package), scraping the same 1,000 endpoints at 1 s with
  `insecure_skip_verify: true`, at the same time as the daemon (side by side, default; it
  starts half a warm-up after the daemon so that the 2,000 first TLS handshakes do not land
  in the same second) or, with `--sequential`, in a second window after the daemon stopped.

After the warm-up it reads, at the start and the end of the window: CPU (utime+stime) of each
process and of the whole machine (/proc/stat), the daemon's /status (`ticks`, `late_ticks` per
policy) and /metrics (`autoscalerd_tick_lag_seconds`, `autoscalerd_scrapes_total`,
`autoscalerd_decisions_total`), Prometheus' own scrape counter, and the sandbox's count of
scrapes served. Prints ticks per policy per second (goal ≈ 1.0), the late fraction (a tick
that starts > 10 % of the interval after its slot; goal: lag ≤ 10 %), CPU per scrape of both
and their ratio (goal ≤ 0.3×), the daemon's RSS (goal ≤ 250 MiB) and the sandbox's CPU.

Run: .venv/bin/python bench/daemon_scale.py [--policies 100] [--pods 10] [--warmup 15]
     [--seconds 60] [--sequential] [--no-prometheus]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import statistics
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
    DaemonProcess,
    cpu_seconds,
    free_port,
    memory_mib,
    parse_histogram,
    policy_yaml,
    sum_counter,
)
from _prometheus import prometheus_config

HERE = Path(__file__).resolve().parent
NS = "bench"


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


async def http_get(url: str, timeout: float = 30.0) -> str:
    t0 = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url) as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RuntimeError(f"GET {url}: {exc!r} after {time.monotonic() - t0:.1f} s") from exc
    if time.monotonic() - t0 > 1:
        print(f"  (slow answer: GET {url} took {time.monotonic() - t0:.1f} s)")
    return text


class Snapshot:
    """What is read at one edge of the measurement window."""

    def __init__(self) -> None:
        self.t = 0.0
        self.cpu: dict[str, float] = {}
        self.machine = (0.0, 0.0)
        self.status: dict[str, Any] = {}
        self.metrics = ""
        self.prom_metrics = ""
        self.sandbox: dict[str, Any] = {}


async def snapshot(
    pids: dict[str, int], daemon: DaemonProcess | None, prom_url: str | None, control: str
) -> Snapshot:
    s = Snapshot()
    s.t = time.monotonic()
    s.cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    s.machine = machine_cpu()
    jobs = [http_get(control + "/stats")]
    if daemon is not None:
        jobs += [http_get(daemon.url + "/status"), http_get(daemon.url + "/metrics")]
    if prom_url is not None:
        jobs.append(http_get(prom_url + "/metrics"))
    texts = await asyncio.gather(*jobs)
    s.sandbox = json.loads(texts[0])
    if daemon is not None:
        s.status, s.metrics = json.loads(texts[1]), texts[2]
    if prom_url is not None:
        s.prom_metrics = texts[-1]
    return s


def prom_scrapes(text: str) -> float:
    """Scrapes Prometheus made: one `interval_length` observation per scrape after a target's
    first, plus the targets (their first scrape), approximated by the summary's count."""
    return sum_counter(text, "prometheus_target_interval_length_seconds_count")


def report(
    s0: Snapshot, s1: Snapshot, args: argparse.Namespace, names: list[str], mem: dict[str, Any]
) -> dict[str, Any]:
    """Print the window's figures; returns them."""
    window = s1.t - s0.t
    out: dict[str, Any] = {"window_seconds": round(window, 1)}
    cpu = {n: s1.cpu[n] - s0.cpu[n] for n in names}
    busy = (s1.machine[0] - s0.machine[0]) / max(1.0, s1.machine[1] - s0.machine[1])
    served = s1.sandbox["pod_requests"] - s0.sandbox["pod_requests"]
    scrapes: dict[str, float] = {}
    if "daemon" in names:
        ticks0 = {(p["namespace"], p["name"]): p for p in s0.status["policies"]}
        rates, late, total_ticks = [], 0, 0
        for p in s1.status["policies"]:
            before = ticks0[(p["namespace"], p["name"])]
            d = p["ticks"] - before["ticks"]
            rates.append(d / window)
            total_ticks += d
            late += p["late_ticks"] - before["late_ticks"]
        b0, _, c0 = parse_histogram(s0.metrics, "autoscalerd_tick_lag_seconds")
        b1, sum1, c1 = parse_histogram(s1.metrics, "autoscalerd_tick_lag_seconds")
        _, sum0, _ = parse_histogram(s0.metrics, "autoscalerd_tick_lag_seconds")
        lag_n = c1 - c0
        within = {
            le: (n1 - n0) / lag_n if lag_n else math.nan
            for (le, n1), (_, n0) in zip(b1, b0, strict=False)
        }
        ok = sum_counter(s1.metrics, "autoscalerd_scrapes_total", result="ok") - sum_counter(
            s0.metrics, "autoscalerd_scrapes_total", result="ok"
        )
        all_scrapes = sum_counter(s1.metrics, "autoscalerd_scrapes_total") - sum_counter(
            s0.metrics, "autoscalerd_scrapes_total"
        )
        no_data = sum_counter(s1.metrics, "autoscalerd_decisions_total", reason="no-data") - (
            sum_counter(s0.metrics, "autoscalerd_decisions_total", reason="no-data")
        )
        scrapes["daemon"] = all_scrapes
        out["daemon"] = {
            "policies": len(rates),
            "ticks_per_policy_per_second": {
                "min": round(min(rates), 3),
                "median": round(statistics.median(rates), 3),
                "max": round(max(rates), 3),
                "mean": round(total_ticks / len(rates) / window, 3),
            },
            "late_fraction": round(late / total_ticks, 4) if total_ticks else math.nan,
            "tick_lag_mean_ms": round(1e3 * (sum1 - sum0) / lag_n, 2) if lag_n else math.nan,
            "tick_lag_within": {f"{le:g}s": round(v, 4) for le, v in within.items()},
            "scrapes": int(all_scrapes),
            "failed_scrapes": int(all_scrapes - ok),
            "no_data_decisions": int(no_data),
            "cpu_seconds": round(cpu["daemon"], 2),
            "cpu_percent_of_a_core": round(100 * cpu["daemon"] / window, 1),
            "cpu_ms_per_scrape": round(1e3 * cpu["daemon"] / all_scrapes, 3)
            if all_scrapes
            else math.nan,
            **mem.get("daemon", {}),
        }
    if "prometheus" in names:
        # exact, server side: what the pods served minus what the daemon fetched
        n = served - scrapes.get("daemon", 0)
        counted = prom_scrapes(s1.prom_metrics) - prom_scrapes(s0.prom_metrics)
        scrapes["prometheus"] = n
        out["prometheus"] = {
            "scrapes": int(n),
            "scrapes_by_its_own_counter": int(counted),
            "cpu_seconds": round(cpu["prometheus"], 2),
            "cpu_percent_of_a_core": round(100 * cpu["prometheus"] / window, 1),
            "cpu_ms_per_scrape": round(1e3 * cpu["prometheus"] / n, 3) if n else math.nan,
            **mem.get("prometheus", {}),
        }
    out["sandbox"] = {
        "scrapes_served": int(served),
        "cpu_seconds": round(cpu["sandbox"], 2),
        "cpu_percent_of_a_core": round(100 * cpu["sandbox"] / window, 1),
        "cpu_ms_per_scrape_served": round(1e3 * cpu["sandbox"] / served, 3) if served else math.nan,
        "api_requests": s1.sandbox["api_requests"] - s0.sandbox["api_requests"],
        "scale_writes": s1.sandbox["scale_writes"] - s0.sandbox["scale_writes"],
        "open_watches": s1.sandbox["open_watches"],
    }
    out["machine_busy_percent_of_2_cores"] = round(100 * busy, 1)
    return out


async def start_sandbox(args: argparse.Namespace, tmp: Path) -> tuple[Any, dict[str, Any]]:
    cmd = [PYTHON, str(HERE / "_daemon_sandbox.py"), "--workdir", str(tmp / "sandbox"),
           "--workloads", str(args.policies), "--pods", str(args.pods),
           "--page-bytes", str(args.page_bytes), "--duration", str(args.max_runtime)]  # fmt: skip
    err = open(tmp / "sandbox.log", "wb")  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL
    )
    err.close()
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 300)
    except TimeoutError:
        proc.kill()
        raise
    if not line:
        raise RuntimeError("sandbox failed:\n" + (tmp / "sandbox.log").read_text()[-3000:])
    return proc, json.loads(line)


async def start_prometheus(args: argparse.Namespace, tmp: Path, targets: list[str]) -> Any:
    config = tmp / "prometheus.yml"
    prometheus_config(config, targets, 1.0)
    port = free_port()
    err = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(
        args.prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL, stderr=err, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    err.close()
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return proc


async def prometheus_up(url: str) -> str:
    with contextlib.suppress(Exception):
        text = await http_get(url + "/api/v1/query?query=sum(up)%20%2F%20count(up)")
        return str(json.loads(text)["data"]["result"][0]["value"][1])
    return "?"


def print_report(title: str, r: dict[str, Any]) -> None:
    print(f"\n== {title} (window {r['window_seconds']} s) ==")
    d, p, sb = r.get("daemon"), r.get("prometheus"), r["sandbox"]
    if d:
        t = d["ticks_per_policy_per_second"]
        print(
            f"daemon: {d['policies']} policies, ticks/policy/s mean {t['mean']} (min {t['min']},"
            f" median {t['median']}, max {t['max']}); late ticks (lag > 10 % of the interval) "
            f"{100 * d['late_fraction']:.2f} % (goal: ≈ 0); mean lag {d['tick_lag_mean_ms']} ms"
        )
        print(f"        tick lag within bucket: {d['tick_lag_within']}")
        print(
            f"        scrapes {d['scrapes']} ({d['failed_scrapes']} failed), no-data decisions "
            f"{d['no_data_decisions']}; CPU {d['cpu_seconds']} s = {d['cpu_percent_of_a_core']} %"
            f" of a core = {d['cpu_ms_per_scrape']} ms/scrape; RSS {d.get('VmRSS', 0):.0f} MiB,"
            f" peak {d.get('VmHWM', 0):.0f} MiB (goal ≤ 250)"
        )
    if p:
        print(
            f"prometheus: scrapes {p['scrapes']} (its own counter: "
            f"{p['scrapes_by_its_own_counter']}), CPU {p['cpu_seconds']} s = "
            f"{p['cpu_percent_of_a_core']} % of a core = {p['cpu_ms_per_scrape']} ms/scrape; "
            f"RSS {p.get('VmRSS', 0):.0f} MiB; up {p.get('up', '?')}"
        )
    print(
        f"sandbox: served {sb['scrapes_served']} scrapes, CPU {sb['cpu_seconds']} s = "
        f"{sb['cpu_percent_of_a_core']} % of a core ({sb['cpu_ms_per_scrape_served']} ms per "
        f"scrape served); API requests {sb['api_requests']}, scale writes {sb['scale_writes']}, "
        f"open watches {sb['open_watches']}"
    )
    print(f"machine: {r['machine_busy_percent_of_2_cores']} % busy (of 2 cores)")


async def measure(
    names: list[str],
    pids: dict[str, int],
    daemon: DaemonProcess | None,
    prom: Any,
    control: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    prom_url = prom.url if prom is not None else None
    s0 = await snapshot(pids, daemon, prom_url, control)
    await asyncio.sleep(args.seconds)
    s1 = await snapshot(pids, daemon, prom_url, control)
    mem = {n: memory_mib(pids[n]) for n in names if n != "sandbox"}
    if prom_url is not None:
        mem["prometheus"]["up"] = await prometheus_up(prom_url)
    return report(s0, s1, args, names, mem)


async def amain(args: argparse.Namespace) -> int:
    have_prom = not args.no_prometheus and Path(args.prometheus).exists()
    if not args.no_prometheus and not have_prom:
        print(
            f"PROMETHEUS NOT FOUND at {args.prometheus}: apt-get install -y prometheus; "
            "measuring the daemon only"
        )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="daemon-scale-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        sandbox, info = await start_sandbox(args, tmp)
        targets = [
            u.split("//", 1)[1].split("/", 1)[0] for w in info["workloads"] for u in w["pods"]
        ]
        print(
            f"sandbox: {len(info['workloads'])} Deployments x {args.pods} pods = {len(targets)} "
            f"HTTPS endpoints (self-signed, page {info['page_bytes'] / 1024:.1f} KiB), ready in "
            f"{time.monotonic() - t0:.1f} s; interval 1 s; warm-up {args.warmup:g} s, "
            f"window {args.seconds:g} s; "
            + ("Prometheus " + ("after the daemon" if args.sequential else "side by side"))
            * have_prom
        )
        policies = tmp / "policies.yaml"
        policies.write_text(
            DAEMON_CONFIG_1S
            + "".join(
                "---\n" + policy_yaml(name=w["name"], namespace=NS, target=w["name"],
                                      max_replicas=args.pods * 2)
                for w in info["workloads"]
            )
        )  # fmt: skip
        daemon: DaemonProcess | None = None
        prom = None
        try:
            daemon = await DaemonProcess.start(
                info["kubeconfig"],
                [policies],
                tmp / "daemon.log",
                api_pool=args.api_pool,
                ssl_read_buffer=args.ssl_read_buffer,
            )
            ready_s = await daemon.wait_ready(timeout=120)
            print(f"daemon ready in {ready_s:.1f} s")
            if have_prom and not args.sequential:
                # Staggered: 2,000 TLS handshakes in the same second saturate the sandbox's
                # single core, scrapes time out (0.8 s), connections are dropped and made
                # again, and neither side reaches its keep-alive steady state.
                await asyncio.sleep(args.warmup / 2)
                prom = await start_prometheus(args, tmp, targets)
            await asyncio.sleep(args.warmup)
            pids = {"daemon": daemon.pid, "sandbox": sandbox.pid}
            if prom is not None:
                pids["prometheus"] = prom.pid
                if prom.returncode is not None:
                    raise RuntimeError("prometheus exited: " + (tmp / "prometheus.log").read_text())
            names = list(pids)
            title = "daemon and Prometheus side by side" if prom is not None else "daemon alone"
            results[title] = r = await measure(names, pids, daemon, prom, info["control"], args)
            print_report(title, r)
            if daemon.proc.returncode is not None:
                raise RuntimeError(f"daemon exited:\n{daemon.log_tail()}")
            if have_prom and args.sequential:
                await daemon.stop()
                daemon = None
                prom = await start_prometheus(args, tmp, targets)
                await asyncio.sleep(args.warmup)
                pids = {"prometheus": prom.pid, "sandbox": sandbox.pid}
                title = "Prometheus alone (daemon stopped)"
                results[title] = r = await measure(
                    list(pids), pids, None, prom, info["control"], args
                )
                print_report(title, r)
        finally:
            if daemon is not None:
                await daemon.stop()
            for proc in (prom, sandbox):
                if proc is not None and proc.returncode is None:
                    proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), 15)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
            if args.keep_logs:
                dest = Path(args.keep_logs)
                dest.mkdir(parents=True, exist_ok=True)
                for name in ("daemon.log", "sandbox.log", "prometheus.log"):
                    if (tmp / name).exists():
                        shutil.copy(tmp / name, dest / name)
    d = next((r["daemon"] for r in results.values() if "daemon" in r), None)
    p = next((r["prometheus"] for r in results.values() if "prometheus" in r), None)
    print("\n== summary ==")
    ok = True
    if d is not None:
        t = d["ticks_per_policy_per_second"]
        lag_ok = d["late_fraction"] <= 0.01 and t["min"] >= 0.9
        rss_ok = d.get("VmHWM", 0) <= 250
        ok &= lag_ok and rss_ok
        print(
            f"every policy every interval (lag ≤ 10 %): ticks/policy/s {t['mean']} (min {t['min']})"
            f", late {100 * d['late_fraction']:.2f} %: {'PASS' if lag_ok else 'FAIL'}"
        )
        print(f"daemon peak RSS {d.get('VmHWM', 0):.0f} MiB ≤ 250: {'PASS' if rss_ok else 'FAIL'}")
    if d is not None and p is not None:
        ratio = d["cpu_ms_per_scrape"] / p["cpu_ms_per_scrape"]
        ok &= ratio <= 0.3
        print(
            f"CPU per scrape daemon {d['cpu_ms_per_scrape']} ms vs Prometheus "
            f"{p['cpu_ms_per_scrape']} ms: ratio {ratio:.3f}× (goal ≤ 0.3×): "
            f"{'PASS' if ratio <= 0.3 else 'FAIL'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--pods", type=int, default=10, help="pods per policy")
    ap.add_argument("--page-bytes", type=int, default=20_000)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    ap.add_argument("--sequential", action="store_true", help="Prometheus after the daemon")
    ap.add_argument("--no-prometheus", action="store_true")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument(
        "--api-pool",
        type=int,
        default=None,
        help="run the daemon with this Kubernetes API connection pool size (0 = unlimited) "
        "through bench/_daemon_patched.py; default: the daemon as shipped",
    )
    ap.add_argument(
        "--ssl-read-buffer",
        type=int,
        default=None,
        help="with --api-pool: asyncio's per-TLS-connection read buffer (default 262144)",
    )
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--keep-logs", help="copy the daemon/sandbox/Prometheus logs to this dir")
    args = ap.parse_args(argv)
    if args.ssl_read_buffer is not None and args.api_pool is None:
        ap.error("--ssl-read-buffer needs --api-pool")
    args.max_runtime = 600 + 3 * (args.warmup + args.seconds)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the real daemon with 1,000 healthy endpoints plus 20 hostile ones (issue 11).

What a few misbehaving pods cost the daemon: 100 KPA policies x 10 healthy HTTPS pods (as
bench/daemon_scale.py, through bench/_daemon_sandbox.py) plus 20 one-pod policies whose plain-HTTP
endpoints are served by this process on the pods' own loopback addresses (the sandbox gives
them an address and does not listen there: `--hostile`), five of each kind:

- endless body: a chunked body that never ends (the daemon stops at its body size limit);
- gzip bomb: ~64 KiB on the wire that inflates to 64 MiB (stopped at the limit, decompressed);
- 1xx flood: `100 Continue` heads without end (stopped at the interim-response cap);
- slow trickle: a valid page, one byte every 50 ms (stopped by the scrape timeout).

Two runs against the same sandbox, one daemon process each: first the healthy policies only,
then the same plus the 20 hostile ones. For each, after a warm-up, over the window: the daemon's
CPU per healthy scrape (its CPU / `autoscalerd_scrapes_total{result="ok"}`), its peak RSS
(VmHWM, over the whole run), failed scrapes by result, ticks per policy per second. Prints
both and their ratio; fails when the hostile run's peak RSS is above `--rss-limit-mib` (the
Deployment's memory limit, deploy/kubernetes/deployment.yaml) or a hostile scrape succeeded.

Run: .venv/bin/python bench/daemon_hostile.py [--policies 100] [--pods 10] [--hostile 20]
     [--warmup 15] [--seconds 60] [--rss-limit-mib 384]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_common import (
    DAEMON_CONFIG_1S,
    PYTHON,
    DaemonProcess,
    cpu_seconds,
    memory_mib,
    policy_yaml,
    sum_counter,
)

HERE = Path(__file__).resolve().parent
NS = "bench"
PORT = 10250
KINDS = ("endless_body", "gzip_bomb", "interim_flood", "slow_trickle")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Hostile:
    """The misbehaving endpoints, and how many bytes they sent."""

    def __init__(self) -> None:
        self.sent = dict.fromkeys(KINDS, 0)
        self.answers = dict.fromkeys(KINDS, 0)
        self.bomb = gzip.compress(b"go_threads 1\n" + b"#" * (64 << 20), compresslevel=9)
        self.servers: list[asyncio.Server] = []

    def handler(self, kind: str) -> Handler:
        body = getattr(self, f"_{kind}")

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    self.answers[kind] += 1
                    await body(writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        return handle

    async def _write(self, writer: asyncio.StreamWriter, kind: str, data: bytes) -> None:
        writer.write(data)
        self.sent[kind] += len(data)
        await writer.drain()

    async def _endless_body(self, writer: asyncio.StreamWriter) -> None:
        await self._write(
            writer, "endless_body", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"10000\r\n" + b"# endless\n" * 6553 + b"######\r\n"
        while True:
            await self._write(writer, "endless_body", chunk)

    async def _gzip_bomb(self, writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
        await self._write(writer, "gzip_bomb", head % len(self.bomb) + self.bomb)

    async def _interim_flood(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await self._write(writer, "interim_flood", b"HTTP/1.1 100 Continue\r\n\r\n" * 64)

    async def _slow_trickle(self, writer: asyncio.StreamWriter) -> None:
        page = b"# TYPE go_threads gauge\ngo_threads 20\n"
        await self._write(
            writer, "slow_trickle", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(page)
        )
        for i in range(len(page)):
            await asyncio.sleep(0.05)
            await self._write(writer, "slow_trickle", page[i : i + 1])

    async def start(self, pods: list[dict[str, str]]) -> list[str]:
        """Serve pod i with kind i mod 4; returns the kind of each pod."""
        kinds = []
        for i, pod in enumerate(pods):
            kind = KINDS[i % len(KINDS)]
            server = await asyncio.start_server(self.handler(kind), pod["ip"], PORT)
            self.servers.append(server)
            kinds.append(kind)
        return kinds

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)


async def start_sandbox(args: argparse.Namespace, tmp: Path) -> tuple[Any, dict[str, Any]]:
    cmd = [PYTHON, str(HERE / "_daemon_sandbox.py"), "--workdir", str(tmp / "sandbox"),
           "--workloads", str(args.policies), "--pods", str(args.pods),
           "--hostile", str(args.hostile), "--duration", str(args.max_runtime)]  # fmt: skip
    err = open(tmp / "sandbox.log", "wb")  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL
    )
    err.close()
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 300)
    if not line:
        raise RuntimeError("sandbox failed:\n" + (tmp / "sandbox.log").read_text()[-3000:])
    return proc, json.loads(line)


def results(text: str) -> dict[str, float]:
    """autoscalerd_scrapes_total summed by `result`."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("autoscalerd_scrapes_total{") and 'result="' in line:
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = out.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def run_daemon(
    title: str, args: argparse.Namespace, tmp: Path, info: dict[str, Any], hostile: list[str]
) -> dict[str, Any]:
    """One daemon process over the healthy policies (and the hostile ones, if given)."""
    docs = [
        policy_yaml(name=w["name"], namespace=NS, target=w["name"], max_replicas=args.pods * 2)
        for w in info["workloads"]
    ]
    docs += [
        policy_yaml(name=name, namespace=NS, target=name, protocol="http", max_replicas=2)
        for name in hostile
    ]
    config = tmp / f"policies-{len(docs)}.yaml"
    config.write_text(DAEMON_CONFIG_1S + "".join("---\n" + d for d in docs))
    daemon = await DaemonProcess.start(info["kubeconfig"], [config], tmp / f"daemon-{title}.log")
    try:
        await daemon.wait_ready(timeout=120)
        await asyncio.sleep(args.warmup)
        cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        _, metrics0 = await daemon.get("/metrics", timeout=30)
        status0 = await daemon.status()
        await asyncio.sleep(args.seconds)
        cpu1, t1 = cpu_seconds(daemon.pid), time.monotonic()
        _, metrics1 = await daemon.get("/metrics", timeout=30)
        status1 = await daemon.status()
        memory = memory_mib(daemon.pid)
        if daemon.proc.returncode is not None:
            raise RuntimeError(f"daemon exited:\n{daemon.log_tail()}")
    finally:
        await daemon.stop()
    r0, r1 = results(metrics0), results(metrics1)
    by_result = {k: int(r1[k] - r0.get(k, 0.0)) for k in r1 if r1[k] - r0.get(k, 0.0)}
    ok = by_result.get("ok", 0)
    ticks0 = {p["name"]: p["ticks"] for p in status0["policies"]}
    window = t1 - t0
    rates = [(p["ticks"] - ticks0[p["name"]]) / window for p in status1["policies"]]
    # A hostile page must never be read as a value: none of their scrapes may succeed.
    hostile_ok = sum(
        sum_counter(metrics1, "autoscalerd_scrapes_total", autoscaler=name, result="ok")
        for name in hostile
    )
    return {
        "window_seconds": round(window, 1),
        "policies": len(docs),
        "scrapes_by_result": by_result,
        "cpu_seconds": round(cpu1 - cpu0, 2),
        "cpu_percent_of_a_core": round(100 * (cpu1 - cpu0) / window, 1),
        "cpu_ms_per_healthy_scrape": round(1e3 * (cpu1 - cpu0) / ok, 3) if ok else None,
        "ticks_per_policy_per_second_min": round(min(rates), 3),
        "rss_mib": round(memory.get("VmRSS", 0.0), 1),
        "peak_rss_mib": round(memory.get("VmHWM", 0.0), 1),
        "hostile_ok": hostile_ok,
    }


async def amain(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="daemon-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox, info = await start_sandbox(args, tmp)
        hostile = Hostile()
        try:
            kinds = await hostile.start(info["hostile"])
            names = [p["name"] for p in info["hostile"]]
            healthy = sum(len(w["pods"]) for w in info["workloads"])
            print(
                f"sandbox: {healthy} healthy HTTPS endpoints in {len(info['workloads'])} policies; "
                f"{len(names)} hostile ({', '.join(f'{kinds.count(k)} {k}' for k in KINDS)}); "
                f"warm-up {args.warmup:g} s, window {args.seconds:g} s per run"
            )
            out["healthy only"] = await run_daemon("healthy", args, tmp, info, [])
            print("healthy only:", json.dumps(out["healthy only"]))
            out["with hostile"] = await run_daemon("hostile", args, tmp, info, names)
            print("with hostile:", json.dumps(out["with hostile"]))
            out["hostile_bytes_sent"] = hostile.sent
            out["hostile_answers"] = hostile.answers
        finally:
            await hostile.stop()
            sandbox.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sandbox.wait(), 15)
    base, bad = out["healthy only"], out["with hostile"]
    print("\n== summary ==")
    print(
        f"hostile endpoints sent: {out['hostile_bytes_sent']} bytes; answers {out['hostile_answers']}"
    )
    cpu_a, cpu_b = base["cpu_ms_per_healthy_scrape"], bad["cpu_ms_per_healthy_scrape"]
    if cpu_a and cpu_b:
        print(
            f"CPU per healthy scrape: {cpu_a} ms alone, {cpu_b} ms with hostile pods ({cpu_b / cpu_a:.2f}×)"
        )
    print(
        f"peak RSS: {base['peak_rss_mib']} MiB alone, {bad['peak_rss_mib']} MiB with hostile pods"
    )
    rss_ok = bad["peak_rss_mib"] <= args.rss_limit_mib
    never_read = bad["hostile_ok"] == 0
    print(f"no hostile scrape read as a value: {'PASS' if never_read else 'FAIL'}")
    failed = {k: v for k, v in bad["scrapes_by_result"].items() if k != "ok"}
    print(f"hostile scrapes by result: {failed}")
    print(
        f"peak RSS ≤ {args.rss_limit_mib} MiB (the Deployment's limit): {'PASS' if rss_ok else 'FAIL'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0 if rss_ok and never_read else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--pods", type=int, default=10, help="healthy pods per policy")
    ap.add_argument("--hostile", type=int, default=20, help="hostile pods, one policy each")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement window per run")
    ap.add_argument("--rss-limit-mib", type=float, default=384.0)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    args.max_runtime = 600 + 3 * (args.warmup + args.seconds)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())

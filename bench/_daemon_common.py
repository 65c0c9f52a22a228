"""Shared helpers of the daemon benchmarks: start the real `autoscalerd run` process, read its
/status and /metrics, and read any process's CPU and memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

PYTHON = sys.executable
REPO = Path(os.environ.get("BENCH_DAEMON_TREE") or Path(__file__).resolve().parents[1])
"""The tree the daemon runs from: this one, or BENCH_DAEMON_TREE (another checkout, for a
before/after comparison on the same sandbox and benchmark code)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def policy_yaml(
    *,
    name: str,
    namespace: str,
    target: str,
    target_value: float = 20,
    min_replicas: int = 1,
    max_replicas: int = 10,
    protocol: str = "https",
    port: int = 10250,
    metric: str = "go_threads",
    insecure: bool = True,
) -> str:
    """One KPA `PodAutoscaler` document (defaults for every algorithm parameter)."""
    tls = (
        "      tlsConfig: {insecureSkipVerify: true}\n" if insecure and protocol == "https" else ""
    )
    return (
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\n"
        "kind: PodAutoscaler\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  namespace: {namespace}\n"
        "spec:\n"
        f"  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {target}}}\n"
        f"  minReplicas: {min_replicas}\n"
        f"  maxReplicas: {max_replicas}\n"
        "  scalingStrategy: KPA\n"
        "  metricsSources:\n"
        "    - metricSourceType: pod\n"
        f"      protocolType: {protocol}\n"
        f'      port: "{port}"\n'
        "      path: /metrics\n"
        f"      targetMetric: {metric}\n"
        f'      targetValue: "{target_value}"\n'
        f"{tls}"
    )


DAEMON_CONFIG_1S = "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nscrapeInterval: 1s\n"


class DaemonProcess:
    """A running `autoscalerd run` process (JSON logs to a file, not a pipe)."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls,
        kubeconfig: Path | str,
        configs: list[Path],
        log_path: Path,
        *,
        log_level: str = "warning",
        extra_args: tuple[str, ...] = (),
        api_pool: int | None = None,
        ssl_read_buffer: int | None = None,
    ) -> DaemonProcess:
        """`api_pool`: run it through bench/_daemon_patched.py with that Kubernetes API
        connection pool size (0 = unlimited) instead of kubernetes_asyncio's 100, and, with
        `ssl_read_buffer`, asyncio's per-TLS-connection read buffer of that many bytes."""
        port = free_port()
        launcher = [PYTHON, "-m", "autoscalerd"]
        if api_pool is not None:
            launcher = [PYTHON, str(Path(__file__).with_name("_daemon_patched.py")),
                        "--api-pool", str(api_pool)]  # fmt: skip
            if ssl_read_buffer is not None:
                launcher += ["--ssl-read-buffer", str(ssl_read_buffer)]
        cmd = [*launcher, "run", "--kubeconfig", str(kubeconfig),
               "--listen", f"127.0.0.1:{port}", "--log-format", "json",
               "--log-level", log_level]  # fmt: skip
        for c in configs:
            cmd += ["-c", str(c)]
        cmd += list(extra_args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALERD_")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the child from here on
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file, env=env, cwd=str(REPO),
            )  # fmt: skip
        finally:
            log_file.close()
        return cls(proc, port, log_path)

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    async def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(self.url + path) as resp,
        ):
            return resp.status, await resp.text()

    async def status(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(self.url + "/status") as resp,
        ):
            return dict(await resp.json())

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait for /readyz 200; returns the seconds it took."""
        t0 = time.monotonic()
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                code, _ = await self.get("/readyz", timeout=2)
                if code == 200:
                    return time.monotonic() - t0
            if self.proc.returncode is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"daemon not ready after {timeout:g}s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def wait_ticks(self, n: int, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until every policy has ticked at least `n` times; returns the /status."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status()
            ticks = [p["ticks"] for p in status["policies"]]
            if ticks and min(ticks) >= n:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"ticks {sorted(ticks)[:5]}… after {timeout:g}s")
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            return None


def parse_histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """Cumulative buckets [(le, count)], sum and count of an unlabelled histogram."""
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(name + "_sum "):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count "):
            count = float(line.rsplit(" ", 1)[1])
    return buckets, total, count


def sum_counter(text: str, name: str, **labels: str) -> float:
    """Sum of a counter's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total

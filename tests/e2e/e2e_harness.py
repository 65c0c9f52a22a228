"""End-to-end harness: the real `autoscalerd run` process against the in-process sandbox.

The sandbox runs in the test's event loop; the daemon is a separate process that reads the
sandbox's kubeconfig, exactly as it would read a cluster's. Its JSON log lines are collected
so tests can wait for and assert on what an operator would read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from waiting import POLL_SECONDS, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def policy_yaml(
    *,
    name: str = "metric-server-autoscaler",
    namespace: str = "kube-system",
    target: str = "metrics-server",
    kind: str = "Deployment",
    api_version: str = "apps/v1",
    strategy: str = "KPA",
    min_replicas: int = 1,
    max_replicas: int = 4,
    protocol: str = "https",
    port: int = 10250,
    metric: str = "go_threads",
    target_value: float = 20,
    annotations: dict[str, str] | None = None,
    source_extra: str = "",
) -> str:
    ann = ""
    if annotations:
        ann = "  annotations:\n" + "".join(f'    {k}: "{v}"\n' for k, v in annotations.items())
    extra = textwrap.indent(textwrap.dedent(source_extra), "      ") if source_extra else ""
    return (
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\n"
        "kind: PodAutoscaler\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  namespace: {namespace}\n"
        f"{ann}"
        "spec:\n"
        f"  scaleTargetRef: {{apiVersion: {api_version}, kind: {kind}, name: {target}}}\n"
        f"  minReplicas: {min_replicas}\n"
        f"  maxReplicas: {max_replicas}\n"
        f"  scalingStrategy: {strategy}\n"
        "  metricsSources:\n"
        "    - metricSourceType: pod\n"
        f"      protocolType: {protocol}\n"
        f'      port: "{port}"\n'
        "      path: /metrics\n"
        f"      targetMetric: {metric}\n"
        f'      targetValue: "{target_value}"\n'
        f"{extra}"
    )


FAST = {
    "kpa.autoscaling.aibrix.ai/stable-window": "6s",
    "kpa.autoscaling.aibrix.ai/panic-window": "2s",
}
"""Short windows so scale-down happens within seconds."""


class Daemon:
    """A running `autoscalerd run` process."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        with open(self.log_path, "a") as fh:
            while True:
                line = await self.proc.stderr.readline()
                if not line:
                    return
                text = line.decode(errors="replace").rstrip("\n")
                fh.write(text + "\n")
                self.raw.append(text)
                try:
                    doc = json.loads(text)
                except ValueError:
                    doc = {"event": text}
                if isinstance(doc, dict):
                    self.lines.append(doc)

    def logs(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [doc for doc in self.lines if predicate(doc)]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.raw[-lines:])

    def check_running(self) -> None:
        """Raise (with the last log lines) when the daemon has exited."""
        if self.proc.returncode is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.tail()}")

    async def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first log line that satisfies `predicate`, once the daemon has written it."""

        def seen() -> dict[str, Any] | None:
            self.check_running()
            return next((doc for doc in self.lines if predicate(doc)), None)

        return await wait_for(
            seen, timeout=timeout, what=lambda: f"log line not seen; last lines:\n{self.tail()}"
        )

    async def wait_status(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        poll: float = POLL_SECONDS,
    ) -> dict[str, Any]:
        """The first `/status` that satisfies `predicate` (asked every `poll` seconds)."""
        last: dict[str, Any] = {}

        async def seen() -> dict[str, Any] | None:
            nonlocal last
            self.check_running()
            last = await self.status()
            return last if predicate(last) else None

        return await wait_for(
            seen, timeout=timeout, poll=poll, what=lambda: f"last /status: {last}"
        )

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            async with http.get(f"http://127.0.0.1:{self.port}/status") as resp:
                return dict(await resp.json())

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            async with http.get(f"http://127.0.0.1:{self.port}{path}") as resp:
                return resp.status, await resp.text()

    async def wait_ready(self, timeout: float = 15.0) -> None:
        async def ready() -> bool:
            self.check_running()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                code, _ = await self.get("/readyz")
                return code == 200
            return False

        await wait_for(ready, timeout=timeout, what=lambda: f"daemon not ready:\n{self.tail()}")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 8.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 2)
        return code


async def run_demo(*args: str, timeout: float) -> str:
    """Run `autoscalerd demo ARGS` to its end, as a new user does from the README; its output
    (stdout and stderr), after checking that it exited 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscalerd", "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path

"""systemd's notify protocol and journald logging, seen from systemd's side.

The real `autoscalerd run` process runs against the sandbox cluster with `$NOTIFY_SOCKET`
naming an AF_UNIX datagram socket this test binds (a path, and an abstract `@name`), as
systemd's would be. The test reads what systemd would read: READY=1 once serving,
RELOADING=1 with MONOTONIC_USEC in the same datagram then READY=1 around a SIGHUP reload,
WATCHDOG=1 pings at half of $WATCHDOG_USEC, STOPPING=1 on SIGTERM. Its stderr goes to a
file named by $JOURNAL_STREAM (dev:inode), as journald's stream is, so every line carries
a syslog priority prefix.

Also: the daemon works under the kernel's "memory deny write execute" rule
(PR_SET_MDWE), which is what systemd/autoscalerd.service's MemoryDenyWriteExecute=yes
relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from waiting import wait_for

from autoscalerd.sandbox import MetricsEndpoint, Sandbox

REPO = Path(__file__).resolve().parents[3]
SEED = REPO / "config/examples/metrics-server-kpa.yaml"
NS, NAME, METRIC = "kube-system", "metrics-server", "go_threads"

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

pytestmark = pytest.mark.timeout(60)


# -- the notify socket (systemd's side) --------------------------------------------------


@dataclass
class NotifySocket:
    """A bound AF_UNIX datagram socket collecting sd_notify messages as dicts."""

    sock: socket.socket
    env_value: str
    messages: list[dict[str, str]] = field(default_factory=list)
    received_at: list[int] = field(default_factory=list)
    """CLOCK_MONOTONIC µs at which each message was read."""

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            self.received_at.append(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
            lines = data.decode().split("\n")
            self.messages.append(dict(line.split("=", 1) for line in lines if line))

    def index(self, key: str, value: str | None = None, start: int = 0) -> int | None:
        for i, msg in enumerate(self.messages[start:], start):
            if key in msg and (value is None or msg[key] == value):
                return i
        return None

    def count(self, key: str, value: str | None = None) -> int:
        return sum(1 for m in self.messages if key in m and (value is None or m[key] == value))

    async def wait_for(
        self, key: str, value: str | None = None, *, start: int = 0, timeout: float = 10.0
    ) -> int:
        """The index of the first message with `key` (= `value`) from `start` on."""
        await wait_for(
            lambda: self.index(key, value, start) is not None,
            timeout=timeout,
            what=lambda: f"no {key}={value or '*'} after #{start}: {self.messages}",
        )
        found = self.index(key, value, start)
        assert found is not None
        return found


@contextlib.contextmanager
def bound_socket(kind: str) -> Iterator[NotifySocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if kind == "path":
        # Short directory: AF_UNIX paths are limited to 108 bytes.
        with tempfile.TemporaryDirectory(prefix="sdn-", dir="/tmp") as d:
            path = os.path.join(d, "notify")
            sock.bind(path)
            try:
                yield NotifySocket(sock, path)
            finally:
                sock.close()
    else:
        name = f"autoscalerd-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        try:
            yield NotifySocket(sock, "@" + name)
        finally:
            sock.close()


# -- the daemon --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    port: int
    stderr_path: Path

    def stderr_lines(self) -> list[str]:
        return self.stderr_path.read_text().splitlines()

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            async with http.get(f"http://127.0.0.1:{self.port}{path}") as resp:
                return resp.status, await resp.text()

    async def wait_policies(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """The `/status` policies once they satisfy `predicate` (the daemon must keep running)."""

        async def seen() -> list[dict[str, Any]] | None:
            assert self.proc.returncode is None, self.stderr_lines()[-20:]
            with contextlib.suppress(aiohttp.ClientError, OSError):
                code, body = await self.get("/status")
                if code == 200:
                    policies: list[dict[str, Any]] = json.loads(body)["policies"]
                    return policies if predicate(policies) else None
            return None

        found: list[dict[str, Any]] = await wait_for(
            seen, timeout=timeout, what=lambda: "\n".join(self.stderr_lines()[-20:])
        )
        return found

    async def wait(self, timeout: float = 8.0) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(workdir=tmp_path / "sandbox") as sb:
        await sb.add_deployment(
            NS,
            NAME,
            labels={"k8s-app": "metrics-server"},
            metrics=MetricsEndpoint(port=10250, tls="self-signed", metric=METRIC),
        )
        sb.set_load(NS, NAME, METRIC, 20)
        yield sb


@pytest.fixture
async def start_daemon(tmp_path: Path, sandbox: Sandbox) -> AsyncIterator[Callable[..., Any]]:
    """Start `autoscalerd run` with the seed policy; stderr goes to a file."""
    started: list[Daemon] = []

    async def start(
        env: dict[str, str],
        *,
        journal: bool = False,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Daemon:
        port = _free_port()
        stderr_path = tmp_path / f"stderr-{len(started)}.log"
        stderr = open(stderr_path, "wb")  # noqa: SIM115 - handed to the child, closed below
        full = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALERD_")}
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            full.pop(key, None)
        if journal:
            st = os.fstat(stderr.fileno())
            full["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        full.update(env)
        cmd = [sys.executable, "-m", "autoscalerd", "run", "-c", str(SEED),
               "--kubeconfig", str(sandbox.kubeconfig_path), "--listen", f"127.0.0.1:{port}",
               "--insecure-skip-tls-verify", "--log-format", "json", "--log-level", "info"]  # fmt: skip
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                env=full,
                preexec_fn=preexec_fn,
            )
        finally:
            stderr.close()
        daemon = Daemon(proc, port, stderr_path)
        started.append(daemon)
        return daemon

    yield start
    for d in started:
        if d.proc.returncode is None:
            d.proc.kill()
            await d.proc.wait()


@contextlib.asynccontextmanager
async def collecting(ns: NotifySocket) -> AsyncIterator[NotifySocket]:
    task = asyncio.get_running_loop().create_task(ns.collect())
    try:
        yield ns
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _now_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


# -- tests -------------------------------------------------------------------------------


async def test_ready_reload_watchdog_stopping_on_a_path_socket(start_daemon: Any) -> None:
    with bound_socket("path") as ns:
        async with collecting(ns):
            daemon = await start_daemon({"NOTIFY_SOCKET": ns.env_value, "WATCHDOG_USEC": "1000000"})
            ready = await ns.wait_for("READY", "1")
            assert ns.messages[ready].get("STATUS") == "1 policies"
            code, _ = await daemon.get("/healthz")
            assert code == 200, "READY=1 means serving"
            assert ns.index("RELOADING") is None and ns.index("STOPPING") is None

            # Watchdog: $WATCHDOG_USEC 1 s → a ping every 0.5 s, over and over (the cadence
            # itself is tested on a hand-stepped clock: test_daemon_supervisor.py).
            await wait_for(lambda: ns.count("WATCHDOG", "1") >= 3, what=lambda: str(ns.messages))

            # SIGHUP: RELOADING=1 and MONOTONIC_USEC in one datagram, then READY=1.
            mark = len(ns.messages)
            before = _now_usec()
            daemon.proc.send_signal(signal.SIGHUP)
            reloading = await ns.wait_for("RELOADING", "1", start=mark)
            msg = ns.messages[reloading]
            assert "MONOTONIC_USEC" in msg, f"same datagram as RELOADING=1: {msg}"
            assert before <= int(msg["MONOTONIC_USEC"]) <= ns.received_at[reloading]
            again = await ns.wait_for("READY", "1", start=reloading + 1)
            assert ns.messages[again].get("STATUS") == "1 policies"

            # SIGTERM: STOPPING=1, clean exit.
            mark = len(ns.messages)
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.wait() == 0
            await ns.wait_for("STOPPING", "1", start=mark, timeout=2)
            kinds = [next(iter(m)) for m in ns.messages if "WATCHDOG" not in m]
            assert kinds == ["READY", "RELOADING", "READY", "STOPPING"], ns.messages


async def test_abstract_socket_journal_priorities_no_foreign_watchdog(start_daemon: Any) -> None:
    with bound_socket("abstract") as ns:
        assert ns.env_value.startswith("@")
        async with collecting(ns):
            # $WATCHDOG_PID names another process (systemd set it for the main PID, and
            # this is not it): no pings from us. Stderr is "the journal".
            daemon = await start_daemon(
                {
                    "NOTIFY_SOCKET": ns.env_value,
                    "WATCHDOG_USEC": "200000",
                    "WATCHDOG_PID": str(os.getpid()),
                },
                journal=True,
            )
            await ns.wait_for("READY", "1")
            # Two ticks of the policy: a watchdog at 0.1 s would have pinged many times.
            await daemon.wait_policies(lambda p: bool(p) and p[0]["ticks"] >= 2)
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.wait() == 0
            await ns.wait_for("STOPPING", "1", timeout=2)
            assert ns.index("WATCHDOG") is None, ns.messages

    by_event: dict[str, str] = {}
    for line in daemon.stderr_lines():
        assert line[:1] == "<" and line[2:3] == ">", f"no priority prefix: {line!r}"
        doc = json.loads(line[3:])
        assert "timestamp" not in doc, "journald stamps the lines itself"
        by_event.setdefault(doc["event"], line[:3])
    assert by_event["autoscalerd started"] == "<6>", by_event
    warning = [e for e in by_event if e.startswith("--insecure-skip-tls-verify")]
    assert warning and by_event[warning[0]] == "<4>", by_event


# -- MemoryDenyWriteExecute --------------------------------------------------------------


def _deny_write_execute() -> None:
    """In the child, before exec: the kernel rule behind MemoryDenyWriteExecute=yes."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def _mdwe_works() -> bool:
    """Whether PR_SET_MDWE exists here (Linux >= 6.3) and survives exec."""
    import subprocess

    probe = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except OSError:\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], preexec_fn=_deny_write_execute, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


async def test_runs_under_memory_deny_write_execute(start_daemon: Any) -> None:
    if sys.platform != "linux" or not _mdwe_works():
        pytest.skip("PR_SET_MDWE is not available (Linux >= 6.3 needed)")
    daemon = await start_daemon({}, preexec_fn=_deny_write_execute)
    policies = await daemon.wait_policies(
        lambda p: bool(p) and p[0]["metrics"].get(METRIC) is not None
    )
    assert policies[0]["metrics"] == {METRIC: 20.0}, "scraped over TLS under the rule"
    code, body = await daemon.get("/metrics")
    assert code == 200 and "autoscalerd_scrapes_total" in body
    daemon.proc.send_signal(signal.SIGTERM)
    assert await daemon.wait() == 0
    assert not any("write+execute" in line for line in daemon.stderr_lines())

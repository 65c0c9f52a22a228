"""`autoscalerd status --watch`: the real CLI process against a small /status server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from waiting import wait_for


class StatusServer:
    """Serves /status with a `ticks` count that grows with every request."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.requests = 0
        self.url = ""

    async def handle(self, _: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response(
            {
                "leader": None,
                "scrape_interval_seconds": self.interval,
                "policies": [
                    {
                        "namespace": "ns",
                        "name": "app",
                        "strategy": "KPA",
                        "current_replicas": 2,
                        "desired_replicas": 3,
                        "mode": "stable",
                        "metrics": {"go_threads": float(self.requests)},
                        "last_error": None,
                    }
                ],
            }
        )


@pytest.fixture
async def server() -> AsyncIterator[StatusServer]:
    s = StatusServer(interval=0.2)
    app = web.Application()
    app.router.add_get("/status", s.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    s.url = f"http://127.0.0.1:{port}"
    yield s
    await runner.cleanup()


async def _spawn(*args: str, stdout: Any = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALERD_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscalerd", "status", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def _read_until(
    proc: asyncio.subprocess.Process,
    done: Any,
    stream: asyncio.StreamReader | None = None,
    timeout: float = 20,
) -> str:
    """What `proc` wrote (to its stdout, or to `stream`) once `done(text)` holds."""
    stream = stream or proc.stdout
    assert stream is not None
    text = ""

    async def seen() -> bool:
        nonlocal text
        with contextlib.suppress(TimeoutError):  # each read is bounded: the deadline counts
            text += (await asyncio.wait_for(stream.read(4096), 1.0)).decode()
        if done(text):
            return True
        if proc.returncode is not None:
            raise AssertionError(f"exited {proc.returncode}; output so far:\n{text}")
        return False

    await wait_for(seen, timeout=timeout, what=lambda: f"output so far:\n{text}")
    return text


async def _interrupt(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()


async def test_piped_watch_prints_plain_rounds_and_exits_0_on_sigint(server: StatusServer) -> None:
    proc = await _spawn("--watch", "--interval", "0.2", "--url", server.url)
    text = await _read_until(proc, lambda t: t.count("--- ") >= 3 and "go_threads=3" in t)
    assert await _interrupt(proc) == 0
    assert "\x1b" not in text  # no terminal control codes when piped
    rounds = [r for r in text.split("--- ") if r.strip()]
    first = rounds[0].splitlines()
    assert first[0].endswith(f"{server.url}/status")
    assert first[1].split()[:3] == ["NAMESPACE", "NAME", "STRATEGY"]
    assert first[2].split()[:5] == ["ns", "app", "KPA", "2", "3"]
    assert "go_threads=1" in rounds[0] and "go_threads=2" in rounds[1]  # fresh each round


async def test_default_interval_is_the_daemons_scrape_interval(server: StatusServer) -> None:
    proc = await _spawn("--watch", "--url", server.url)
    await _read_until(proc, lambda t: t.count("--- ") >= 3)  # 0.2 s each, not the 1 s fallback
    assert await _interrupt(proc) == 0


async def test_an_unreachable_daemon_is_shown_and_retried_not_fatal() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        proc = await _spawn("--watch", "--interval", "0.2", "--url", f"127.0.0.1:{port}")
        text = await _read_until(proc, lambda t: t.count("cannot reach") >= 2)
    assert "(retrying)" in text
    assert await _interrupt(proc) == 0


async def test_on_a_terminal_it_redraws_in_place(server: StatusServer) -> None:
    main, sub = pty.openpty()
    terminal = os.fdopen(main, "rb", buffering=0)
    transport: asyncio.ReadTransport | None = None
    try:
        proc = await _spawn("--watch", "--interval", "0.2", "--url", server.url, stdout=sub)
        os.close(sub)
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), terminal
        )
        text = await _read_until(proc, lambda t: t.count("\x1b[H") >= 2, stream=reader)
        assert await _interrupt(proc) == 0
    finally:
        if transport is not None:
            transport.close()
        terminal.close()
    assert "\x1b[J" in text  # clears what is left of the previous round
    assert "every 0.2s: autoscalerd status" in text
    assert "--- " not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--interval", "1"), "--interval needs --watch", id="interval-alone"),
        pytest.param(("--watch", "--interval", "0"), "positive", id="zero"),
        pytest.param(("--watch", "--interval", "soon"), "not a number", id="nan"),
    ],
)
def test_bad_usage_exits_2_with_a_message(args: tuple[str, ...], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "autoscalerd", "status", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert message in proc.stderr

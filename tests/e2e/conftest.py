"""Fixtures of the end-to-end tests (the helpers are in e2e_harness.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import Daemon, free_port

from autoscalerd.sandbox import Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(workdir=tmp_path / "sandbox") as sb:
        yield sb


@pytest.fixture
async def start_daemon(tmp_path: Path, sandbox: Sandbox) -> AsyncIterator[Callable[..., Any]]:
    daemons: list[Daemon] = []

    async def start(
        *config: Path,
        args: tuple[str, ...] = (),
        wait_ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        port = free_port()
        cmd = [sys.executable, "-m", "autoscalerd", "run", "--kubeconfig", str(sandbox.kubeconfig_path),
               "--listen", f"127.0.0.1:{port}", "--log-format", "json", "--log-level", "info"]  # fmt: skip
        for c in config:
            cmd += ["-c", str(c)]
        cmd += list(args)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALERD_")}
        full_env.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=full_env,
        )  # fmt: skip
        daemon = Daemon(proc, port, tmp_path / f"daemon-{len(daemons)}.log")
        daemons.append(daemon)
        if wait_ready:
            await daemon.wait_ready()
        return daemon

    yield start
    for d in daemons:
        if d.proc.returncode is None:
            with contextlib.suppress(Exception):
                await d.stop(signal.SIGKILL)

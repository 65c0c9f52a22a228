"""Helpers shared by the kube adapter tests (a unique module name: several test
directories have a conftest.py, so tests never import from "conftest")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from autoscalerd.kube import KubeClient

API_TIMEOUT = 3.0

ClientFactory = Callable[..., Awaitable[KubeClient]]


async def eventually(
    check: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02
) -> float:
    """Wait until check() is true; return the seconds it took (AssertionError on timeout)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        if loop.time() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
    return loop.time() - start

"""Waiting on the sandbox's state: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_SECONDS = 0.02


async def wait_until(condition: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
    """Return once ``condition()`` is true; raise ``TimeoutError(why())`` when it is still
    false after ``timeout`` seconds (``why`` describes the state at that moment)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(why())
        await asyncio.sleep(POLL_SECONDS)

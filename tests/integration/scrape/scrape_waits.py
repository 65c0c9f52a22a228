"""Waiting on a condition with a deadline (never on a fixed sleep) for the scrape tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEADLINE = 5.0


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Return as soon as `condition()` is true; fail naming `what` after `timeout` seconds.

    Polls between loop iterations: the events awaited (a connection closing, bytes arriving)
    happen in protocol callbacks that run on this same loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.005)

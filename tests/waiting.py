"""Wait for a condition with a deadline, never for a while (`await wait_for(...)`)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")

POLL_SECONDS = 0.02
"""How often the condition is evaluated again (it is cheap; the deadline is the bound)."""


async def wait_for(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    what: str | Callable[[], str] = "",
) -> T:
    """Return the first truthy value of `condition()` (sync or async); raise AssertionError
    after `timeout` seconds, saying what was awaited and, when `what` is a callable, what the
    state was at the deadline (e.g. the last log lines)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            name = getattr(condition, "__name__", "condition")
            raise AssertionError(f"not true within {timeout:g}s: {detail or name}")
        await asyncio.sleep(POLL_SECONDS)


async def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float = 5.0,
    state: Callable[[], object] | None = None,
) -> None:
    """`wait_for` with the awaited state named, and what the test saw instead at the deadline
    (`state()`): "not true within 5s: two pods (state: ['a'])"."""

    def describe() -> str:
        return f"{what} (state: {state()!r})" if state is not None else what

    await wait_for(condition, timeout=timeout, what=describe)

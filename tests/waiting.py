"""Wait for a condition with a deadline, never for a while (`await wait_for(...)`)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["wait_for", "wait_until"]

T = TypeVar("T")

POLL_SECONDS = 0.02
"""How often the condition is evaluated again by default (it is cheap; the deadline is the
bound). A condition that costs something (an HTTP request to the daemon, JavaScript in the
browser) passes a longer `poll`."""


async def wait_for(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    what: str | Callable[[], str] = "",
    poll: float = POLL_SECONDS,
) -> T:
    """Return the first truthy value of `condition()` (sync or async), evaluated every `poll`
    seconds; raise AssertionError after `timeout` seconds, saying what was awaited and, when
    `what` is a callable, what the state was at the deadline (e.g. the last log lines).
    An exception from `condition()` (a failed assertion in it) ends the wait at once."""
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
        await asyncio.sleep(poll)


async def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float = 5.0,
    state: Callable[[], object] | None = None,
    poll: float = POLL_SECONDS,
) -> None:
    """`wait_for` with the awaited state named, and what the test saw instead at the deadline
    (`state()`): "not true within 5s: two pods (state: ['a'])"."""

    def describe() -> str:
        return f"{what} (state: {state()!r})" if state is not None else what

    await wait_for(condition, timeout=timeout, what=describe, poll=poll)

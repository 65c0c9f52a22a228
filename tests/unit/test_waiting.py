"""The tests' wait helper returns as soon as its condition holds and otherwise fails
with what it waited for and the state it saw."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from waiting import wait_for, wait_until


async def test_returns_once_the_condition_holds() -> None:
    flag = asyncio.Event()
    asyncio.get_running_loop().call_soon(flag.set)
    await wait_until(flag.is_set, "the flag is set")
    assert flag.is_set()


async def test_fails_with_what_and_the_state_it_saw() -> None:
    pods = ["a"]
    with pytest.raises(AssertionError) as exc:
        await wait_until(lambda: len(pods) == 2, "two pods", timeout=0.05, state=lambda: pods)
    assert str(exc.value) == "not true within 0.05s: two pods (state: ['a'])"


async def test_evaluates_the_condition_every_poll_seconds_and_returns_its_value() -> None:
    loop = asyncio.get_running_loop()
    seen: list[float] = []

    async def third_time() -> str | None:  # async conditions are awaited
        seen.append(loop.time())
        return "done" if len(seen) == 3 else None

    assert await wait_for(third_time, poll=0.1, what="the third evaluation") == "done"
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(gaps) == 2 and min(gaps) >= 0.09  # a sleep never ends early; no upper bound


async def test_a_failed_assertion_in_the_condition_ends_the_wait_at_once() -> None:
    def condition() -> bool:
        raise AssertionError("answered 500")

    with pytest.raises(AssertionError, match="answered 500"):
        await wait_for(condition, timeout=60)

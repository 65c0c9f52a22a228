"""The tests' wait helper returns as soon as its condition holds and otherwise fails
with what it waited for and the state it saw."""

from __future__ import annotations

import asyncio

import pytest
from waiting import wait_until


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

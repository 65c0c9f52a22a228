"""The leaked-task check behind the root conftest (see its docstring).

``fail_on_leaked_tasks`` is autouse and synchronous: for an async test it requests
``_task_leak_guard``, an async fixture on the test's own event loop. Being requested
first, the guard is set up before the test's other fixtures and torn down after them,
so a fixture that stops what it started is not blamed; what is still running after
that is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

#: How long cancelled tasks get to run their cleanup (``finally``, ``__aexit__``).
CANCELLED_GRACE_SECONDS = 5.0


def describe_task(task: asyncio.Task[object]) -> str:
    """The task's name, its coroutine and the chain of awaits it is suspended in."""
    coro = task.get_coro()
    where: list[str] = []
    current: object = coro
    for _ in range(12):
        frame = getattr(current, "cr_frame", None) or getattr(current, "ag_frame", None)
        if frame is None:  # a future, or a coroutine that has finished
            break
        code = frame.f_code
        where.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
        current = getattr(current, "cr_await", None) or getattr(current, "ag_await", None)
    state = " (cancelled, still running)" if task.cancelling() else ""
    chain = "\n      awaiting ".join(where) or repr(coro)
    return f"  {task.get_name()}{state}:\n      {chain}"


async def leaked_tasks() -> list[asyncio.Task[object]]:
    """The tasks of the running loop, other than the caller's, that are not done; tasks
    already cancelled are first given up to ``CANCELLED_GRACE_SECONDS`` to finish."""
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    cancelled = [t for t in others if t.cancelling()]
    if cancelled:
        await asyncio.wait(cancelled, timeout=CANCELLED_GRACE_SECONDS)
    return [t for t in others if not t.done()]


@pytest.fixture
async def _task_leak_guard() -> AsyncIterator[None]:
    yield
    leaked = await leaked_tasks()
    if not leaked:
        return
    report = "\n".join(describe_task(t) for t in leaked)
    for task in leaked:
        task.cancel()
    await asyncio.wait(leaked, timeout=CANCELLED_GRACE_SECONDS)
    pytest.fail(
        f"the test left {len(leaked)} asyncio task(s) running after its fixtures were "
        f"torn down (cancelled now):\n{report}",
        pytrace=False,
    )


@pytest.fixture(autouse=True)
def fail_on_leaked_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail an async test that leaves an asyncio task running (sync tests: no check)."""
    if pytest_asyncio.is_async_test(request.node):
        request.getfixturevalue("_task_leak_guard")
    yield

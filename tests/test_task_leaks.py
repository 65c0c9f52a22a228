"""The root conftest fails an async test that leaks an asyncio task, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent

CASES = """
import asyncio

import pytest


async def test_leaks_a_task():
    async def forever():
        await asyncio.sleep(3600)

    asyncio.create_task(forever(), name="forgotten")


async def test_cancels_without_awaiting():
    async def cleanup_takes_a_while():
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    task = asyncio.create_task(cleanup_takes_a_while())
    await asyncio.sleep(0)
    task.cancel()


async def test_cancelled_task_with_a_slow_cleanup():
    async def slow_cleanup():
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(60)  # longer than the grace (shortened to 0.5 s here)

    task = asyncio.create_task(slow_cleanup(), name="slow-cleanup")
    await asyncio.sleep(0)
    task.cancel()


async def test_awaits_its_task():
    await asyncio.create_task(asyncio.sleep(0))


@pytest.fixture
async def server():
    task = asyncio.create_task(asyncio.sleep(3600), name="fixture-task")
    yield task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_fixture_stops_its_task(server):
    assert not server.done()


def test_sync_test_is_not_checked():
    assert True
"""


@pytest.fixture
def outcome(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    shorter_grace = "\nimport task_leaks\n\ntask_leaks.CANCELLED_GRACE_SECONDS = 0.5\n"
    pytester.makeconftest((TESTS / "conftest.py").read_text() + shorter_grace)
    pytester.makepyfile(task_leaks=(TESTS / "task_leaks.py").read_text())
    pytester.makepyfile(test_cases=CASES)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rE", timeout=60)


def test_only_tests_that_leak_a_task_error_and_the_error_says_which(
    outcome: pytest.RunResult,
) -> None:
    outcome.assert_outcomes(passed=6, errors=2)  # the two errors are teardowns
    out = outcome.stdout.str()
    assert "ERROR test_cases.py::test_leaks_a_task" in out
    assert "ERROR test_cases.py::test_cancelled_task_with_a_slow_cleanup" in out
    for clean in (
        "test_cancels_without_awaiting",
        "test_awaits_its_task",
        "test_fixture_stops_its_task",
        "test_sync_test_is_not_checked",
    ):
        assert f"ERROR test_cases.py::{clean}" not in out
    # the failure names the task and where it waits
    assert "the test left 1 asyncio task(s) running" in out
    assert "forgotten:" in out
    assert "test_leaks_a_task.<locals>.forever (" in out and "test_cases.py:8)" in out
    assert "slow-cleanup (cancelled, still running):" in out

"""Fixtures for every test: an async test fails when it leaves an asyncio task running.

At the end of each async test, after its other fixtures are torn down, every task of the
test's event loop (other than the teardown's own) must be done. Tasks that were
cancelled get a bounded wait to finish their cleanup; any task still pending then is a
leak: it is cancelled, and the test errors at teardown with each task's name and where
it is suspended. A leak is fixed at its cause: the code that started the task cancels
and awaits it (or awaits it to completion) before it returns.

Lives in its own module, ``task_leaks``, so that ``tests/test_task_leaks.py`` can run
it in a ``pytester`` session; this root conftest only installs it.
"""

from __future__ import annotations

from task_leaks import _task_leak_guard, fail_on_leaked_tasks

pytest_plugins = ["pytester"]

__all__ = ["_task_leak_guard", "fail_on_leaked_tasks"]

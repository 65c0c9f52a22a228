"""Waiting in the sandbox tests: on a condition, with a deadline and a failure message
that says what was awaited and what the state was (a unique module name: several test
directories have a conftest.py, so tests never import from "conftest")."""

from __future__ import annotations

from collections.abc import Callable

from autoscalerd.sandbox import waiting


async def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = 5.0,
    state: Callable[[], object] | None = None,
) -> None:
    """Return once ``condition()`` is true. After ``timeout`` seconds, fail with
    "timed out after T s waiting until WHAT (state: ...)", ``state()`` describing what
    the test saw instead."""

    def why() -> str:
        seen = f" (state: {state()!r})" if state is not None else ""
        return f"timed out after {timeout} s waiting until {what}{seen}"

    try:
        await waiting.wait_until(condition, timeout, why)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None

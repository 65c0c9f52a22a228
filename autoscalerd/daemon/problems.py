"""A policy's current problems: each logged once when it starts and once when it ends.

A failing API call, pod or endpoint would otherwise log every tick. Problems are keyed by
where they happen (`scale`, `pods`, `write`, `internal`, `scrape:<pod>:<source index>`);
the same message again is silent, a new message for the same key is logged, and the end
of a problem is logged as "recovered". `/status` shows the current messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SCRAPE_PREFIX", "Problems"]

SCRAPE_PREFIX = "scrape:"
"""Keys of per-pod scrape problems start with this (`scrape:<pod>:<source index>`)."""


class Problems:
    """The current problems of one policy, by key.

    `log` is the policy's bound logger; `on_event(reason, message)` is called when a new
    problem names a Kubernetes Event reason (the reconciler decides whether to record it).
    """

    def __init__(self, log: Any, on_event: Callable[[str, str], None]) -> None:
        self._log = log
        self._on_event = on_event
        self._current: dict[str, str] = {}

    def report(self, key: str, message: str, *, event: str | None = None, **fields: Any) -> None:
        """`key` has the problem `message` now; logged (and an Event sent) only on change."""
        if self._current.get(key) == message:
            return
        self._current[key] = message
        self._log.warning(message, **fields)
        if event is not None:
            self._on_event(event, message)

    def resolved(self, key: str, **fields: Any) -> None:
        """`key` works again; logged only when it had a problem."""
        if self._current.pop(key, None) is not None:
            self._log.info("recovered", step=key.split(":")[0], **fields)

    @property
    def active(self) -> bool:
        """Whether any problem is current."""
        return bool(self._current)

    def has(self, key: str) -> bool:
        return key in self._current

    def message(self, key: str) -> str | None:
        """The current message of `key` (None: no problem)."""
        return self._current.get(key)

    @property
    def any_scrape(self) -> bool:
        """Whether a pod's scrape is failing (checked every tick: no allocation)."""
        return any(k.startswith(SCRAPE_PREFIX) for k in self._current)

    def forget_scrapes_except(self, live: Iterable[str]) -> None:
        """Forget, quietly, the scrape problems of pods that are gone (not in `live`)."""
        keep = set(live)
        for key in [k for k in self._current if k.startswith(SCRAPE_PREFIX) and k not in keep]:
            del self._current[key]

    def messages(self) -> list[str]:
        """The current problems' messages, oldest first."""
        return list(self._current.values())

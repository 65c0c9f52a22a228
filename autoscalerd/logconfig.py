"""The one place that configures logging (structlog, on stderr).

- `console`: human-readable lines, the default on a TTY.
- `json`: one JSON object per line, the default otherwise (containers, pipes).
- Under systemd (stderr is the journal: `$JOURNAL_STREAM` names stderr's device and inode),
  each line is prefixed with its syslog priority (`<3>` error, `<4>` warning, `<6>` info,
  `<7>` debug) so journald records the level, and the timestamp is left to journald.

Secrets never reach the logs: nothing here logs request headers, and the scrape and kube
packages never put tokens in events.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "stderr_is_journal"]

_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}
LEVELS = ("debug", "info", "warning", "error")


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """Say whether stderr is connected to journald (systemd sets `$JOURNAL_STREAM=dev:inode`)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    stream = stream or sys.stderr
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    dev, _, ino = value.partition(":")
    return f"{st.st_dev}" == dev and f"{st.st_ino}" == ino


def configure_logging(
    fmt: str | None = None, level: str = "info", *, stream: TextIO | None = None
) -> None:
    """Configure structlog (and the stdlib loggers of our libraries) once, at start-up.

    Args:
        fmt: `json`, `console`, or None for the default (console on a TTY, else json).
        level: `debug`, `info`, `warning` or `error`.
    """
    stream = stream or sys.stderr
    journal = stderr_is_journal(stream)
    if fmt is None:
        fmt = "console" if stream.isatty() and not journal else "json"
    numeric = getattr(logging, level.upper(), logging.INFO)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Any] = [structlog.processors.add_log_level]
    if not journal:  # journald stamps every line itself
        shared.append(timestamper)
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty() and not journal, sort_keys=False
        )
    final: list[Any] = [renderer, _PrefixPriority()] if journal else [renderer]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            *final,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiohttp, kubernetes_asyncio) log through the stdlib: same stream, same
    # format (JSON or console, with the journald priority prefix), warnings and above only.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


class _PrefixPriority:
    """Final processor: prefix the rendered line with its syslog priority for journald."""

    def __call__(self, _: Any, method: str, event: Any) -> Any:
        if isinstance(event, str):
            return f"<{_PRIORITY.get(method, 6)}>{event}"
        return event

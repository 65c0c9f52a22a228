"""When each policy ticks: a stable slot within the scrape interval, on an absolute grid.

Pure functions of the policy's key and of time (the caller reads the clock), so the grid is
tested with tables.
"""

from __future__ import annotations

import math
import zlib

__all__ = ["TICK_SLOTS", "next_tick", "tick_phase"]

TICK_SLOTS = 10
"""Policies tick in this many slots per interval (at 1 s: every 100 ms, a tenth of them).

Measured at 100 policies x 10 pods (bench/README-daemon.md): one phase per policy spread the
work over ~100 loop wake-ups a second, each handling a few responses, and cost ~40 % more CPU
per scrape than ticking all policies together; ticking all together made one burst of 1,000
scrapes a second (late ticks, RSS +150 MiB). Slots batch each tenth of the policies into one
wake-up and keep every burst small."""


def tick_phase(key: str) -> float:
    """A policy's stable slot within the scrape interval, as a fraction in [0, 1)."""
    return (zlib.crc32(key.encode()) % TICK_SLOTS) / TICK_SLOTS


def next_tick(after: float, interval: float, phase: float) -> float:
    """The first time strictly after `after` on the grid `phase*interval + k*interval`.

    The grid is absolute (k counts from loop time 0), so the policies of one slot get equal
    times, their timers fire in the same loop iteration, and their scrapes go out together;
    a tick that overran skips the slots it missed instead of bursting.
    """
    offset = phase * interval
    return offset + (math.floor((after - offset) / interval) + 1) * interval

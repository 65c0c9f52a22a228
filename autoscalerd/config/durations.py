"""Go-style durations (`30s`, `5m`, `1h30m`, `250ms`) and byte sizes (`16MiB`), parsed purely."""

from __future__ import annotations

import math
import re

__all__ = ["parse_byte_size", "parse_duration"]

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_duration(text: str) -> float:
    """Parse a Go duration into seconds.

    Accepts what Go's `time.ParseDuration` accepts for non-negative values (`"0"`, `"1.5s"`,
    `"1h30m"`, `"300ms"`). A bare number other than 0 is refused, because `30` could mean
    seconds or minutes; the message says to write `30s`.

    Raises:
        ValueError: with a message fit to show the user.
    """
    s = text.strip()
    if s in ("0", "+0"):
        return 0.0
    if not s:
        raise ValueError("empty duration; write e.g. 30s, 5m or 1h30m")
    if s.startswith("-"):
        raise ValueError(f"{text!r} is negative; durations must be 0 or more")
    if s.startswith("+"):
        s = s[1:]
    try:
        float(s)
    except ValueError:
        pass
    else:
        raise ValueError(f"{text!r} has no unit; write e.g. {s}s (units: ms, s, m, h)")
    pos = 0
    total = 0.0
    for match in _TERM.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 5m or 1h30m")
    if not math.isfinite(total):
        raise ValueError(f"{text!r} is too large")
    return total


def parse_byte_size(text: str | int) -> int:
    """Parse a byte size: an integer, or a number with a unit (`16MiB`, `512KiB`, `1GB`)."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative")
        return text
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 16MiB, 512KiB or 1000000")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])

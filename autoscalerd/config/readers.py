"""Typed field readers: each checks one value, and on a bad one records a problem at its line.

Every reader takes the `Document`, the value's path and the value; it returns the typed value,
or None after recording a problem that says what was expected and what was found. Callers
collect every problem instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from autoscalerd.config.durations import parse_duration
from autoscalerd.config.problems import Document, Path

__all__ = [
    "check_keys",
    "describe",
    "did_you_mean",
    "format_seconds",
    "read_bool",
    "read_duration",
    "read_float",
    "read_int",
    "read_mapping",
    "read_string",
    "suggest",
]


def suggest(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` most likely misspells (case, `_` and `-` ignored first), if any."""
    known = list(known)
    norm = name.replace("_", "").replace("-", "").lower()
    for k in known:
        if k.replace("_", "").replace("-", "").lower() == norm:
            return k
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`; did you mean 'x'?` for a likely misspelling, else the list of known fields."""
    known = list(known)
    guess = suggest(key, known)
    if guess is not None:
        return f"; did you mean {guess!r}?"
    return f"; known fields: {', '.join(sorted(known))}"


def check_keys(
    doc: Document,
    path: Path,
    data: Mapping[str, Any],
    allowed: Iterable[str],
    rejected: Mapping[str, str] | None = None,
) -> None:
    """Record a problem for every key of `data` outside `allowed`.

    A key in `rejected` gets its own message there (a field known but not acted on);
    any other gets "unknown field" with a hint.
    """
    allowed = set(allowed)
    rejected = rejected or {}
    for key in data:
        if key in allowed:
            continue
        if not isinstance(key, str):
            doc.add((*path, str(key)), f"keys must be strings, got {key!r}", at_key=True)
        elif key in rejected:
            doc.add((*path, key), rejected[key], at_key=True)
        else:
            doc.add((*path, key), f"unknown field {key!r}{did_you_mean(key, allowed)}", at_key=True)


def describe(value: Any) -> str:
    """Name what a YAML value is, for "must be X, got Y" messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{value!r}"


def read_mapping(
    doc: Document, path: Path, value: Any, what: str = "a mapping"
) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    doc.add(path, f"must be {what}, got {describe(value)}")
    return None


def read_string(doc: Document, path: Path, value: Any, *, allow_empty: bool = False) -> str | None:
    if isinstance(value, str) and (allow_empty or value.strip()):
        return value
    if isinstance(value, str):
        doc.add(path, "must not be empty")
    else:
        doc.add(path, f"must be a string, got {describe(value)}")
    return None


def read_bool(doc: Document, path: Path, value: Any) -> bool | None:
    """A YAML boolean, or the strings `true`/`false` (annotation values are strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    doc.add(path, f"must be true or false, got {describe(value)}")
    return None


def read_int(
    doc: Document,
    path: Path,
    value: Any,
    *,
    lo: int | None = None,
    hi: int | None = None,
    allow_string: bool = False,
) -> int | None:
    """A whole number in [lo, hi]; a float with no fraction is accepted, a digit string only
    with `allow_string`."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif allow_string and isinstance(value, str) and value.strip().lstrip("+").isdigit():
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None:
        doc.add(path, f"must be a whole number, got {describe(value)}")
        return None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        doc.add(path, f"must be {_number_range(lo, hi)}, got {number}")
        return None
    return number


def read_float(
    doc: Document,
    path: Path,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float | None:
    """A finite number (or a string holding one) in [lo, hi], or (lo, hi] with `lo_open`."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        doc.add(path, f"must be a number, got {describe(value)}")
        return None
    too_low = lo is not None and (number <= lo if lo_open else number < lo)
    if too_low or (hi is not None and number > hi):
        doc.add(path, f"must be {_number_range(lo, hi, lo_open=lo_open)}, got {_number(number)}")
        return None
    return number


def read_duration(
    doc: Document,
    path: Path,
    value: Any,
    *,
    lo: float = 0.0,
    hi: float | None = None,
    lo_open: bool = False,
) -> float | None:
    """A Go duration (`30s`, `1h30m`; a bare 0 too) in seconds, in [lo, hi] or (lo, hi]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        seconds = 0.0
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            doc.add(path, str(exc))
            return None
    else:
        doc.add(path, f"must be a duration such as 30s, 5m or 1h30m, got {describe(value)}")
        return None
    too_low = seconds <= lo if lo_open else seconds < lo
    if too_low or (hi is not None and seconds > hi):
        doc.add(path, f"must be {_duration_range(lo, hi, lo_open)}, got {value}")
        return None
    return seconds


def format_seconds(seconds: float) -> str:
    """Seconds the way a policy file writes them: `1h`, `5m`, `30s`, `250ms`."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds.is_integer():
        return f"{int(seconds)}s"
    return f"{seconds * 1000:g}ms"


def _number_range(lo: float | None, hi: float | None, *, lo_open: bool = False) -> str:
    lo_word = "more than" if lo_open else "at least"
    if lo is not None and hi is not None:
        return (
            f"between {_number(lo)} and {_number(hi)}"
            if not lo_open
            else f"more than {_number(lo)} and at most {_number(hi)}"
        )
    if lo is not None:
        return f"{lo_word} {_number(lo)}"
    return f"at most {_number(hi)}" if hi is not None else "a number"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _duration_range(lo: float, hi: float | None, lo_open: bool) -> str:
    low = f"more than {format_seconds(lo)}" if lo_open else f"at least {format_seconds(lo)}"
    if hi is None:
        return low
    return f"{low} and at most {format_seconds(hi)}"

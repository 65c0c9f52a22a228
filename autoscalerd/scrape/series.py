"""Select every matching series with its labels, for derived signals (`rate`,
`histogram_quantile`): a counter's series are tracked one by one, a histogram's buckets by `le`.

Pure, next to `parser.select_value` and with the same page rules (exact names, a cut page is
TRUNCATED, NaN/±Inf values INVALID_VALUE, a repeated series DUPLICATE, no series ABSENT). Only
derived sources take this path: it parses every matching line's labels, which the plain-gauge
hot path (`select_value`) avoids.
"""

from __future__ import annotations

import math

from autoscalerd.config.model import SeriesSelector
from autoscalerd.scrape.parser import (
    ParseError,
    SelectResult,
    SelectStatus,
    page_end_problem,
    parse_line,
)

__all__ = ["Labels", "select_series"]

Labels = tuple[tuple[str, str], ...]
"""A series' labels sorted by name, labels set to `""` left out (as Prometheus does)."""

_END = frozenset("{ \t\r\n")


def select_series(
    text: str, selector: SeriesSelector, *, openmetrics: bool = False
) -> tuple[SelectResult, tuple[tuple[Labels, float], ...]]:
    """Every series of `text` matching `selector`, with its labels and value, in page order.

    The result's `value` is their sum (as `select_value` gives); the series are empty unless
    it is OK.
    """
    problem = page_end_problem(text, selector, openmetrics=openmetrics)
    if problem is not None:
        return problem, ()
    name = selector.metric
    needle = "\n" + name
    matchers = selector.matchers
    out: list[tuple[Labels, float]] = []
    lines: dict[Labels, int] = {}
    total = 0.0
    start = 0 if text.startswith(name) else _after(text.find(needle))
    while start != -1:
        after = start + len(name)
        if after < len(text) and text[after] not in _END:
            start = _after(text.find(needle, after))
            continue
        end = text.find("\n", after)
        if end == -1:
            end = len(text)
        line = text[start:end]
        try:
            labels, value = parse_line(line, len(name))
        except ParseError as exc:
            return _fail(text, selector, SelectStatus.MALFORMED, start, len(out), str(exc)), ()
        if all(m.matches(labels.get(m.name, "")) for m in matchers):
            if math.isnan(value) or math.isinf(value):
                why = f"series {line.rstrip()} has value {value}, which is not a usable count"
                return _fail(text, selector, SelectStatus.INVALID_VALUE, start, len(out), why), ()
            key = tuple(sorted((k, v) for k, v in labels.items() if v))
            if key in lines:
                why = f"{line.rstrip()!r} repeats the series of line {lines[key]}"
                return _fail(text, selector, SelectStatus.DUPLICATE, start, len(out), why), ()
            lines[key] = text.count("\n", 0, start) + 1
            out.append((key, value))
            total += value
        start = _after(text.find(needle, end))
    if not out:
        absent = SelectResult(
            selector=selector, status=SelectStatus.ABSENT, reason=f"no series matches {selector}"
        )
        return absent, ()
    ok = SelectResult(selector=selector, status=SelectStatus.OK, value=total, matched=len(out))
    return ok, tuple(out)


def _fail(
    text: str, selector: SeriesSelector, status: SelectStatus, at: int, matched: int, why: str
) -> SelectResult:
    return SelectResult(
        selector=selector,
        status=status,
        matched=matched,
        line=text.count("\n", 0, at) + 1,
        reason=why if status is not SelectStatus.MALFORMED else f"malformed sample line: {why}",
    )


def _after(found: int) -> int:
    return found + 1 if found != -1 else -1

"""Select every matching series with its label set, for derived signals (`rate`,
`histogram_quantile`): a counter's series are tracked one by one, a histogram's buckets by `le`.

Pure, next to `parser.select_value` and with the same page rules (exact names, a cut page is
TRUNCATED, NaN/±Inf values INVALID_VALUE, a repeated series DUPLICATE, no series ABSENT). Only
derived sources take this path.

A series is named by its label set *as written on the page* (`le="0.5",model="a"`; `""` when
it has none): exporters write a series' labels the same way on every scrape, so this is a
stable identity that costs no parsing. Each distinct label set is parsed once (checked for
syntax, and for the selector's matchers) and remembered. The lines themselves are read in C as far
as possible: the family's block of the page is split into lines, each cut at its last `} `,
the values converted with one `map(float, …)` (`_block`); anything unusual there (a line
without labels, a timestamp, an exemplar, an escape, a syntax error, another metric in the
block) falls back to a line-by-line reading that names the offending line. The duplicate check compares label sets as
written, so the same labels in another order on one page are not caught here (`select_value`
catches them for gauges).
"""

from __future__ import annotations

import math
from typing import Any

from autoscalerd.config.model import SeriesSelector
from autoscalerd.scrape.parser import (
    ParseError,
    SelectResult,
    SelectStatus,
    page_end_problem,
    parse_line,
)

__all__ = ["Series", "SeriesKey", "select_series"]

SeriesKey = str
"""A series' label set as written between `{` and `}` (`""` without labels)."""

_END = frozenset("{ \t\r\n")
_BLANK = " \t\r"
"""What may separate the parts of a sample line (and end it, on a CRLF page)."""
_LABELS: dict[str, dict[str, str] | None] = {}
"""Label set as written → its labels, None when it does not parse (bounded, `_LABELS_MAX`)."""
_LABELS_MAX = 65536


def _labels(name: str, key: str) -> dict[str, str] | None:
    labels = _LABELS.get(key, _LABELS)
    if labels is _LABELS:
        try:
            labels = parse_line(f"{name}{{{key}}} 0", len(name))[0]
        except ParseError:
            labels = None
        if len(_LABELS) >= _LABELS_MAX:
            _LABELS.clear()
        _LABELS[key] = labels
    return labels  # type: ignore[return-value]


Series = tuple[tuple[SeriesKey, ...], tuple[float, ...]]
"""The matching series of one page: their label sets and, in the same order, their values."""

_NONE: Series = ((), ())


def select_series(
    text: str, selector: SeriesSelector, *, openmetrics: bool = False
) -> tuple[SelectResult, Series]:
    """Every series of `text` matching `selector`: (label sets, values), in page order.

    The result's `value` is their sum (as `select_value` gives); the series are empty unless
    it is OK.
    """
    problem = page_end_problem(text, selector, openmetrics=openmetrics)
    if problem is not None:
        return problem, _NONE
    fast = _block(text, selector)
    if fast is not None:
        return fast
    return _line_by_line(text, selector)


def _block(text: str, selector: SeriesSelector) -> tuple[SelectResult, Series] | None:
    """The fast path, for the usual block of `name{labels} value` lines: the block from the
    first to the last line that starts with the metric's name (a family's lines are grouped)
    is split at its line ends and `} `s into label sets and values, all in C. None when any line of the
    block is anything else (another metric, no labels, a timestamp or an exemplar, an escape,
    a syntax error): the line-by-line path then decides."""
    name = selector.metric
    needle = "\n" + name
    first = 0 if text.startswith(name) else _after(text.find(needle))
    if first == -1:
        return None
    last = text.rfind(needle) + 1 or first
    last_end = text.find("\n", last)
    if last_end == -1:
        last_end = len(text)
    if text.find("#", first, last_end) != -1:  # an exemplar (or a `#` in a value)
        return None
    # `name{labels} value` lines, cut at every `} ` and line end, alternate labels and value.
    # A `} ` inside a label value breaks the alternation: the count, or the shape (a label set
    # cut inside its quotes does not parse), or a value then sends the block to the slow path.
    block = text[first:last_end]
    parts = block.replace("\n", "} ").split("} ")
    if len(parts) != 2 * (block.count("\n") + 1):
        return None
    tokens = parts[1::2]
    joined = "\0".join(tokens)
    if "_" in joined or " " in joined or "\t" in joined:
        return None  # `1_000` (not a number here), a timestamp: slow path
    try:
        values = tuple(map(float, tokens))
    except ValueError:
        return None
    raws = tuple(parts[0::2])
    shape = _SHAPES.get(raws)
    if shape is None or (shape[0] is not selector and shape[0] != selector):
        shape = _shape_of(name, selector, raws)
        if shape is None:
            return None
    keys, picked = shape[1], shape[2]
    if picked is not None:
        values = tuple([values[i] for i in picked])
    total = sum(values)
    if not math.isfinite(total):
        return None  # NaN or ±Inf somewhere: the line-by-line path names it
    ok = SelectResult(selector=selector, status=SelectStatus.OK, value=total, matched=len(keys))
    return ok, (keys, values)


_Shape = tuple[SeriesSelector, tuple[SeriesKey, ...], list[int] | None]
_SHAPES: dict[tuple[str, ...], _Shape] = {}
"""A block's lines cut before their value (`name{labels`) → the selector they were last
checked for, their label sets, and the indices of the matching ones (None: all). Pages of the
same exporter list the same series scrape after scrape: their label sets are cut, checked for
uniqueness and syntax, and matched once (bounded: `_SHAPES_MAX_LINES` lines in all, as many as
`_LABELS` holds label sets)."""
_OTHER_SHAPES: dict[tuple[tuple[str, ...], SeriesSelector], _Shape | None] = {}
"""The same for the other selectors read on a block (`model="a"` and `model="b"` on one
page), so that they do not replace each other's shape on every page (bounded too)."""
_SHAPES_MAX_LINES = 65536
_shape_lines = [0, 0]
"""Lines held by `_SHAPES` and by `_OTHER_SHAPES`."""


def _remember(
    cache: dict[Any, Any], which: int, key: Any, raws: tuple[str, ...], value: Any
) -> None:
    if key not in cache:
        if _shape_lines[which] + len(raws) > _SHAPES_MAX_LINES:
            cache.clear()
            _shape_lines[which] = 0
        _shape_lines[which] += len(raws)
    cache[key] = value


def _shape_of(name: str, selector: SeriesSelector, raws: tuple[str, ...]) -> _Shape | None:
    """The block's shape for `selector`, from the second-level cache or checked now."""
    other = (raws, selector)
    if other in _OTHER_SHAPES:
        shape = _OTHER_SHAPES[other]
    else:
        shape = _shape(name, selector, raws)
        _remember(_OTHER_SHAPES, 1, other, raws, shape)
    if shape is not None:
        _remember(_SHAPES, 0, raws, raws, shape)
    return shape


def _shape(name: str, selector: SeriesSelector, raws: tuple[str, ...]) -> _Shape | None:
    """Check a block's label sets (distinct, parsable) and match them; None: the slow path."""
    # Every line of the block starts with `name{`, and the name stands nowhere else in its
    # labels (checked here, once per shape: the page's values are only numbers).
    start = name + "{"
    if not all(raw.startswith(start) and raw.count(name) == 1 for raw in raws):
        return None
    skip = len(start)
    keys = tuple([raw[skip:] for raw in raws])
    if len(set(keys)) != len(keys):
        return None  # a repeated series: the slow path names the line
    known = _LABELS
    for key in keys:
        if _labels(name, key) is None:
            return None
    picked: list[int] | None = None
    matchers = selector.matchers
    if matchers:
        picked = [
            i
            for i, key in enumerate(keys)
            if all(m.matches(known[key].get(m.name, "")) for m in matchers)  # type: ignore[union-attr]
        ]
        if not picked:
            return None
        keys = tuple([keys[i] for i in picked])
    return (selector, keys, picked)


def _line_by_line(text: str, selector: SeriesSelector) -> tuple[SelectResult, Series]:
    name = selector.metric
    name_len = len(name)
    needle = "\n" + name
    matchers = selector.matchers
    find = text.find
    text_len = len(text)
    out: list[tuple[SeriesKey, float]] = []
    seen: set[str] = set()
    total = 0.0
    start = 0 if text.startswith(name) else _after(find(needle))
    while start != -1:
        after = start + name_len
        if after < text_len and text[after] not in _END:
            start = _after(find(needle, after))
            continue
        end = find("\n", after)
        if end == -1:
            end = text_len
        key, rest = _split(text, after, end)
        labels = None if key is None else _labels(name, key)
        value = None if labels is None or rest < 0 else _value(text, rest, end)
        if value is None:  # the slow path says what is wrong with the line
            try:
                parse_line(text[start:end], name_len)
                why = "unexpected text after the value"
            except ParseError as exc:
                why = str(exc)
            return _fail(text, selector, SelectStatus.MALFORMED, start, len(out), why), _NONE
        assert key is not None and labels is not None
        if not matchers or all(m.matches(labels.get(m.name, "")) for m in matchers):
            if math.isnan(value) or math.isinf(value):
                why = f"series {text[start:end].rstrip()} has value {value}: not a usable count"
                return _fail(
                    text, selector, SelectStatus.INVALID_VALUE, start, len(out), why
                ), _NONE
            if key in seen:
                why = f"{text[start:end].rstrip()!r} repeats a series of the page"
                return _fail(text, selector, SelectStatus.DUPLICATE, start, len(out), why), _NONE
            seen.add(key)
            out.append((key, value))
            total += value
        start = _after(find(needle, end))
    if not out:
        absent = SelectResult(
            selector=selector, status=SelectStatus.ABSENT, reason=f"no series matches {selector}"
        )
        return absent, _NONE
    ok = SelectResult(selector=selector, status=SelectStatus.OK, value=total, matched=len(out))
    return ok, (tuple(k for k, _ in out), tuple(v for _, v in out))


def _split(text: str, i: int, end: int) -> tuple[str | None, int]:
    """(label set as written, index after it) of the sample line whose name ends at `i`."""
    after_name = i
    while i < end and text[i] in _BLANK:
        i += 1
    if i >= end or text[i] != "{":
        return "", after_name
    open_at = i + 1
    close = text.find("}", open_at, end)
    # A `}` inside a quoted value: the quotes before it are odd. Escapes: take the slow path.
    while close != -1 and text.count('"', open_at, close) % 2:
        close = text.find("}", close + 1, end)
    if close == -1 or text.find("\\", open_at, close) != -1:
        return None, -1
    return text[open_at:close], close + 1


def _value(text: str, i: int, end: int) -> float | None:
    """The value after the label set (a timestamp or an exemplar may follow); None if bad."""
    if i < end and text[i] not in _BLANK:
        return None
    parts = text[i:end].split()
    if not parts or "_" in parts[0]:
        return None
    try:
        value = float(parts[0])
        if len(parts) > 1 and parts[1][0] != "#":
            float(parts[1])  # a timestamp must be a number too
    except ValueError:
        return None
    return value


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

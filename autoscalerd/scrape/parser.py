"""A targeted Prometheus text (0.0.4) and OpenMetrics (1.0) parser: select, don't parse.

The daemon reads one or a few series out of pages that hold hundreds or thousands. Parsing every
line into samples (what `prometheus_client` and Prometheus itself do) spends nearly all its time
on series nobody asked for. This module instead finds the *candidate lines* of each selector by
searching the page for `"\\n" + metric_name` with `str.find` (C speed, no per-line Python work),
keeps only the hits where the name is followed by `{`, a space or a tab (exact name match, never a
prefix or substring), and fully parses only those lines: labels with escapes, value, optional
timestamp, optional OpenMetrics exemplar.

Line grammar accepted (both formats; OpenMetrics is a subset for samples):

    name [ "{" [ label "=" '"' value '"' { "," label "=" '"' value '"' } [ "," ] ] "}" ]
         value [ timestamp ] [ " # " exemplar ]

Comments (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`, free text), blank lines and CRLF line ends are
handled implicitly: a comment never starts with a metric name, so it is never a candidate.

Semantics of a selection, the contract the scraper relies on:
- every series whose name equals the selector's metric and whose labels satisfy every matcher
  (an absent label reads as `""`, as in PromQL) contributes; their values are **summed**;
- no matching series: `SelectStatus.ABSENT` (never 0: a missing metric is not a zero load);
- a matching series valued NaN or ±Inf: `SelectStatus.INVALID_VALUE`, with the line;
- a matching line that does not parse: `SelectStatus.MALFORMED`, with the line and the reason.
Lines that do not match are never parsed, so garbage elsewhere in a page does not fail a
selection; `looks_like_exposition` tells an HTML error page from a metrics page when nothing
matched.

Pure: no I/O, no logging, no asyncio (import-linter enforces it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from autoscalerd.config.model import MatchOp, SeriesSelector
from autoscalerd.errors import AutoscalerdError

__all__ = [
    "ParseError",
    "SelectResult",
    "SelectStatus",
    "looks_like_exposition",
    "parse_line",
    "select_value",
    "select_values",
]

_NAME_END = frozenset("{ \t")
"""Characters that may follow a metric name on a sample line; anything else means a longer name."""

_CANDIDATE_END = frozenset("{ \t\r\n")
"""Same, plus the line end: `name` alone on a line is that metric's (malformed) sample line."""

_BLANK = " \t"

_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
"""Label value escapes of both formats: backslash, double quote, line feed."""

_SNIFF_LINES = 5
"""How many non-blank lines `looks_like_exposition` inspects."""

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
_NAME_REST = _NAME_FIRST | frozenset("0123456789")


class ParseError(ValueError, AutoscalerdError):
    """A sample line that does not follow the exposition grammar; `str()` says where and why."""


class SelectStatus(StrEnum):
    OK = "ok"
    ABSENT = "absent"
    INVALID_VALUE = "invalid_value"
    MALFORMED = "malformed"


@dataclass(frozen=True, kw_only=True, slots=True)
class SelectResult:
    """The outcome of one selector on one page.

    `value` is the sum of the matching series when `status` is OK, else None. `matched` counts
    the matching series seen (up to the failure for INVALID_VALUE and MALFORMED). `line` is the
    1-based line number of the offending line, and `reason` a sentence for humans ("" when OK).
    """

    selector: SeriesSelector
    status: SelectStatus
    value: float | None = None
    matched: int = 0
    reason: str = ""
    line: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is SelectStatus.OK


def select_values(text: str, selectors: Sequence[SeriesSelector]) -> list[SelectResult]:
    """Evaluate every selector on one exposition page; one result per selector, in order."""
    return [select_value(text, selector) for selector in selectors]


_Plan = tuple[SeriesSelector, str, str, tuple[str, ...]]
"""(selector, metric name, `"\\n" + name`, required literals): what a selection derives from
its selector alone, kept by `id(selector)` (the daemon passes the same selector objects every
tick; the identity check in `select_value` makes a reused id harmless)."""

_PLANS: dict[int, _Plan] = {}
_PLANS_MAX = 4096


def _plan(selector: SeriesSelector) -> _Plan:
    name = selector.metric
    # Cheap necessary condition for `label="value"` matchers: the quoted value appears literally
    # in the line (its encoding is unique when it holds no character that needs escaping). It
    # skips the label parse of most same-name lines, e.g. the other models of a vLLM page.
    required = tuple(
        f'"{m.value}"'
        for m in selector.matchers
        if m.op is MatchOp.EQ and m.value and not any(c in m.value for c in '\\"\n')
    )
    plan = (selector, name, "\n" + name, required)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[id(selector)] = plan
    return plan


def select_value(text: str, selector: SeriesSelector) -> SelectResult:
    """Sum the series of `text` that match `selector` (see the module docstring for semantics)."""
    plan = _PLANS.get(id(selector))
    if plan is None or plan[0] is not selector:
        plan = _plan(selector)
    _, name, needle, required = plan
    matchers = selector.matchers
    name_len = len(name)
    total = 0.0
    matched = 0
    text_len = len(text)
    find = text.find  # bound once: the loop below runs per candidate line
    # `start` is the first character of a candidate line; a page may begin with the metric.
    if text.startswith(name):
        start = 0
    else:
        found = find(needle)
        start = found + 1 if found != -1 else -1
    while start != -1:
        after = start + name_len
        # Exact name: the name must be followed by labels, a blank, or (malformed) the line end.
        if after < text_len and text[after] not in _CANDIDATE_END:
            found = find(needle, after)
            start = found + 1 if found != -1 else -1
            continue
        end = find("\n", after)
        if end == -1:
            end = text_len
        skip = False
        for literal in required:
            if find(literal, after, end) == -1:
                skip = True
                break
        if not skip:
            line = text[start:end]
            try:
                labels, value = parse_line(line, name_len, want_labels=bool(matchers))
            except ParseError as exc:
                return SelectResult(
                    selector=selector,
                    status=SelectStatus.MALFORMED,
                    matched=matched,
                    line=_line_number(text, start),
                    reason=f"malformed sample line for {name}: {exc}",
                )
            if not matchers or all(m.matches(labels.get(m.name, "")) for m in matchers):
                if math.isnan(value) or math.isinf(value):
                    shown = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
                    return SelectResult(
                        selector=selector,
                        status=SelectStatus.INVALID_VALUE,
                        matched=matched + 1,
                        line=_line_number(text, start),
                        reason=f"series {_shorten(line)} has value {shown}, "
                        "which is not a usable load (rejected, not read as 0)",
                    )
                total += value
                matched += 1
        found = find(needle, end)
        start = found + 1 if found != -1 else -1
    if not matched:
        return SelectResult(
            selector=selector,
            status=SelectStatus.ABSENT,
            reason=f"no series matches {selector}",
        )
    return SelectResult(selector=selector, status=SelectStatus.OK, value=total, matched=matched)


def parse_line(
    line: str, name_len: int, *, want_labels: bool = True
) -> tuple[dict[str, str], float]:
    """Parse one sample line whose metric name is `line[:name_len]`; return (labels, value).

    Trailing `\\r` (CRLF pages), a timestamp and an OpenMetrics exemplar are accepted and
    ignored. With `want_labels=False` the label set is still checked for syntax but the dict is
    left empty (the caller has no matchers). Raises `ParseError` with the reason.
    """
    n = len(line)
    if n and line[n - 1] == "\r":
        n -= 1
    i = name_len
    while i < n and line[i] in _BLANK:
        i += 1
    labels: dict[str, str] = {}
    if i < n and line[i] == "{":
        i = _parse_labels(line, i + 1, n, labels if want_labels else None)
        if i < n and line[i] not in _BLANK:
            raise ParseError(f"expected a space after the label set at column {i + 1}")
    while i < n and line[i] in _BLANK:
        i += 1
    if i >= n:
        raise ParseError("missing value")
    j = i
    while j < n and line[j] not in _BLANK:
        j += 1
    token = line[i:j]
    try:
        value = float(token)
    except ValueError:
        raise ParseError(f"value {token!r} is not a number") from None
    if "_" in token:  # Python accepts 1_000; the exposition formats do not
        raise ParseError(f"value {token!r} is not a number")
    # Whatever follows (timestamp, "# exemplar") is checked only for the timestamp's syntax.
    while j < n and line[j] in _BLANK:
        j += 1
    if j < n and line[j] != "#":
        k = j
        while k < n and line[k] not in _BLANK:
            k += 1
        try:
            float(line[j:k])
        except ValueError:
            raise ParseError(f"timestamp {line[j:k]!r} is not a number") from None
    return labels, value


def _parse_labels(line: str, i: int, n: int, out: dict[str, str] | None) -> int:
    """Parse `name="value",…}` from `line[i:n]`; fill `out`; return the index after `}`."""
    while True:
        while i < n and line[i] in _BLANK:
            i += 1
        if i >= n:
            raise ParseError("label set is not closed with '}'")
        if line[i] == "}":
            return i + 1
        eq = line.find("=", i, n)
        if eq == -1:
            raise ParseError(f'expected label="value" at column {i + 1}')
        label = line[i:eq].strip(_BLANK)
        if not _is_label_name(label):
            raise ParseError(f"invalid label name {label!r} at column {i + 1}")
        i = eq + 1
        while i < n and line[i] in _BLANK:
            i += 1
        if i >= n or line[i] != '"':
            raise ParseError(f"label {label} value must be in double quotes (column {i + 1})")
        i += 1
        close = line.find('"', i, n)
        if close == -1:
            raise ParseError(f"label {label} value is not closed with '\"'")
        backslash = line.find("\\", i, close)
        if backslash == -1:  # fast path: no escapes in this value
            value = line[i:close]
            i = close + 1
        else:
            value, i = _unescape(line, i, n, label)
        if out is not None:
            out[label] = value
        while i < n and line[i] in _BLANK:
            i += 1
        if i < n and line[i] == ",":
            i += 1
        elif i < n and line[i] == "}":
            return i + 1
        else:
            raise ParseError(f"expected ',' or '}}' after label {label} (column {i + 1})")


def _unescape(line: str, i: int, n: int, label: str) -> tuple[str, int]:
    """Read an escaped label value from `i` (just after the opening quote); return (value, end)."""
    parts: list[str] = []
    start = i
    while i < n:
        c = line[i]
        if c == '"':
            parts.append(line[start:i])
            return "".join(parts), i + 1
        if c == "\\":
            if i + 1 >= n:
                break
            parts.append(line[start:i])
            esc = line[i + 1]
            # Unknown escapes are kept verbatim, as Prometheus's text parser does.
            parts.append(_ESCAPES.get(esc, "\\" + esc))
            i += 2
            start = i
            continue
        i += 1
    raise ParseError(f"label {label} value is not closed with '\"'")


def _is_label_name(label: str) -> bool:
    return bool(label) and label[0] in _NAME_FIRST and all(c in _NAME_REST for c in label)


def _line_number(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _shorten(line: str, limit: int = 160) -> str:
    line = line.rstrip("\r")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def looks_like_exposition(text: str) -> bool:
    """Say whether a page plausibly is Prometheus/OpenMetrics text (used to explain an absence).

    Checks the first few non-blank lines: each must be a comment or start with a metric name
    followed by `{`, a space or a tab. An empty page counts as exposition (an exporter with no
    series yet). An HTML error page or a JSON document does not.
    """
    seen = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            pass
        else:
            k = 0
            if line[0] not in _NAME_FIRST:
                return False
            while k < len(line) and line[k] in _NAME_REST:
                k += 1
            if k >= len(line) or line[k] not in _NAME_END:
                return False
        seen += 1
        if seen >= _SNIFF_LINES:
            break
    return True

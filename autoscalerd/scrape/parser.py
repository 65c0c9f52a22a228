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
- a matching line that does not parse: `SelectStatus.MALFORMED`, with the line and the reason;
- the page was cut (`SelectStatus.TRUNCATED`): a sample counts only on a complete line. A text
  page whose last line has no `\\n` and names the metric (or is the start of its name) may hold
  a cut sample (`go_threads 6` of `go_threads 60`) and, since a family's lines are grouped, may
  have lost more of the metric's series after it. A last line of another metric cannot hide
  this one's series, so an exporter that only forgets the final newline still serves the other
  metrics. An OpenMetrics page (`openmetrics=True`, from the Content-Type) must end with its
  `# EOF` line, followed by at most a newline, or every selection on it is TRUNCATED (MALFORMED
  when lines follow `# EOF`): OpenMetrics has the marker so that a cut is always detectable;
- the same series twice among the matching samples (same name, same label set; a label set to
  `""` counts as absent, as in Prometheus): `SelectStatus.DUPLICATE`, naming both lines. The
  exposition formats forbid it, and no value is right: summing doubles the load, and keeping
  one (Prometheus drops the repeats as "duplicate sample for timestamp") is an arbitrary pick
  between values the exporter disagrees with itself about. The pod counts as
  missing for that selector until its exporter is fixed. Series that differ in any label value
  are distinct and summed.
Lines that do not match are never parsed, so garbage elsewhere in a page does not fail a
selection; `looks_like_exposition` tells an HTML error page from a metrics page when nothing
matched.

Cost: the page-end checks look at the last few characters only (`rfind` of the last line when
the page lacks its final newline); the duplicate check starts at the second matching series, so
the common one-series selection does no more work than before.

Pure: no I/O, no logging, no asyncio (import-linter enforces it).

About 520 lines: the hot path (candidate lines, labels, value) and the page-level rules that
guard it (complete last line, # EOF, repeated series) are kept together so that each rule
is checked where it costs nothing.
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
    "page_end_problem",
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
    TRUNCATED = "truncated"
    """The page was cut (a last line without its newline, or OpenMetrics without `# EOF`)."""
    DUPLICATE = "duplicate"
    """A matching series appears more than once on the page."""


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


def select_values(
    text: str, selectors: Sequence[SeriesSelector], *, openmetrics: bool = False
) -> list[SelectResult]:
    """Evaluate every selector on one exposition page; one result per selector, in order.

    `openmetrics=True` (the response's Content-Type is `application/openmetrics-text`) requires
    the page to end with `# EOF`.
    """
    return [select_value(text, selector, openmetrics=openmetrics) for selector in selectors]


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


def select_value(text: str, selector: SeriesSelector, *, openmetrics: bool = False) -> SelectResult:
    """Sum the series of `text` that match `selector` (see the module docstring for semantics).

    `openmetrics=True` requires the page to end with the `# EOF` line.
    """
    plan = _PLANS.get(id(selector))
    if plan is None or plan[0] is not selector:
        plan = _plan(selector)
    _, name, needle, required = plan
    # A complete page ends with "\n" (text) or "# EOF" (OpenMetrics): O(1) for such a page.
    if openmetrics:
        if not _ends_with_eof(text):
            return _no_eof(text, selector)
    elif text and text[-1] != "\n":
        cut = _cut_line(text, selector, name)
        if cut is not None:
            return cut
    matchers = selector.matchers
    want_labels = bool(matchers)
    name_len = len(name)
    total = 0.0
    matched = 0
    # The first matching line, kept for the duplicate check that starts at the second one.
    first_line = ""
    first_labels: dict[str, str] = {}
    first_start = 0
    seen: dict[frozenset[tuple[str, str]], int] | None = None
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
                labels, value = parse_line(line, name_len, want_labels=want_labels)
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
                if matched:
                    if seen is None:
                        if not want_labels:  # both lines were parsed without their labels
                            first_labels = parse_line(first_line, name_len)[0]
                            labels = parse_line(line, name_len)[0]
                            want_labels = True  # every later line needs them too
                        seen = {_series_key(first_labels): first_start}
                    key = _series_key(labels)
                    earlier = seen.setdefault(key, start)
                    if earlier != start:
                        return _duplicate(text, selector, line, earlier, start, matched + 1)
                else:
                    first_line, first_labels, first_start = line, labels, start
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


def page_end_problem(
    text: str, selector: SeriesSelector, *, openmetrics: bool = False
) -> SelectResult | None:
    """The TRUNCATED/MALFORMED result when the page's end hides `selector`'s series (the checks
    `select_value` starts with), else None; for selections made elsewhere (`scrape/series.py`)."""
    if openmetrics:
        return None if _ends_with_eof(text) else _no_eof(text, selector)
    if text and text[-1] != "\n":
        return _cut_line(text, selector, selector.metric)
    return None


def _series_key(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    """The identity of a series among same-name lines: its labels, empty values left out."""
    if "" not in labels.values():
        return frozenset(labels.items())
    return frozenset(item for item in labels.items() if item[1])


def _duplicate(
    text: str, selector: SeriesSelector, line: str, first: int, again: int, matched: int
) -> SelectResult:
    first_no = _line_number(text, first)
    again_no = first_no + text.count("\n", first, again)
    return SelectResult(
        selector=selector,
        status=SelectStatus.DUPLICATE,
        matched=matched,
        line=again_no,
        reason=f"{_shorten(line)!r} repeats the series of line {first_no} (same name and "
        "labels); neither value is read: summing would double it, and which one is right is for "
        "the exporter to say",
    )


def _cut_line(text: str, selector: SeriesSelector, name: str) -> SelectResult | None:
    """For a page without its final newline: TRUNCATED if the last line may be `name`'s sample.

    It may be when it starts with the name (then `{`, a blank or nothing) or is a start of the
    name (`go_thr`): either way a cut sample of the metric, or the lines after it, are lost.
    """
    start = text.rfind("\n") + 1
    after = start + len(name)
    if text.startswith(name, start):
        if after < len(text) and text[after] not in _CANDIDATE_END:
            return None  # a longer name: another metric
    elif not name.startswith(text[start:]):
        return None
    return SelectResult(
        selector=selector,
        status=SelectStatus.TRUNCATED,
        line=_last_line(text),
        reason=f"the page ends inside a line (no final newline), and that line "
        f"{_shorten(text[start:])!r} may be a cut {name} sample: the page was truncated, so "
        f"its {name} series are not read",
    )


_EOF = "# EOF"


def _ends_with_eof(text: str) -> bool:
    """Say whether an OpenMetrics page ends with its `# EOF` line (then at most a newline)."""
    end = len(text)
    if text.endswith("\n"):
        end -= 2 if text.endswith("\r\n") else 1
    eof = end - len(_EOF)
    return text.startswith(_EOF, eof, end) and (eof == 0 or (eof > 0 and text[eof - 1] == "\n"))


def _no_eof(text: str, selector: SeriesSelector) -> SelectResult:
    """The result for an OpenMetrics page that does not end with `# EOF` (cut, or data after)."""
    # Each `# EOF` that is a whole line (a comment may start with the same characters).
    eof = 0 if text.startswith(_EOF) else _after(text.find("\n" + _EOF))
    while eof != -1:
        after = eof + len(_EOF)
        if text.startswith(("\n", "\r\n"), after):
            eof_line = _line_number(text, eof)
            return SelectResult(
                selector=selector,
                status=SelectStatus.MALFORMED,
                line=eof_line + 1,
                reason=f"the OpenMetrics page goes on after its # EOF line (line {eof_line}); "
                "an exposition must end there",
            )
        eof = _after(text.find("\n" + _EOF, after))
    return SelectResult(
        selector=selector,
        status=SelectStatus.TRUNCATED,
        line=_last_line(text),
        reason="OpenMetrics page cut before # EOF (it must end with a # EOF line): the page "
        "was truncated, so none of its values are read",
    )


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


def _after(found: int) -> int:
    """The index after a found `"\\n"` (the start of the next line), or -1 when not found."""
    return found + 1 if found != -1 else -1


def _line_number(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _last_line(text: str) -> int:
    """The number of the page's last line (the one its last character is on)."""
    return text.count("\n", 0, len(text) - 1) + 1


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

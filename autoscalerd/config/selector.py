"""Parse `targetMetric` series selectors: `name` or `name{label="v",other=~"a|b"}`.

The grammar is PromQL's instant-vector selector without the range/offset parts. Metric names
may contain colons (`vllm:num_requests_running`).

Regular expressions (`=~`, `!~`) are fully anchored and run on RE2, as in Prometheus: the label
values they are matched against come from pages the pods control, and RE2 matches in time
linear in the value whatever the pattern (Python's backtracking `re` took seconds on a
27-character value against `(a+)+$`). RE2 has no backreferences, lookaround, possessive
quantifiers or atomic groups; a pattern that needs them is refused here with the reason, so
`autoscalerd validate` reports it as `FILE:LINE: field: message`.
"""

from __future__ import annotations

import re

import re2

from autoscalerd.config.model import LabelMatcher, MatchOp, Regex, SeriesSelector

__all__ = ["compile_regex", "parse_selector"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS = ("=~", "!~", "!=", "=")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "'": "'", "t": "\t"}


def parse_selector(text: str) -> SeriesSelector:
    """Parse a selector; raise `ValueError` with a message that shows where it went wrong."""
    s = text.strip()
    name_match = _NAME.match(s)
    if not name_match:
        raise ValueError(
            f"{text!r} is not a metric name; a name starts with a letter, '_' or ':' "
            'and may be followed by {label="value"}'
        )
    name = name_match.group(0)
    pos = name_match.end()
    if pos == len(s):
        return SeriesSelector(metric=name)
    if s[pos] != "{":
        raise ValueError(f"{text!r}: unexpected {s[pos]!r} after the metric name {name!r}")
    pos += 1
    matchers: list[LabelMatcher] = []
    while True:
        pos = _skip_space(s, pos)
        if pos < len(s) and s[pos] == "}":
            pos += 1
            break
        label_match = _LABEL.match(s, pos)
        if not label_match:
            raise ValueError(f"{text!r}: expected a label name at column {pos + 1}")
        label = label_match.group(0)
        pos = _skip_space(s, label_match.end())
        op = next((o for o in _OPS if s.startswith(o, pos)), None)
        if op is None:
            raise ValueError(
                f"{text!r}: expected one of = != =~ !~ after label {label!r} at column {pos + 1}"
            )
        pos = _skip_space(s, pos + len(op))
        value, pos = _read_quoted(text, s, pos)
        matchers.append(_matcher(text, label, MatchOp(op), value))
        pos = _skip_space(s, pos)
        if pos < len(s) and s[pos] == ",":
            pos += 1
            continue
        if pos < len(s) and s[pos] == "}":
            pos += 1
            break
        raise ValueError(f"{text!r}: expected ',' or '}}' at column {pos + 1}")
    if s[pos:].strip():
        raise ValueError(f"{text!r}: unexpected text after '}}': {s[pos:]!r}")
    return SeriesSelector(metric=name, matchers=tuple(matchers))


def _skip_space(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] in " \t":
        pos += 1
    return pos


def _read_quoted(text: str, s: str, pos: int) -> tuple[str, int]:
    if pos >= len(s) or s[pos] not in "\"'":
        raise ValueError(f"{text!r}: expected a quoted value at column {pos + 1}")
    quote = s[pos]
    pos += 1
    out: list[str] = []
    while pos < len(s):
        ch = s[pos]
        if ch == "\\" and pos + 1 < len(s):
            nxt = s[pos + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            pos += 2
            continue
        if ch == quote:
            return "".join(out), pos + 1
        out.append(ch)
        pos += 1
    raise ValueError(f"{text!r}: unterminated quoted value")


def _matcher(text: str, label: str, op: MatchOp, value: str) -> LabelMatcher:
    if op in (MatchOp.RE, MatchOp.NRE):
        try:
            regex = compile_regex(value)
        except ValueError as exc:
            raise ValueError(
                f"{text!r}: bad regular expression {value!r} for {label}: {exc}"
            ) from None
        return LabelMatcher(name=label, op=op, value=value, regex=regex)
    return LabelMatcher(name=label, op=op, value=value)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the reason goes into our ValueError, not to stderr
_RE2_OPTIONS.never_capture = True  # matchers only ask "does it match", never for groups

_RE2 = "RE2 (the linear-time engine Prometheus also uses)"

_RE2_HINTS = (
    (re.compile(r"invalid escape sequence: \\[1-9]"), "backreferences", "list the values with |"),
    (re.compile(r"invalid perl operator: \(\?="), "lookahead", "match the whole value"),
    (re.compile(r"invalid perl operator: \(\?!"), "negative lookahead", "add a !~ matcher"),
    (re.compile(r"invalid perl operator: \(\?<="), "lookbehind", "match the whole value"),
    (re.compile(r"invalid perl operator: \(\?<!"), "negative lookbehind", "add a !~ matcher"),
    (re.compile(r"invalid perl operator: \(\?>"), "atomic groups", "drop the (?>...) group"),
    (
        re.compile(r"bad repetition operator: .+\+"),
        "possessive quantifiers",
        "drop the + after the quantifier",
    ),
    (
        re.compile(r"invalid repetition size"),
        "repeat counts above 1000 (nested counts multiply)",
        "use + or * instead",
    ),
    (re.compile(r"pattern too large"), "room for a pattern this large", "shorten the pattern"),
)
"""(RE2's reason, what RE2 leaves out, how to do without it)."""


def compile_regex(pattern: str) -> Regex:
    """Compile a label-matcher pattern with RE2; raise `ValueError` saying why it cannot be run.

    The result is used with `fullmatch` (anchored at both ends, like PromQL's `^(?:pattern)$`).
    The binding never falls back to Python's `re`: a pattern RE2 refuses is an error here.
    """
    try:
        return re2.compile(pattern, _RE2_OPTIONS)  # type: ignore[no-any-return]
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        why = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    for reason, feature, fix in _RE2_HINTS:
        if reason.match(why):
            raise ValueError(f"{why}; {_RE2} cannot run it: it has no {feature}; {fix}") from None
    raise ValueError(f"{why} (patterns use RE2 syntax, as in Prometheus)") from None

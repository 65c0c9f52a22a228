"""Parse derived signals in `targetMetric`: `rate(SELECTOR[WINDOW])` and
`histogram_quantile(Q, SELECTOR[WINDOW])` (DESIGN §2.4).

Pure. `parse_target_metric` returns the inner series selector and, for a function, the
`Signal` (kind, window, Q); it raises `ValueError` with a message that says how to fix the
text, which `metric_sources.py` reports as `FILE:LINE: field: message`. The one check that
needs another document, a window of at least two scrape intervals, is `check_windows`, run
once every document is read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from autoscalerd.config.durations import parse_duration
from autoscalerd.config.model import DaemonConfig, Policy, SeriesSelector, Signal, SignalKind
from autoscalerd.config.problems import Problem
from autoscalerd.config.readers import suggest
from autoscalerd.config.selector import parse_selector

__all__ = ["FUNCTIONS", "check_windows", "parse_target_metric"]

FUNCTIONS = ("rate", "histogram_quantile")
_CALL = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\(")
_RANGE = re.compile(r"\[\s*([^\[\]]*?)\s*\]\s*$")
_HINT_FUNCTIONS = {
    "irate": "rate",
    "increase": "rate",
    "histogram_quantiles": "histogram_quantile",
    "quantile": "histogram_quantile",
}


def parse_target_metric(text: str) -> tuple[SeriesSelector, Signal | None]:
    """Split `targetMetric` into its series selector and its derived signal (None: a gauge).

    Raises:
        ValueError: with the fix in the message.
    """
    s = text.strip()
    call = _CALL.match(s)
    if call is None:
        if _RANGE.search(s):
            raise ValueError(
                f"{text!r}: a range [WINDOW] needs a function; write rate({s}) for a counter or "
                f"histogram_quantile(0.95, {s}) for a histogram's _bucket series"
            )
        return parse_selector(s), None
    name = call.group(1)
    if name not in FUNCTIONS:
        guess = _HINT_FUNCTIONS.get(name) or suggest(name, FUNCTIONS)
        hint = f"; did you mean {guess}()?" if guess else ""
        raise ValueError(
            f"unknown function {name}(); targetMetric takes rate(SELECTOR[WINDOW]) or "
            f"histogram_quantile(Q, SELECTOR[WINDOW]){hint}"
        )
    if not s.endswith(")"):
        raise ValueError(f"{text!r}: {name}( is not closed with ')' at the end")
    inner = s[call.end() : -1].strip()
    quantile = None
    if name == "histogram_quantile":
        comma = _top_level_comma(inner)
        if comma == -1:
            raise ValueError(
                f"{text!r}: histogram_quantile takes two arguments, "
                "e.g. histogram_quantile(0.95, ttft_seconds_bucket[1m])"
            )
        quantile = _read_quantile(inner[:comma].strip())
        inner = inner[comma + 1 :].strip()
        if _CALL.match(inner):
            raise ValueError(
                f"{text!r}: write the _bucket selector with its window directly, e.g. "
                "histogram_quantile(0.95, ttft_seconds_bucket[1m]): the increase over the window "
                "is implied (no rate() or sum() inside)"
            )
    elif _CALL.match(inner):
        raise ValueError(f"{text!r}: rate() takes a selector with a window, not a function call")
    window_match = _RANGE.search(inner)
    if window_match is None:
        example = inner or "requests_total"
        raise ValueError(
            f"{text!r}: {name}() needs a window after the selector, e.g. {example}[1m] "
            "(at least two scrape intervals)"
        )
    try:
        window = parse_duration(window_match.group(1))
    except ValueError as exc:
        raise ValueError(f"{text!r}: window [{window_match.group(1)}]: {exc}") from None
    if window <= 0:
        raise ValueError(f"{text!r}: the window must be above 0, e.g. [1m]")
    selector = parse_selector(inner[: window_match.start()])
    if name == "histogram_quantile" and not selector.metric.endswith("_bucket"):
        raise ValueError(
            f"{text!r}: histogram_quantile reads a histogram's cumulative buckets; name its "
            f"{selector.metric}_bucket series (with their le label), not {selector.metric}"
        )
    kind = SignalKind.QUANTILE if name == "histogram_quantile" else SignalKind.RATE
    return selector, Signal(kind=kind, window_seconds=window, quantile=quantile)


def _read_quantile(text: str) -> float:
    try:
        q = float(text)
    except ValueError:
        raise ValueError(
            f"histogram_quantile: Q {text!r} is not a number; write e.g. 0.95 for the 95th "
            "percentile"
        ) from None
    if math.isnan(q) or not 0.0 <= q <= 1.0:
        raise ValueError(
            f"histogram_quantile: Q must be between 0 and 1 (0.95 is the 95th percentile), "
            f"got {text}"
        )
    return q


def _top_level_comma(text: str) -> int:
    """Index of the first `,` outside quotes and braces, or -1."""
    depth = 0
    quote = False
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            return i
        i += 1
    return -1


def check_windows(policies: Sequence[Policy], daemon: DaemonConfig) -> list[Problem]:
    """A problem for every derived signal whose window is under two scrape intervals (a rate
    needs two samples of each pod inside the window; equal to two is fine)."""
    interval = daemon.scrape_interval_seconds
    out: list[Problem] = []
    for policy in policies:
        for i, source in enumerate(policy.sources):
            signal = source.signal
            if signal is None or signal.window_seconds >= 2 * interval - 1e-9:
                continue
            where = signal.where or source.where or policy.where
            out.append(
                Problem(
                    file=where.file if where else "",
                    line=where.line if where else 0,
                    field=f"spec.metricsSources[{i}].targetMetric",
                    message=(
                        f"the window ({signal.window_seconds:g}s) is under two scrape intervals "
                        f"({2 * interval:g}s, scrapeInterval {interval:g}s): each pod needs two "
                        f"samples inside it; use a window of at least {_go(2 * interval)}"
                    ),
                )
            )
    return out


def _go(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"

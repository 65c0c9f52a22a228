"""Benchmark: select one series from an 89 KiB, ~1,000-line vLLM page.

Ours: `autoscalerd.scrape.parser.select_value` (finds candidate lines by name, parses only
those). Peer: `prometheus_client.parser.text_string_to_metric_families`, iterating the samples
and summing those that match the same selector, which is the only way to "select" with it.

Run: .venv/bin/python bench/parser_vs_prometheus_client.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.parser import text_string_to_metric_families

from autoscalerd.config.model import LabelMatcher, MatchOp, SeriesSelector
from autoscalerd.config.selector import compile_regex
from autoscalerd.scrape.parser import select_value

PAGE = Path(__file__).resolve().parent.parent / "tests" / "unit" / "scrape" / "data" / "vllm.prom"

SELECTORS = {
    'gauge {model_name="llama"}': SeriesSelector(
        metric="vllm:num_requests_running",
        matchers=(LabelMatcher(name="model_name", op=MatchOp.EQ, value="llama"),),
    ),
    "gauge, regex matcher": SeriesSelector(
        metric="vllm:num_requests_running",
        matchers=(
            LabelMatcher(
                name="model_name", op=MatchOp.RE, value="llama", regex=compile_regex("llama")
            ),
        ),
    ),
    "histogram bucket le=0.5": SeriesSelector(
        metric="vllm:time_to_first_token_seconds_bucket",
        matchers=(
            LabelMatcher(name="model_name", op=MatchOp.EQ, value="llama"),
            LabelMatcher(name="le", op=MatchOp.EQ, value="0.5"),
        ),
    ),
    "unlabelled gauge": SeriesSelector(metric="process_resident_memory_bytes"),
}


def peer_select(text: str, selector: SeriesSelector) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == selector.metric and all(
                m.matches(sample.labels.get(m.name, "")) for m in selector.matchers
            ):
                total += sample.value
    return total


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Mean wall seconds per call over about `seconds` (single-threaded, CPU-bound)."""
    fn()
    n, start = 0, time.perf_counter()
    batch = 1
    while time.perf_counter() - start < seconds:
        for _ in range(batch):
            fn()
        n += batch
        batch = min(batch * 2, 1024)
    return (time.perf_counter() - start) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()
    text = PAGE.read_text()
    print(f"page: {PAGE.name}, {len(text) / 1024:.1f} KiB, {text.count(chr(10))} lines")
    print(f"{'selection':32} {'ours µs':>10} {'prometheus_client µs':>22} {'ratio':>8}")
    worst = float("inf")
    for label, selector in SELECTORS.items():
        ours_result = select_value(text, selector)
        peer_value = peer_select(text, selector)
        assert ours_result.value == peer_value, (label, ours_result, peer_value)
        ours = per_call(lambda s=selector: select_value(text, s), args.seconds)
        peer = per_call(lambda s=selector: peer_select(text, s), args.seconds)
        worst = min(worst, peer / ours)
        print(f"{label:32} {ours * 1e6:10.1f} {peer * 1e6:22.0f} {peer / ours:7.0f}×")
    print(f"worst ratio {worst:.0f}× (goal ≥ 100×): {'PASS' if worst >= 100 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

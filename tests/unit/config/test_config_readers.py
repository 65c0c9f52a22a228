"""The typed field readers and the line lookup, on their own: tables, no files."""

from __future__ import annotations

from typing import Any

import pytest

from autoscalerd.config.problems import Document, Path, Problem, RawDocument, dotted
from autoscalerd.config.readers import (
    did_you_mean,
    format_seconds,
    read_duration,
    read_float,
    read_int,
    suggest,
)


def document() -> tuple[Document, list[Problem]]:
    raw = RawDocument(
        file="p.yaml",
        start_line=3,
        data={},
        key_lines={("spec",): 4, ("spec", "port"): 5},
        value_lines={("spec", "port"): 6},
    )
    problems: list[Problem] = []
    return Document(raw, problems), problems


@pytest.mark.parametrize(
    ("path", "at_key", "line"),
    [
        pytest.param(("spec", "port"), False, 6, id="value-line"),
        pytest.param(("spec", "port"), True, 5, id="key-line"),
        pytest.param(("spec", "port", "x"), False, 6, id="nearest-ancestor-value"),
        pytest.param(("spec", "other"), False, 4, id="ancestor-key-when-no-value-line"),
        pytest.param(("nowhere",), True, 3, id="document-start"),
    ],
)
def test_line_of_a_path(path: Path, at_key: bool, line: int) -> None:
    doc, _ = document()
    assert doc.line(path, at_key=at_key) == line


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param(("spec", "metricsSources", 0, "port"), "spec.metricsSources[0].port", id="index"),
        pytest.param(
            ("metadata", "annotations", "kpa.autoscaling.aibrix.ai/panic-window"),
            "metadata.annotations[kpa.autoscaling.aibrix.ai/panic-window]",
            id="annotation-key",
        ),
        pytest.param(("metadata", "annotations", "a.b"), "metadata.annotations[a.b]", id="dotted-annotation"),
    ],
)  # fmt: skip
def test_dotted(path: Path, text: str) -> None:
    assert dotted(path) == text


@pytest.mark.parametrize(
    ("name", "known", "guess"),
    [
        pytest.param("insecure_skip_verify", ["insecureSkipVerify", "caFile"], "insecureSkipVerify", id="case-and-underscores"),
        pytest.param("scrapeIntervl", ["scrapeInterval", "scrapeTimeout"], "scrapeInterval", id="typo"),
        pytest.param("zzz", ["scrapeInterval"], None, id="nothing-close"),
    ],
)  # fmt: skip
def test_suggest(name: str, known: list[str], guess: str | None) -> None:
    assert suggest(name, known) == guess


def test_did_you_mean_lists_the_known_fields_when_nothing_is_close() -> None:
    assert did_you_mean("zzz", ["b", "a"]) == "; known fields: a, b"
    assert did_you_mean("caFle", ["caFile"]) == "; did you mean 'caFile'?"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3600.0, "1h"), (300.0, "5m"), (30.0, "30s"), (0.25, "250ms"), (90.0, "90s")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("read", "value", "kwargs", "want", "message"),
    [
        pytest.param(read_int, "8080", {"allow_string": True}, 8080, None, id="int-from-string"),
        pytest.param(read_int, "8080", {}, None, "must be a whole number, got the string '8080'", id="int-string-refused"),
        pytest.param(read_int, True, {}, None, "must be a whole number, got a boolean (true)", id="int-not-bool"),
        pytest.param(read_int, 0, {"lo": 1, "hi": 9}, None, "must be between 1 and 9, got 0", id="int-range"),
        pytest.param(read_float, "nan", {}, None, "must be a number, got the string 'nan'", id="float-not-nan"),
        pytest.param(read_float, 1, {"lo": 1.0, "lo_open": True}, None, "must be more than 1, got 1", id="float-open-low"),
        pytest.param(read_duration, "90s", {"hi": 60.0}, None, "must be at least 0s and at most 1m, got 90s", id="duration-range"),
        pytest.param(read_duration, 0, {}, 0.0, None, id="duration-bare-zero"),
        pytest.param(read_duration, 30, {}, None, "must be a duration such as 30s, 5m or 1h30m, got 30", id="duration-bare-number"),
    ],
)  # fmt: skip
def test_readers(
    read: Any, value: Any, kwargs: dict[str, Any], want: Any, message: str | None
) -> None:
    doc, problems = document()
    assert read(doc, ("spec", "port"), value, **kwargs) == want
    assert [p.message for p in problems] == ([message] if message else [])
    assert all((p.line, p.field) == (6, "spec.port") for p in problems)

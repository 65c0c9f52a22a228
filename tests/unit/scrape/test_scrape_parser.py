"""Table-driven tests of the targeted exposition parser, plus golden pages cross-checked
value-for-value against prometheus_client's own parsers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families

from autoscalerd.config.model import LabelMatcher, MatchOp, SeriesSelector
from autoscalerd.config.selector import compile_regex
from autoscalerd.scrape.parser import (
    SelectStatus,
    looks_like_exposition,
    select_value,
    select_values,
)

DATA = Path(__file__).parent / "data"
OK, ABSENT, MALFORMED = SelectStatus.OK, SelectStatus.ABSENT, SelectStatus.MALFORMED


def sel(metric: str, *terms: tuple[str, str, str]) -> SeriesSelector:
    matchers = tuple(
        LabelMatcher(
            name=n,
            op=MatchOp(op),
            value=v,
            regex=compile_regex(v) if op in ("=~", "!~") else None,
        )
        for n, op, v in terms
    )
    return SeriesSelector(metric=metric, matchers=matchers)


PAGE = """\
# HELP go_threads Number of OS threads created.
# TYPE go_threads gauge
go_threads 20
go_threads_total 999
xgo_threads 7
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",path="/"} 10
http_requests_total{code="500",path="/"} 2
http_requests_total{code="200",path="/api"} 5 1723045637950
http_requests_total{path="/x"} 1
lat_bucket{le="0.5"} 3
lat_bucket{le="+Inf"} 4
lat_sum 1.25
lat_count 4
esc{path="a\\\\b\\"c\\nd"} 6
esc{path="plain"} 1
spaced { a = "1" , b="2", } 8
exemplar_bucket{le="1"} 9 # {trace_id="abc"} 0.5 1723045637.9
"""

CASES = [
    pytest.param(sel("go_threads"), 20.0, 1, id="plain-name"),
    pytest.param(sel("go_threads_total"), 999.0, 1, id="longer-name-is-another-metric"),
    pytest.param(sel("threads"), None, 0, id="substring-never-matches"),
    pytest.param(sel("http_requests_total"), 18.0, 4, id="no-matchers-sums-all"),
    pytest.param(sel("http_requests_total", ("code", "=", "200")), 15.0, 2, id="eq"),
    pytest.param(
        sel("http_requests_total", ("code", "!=", "200")), 3.0, 2, id="ne-absent-is-empty"
    ),
    pytest.param(sel("http_requests_total", ("code", "=~", "2..|5..")), 17.0, 3, id="regex"),
    pytest.param(sel("http_requests_total", ("code", "=~", "2")), None, 0, id="regex-anchored"),
    pytest.param(sel("http_requests_total", ("code", "!~", "5..")), 16.0, 3, id="not-regex"),
    pytest.param(sel("http_requests_total", ("code", "=", "")), 1.0, 1, id="absent-label-eq-empty"),
    pytest.param(
        sel("http_requests_total", ("code", "=", "200"), ("path", "=", "/api")),
        5.0,
        1,
        id="two-matchers-and-timestamp",
    ),
    pytest.param(sel("lat_bucket", ("le", "=", "0.5")), 3.0, 1, id="histogram-bucket"),
    pytest.param(sel("lat_sum"), 1.25, 1, id="histogram-sum"),
    pytest.param(sel("lat_count"), 4.0, 1, id="histogram-count"),
    pytest.param(sel("lat"), None, 0, id="family-name-is-not-a-sample"),
    pytest.param(sel("esc", ("path", "=", 'a\\b"c\nd')), 6.0, 1, id="escapes"),
    pytest.param(sel("spaced", ("b", "=", "2")), 8.0, 1, id="whitespace-and-trailing-comma"),
    pytest.param(sel("exemplar_bucket"), 9.0, 1, id="openmetrics-exemplar"),
    pytest.param(sel("missing"), None, 0, id="absent"),
]


@pytest.mark.parametrize(("selector", "value", "matched"), CASES)
def test_select(selector: SeriesSelector, value: float | None, matched: int) -> None:
    for page in (PAGE, PAGE.replace("\n", "\r\n")):
        result = select_value(page, selector)
        assert result.value == value
        assert result.matched == matched
        assert result.ok is (value is not None)
        if value is None:
            assert result.status is SelectStatus.ABSENT
            assert str(selector) in result.reason


@pytest.mark.parametrize(
    ("page", "status", "line", "fragment"),
    [
        pytest.param("a NaN\n", SelectStatus.INVALID_VALUE, 1, "NaN", id="nan"),
        pytest.param("# c\na +Inf\n", SelectStatus.INVALID_VALUE, 2, "+Inf", id="inf"),
        pytest.param('a{x="1"} -Inf\n', SelectStatus.INVALID_VALUE, 1, "-Inf", id="neg-inf"),
        pytest.param("a 1\na{x=1} 2\n", SelectStatus.MALFORMED, 2, "double quotes", id="unquoted"),
        pytest.param('a{x="1} 2\n', SelectStatus.MALFORMED, 1, "not closed", id="unclosed-quote"),
        pytest.param('a{x="1" 2\n', SelectStatus.MALFORMED, 1, "expected", id="unclosed-brace"),
        pytest.param("a\n", SelectStatus.MALFORMED, 1, "missing value", id="no-value-eol"),
        pytest.param("a \n", SelectStatus.MALFORMED, 1, "missing value", id="no-value"),
        pytest.param("a one\n", SelectStatus.MALFORMED, 1, "not a number", id="word-value"),
        pytest.param("a 1_0\n", SelectStatus.MALFORMED, 1, "not a number", id="underscore"),
        pytest.param("a 1 yesterday\n", SelectStatus.MALFORMED, 1, "timestamp", id="bad-ts"),
        pytest.param('a{0x="1"} 1\n', SelectStatus.MALFORMED, 1, "label name", id="bad-label"),
        pytest.param('a{x="1"}2\n', SelectStatus.MALFORMED, 1, "space", id="no-space"),
    ],
)
def test_rejects(page: str, status: SelectStatus, line: int, fragment: str) -> None:
    result = select_value(page, sel("a"))
    assert result.status is status
    assert result.value is None
    assert result.line == line
    assert fragment in result.reason


TRUNCATED = SelectStatus.TRUNCATED


@pytest.mark.parametrize(
    ("page", "selector", "status", "value", "line"),
    [
        pytest.param("go_threads 20\n", sel("go_threads"), OK, 20.0, None, id="ends-at-newline"),
        pytest.param("go_threads 6", sel("go_threads"), TRUNCATED, None, 1, id="value-cut-6-of-60"),
        pytest.param(
            "a 1\ngo_threads 6", sel("go_threads"), TRUNCATED, None, 2, id="value-cut-last-line"
        ),
        pytest.param(
            'x{a="1"} 1\nx{a="2",b="',
            sel("x", ("a", "=", "1")),
            TRUNCATED,
            None,
            2,
            id="cut-inside-labels",
        ),
        pytest.param(
            'x{a="1"} 1\nx{a="2"} 5',
            sel("x", ("a", "=", "1")),
            TRUNCATED,
            None,
            2,
            id="cut-same-metric-other-labels",  # later x lines may have matched
        ),
        pytest.param("a 1\ngo_thr", sel("go_threads"), TRUNCATED, None, 2, id="cut-inside-name"),
        pytest.param("a 1\ngo_threads", sel("go_threads"), TRUNCATED, None, 2, id="cut-after-name"),
        pytest.param("go_threads 60\r", sel("go_threads"), TRUNCATED, None, 1, id="crlf-cut-at-lf"),
        pytest.param(
            "go_threads 20\nother 6", sel("go_threads"), OK, 20.0, None, id="cut-other-metric"
        ),
        pytest.param(
            "go_threads 20\ngo_threads_total 6",
            sel("go_threads"),
            OK,
            20.0,
            None,
            id="cut-longer-name-is-another-metric",
        ),
        pytest.param(
            "go_threads 20\n# HELP go_threads_to",
            sel("go_threads"),
            OK,
            20.0,
            None,
            id="cut-inside-comment",
        ),
        pytest.param("", sel("go_threads"), ABSENT, None, None, id="empty-page"),
    ],
)
def test_last_line_must_be_complete(
    page: str, selector: SeriesSelector, status: SelectStatus, value: float | None, line: int | None
) -> None:
    result = select_value(page, selector)
    assert (result.status, result.value, result.line) == (status, value, line)
    if status is TRUNCATED:
        assert "truncated" in result.reason and "no final newline" in result.reason


OM_HEAD = "# TYPE go_threads gauge\ngo_threads 60\n"


@pytest.mark.parametrize(
    ("page", "status", "value", "line", "fragment"),
    [
        pytest.param(OM_HEAD + "# EOF\n", OK, 60.0, None, "", id="eof-newline"),
        pytest.param(OM_HEAD + "# EOF", OK, 60.0, None, "", id="eof-no-newline"),
        pytest.param(OM_HEAD + "# EOF\r\n", OK, 60.0, None, "", id="eof-crlf"),
        pytest.param("# EOF\n", ABSENT, None, None, "no series", id="only-eof"),
        pytest.param(OM_HEAD, TRUNCATED, None, 2, "cut before # EOF", id="no-eof"),
        pytest.param(OM_HEAD + "# EO", TRUNCATED, None, 3, "cut before # EOF", id="cut-in-eof"),
        pytest.param("go_threads 6", TRUNCATED, None, 1, "cut before # EOF", id="value-cut"),
        pytest.param("", TRUNCATED, None, 1, "cut before # EOF", id="empty"),
        pytest.param(
            OM_HEAD + "# EOFISH\n", TRUNCATED, None, 3, "cut before # EOF", id="eof-lookalike"
        ),
        pytest.param(
            OM_HEAD + "# EOF\ngo_threads 1\n",
            MALFORMED,
            None,
            4,
            "after its # EOF line (line 3)",
            id="data-after-eof",
        ),
        pytest.param(
            OM_HEAD + "# EOF\n\n", MALFORMED, None, 4, "after its # EOF", id="blank-after-eof"
        ),
        pytest.param(
            OM_HEAD + "# EOFISH\n# EOF\nx 1\n# EO",
            MALFORMED,
            None,
            5,
            "(line 4)",
            id="data-after-second-eof-lookalike",
        ),
    ],
)
def test_openmetrics_requires_eof(
    page: str, status: SelectStatus, value: float | None, line: int | None, fragment: str
) -> None:
    result = select_value(page, sel("go_threads"), openmetrics=True)
    assert (result.status, result.value, result.line) == (status, value, line)
    assert fragment in result.reason
    ours, other = select_values(page, [sel("go_threads"), sel("x")], openmetrics=True)
    assert (ours.status, ours.value, ours.line) == (status, value, line)
    if status in (TRUNCATED, MALFORMED):  # the whole page is refused, for every selector
        assert (other.status, other.line) == (status, line)


def test_text_pages_need_no_eof() -> None:
    assert select_value(OM_HEAD, sel("go_threads")).value == 60.0
    assert select_values(OM_HEAD, [sel("go_threads")])[0].value == 60.0


DUPLICATE = SelectStatus.DUPLICATE


@pytest.mark.parametrize(
    ("page", "selector", "status", "value", "lines"),
    [
        pytest.param("x 1\nx 2\n", sel("x"), DUPLICATE, None, (1, 2), id="same-line-twice"),
        pytest.param(
            'x{a="1"} 1\nx{a="1"} 2\n', sel("x"), DUPLICATE, None, (1, 2), id="same-labels-twice"
        ),
        pytest.param('x 1\nx{a="2"} 2\n', sel("x"), OK, 3.0, None, id="labelled-and-unlabelled"),
        pytest.param(
            'x{a="1"} 1\ny 0\nx{a="1"} 1\n',
            sel("x", ("a", "=", "1")),
            DUPLICATE,
            None,
            (1, 3),
            id="same-labels-matcher",
        ),
        pytest.param(
            'x{a="1",b="2"} 1\nx{a="0"} 1\nx{ b="2" , a="1" } 1\n',
            sel("x"),
            DUPLICATE,
            None,
            (1, 3),
            id="labels-reordered",
        ),
        pytest.param(
            'x{a="1"} 1\nx{a="1",b="2"} 1\nx{b="2",a="1"} 1\n',
            sel("x", ("a", "=~", ".*")),
            DUPLICATE,
            None,
            (2, 3),
            id="third-repeats-second",
        ),
        pytest.param(
            'x{a=""} 1\nx 2\n', sel("x"), DUPLICATE, None, (1, 2), id="empty-label-is-absent"
        ),
        pytest.param(
            "x 1 1000\nx 2 2000\n", sel("x"), DUPLICATE, None, (1, 2), id="other-timestamp"
        ),
        pytest.param(
            'x{a="1"} 1\nx{a="2"} 2\n', sel("x"), OK, 3.0, None, id="differ-in-one-label-value"
        ),
        pytest.param(
            'x{a="1",b="1"} 1\nx{a="1",b="2"} 2\n',
            sel("x", ("a", "=", "1")),
            OK,
            3.0,
            None,
            id="differ-in-second-label",
        ),
        pytest.param('x{a="1"} 1\nx{a="1",b="2"} 2\n', sel("x"), OK, 3.0, None, id="extra-label"),
        pytest.param(
            'x{a="1"} 1\nx{a="2"} 2\nx{a="2"} 2\n',
            sel("x", ("a", "=", "1")),
            OK,
            1.0,
            None,
            id="duplicate-outside-the-selection",
        ),
        pytest.param(
            'x_sum{a="1"} 1\nx_count{a="1"} 2\n',
            sel("x_sum"),
            OK,
            1.0,
            None,
            id="other-name-same-labels",
        ),
    ],
)
def test_repeated_series_is_an_error(
    page: str,
    selector: SeriesSelector,
    status: SelectStatus,
    value: float | None,
    lines: tuple[int, int] | None,
) -> None:
    result = select_value(page, selector)
    assert (result.status, result.value) == (status, value)
    if lines is not None:
        first, again = lines
        assert result.line == again
        assert f"repeats the series of line {first} " in result.reason


def test_nan_in_a_non_matching_series_is_ignored() -> None:
    page = 'a{x="1"} NaN\na{x="2"} 3\nb garbage here\n'
    assert select_value(page, sel("a", ("x", "=", "2"))).value == 3.0


def test_garbage_never_crashes() -> None:
    rng = __import__("random").Random(7)
    alphabet = 'a{}"=,\\ \n#\r1.eE+-NaInf_x'
    for _ in range(3000):
        page = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for result in select_values(page, [sel("a"), sel("a", ("x", "=~", ".*"))]):
            assert result.status in SelectStatus


def test_looks_like_exposition() -> None:
    assert looks_like_exposition(PAGE)
    assert looks_like_exposition("")
    assert looks_like_exposition((DATA / "openmetrics.txt").read_text())
    assert not looks_like_exposition("<html><body>Bad gateway</body></html>")
    assert not looks_like_exposition('{"kind": "Status"}')


def _samples(text: str, openmetrics: bool) -> list[tuple[str, dict[str, str], float]]:
    parse = om_families if openmetrics else text_string_to_metric_families
    return [(s.name, dict(s.labels), s.value) for fam in parse(text) for s in fam.samples]


@pytest.mark.parametrize(
    "page",
    ["vllm.prom", "metrics_server.prom", "node_exporter.prom", "openmetrics.txt"],
)
def test_golden_page_matches_prometheus_client(page: str) -> None:
    """Every series of the page, selected with all its labels, sums to what prometheus_client
    reads for the series it matches (a selector also matches series with extra labels)."""
    text = (DATA / page).read_text()
    om = page.endswith(".txt")
    samples = _samples(text, openmetrics=om)
    assert len(samples) > 20
    for name, labels, _ in samples:
        selector = sel(name, *((k, "=", v) for k, v in labels.items()))
        expected = [
            v
            for n, lab, v in samples
            if n == name and all(lab.get(k, "") == want for k, want in labels.items())
        ]
        result = select_value(text, selector, openmetrics=om)
        if any(math.isnan(v) or math.isinf(v) for v in expected):
            assert result.status is SelectStatus.INVALID_VALUE
            continue
        assert result.ok, result.reason
        assert result.matched == len(expected)
        assert result.value == pytest.approx(sum(expected), rel=1e-12)
    # And by name only, every sample name once.
    for name in {n for n, _, _ in samples}:
        expected_total = [v for n, _, v in samples if n == name]
        result = select_value(text, sel(name), openmetrics=om)
        if all(math.isfinite(v) for v in expected_total):
            assert result.value == pytest.approx(sum(expected_total), rel=1e-12)


def test_golden_vllm_selection() -> None:
    text = (DATA / "vllm.prom").read_text()
    result = select_value(text, sel("vllm:num_requests_running", ("model_name", "=", "llama")))
    assert result.ok and result.matched == 1
    crlf = select_value(
        text.replace("\n", "\r\n"), sel("vllm:num_requests_running", ("model_name", "=", "llama"))
    )
    assert crlf.value == result.value

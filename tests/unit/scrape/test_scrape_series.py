"""`select_series`: every matching series with its labels, under `select_value`'s page rules."""

from __future__ import annotations

import pytest

from autoscalerd.config.selector import parse_selector
from autoscalerd.scrape.parser import SelectStatus, select_value
from autoscalerd.scrape.series import select_series

PAGE = """\
# TYPE ttft_seconds histogram
ttft_seconds_bucket{model="a",le="0.1"} 5
ttft_seconds_bucket{model="a",le="+Inf"} 9
ttft_seconds_bucket{model="b",le="0.1"} 1
ttft_seconds_bucket{model="b",le="+Inf"} 2
ttft_seconds_bucket_total 7
ttft_seconds_sum{model="a"} 3.5
requests_total{code="200",extra=""} 10
requests_total{code="500"} 1
"""


def test_buckets_with_their_labels() -> None:
    result, series = select_series(PAGE, parse_selector('ttft_seconds_bucket{model="a"}'))
    assert result.status is SelectStatus.OK and result.value == 14.0
    assert series == (('model="a",le="0.1"', 'model="a",le="+Inf"'), (5.0, 9.0))


def test_every_series_and_the_same_sum_as_select_value() -> None:
    selector = parse_selector("requests_total")
    result, series = select_series(PAGE, selector)
    assert series == (('code="200",extra=""', 'code="500"'), (10.0, 1.0))
    assert result.value == select_value(PAGE, selector).value == 11.0


@pytest.mark.parametrize(
    ("page", "status"),
    [
        (PAGE, SelectStatus.ABSENT),
        ('other 1\nrequests_total{code="x"} NaN\n', SelectStatus.INVALID_VALUE),
        ('requests_total{code="x" 1\n', SelectStatus.MALFORMED),
        ('requests_total{code="x"} 1\nrequests_total{code="x"} 2\n', SelectStatus.DUPLICATE),
        ('requests_total{code="x"} 1\nrequests_total{code="y"} 2', SelectStatus.TRUNCATED),
    ],
)
def test_failures(page: str, status: SelectStatus) -> None:
    selector = parse_selector("nope" if page is PAGE else "requests_total")
    result, series = select_series(page, selector)
    assert (result.status, series) == (status, ((), ()))
    assert result.status is select_value(page, selector).status


def test_openmetrics_page_must_end_with_eof() -> None:
    selector = parse_selector("requests_total")
    result, _ = select_series('requests_total{code="x"} 1\n', selector, openmetrics=True)
    assert result.status is SelectStatus.TRUNCATED
    result, series = select_series(
        'requests_total{code="x"} 1\n# EOF\n', selector, openmetrics=True
    )
    assert result.ok and series == (('code="x"',), (1.0,))


SLOW_PATH_PAGES = [
    # a timestamp, an exemplar, an escape, a `}` in a value, no labels, CRLF, interleaved
    'x_bucket{le="1"} 3 1700000000000\nx_bucket{le="+Inf"} 4 1700000000000\n',
    'x_bucket{le="1"} 3 # {trace_id="a"} 0.5\nx_bucket{le="+Inf"} 4\n',
    'x_bucket{p="a\\"b",le="1"} 3\nx_bucket{p="a\\"b",le="+Inf"} 4\n',
    'x_bucket{p="}} ",le="1"} 3\nx_bucket{p="}} ",le="+Inf"} 4\n',
    "x_bucket 3\nx_bucket_other 4\n",
    'x_bucket{le="1"} 3\r\nx_bucket{le="+Inf"} 4\r\n',
    'x_bucket{le="1"} 3\ny 1\nx_bucket{le="+Inf"} 4\n',
]


@pytest.mark.parametrize("page", SLOW_PATH_PAGES)
def test_every_page_shape_reads_like_select_value(page: str) -> None:
    selector = parse_selector("x_bucket")
    result, (keys, values) = select_series(page, selector)
    expected = select_value(page, selector)
    assert (result.status, result.value, result.matched) == (
        expected.status,
        expected.value,
        expected.matched,
    )
    assert len(keys) == len(values) == expected.matched


def test_matchers_pick_series_on_the_fast_path() -> None:
    result, (keys, values) = select_series(PAGE, parse_selector('ttft_seconds_bucket{le="+Inf"}'))
    assert (keys, values, result.value) == (
        ('model="a",le="+Inf"', 'model="b",le="+Inf"'),
        (9.0, 2.0),
        11.0,
    )


def test_a_remembered_block_shape_is_matched_per_selector() -> None:
    """The same block read for several selectors, and again with new values: each selector
    gets its own matches (the block's label sets are checked once, the matchers per
    selector)."""
    block = (
        'ttft_seconds_bucket{model="a",le="0.1"} %s\nttft_seconds_bucket{model="b",le="0.1"} 2\n'
    )
    every = parse_selector("ttft_seconds_bucket")
    only_b = parse_selector('ttft_seconds_bucket{model="b"}')
    none = parse_selector('ttft_seconds_bucket{model="c"}')
    for value in ("1", "3", "4"):
        page = block % value
        assert select_series(page, every)[1] == (
            ('model="a",le="0.1"', 'model="b",le="0.1"'),
            (float(value), 2.0),
        )
        assert select_series(page, only_b)[1] == (('model="b",le="0.1"',), (2.0,))
        assert select_series(page, parse_selector('ttft_seconds_bucket{model="b"}'))[1] == (
            ('model="b",le="0.1"',),
            (2.0,),
        )
        assert select_series(page, none)[0].status is SelectStatus.ABSENT
    bad = block % "NaN"
    assert select_series(bad, every)[0].status is SelectStatus.INVALID_VALUE


@pytest.mark.parametrize(
    ("page", "series"),
    [
        # The name inside a label value, an exponent that spells the name, another metric in
        # the block: read line by line or checked once per block shape, the same series.
        ('m{a="m"} 1\nm{a="n"} 2\n', (('a="m"', 'a="n"'), (1.0, 2.0))),
        ('e{x="1"} 1e5\ne{x="2"} 2\n', (('x="1"', 'x="2"'), (1e5, 2.0))),
        ('m{a="1"} 1\nmm{a="2"} 5\nm{a="2"} 2\n', (('a="1"', 'a="2"'), (1.0, 2.0))),
        ('m{a="1"} 1\nm {a="2"} 2\n', (('a="1"', 'a="2"'), (1.0, 2.0))),
    ],
)
def test_odd_blocks_read_right(
    page: str, series: tuple[tuple[str, ...], tuple[float, ...]]
) -> None:
    metric = page.split("{", 1)[0]
    for _ in range(2):  # the second time, from the remembered shape if any
        result, got = select_series(page, parse_selector(metric))
        assert result.status is SelectStatus.OK and got == series


def test_block_shapes_are_bounded_and_alternating_selectors_keep_theirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autoscalerd.scrape import series as module

    a = parse_selector('ttft_seconds_bucket{model="a"}')
    b = parse_selector('ttft_seconds_bucket{model="b"}')
    for value in range(3):
        page = PAGE.replace("} 5", "} " + str(value))
        assert select_series(page, a)[1] == (
            ('model="a",le="0.1"', 'model="a",le="+Inf"'),
            (value, 9.0),
        )
        assert select_series(page, b)[1] == (
            ('model="b",le="0.1"', 'model="b",le="+Inf"'),
            (1.0, 2.0),
        )
    monkeypatch.setattr(module, "_SHAPES_MAX_LINES", 2500)
    every = parse_selector("m")
    for i in range(8):  # blocks of 1,000 series, all distinct
        page = "".join(f'm{{i="{i}",j="{j}"}} 1\n' for j in range(1000))
        assert select_series(page, every)[0].value == 1000.0
        assert sum(map(len, module._SHAPES)) <= module._SHAPES_MAX_LINES
        assert sum(len(raws) for raws, _ in module._OTHER_SHAPES) <= module._SHAPES_MAX_LINES

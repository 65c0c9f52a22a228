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
    assert series == (
        ((("le", "0.1"), ("model", "a")), 5.0),
        ((("le", "+Inf"), ("model", "a")), 9.0),
    )


def test_every_series_and_the_same_sum_as_select_value() -> None:
    selector = parse_selector("requests_total")
    result, series = select_series(PAGE, selector)
    assert series == (((("code", "200"),), 10.0), ((("code", "500"),), 1.0))
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
    assert (result.status, series) == (status, ())
    assert result.status is select_value(page, selector).status


def test_openmetrics_page_must_end_with_eof() -> None:
    selector = parse_selector("requests_total")
    result, _ = select_series('requests_total{code="x"} 1\n', selector, openmetrics=True)
    assert result.status is SelectStatus.TRUNCATED
    result, series = select_series(
        'requests_total{code="x"} 1\n# EOF\n', selector, openmetrics=True
    )
    assert result.ok and series == (((("code", "x"),), 1.0),)

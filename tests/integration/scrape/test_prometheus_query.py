"""`prometheus` sources against the real Prometheus server scraping a page the test controls,
and the result rules (`query_value`) as a table."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_server import Page, PrometheusServer

from autoscalerd.config.model import DaemonConfig, MetricSource, SeriesSelector
from autoscalerd.scrape.errors import ScrapeErrorKind
from autoscalerd.scrape.prometheus_query import PrometheusQuery, query_value


def source(endpoint: str, query: str) -> MetricSource:
    return MetricSource(type="prometheus", endpoint=endpoint, query=query, target_metric="x",
                        selector=SeriesSelector(metric="x"), target_value=1.0)  # fmt: skip


def ok(result_type: str, result: object) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (ok("scalar", [1.0, "3.5"]), 3.5),
        (ok("vector", [{"metric": {}, "value": [1.0, "7"]}]), 7.0),
        (ok("vector", []), "empty vector"),
        (ok("vector", [{"metric": {"__name__": "a", "j": "1"}, "value": [1, "1"]},
                       {"metric": {"__name__": "a", "j": "2"}, "value": [1, "2"]}]),
         'returned 2 series (a{j="1"}, a{j="2"})'),
        (ok("matrix", []), "range vector"),
        (ok("string", [1, "x"]), "not a number"),
        (ok("scalar", [1.0, "NaN"]), "not a finite number"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "bad_data"),
        ([], "not a JSON object"),
    ],
)  # fmt: skip
def test_query_value_is_one_number_or_says_what_came_back(doc: object, expected: object) -> None:
    got = query_value(doc)
    if isinstance(expected, float):
        assert got == expected
    else:
        assert isinstance(got, str) and str(expected) in got


async def test_queries_against_the_real_prometheus(tmp_path: Path) -> None:
    async with Page() as page, PrometheusServer(tmp_path, [page.address]) as prom:
        page.set("demand", 30, pool="a")
        page.set("demand", 20, pool="b")
        await prom.wait_value("sum(demand)", 50.0)
        q = PrometheusQuery()
        daemon = DaemonConfig()
        try:
            one = await q.query(source(prom.url, "sum(demand)"), daemon=daemon, timeout=2)
            assert (one.value, one.error) == (50.0, None)
            scalar = await q.query(source(prom.url, "scalar(sum(demand)) * 2"), daemon=daemon,
                                   timeout=2)  # fmt: skip
            assert scalar.value == 100.0
            many = await q.query(source(prom.url, "demand"), daemon=daemon, timeout=2)
            assert many.value is None and many.error is not None
            assert many.error.kind == ScrapeErrorKind.ABSENT and "2 series" in str(many.error)
            none = await q.query(source(prom.url, "no_such_metric"), daemon=daemon, timeout=2)
            assert none.error is not None and "empty vector" in str(none.error)
            bad = await q.query(source(prom.url, "sum(("), daemon=daemon, timeout=2)
            assert bad.error is not None and bad.error.kind == ScrapeErrorKind.HTTP_STATUS
            assert "bad_data" in str(bad.error)
            long_query = "sum(demand)" + " + 0" * 600  # sent as a POST form
            post = await q.query(source(prom.url, long_query), daemon=daemon, timeout=2)
            assert post.value == 50.0
        finally:
            await q.close()


async def test_a_refused_endpoint_is_classified() -> None:
    q = PrometheusQuery()
    try:
        out = await q.query(source("http://127.0.0.1:1", "up"), daemon=DaemonConfig(), timeout=2)
    finally:
        await q.close()
    assert out.error is not None and out.error.kind == ScrapeErrorKind.CONNECT_REFUSED
    assert "Check endpoint" in str(out.error)

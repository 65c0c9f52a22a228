"""Derived signals and schedules in policy files: parsing tables and `validate` lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from autoscalerd.config.load import ConfigErrors, load_config
from autoscalerd.config.model import SignalKind
from autoscalerd.config.signals import parse_target_metric

PARSED = [
    ("go_threads", "go_threads", None, None, None),
    ("rate(requests_total[1m])", "requests_total", SignalKind.RATE, 60.0, None),
    (
        'rate( vllm:request_success_total{model="a,b[1]"} [30s] )',
        'vllm:request_success_total{model="a,b[1]"}',
        SignalKind.RATE,
        30.0,
        None,
    ),
    (
        'histogram_quantile(0.95, ttft_seconds_bucket{model="llama"}[2m])',
        'ttft_seconds_bucket{model="llama"}',
        SignalKind.QUANTILE,
        120.0,
        0.95,
    ),
    ("histogram_quantile(0, x_bucket[2s])", "x_bucket", SignalKind.QUANTILE, 2.0, 0.0),
    ("histogram_quantile(1, x_bucket[2s])", "x_bucket", SignalKind.QUANTILE, 2.0, 1.0),
]


@pytest.mark.parametrize(("text", "selector", "kind", "window", "q"), PARSED)
def test_parse_target_metric(
    text: str, selector: str, kind: SignalKind | None, window: float | None, q: float | None
) -> None:
    sel, signal = parse_target_metric(text)
    assert str(sel) == selector
    if kind is None:
        assert signal is None
        return
    assert signal is not None
    assert (signal.kind, signal.window_seconds, signal.quantile) == (kind, window, q)


REJECTED = [
    ("rate(requests_total)", "rate() needs a window after the selector, e.g. requests_total[1m]"),
    ("requests_total[1m]", "a range [WINDOW] needs a function; write rate(requests_total[1m])"),
    ("irate(requests_total[1m])", "unknown function irate(); targetMetric takes rate("),
    ("irate(requests_total[1m])", "did you mean rate()?"),
    ("histogram_quantile(1.5, x_bucket[1m])", "Q must be between 0 and 1"),
    ("histogram_quantile(-0.1, x_bucket[1m])", "Q must be between 0 and 1"),
    ("histogram_quantile(p95, x_bucket[1m])", "Q 'p95' is not a number"),
    ("histogram_quantile(0.9, ttft_seconds[1m])", "name its ttft_seconds_bucket series"),
    ("histogram_quantile(0.9, ttft_seconds_sum[1m])", "name its ttft_seconds_sum_bucket"),
    ("histogram_quantile(0.9, rate(x_bucket[1m]))", "no rate() or sum() inside"),
    ("histogram_quantile(x_bucket[1m])", "takes two arguments"),
    ("rate(x[5])", "window [5]:"),
    ("rate(x[1m]", "is not closed with ')'"),
]


@pytest.mark.parametrize(("text", "message"), REJECTED)
def test_parse_target_metric_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_target_metric(text)
    assert message in str(info.value)


HEAD = """\
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata:
  name: web
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 10
  scalingStrategy: KPA
  metricsSources:
    - metricSourceType: pod
      protocolType: http
      port: "8000"
      targetValue: "10"
"""
# targetMetric is line 15.


def problems(tmp_path: Path, text: str) -> list[str]:
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigErrors) as info:
        load_config([str(f)])
    return [f"{p.line}: {p.field}: {p.message}" for p in info.value.problems]


def test_validate_missing_window_has_file_line_and_fix(tmp_path: Path) -> None:
    out = problems(tmp_path, HEAD + "      targetMetric: rate(requests_total)\n")
    assert out == [
        "15: spec.metricsSources[0].targetMetric: 'rate(requests_total)': rate() needs a "
        "window after the selector, e.g. requests_total[1m] (at least two scrape intervals)"
    ]


def test_validate_window_under_two_scrape_intervals(tmp_path: Path) -> None:
    daemon = "---\napiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nscrapeInterval: 10s\n"
    out = problems(tmp_path, HEAD + "      targetMetric: rate(requests_total[15s])\n" + daemon)
    assert out == [
        "15: spec.metricsSources[0].targetMetric: the window (15s) is under two scrape "
        "intervals (20s, scrapeInterval 10s): each pod needs two samples inside it; use a "
        "window of at least 20s"
    ]


def test_validate_window_of_exactly_two_intervals_is_fine(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    daemon = "---\napiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nscrapeInterval: 10s\n"
    f.write_text(HEAD + "      targetMetric: histogram_quantile(0.5, x_bucket[20s])\n" + daemon)
    config = load_config([str(f)])
    signal = config.policies[0].sources[0].signal
    assert signal is not None and signal.window_seconds == 20.0


def test_validate_quantile_out_of_range_and_not_bucket(tmp_path: Path) -> None:
    out = problems(
        tmp_path, HEAD + "      targetMetric: histogram_quantile(95, ttft_seconds[1m])\n"
    )
    assert out == [
        "15: spec.metricsSources[0].targetMetric: histogram_quantile: Q must be between 0 and 1 "
        "(0.95 is the 95th percentile), got 95"
    ]
    out = problems(
        tmp_path, HEAD + "      targetMetric: histogram_quantile(0.95, ttft_seconds[1m])\n"
    )
    assert len(out) == 1 and out[0].startswith("15: spec.metricsSources[0].targetMetric:")
    assert "name its ttft_seconds_bucket series" in out[0]


def test_validate_unknown_function(tmp_path: Path) -> None:
    out = problems(tmp_path, HEAD + "      targetMetric: increase(requests_total[1m])\n")
    assert out == [
        "15: spec.metricsSources[0].targetMetric: unknown function increase(); targetMetric "
        "takes rate(SELECTOR[WINDOW]) or histogram_quantile(Q, SELECTOR[WINDOW]); did you mean "
        "rate()?"
    ]


SCHEDULED = HEAD + "      targetMetric: go_threads\n  schedules:\n"
# schedules entries start on line 17.

SCHEDULE_CASES = [
    pytest.param(
        """\
    - name: office
      timezone: Europe/Berlln
      startTime: "08:00"
      endTime: "18:00"
      minReplicas: 3
""",
        [
            "18: spec.schedules[0].timezone: unknown time zone 'Europe/Berlln'; use an IANA name "
            "such as Europe/Berlin or UTC; did you mean 'Europe/Berlin'?"
        ],
        id="unknown-zone",
    ),
    pytest.param(
        """\
    - name: office
      daysOfWeek: [Mon, Tues]
      startTime: "08:00"
      endTime: "18:00"
      minReplicas: 3
""",
        [
            "18: spec.schedules[0].daysOfWeek[1]: must be one of Mon, Tue, Wed, Thu, Fri, Sat, Sun, "
            "got the string 'Tues'; did you mean 'Tue'?"
        ],
        id="bad-day",
    ),
    pytest.param(
        """\
    - name: night
      startTime: "22:00"
      endTime: "06:00"
      maxReplicas: 2
""",
        [
            "19: spec.schedules[0].endTime: endTime (06:00) must be after startTime (22:00) on the "
            "same day (the end is excluded; a window cannot cross midnight: split it into two "
            "schedules)"
        ],
        id="crosses-midnight",
    ),
    pytest.param(
        """\
    - name: office
      startTime: "8:00"
      endTime: "18:00"
      minReplicas: 3
""",
        [
            '18: spec.schedules[0].startTime: must be HH:MM on a 24-hour clock such as "09:00", '
            "got the string '8:00'"
        ],
        id="one-digit-hour",
    ),
    pytest.param(
        """\
    - name: office
      startTime: "08:00"
      endTime: 18:00
      minReplicas: 3
""",
        [
            "19: spec.schedules[0].endTime: must be a quoted HH:MM string: YAML reads an unquoted "
            '18:00 as the number 1080; write endTime: "18:00"'
        ],
        id="unquoted-sexagesimal",
    ),
    pytest.param(
        """\
    - name: office
      startTime: "08:00"
      endTime: "18:00"
""",
        [
            "17: spec.schedules[0]: set minReplicas and/or maxReplicas: the bounds while the window "
            "is active"
        ],
        id="no-override",
    ),
    pytest.param(
        """\
    - name: office
      startTime: "08:00"
      endTime: "18:00"
      minReplicas: 12
""",
        [
            "20: spec.schedules[0].minReplicas: while this window is active minReplicas would be 12 "
            "and maxReplicas 10; set both so that minReplicas <= maxReplicas"
        ],
        id="crossed-bounds",
    ),
    pytest.param(
        """\
    - name: office
      daysOfWeek: [Mon, Tue]
      startTime: "08:00"
      endTime: "18:00"
      minReplicas: 3
    - name: lunch
      daysOfWeek: [Tue]
      startTime: "12:00"
      endTime: "13:00"
      minReplicas: 5
""",
        [
            "22: spec.schedules[1]: schedule 'lunch' overlaps schedule 'office': at most one window "
            "may be active at a time; move one of them or merge them"
        ],
        id="overlap",
    ),
    pytest.param(
        """\
    - name: berlin
      timezone: Europe/Berlin
      startTime: "08:00"
      endTime: "10:00"
      minReplicas: 3
    - name: utc
      startTime: "08:30"
      endTime: "09:00"
      minReplicas: 5
""",
        [
            "22: spec.schedules[1]: schedule 'utc' overlaps schedule 'berlin': at most one window "
            "may be active at a time; move one of them or merge them"
        ],
        id="overlap-across-zones",
    ),
]


@pytest.mark.parametrize(("entries", "expected"), SCHEDULE_CASES)
def test_validate_schedules(tmp_path: Path, entries: str, expected: list[str]) -> None:
    assert problems(tmp_path, SCHEDULED + entries) == expected


def test_schedules_parse(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        SCHEDULED
        + """\
    - name: office
      timezone: Europe/Berlin
      daysOfWeek: [Mon, Fri]
      startTime: "08:00"
      endTime: "18:00"
      minReplicas: 3
    - name: evening
      startTime: "18:00"
      endTime: "20:00"
      maxReplicas: 4
"""
    )
    policy = load_config([str(f)]).policies[0]
    office, evening = policy.schedules
    assert (office.timezone, office.days, office.start_minute, office.end_minute) == (
        "Europe/Berlin",
        frozenset({0, 4}),
        480,
        1080,
    )
    assert (office.min_replicas, office.max_replicas) == (3, None)
    assert (evening.timezone, evening.days, evening.max_replicas) == ("UTC", frozenset(range(7)), 4)

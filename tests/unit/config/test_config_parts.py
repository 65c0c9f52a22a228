"""Durations, sizes, selectors, and every shipped file under config/."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscalerd.config.durations import parse_byte_size, parse_duration
from autoscalerd.config.load import load_config
from autoscalerd.config.model import MatchOp, Strategy
from autoscalerd.config.selector import parse_selector

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("0", 0.0, id="zero"),
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h30m", 5400.0, id="compound"),
        pytest.param("250ms", 0.25, id="millis"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param("2h45m30.5s", 9930.5, id="three-terms"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "30", "'30' has no unit; write e.g. 30s (units: ms, s, m, h)", id="bare-number"
        ),
        pytest.param("-5s", "'-5s' is negative; durations must be 0 or more", id="negative"),
        pytest.param(
            "5 minutes", "'5 minutes' is not a duration; write e.g. 30s, 5m or 1h30m", id="words"
        ),
        pytest.param("", "empty duration; write e.g. 30s, 5m or 1h30m", id="empty"),
        pytest.param("1d", "'1d' is not a duration; write e.g. 30s, 5m or 1h30m", id="days-unit"),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "size"),
    [("16MiB", 16 * 1024 * 1024), ("512KiB", 512 * 1024), ("1GB", 10**9), ("1000", 1000), (42, 42)],
)
def test_parse_byte_size(text: str | int, size: int) -> None:
    assert parse_byte_size(text) == size


def test_selector_plain_name_with_colons() -> None:
    sel = parse_selector("vllm:num_requests_running")
    assert (sel.metric, sel.matchers) == ("vllm:num_requests_running", ())


def test_selector_all_operators_and_escapes() -> None:
    sel = parse_selector(
        r'http_requests_total{code=~"5..", method!="GET", path!~"/health.*", job="a\"b"}'
    )
    assert [(m.name, m.op) for m in sel.matchers] == [
        ("code", MatchOp.RE),
        ("method", MatchOp.NE),
        ("path", MatchOp.NRE),
        ("job", MatchOp.EQ),
    ]
    assert sel.matchers[3].value == 'a"b'
    code = sel.matchers[0]
    assert code.matches("503") and not code.matches("1503"), "regex is fully anchored"
    assert (
        str(sel) == r'http_requests_total{code=~"5..",method!="GET",path!~"/health.*",job="a\"b"}'
    )


@pytest.mark.parametrize(
    "text",
    ["", "9lives", "x{", "x{a}", 'x{a="b"', "x{a=b}", 'x{a="b"} extra', 'x{a=~"("}'],
)
def test_selector_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(text)


SHIPPED = sorted(p for p in (REPO / "config").rglob("*.y*ml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_config_file_loads(path: Path) -> None:
    config = load_config([str(path)])
    assert config.policies or config.daemon.where is not None


def test_seed_example_loads_unchanged() -> None:
    """The PodAutoscaler of the seed story, verbatim."""
    config = load_config([str(REPO / "config/examples/metrics-server-kpa.yaml")])
    (policy,) = config.policies
    assert policy.key == "kube-system/metric-server-autoscaler"
    assert (policy.target.kind, policy.target.name) == ("Deployment", "metrics-server")
    assert (policy.min_replicas, policy.max_replicas, policy.strategy) == (1, 4, Strategy.KPA)
    (source,) = policy.sources
    assert (source.protocol, source.port, source.path) == ("https", 10250, "/metrics")
    assert (source.target_metric, source.target_value) == ("go_threads", 20.0)
    assert source.tls.insecure_skip_verify is None, "verification stays on unless asked"

"""Every metric source type (DESIGN §2.3): AIbrix's per-type webhook rules, FILE:LINE + fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from autoscalerd.config.load import ConfigErrors, load_config
from autoscalerd.kube.quantity import parse_quantity

HEAD = """\
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata: {name: web, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 4
  scalingStrategy: HPA
  metricsSources:
    - targetValue: "50"
"""
# the source's own lines start on line 10


def load(tmp_path: Path, source: str) -> tuple[list[str], object]:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + textwrap.indent(textwrap.dedent(source), "      "))
    try:
        config = load_config([str(f)])
    except ConfigErrors as exc:
        return [f"{p.line}: {p.field}: {p.message}" for p in exc.problems], None
    return [], config.policies[0].sources[0]


VALID = [
    pytest.param("metricSourceType: resource\ntargetMetric: cpu\n",
                 {"type": "resource", "port": 0}, id="resource-cpu"),
    pytest.param("metricSourceType: resource\ntargetMetric: memory\n",
                 {"type": "resource"}, id="resource-memory"),
    pytest.param("metricSourceType: custom\ntargetMetric: queue_depth\n",
                 {"type": "custom"}, id="custom"),
    pytest.param("metricSourceType: external\ntargetMetric: 'queue_messages{queue=\"jobs\"}'\n",
                 {"type": "external", "endpoint": ""}, id="external-api"),
    pytest.param("metricSourceType: external\nprotocolType: http\nendpoint: gw.example:8080\n"
                 "path: /metrics\ntargetMetric: pending\n",
                 {"type": "external", "endpoint": "gw.example", "port": 8080}, id="external-url"),
    pytest.param("metricSourceType: domain\nprotocolType: https\nendpoint: gw.example\n"
                 "port: '9443'\npath: metrics\ntargetMetric: pending\n",
                 {"type": "external", "port": 9443, "path": "/metrics", "protocol": "https"},
                 id="domain-port-when-endpoint-has-none"),
    pytest.param("metricSourceType: external\nprotocolType: https\nendpoint: gw.example:8443\n"
                 "port: '9443'\npath: /m\ntargetMetric: pending\n",
                 {"port": 8443}, id="endpoint-port-wins"),
    pytest.param("metricSourceType: external\nprotocolType: https\nendpoint: gw.example\n"
                 "path: /m\ntargetMetric: pending\n",
                 {"port": 443}, id="https-default-port"),
    pytest.param("metricSourceType: prometheus\nendpoint: https://prom.monitoring.svc:9090/\n"
                 "query: sum(rate(http_requests_total[1m]))\ntargetMetric: rps\n",
                 {"type": "prometheus", "endpoint": "https://prom.monitoring.svc:9090",
                  "protocol": "https", "query": "sum(rate(http_requests_total[1m]))"},
                 id="prometheus"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "fields"), VALID)
def test_valid_sources(tmp_path: Path, source: str, fields: dict[str, object]) -> None:
    problems, parsed = load(tmp_path, source)
    assert problems == []
    for name, value in fields.items():
        assert getattr(parsed, name) == value, name


R = "is not used: metricSourceType resource reads metrics.k8s.io (metrics-server)"
INVALID = [
    pytest.param("metricSourceType: resource\ntargetMetric: gpu\n",
                 ["11: spec.metricsSources[0].targetMetric: metricSourceType resource takes "
                  "targetMetric cpu or memory, got the string 'gpu'; for another metric use "
                  "metricSourceType custom or pod"], id="resource-not-cpu-memory"),
    pytest.param("metricSourceType: resource\ntargetMetric: cpu\nendpoint: x:1\n",
                 [f"12: spec.metricsSources[0].endpoint: {R}; remove endpoint"],
                 id="resource-endpoint"),
    pytest.param("metricSourceType: resource\ntargetMetric: cpu\ntlsConfig: {}\n",
                 [f"12: spec.metricsSources[0].tlsConfig: {R}; remove tlsConfig (the API "
                  "server connection uses the daemon's credentials)"], id="resource-tls"),
    pytest.param("metricSourceType: custom\ntargetMetric: 'q{a=\"b\"}'\n",
                 ["11: spec.metricsSources[0].targetMetric: metricSourceType custom takes a bare "
                  "metric name, got 'q{a=\"b\"}'; the pods are chosen by the scale target's "
                  "selector"], id="custom-selector"),
    pytest.param("metricSourceType: external\ntargetMetric: 'q{a=~\"b\"}'\n",
                 ["11: spec.metricsSources[0].targetMetric: the external metrics API takes = and "
                  "!= matchers only (a label selector), got a=~; use = or !="],
                 id="external-api-regex"),
    pytest.param("metricSourceType: external\nendpoint: gw:80\ntargetMetric: q\n",
                 ["8: spec.metricsSources[0]: protocolType is required: http or https",
                  "8: spec.metricsSources[0]: path is required with endpoint (such as /metrics)"],
                 id="external-url-needs-protocol-path"),
    pytest.param("metricSourceType: external\nprotocolType: http\nendpoint: http://gw:80\n"
                 "path: /m\ntargetMetric: q\n",
                 ["12: spec.metricsSources[0].endpoint: must be host[:port] (no scheme, no path), "
                  "got 'http://gw:80'; the scheme is protocolType and the path is path"],
                 id="external-url-scheme"),
    pytest.param("metricSourceType: prometheus\ntargetMetric: q\n",
                 ["8: spec.metricsSources[0]: endpoint is required: the Prometheus base URL",
                  "8: spec.metricsSources[0]: query is required: a PromQL query that yields one "
                  "number"], id="prometheus-needs-endpoint-query"),
    pytest.param("metricSourceType: prometheus\nendpoint: prom:9090\nquery: up\ntargetMetric: q\n",
                 ["11: spec.metricsSources[0].endpoint: must be the base URL of a "
                  "Prometheus-compatible API with its scheme, such as "
                  "https://prometheus.monitoring.svc:9090, got 'prom:9090'"],
                 id="prometheus-endpoint-no-scheme"),
    pytest.param("metricSourceType: prometheus\nendpoint: http://p:9090\nport: 1\nquery: up\n"
                 "targetMetric: q\n",
                 ["12: spec.metricsSources[0].port: is not used: metricSourceType prometheus takes "
                  "the whole base URL in endpoint; put the scheme, host and port in endpoint: "
                  "https://prometheus:9090"], id="prometheus-port"),
    pytest.param("metricSourceType: pod\nprotocolType: http\nport: 1\nquery: up\ntargetMetric: q\n",
                 ["13: spec.metricsSources[0].query: is not used: metricSourceType pod scrapes "
                  "each pod at its IP; remove query (only metricSourceType prometheus runs a "
                  "query)"], id="pod-query"),
    pytest.param("metricSourceType: Pod\nprotocolType: http\nport: 1\ntargetMetric: q\n",
                 ["10: spec.metricsSources[0].metricSourceType: must be pod, resource, custom, "
                  "external, domain or prometheus, got the string 'Pod'"], id="unknown-type"),
    pytest.param("metricSourceType: prometheus\nendpoint: http://p:9090\nquery: up\n"
                 "targetMetric: 'rate(x_total[1m])'\n",
                 ["13: spec.metricsSources[0].targetMetric: rate() is computed from each pod's "
                  "own scrapes, so it needs metricSourceType pod, not prometheus; put the rate or "
                  "quantile in the PromQL query instead"], id="prometheus-signal"),
    pytest.param("metricSourceType: external\nprotocolType: http\nendpoint: gw:80\npath: /m\n"
                 "targetMetric: 'rate(x_total[1m])'\n",
                 ["14: spec.metricsSources[0].targetMetric: rate() is computed from each pod's "
                  "own scrapes, so it needs metricSourceType pod, not external; use a plain "
                  "metric name here"], id="external-url-signal"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "expected"), INVALID)
def test_invalid_sources(tmp_path: Path, source: str, expected: list[str]) -> None:
    problems, _ = load(tmp_path, source)
    assert problems == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [("250m", 0.25), ("1", 1.0), ("1.5", 1.5), ("12345678n", 0.012345678), ("1Ki", 1024.0),
     ("128Mi", 128 * 2**20), ("1e3", 1000.0), ("2k", 2000.0), ("100u", 1e-4), (3, 3.0)],
)  # fmt: skip
def test_quantities(text: str | int, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "10Xi", None, True])
def test_bad_quantities(text: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


EXAMPLES = Path(__file__).resolve().parents[3] / "config/examples"


@pytest.mark.parametrize(
    "example",
    ["resource-cpu-hpa.yaml", "custom-metrics-kpa.yaml", "external-api-hpa.yaml",
     "external-endpoint-apa.yaml", "prometheus-query-kpa.yaml"],
)  # fmt: skip
def test_simulate_takes_a_trace_for_every_source_type(tmp_path: Path, example: str) -> None:
    (policy,) = load_config([str(EXAMPLES / example)]).policies
    column = policy.sources[0].target_metric
    trace = tmp_path / "t.csv"
    rows = [f"{t},2,{100 if t < 5 else 400}" for t in range(20)]
    trace.write_text("time,ready," + _csv(column) + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    code = run_simulate_cli(
        ["-c", str(EXAMPLES / example), "--trace", str(trace), "--output", str(out)]
    )
    assert code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 21 and int(lines[-1].split(",")[2]) > 2, "the demand rose: it scaled up"


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


def run_simulate_cli(args: list[str]) -> int:
    from autoscalerd.cli import main

    return main(["simulate", *args])

"""The Grafana dashboard and the Prometheus Operator component (deploy/grafana/,
deploy/kubernetes/monitoring/).

- The dashboard is valid JSON, every query names only `autoscalerd_*` series the daemon
  exports (with their real label names), and it has the panels the issue asks for.
- The ServiceMonitor and PrometheusRule are checked against the fields of the Prometheus
  Operator's CRDs we use (kubernetes-validate has no schema for them) and against the
  Service they select; the rules' expressions name only exported series.
- Where Debian's `prometheus` package provides promtool: `promtool check rules` on the rule
  groups, and `promtool test rules` evaluating each alert's expression on synthetic series
  (it fires for the broken case, not for the healthy one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscalerd.server.metrics import DaemonMetrics

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "autoscalerd.json"
KDIR = ROOT / "deploy" / "kubernetes"
MDIR = KDIR / "monitoring"

TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}
"""Labels Prometheus attaches to every series of a target (ServiceMonitor discovery)."""


def _exported() -> dict[str, set[str]]:
    """Every sample name the daemon can export, with its label names."""
    registry = DaemonMetrics().registry
    out: dict[str, set[str]] = {}
    for name, collector in registry._names_to_collectors.items():  # no public listing
        labels = set(getattr(collector, "_labelnames", ()))
        if name.endswith("_bucket"):
            labels.add("le")
        out[name] = labels
    return out


EXPORTED = _exported()
SERIES = re.compile(r"\b(autoscalerd_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def _check_expr(expr: str, where: str) -> list[str]:
    """Problems with the autoscalerd series an expression names."""
    problems = []
    found = SERIES.findall(expr)
    if not found:
        problems.append(f"{where}: names no autoscalerd_* series: {expr}")
    for name, selector in found:
        if name not in EXPORTED:
            problems.append(f"{where}: {name} is not exported by the daemon")
            continue
        for label in MATCHER.findall(selector or ""):
            if label not in EXPORTED[name] | TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {label!r}")
    return problems


def test_the_checker_catches_unknown_series_and_labels() -> None:
    assert _check_expr("autoscalerd_desired_replicas", "x") == []
    assert _check_expr("rate(autoscalerd_tick_lag_seconds_bucket[5m])", "x") == []
    assert _check_expr("autoscalerd_no_such_thing", "x")
    assert _check_expr('autoscalerd_desired_replicas{policy="x"}', "x")
    assert _check_expr("up", "x")


# -- the dashboard ---------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_is_valid_json_with_ids_and_a_datasource_variable() -> None:
    d = _dashboard()
    assert d["uid"] == "autoscalerd" and d["title"]
    panels = _panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]


def test_every_dashboard_query_names_exported_series() -> None:
    d = _dashboard()
    problems: list[str] = []
    for p in _panels(d):
        for t in p.get("targets", []):
            problems += _check_expr(t["expr"], f"panel {p['title']!r} {t['refId']}")
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            problems += _check_expr(v["definition"], f"variable {v['name']}")
    assert problems == []


@pytest.mark.parametrize(
    ("title", "series"),
    [
        pytest.param("Metric vs target", "autoscalerd_metric_value", id="metric"),
        pytest.param("Metric vs target", "autoscalerd_target_value", id="target"),
        pytest.param("Replicas", "autoscalerd_desired_replicas", id="replicas"),
        pytest.param("Scrape errors", "autoscalerd_scrapes_total", id="scrape-errors"),
        pytest.param("Scale writes", "autoscalerd_scale_operations_total", id="scale-writes"),
        pytest.param("Tick lag", "autoscalerd_tick_lag_seconds_bucket", id="tick-lag"),
        pytest.param("Leader", "autoscalerd_leader", id="leader"),
    ],
)
def test_dashboard_has_the_panels_the_issue_asks_for(title: str, series: str) -> None:
    panels = [p for p in _panels(_dashboard()) if p["title"].startswith(title)]
    assert panels, title
    assert any(series in t["expr"] for p in panels for t in p["targets"])


def test_per_policy_panels_repeat_for_each_policy() -> None:
    rows = [p for p in _dashboard()["panels"] if p["type"] == "row" and p.get("repeat")]
    assert [r["repeat"] for r in rows] == ["autoscaler"]


# -- the kustomize component -----------------------------------------------------------


def _doc(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((MDIR / name).read_text()) if d]
    assert len(docs) == 1
    return dict(docs[0])


def test_component_lists_every_manifest_and_is_a_component() -> None:
    k = _doc("kustomization.yaml")
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert k["kind"] == "Component"
    files = sorted(p.name for p in MDIR.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(k["resources"]) == files


def test_the_base_does_not_include_the_component() -> None:
    """Clusters without the Prometheus Operator apply the base unchanged."""
    base = yaml.safe_load((KDIR / "kustomization.yaml").read_text())
    assert "monitoring" not in str(base.get("resources", []))
    assert "monitoring" not in str(base.get("components", []))


SM_SPEC = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"}
SM_ENDPOINT = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
               "relabelings", "metricRelabelings", "tlsConfig", "authorization"}  # fmt: skip


def test_service_monitor_selects_the_daemons_service_and_port() -> None:
    sm = _doc("servicemonitor.yaml")
    svc = yaml.safe_load((KDIR / "service.yaml").read_text())
    assert (sm["apiVersion"], sm["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert sm["metadata"]["namespace"] == svc["metadata"]["namespace"]
    assert set(sm["spec"]) <= SM_SPEC
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        assert svc["metadata"]["labels"][k] == v
    ports = {p["name"] for p in svc["spec"]["ports"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert set(endpoint) <= SM_ENDPOINT
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    # keep the per-policy `namespace` label (else it becomes exported_namespace)
    assert endpoint["honorLabels"] is True
    assert re.fullmatch(r"\d+s", endpoint["interval"])
    assert int(endpoint["scrapeTimeout"][:-1]) < int(endpoint["interval"][:-1])


RULE_KEYS = {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
ALERTS = {
    "AutoscalerdPolicyWithoutData",
    "AutoscalerdScaleWritesFailing",
    "AutoscalerdNoLeader",
    "AutoscalerdTickLag",
}


def _rule_groups() -> dict[str, Any]:
    rule = _doc("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert set(rule["spec"]) == {"groups"}
    return dict(rule["spec"])


def test_rules_have_the_four_alerts_with_severity_and_words() -> None:
    rules = [r for g in _rule_groups()["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    problems: list[str] = []
    for r in rules:
        assert set(r) <= RULE_KEYS, r["alert"]
        assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        problems += _check_expr(r["expr"], r["alert"])
    assert problems == []


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); rules not run")
    return path


def _rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(_rule_groups()))
    return path


def test_promtool_check_rules(tmp_path: Path) -> None:
    promtool = _promtool()
    proc = subprocess.run(
        [promtool, "check", "rules", str(_rules_file(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout + proc.stderr


def _exprs() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in _rule_groups()["groups"] for r in g["rules"]}


def _lag_buckets(pod: str, slow: bool) -> list[dict[str, str]]:
    """Tick-lag histogram of `pod`: 10 ticks a minute, all 1-2.5 s late (slow) or < 10 ms."""
    out = []
    for le in ("0.01", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf"):
        counts = slow and float(le) < 2.5
        out.append(
            {
                "series": "autoscalerd_tick_lag_seconds_bucket"
                f'{{namespace="autoscalerd-system",pod="{pod}",le="{le}"}}',
                "values": "0x20" if counts else "0+10x20",
            }
        )
    return out


def test_promtool_alert_expressions_fire_on_the_broken_case_only(tmp_path: Path) -> None:
    promtool = _promtool()
    e = _exprs()
    sys_ns = 'namespace="autoscalerd-system"'
    tests = {
        "rule_files": [str(_rules_file(tmp_path))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # data last seen at time 0 vs every minute
                    {"series": 'autoscalerd_last_data_timestamp_seconds{namespace="ns",autoscaler="stale"}', "values": "0x20"},
                    {"series": 'autoscalerd_last_data_timestamp_seconds{namespace="ns",autoscaler="fresh"}', "values": "0+60x20"},
                    {"series": 'autoscalerd_scale_operations_total{namespace="ns",autoscaler="broken",direction="up",result="error"}', "values": "0+1x20"},
                    {"series": 'autoscalerd_scale_operations_total{namespace="ns",autoscaler="fine",direction="up",result="ok"}', "values": "0+1x20"},
                    # pod a leads for 5 minutes, then nobody does
                    {"series": f'autoscalerd_leader{{{sys_ns},pod="a"}}', "values": "1x5 0x15"},
                    {"series": f'autoscalerd_leader{{{sys_ns},pod="b"}}', "values": "0x20"},
                    {"series": f'autoscalerd_scrape_interval_seconds{{{sys_ns},pod="a"}}', "values": "1x20"},
                    {"series": f'autoscalerd_scrape_interval_seconds{{{sys_ns},pod="b"}}', "values": "1x20"},
                    *_lag_buckets("a", slow=True),
                    *_lag_buckets("b", slow=False),
                ],
                "promql_expr_test": [
                    {"expr": e["AutoscalerdPolicyWithoutData"], "eval_time": "4m", "exp_samples": []},
                    {"expr": e["AutoscalerdPolicyWithoutData"], "eval_time": "10m",
                     "exp_samples": [{"labels": '{namespace="ns",autoscaler="stale"}', "value": 600}]},
                    {"expr": e["AutoscalerdScaleWritesFailing"], "eval_time": "10m",
                     "exp_samples": [{"labels": '{namespace="ns",autoscaler="broken"}', "value": 5}]},
                    {"expr": e["AutoscalerdNoLeader"], "eval_time": "3m", "exp_samples": []},
                    {"expr": e["AutoscalerdNoLeader"], "eval_time": "10m",
                     "exp_samples": [{"labels": f"{{{sys_ns}}}", "value": 0}]},
                    {"expr": e["AutoscalerdTickLag"], "eval_time": "10m",
                     "exp_samples": [{"labels": f'{{{sys_ns},pod="a"}}', "value": 2.485}]},
                ],
            },
            {  # no daemon scraped at all: nobody leads
                "interval": "1m",
                "input_series": [{"series": "up", "values": "1x5"}],
                "promql_expr_test": [
                    {"expr": e["AutoscalerdNoLeader"], "eval_time": "2m",
                     "exp_samples": [{"labels": "{}", "value": 1}]},
                ],
            },
        ],
    }  # fmt: skip
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubectl_builds_the_base_with_the_component(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the component's structure is checked above")
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(KDIR, tmp_path)}]\n"
        f"components: [{os.path.relpath(MDIR, tmp_path)}]\n"
    )
    proc = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(proc.stdout) if d}
    assert {"Deployment", "ServiceMonitor", "PrometheusRule"} <= kinds

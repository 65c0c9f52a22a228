"""Table-driven tests of policy validation: each broken file gives exactly these lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from autoscalerd.config.load import ConfigErrors, load_config
from autoscalerd.config.model import Strategy

HEAD = """\
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata:
  name: web
  namespace: default
"""
# Lines 1-5 are HEAD; the spec starts on line 6.
SPEC = """\
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  scalingStrategy: KPA
  metricsSources:
    - metricSourceType: pod
      protocolType: http
      port: "8000"
      path: /metrics
      targetMetric: requests
      targetValue: "10"
"""


def problems_of(tmp_path: Path, text: str) -> list[str]:
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigErrors) as info:
        load_config([str(f)])
    out = []
    for p in info.value.problems:
        assert p.file == str(f)
        out.append(f"{p.line}: {p.field}: {p.message}" if p.field else f"{p.line}: {p.message}")
    return out


CASES = [
    pytest.param(
        "a: [1, 2\nb: 3\n",
        ["2: YAML syntax error: expected ',' or ']', but got ':' (while parsing a flow sequence)"],
        id="yaml-syntax-error",
    ),
    pytest.param(
        "- just\n- a list\n",
        ["1: must be a mapping with apiVersion and kind, got a list"],
        id="document-not-a-mapping",
    ),
    pytest.param(
        "apiVersion: v1\nkind: ConfigMap\n",
        ["2: kind: unknown kind the string 'ConfigMap'; expected PodAutoscaler or DaemonConfig"],
        id="unknown-kind",
    ),
    pytest.param(
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\nkind: PodAutoscalr\n",
        [
            "2: kind: unknown kind the string 'PodAutoscalr'; expected PodAutoscaler or "
            "DaemonConfig; did you mean 'PodAutoscaler'?"
        ],
        id="kind-typo",
    ),
    pytest.param(
        "apiVersion: autoscaling/v2\nkind: PodAutoscaler\n",
        [
            "1: apiVersion: must be autoscaling.aibrix.ai/v1alpha1 for kind PodAutoscaler, "
            "got the string 'autoscaling/v2'"
        ],
        id="wrong-api-version",
    ),
    pytest.param(
        HEAD + SPEC.replace("  minReplicas: 1\n", "  minReplicas: 5\n"),
        [
            "8: spec.minReplicas: minReplicas (5) is above maxReplicas (4); raise maxReplicas or lower minReplicas"
        ],
        id="min-above-max",
    ),
    pytest.param(
        HEAD + SPEC.replace("  maxReplicas: 4\n", "  maxReplicas: 0\n"),
        ["9: spec.maxReplicas: must be between 1 and 100000, got 0"],
        id="max-zero",
    ),
    pytest.param(
        HEAD + SPEC.replace("  maxReplicas: 4\n", ""),
        ["6: spec: maxReplicas is required (the most replicas the autoscaler may set)"],
        id="max-missing",
    ),
    pytest.param(
        HEAD + SPEC.replace("  minReplicas: 1\n", "  minReplicas: two\n"),
        ["8: spec.minReplicas: must be a whole number, got the string 'two'"],
        id="min-wrong-type",
    ),
    pytest.param(
        HEAD + SPEC.replace('targetValue: "10"', 'targetValue: "0"'),
        ["17: spec.metricsSources[0].targetValue: must be more than 0, got 0"],
        id="target-value-zero",
    ),
    pytest.param(
        HEAD + SPEC.replace('targetValue: "10"', "targetValue: lots"),
        ["17: spec.metricsSources[0].targetValue: must be a number, got the string 'lots'"],
        id="target-value-not-a-number",
    ),
    pytest.param(
        HEAD + SPEC.replace('port: "8000"', 'port: "80000"'),
        ["14: spec.metricsSources[0].port: must be between 1 and 65535, got 80000"],
        id="port-out-of-range",
    ),
    pytest.param(
        HEAD + SPEC.replace("protocolType: http", "protocolType: grpc"),
        ["13: spec.metricsSources[0].protocolType: must be http or https, got the string 'grpc'"],
        id="protocol-unknown",
    ),
    pytest.param(
        HEAD + SPEC.replace("scalingStrategy: KPA", "scalingStrategy: kpa"),
        ["10: spec.scalingStrategy: must be KPA, APA or HPA; did you mean 'KPA'?"],
        id="strategy-lower-case",
    ),
    pytest.param(
        HEAD + SPEC.replace("  minReplicas: 1\n", "  minReplica: 1\n"),
        ["8: spec.minReplica: unknown field 'minReplica'; did you mean 'minReplicas'?"],
        id="typo-spec-field",
    ),
    pytest.param(
        HEAD + SPEC.replace("targetMetric: requests", "targetMetrc: requests"),
        [
            "11: spec.metricsSources[0]: targetMetric is required (a metric name or a series selector)",
            "16: spec.metricsSources[0].targetMetrc: unknown field 'targetMetrc'; did you mean 'targetMetric'?",
        ],
        id="typo-source-field",
    ),
    pytest.param(
        HEAD + SPEC.replace("targetMetric: requests", "targetMetric: 'requests{code=~\"5..}'"),
        [
            "16: spec.metricsSources[0].targetMetric: 'requests{code=~\"5..}': unterminated quoted value"
        ],
        id="bad-selector",
    ),
    pytest.param(
        HEAD + SPEC.replace("targetMetric: requests", "targetMetric: 'requests{code=~\"(5\"}'"),
        [
            "16: spec.metricsSources[0].targetMetric: 'requests{code=~\"(5\"}': bad regular "
            "expression '(5' for code: missing ): (5 (patterns use RE2 syntax, as in Prometheus)"
        ],
        id="bad-selector-regex",
    ),
    pytest.param(
        HEAD
        + SPEC.replace("protocolType: http", "protocolType: https")
        + "      tlsConfig: {insecure_skip_verify: true}\n",
        [
            "18: spec.metricsSources[0].tlsConfig.insecure_skip_verify: unknown field "
            "'insecure_skip_verify'; did you mean 'insecureSkipVerify'?"
        ],
        id="tls-snake-case",
    ),
    pytest.param(
        HEAD + SPEC + "      tlsConfig: {caFile: /ca.crt}\n",
        [
            "18: spec.metricsSources[0].tlsConfig: tlsConfig applies to https sources only; "
            "set protocolType: https or remove tlsConfig"
        ],
        id="tls-on-http",
    ),
    pytest.param(
        HEAD
        + SPEC.replace("protocolType: http", "protocolType: https")
        + "      tlsConfig: {certFile: /c.crt}\n",
        [
            "18: spec.metricsSources[0].tlsConfig.certFile: a client certificate needs both "
            "certFile and keyFile; add keyFile"
        ],
        id="tls-cert-without-key",
    ),
    pytest.param(
        HEAD
        + SPEC.replace("protocolType: http", "protocolType: https")
        + "      tlsConfig: {minVersion: TLS10}\n",
        [
            "18: spec.metricsSources[0].tlsConfig.minVersion: TLS10 is not allowed; the minimum is TLS12"
        ],
        id="tls-min-version",
    ),
    pytest.param(
        HEAD + SPEC + "      bearerTokenFile: /t\n      authorization: {credentialsFile: /t}\n",
        [
            "18: spec.metricsSources[0].bearerTokenFile: set authorization or bearerTokenFile, not both"
        ],
        id="auth-twice",
    ),
    pytest.param(
        HEAD + SPEC + "      authorization: {type: Basic, credentialsFile: /t}\n",
        ["18: spec.metricsSources[0].authorization.type: only Bearer is supported, got 'Basic'"],
        id="auth-basic",
    ),
    pytest.param(
        HEAD + SPEC.replace("metricSourceType: pod", "metricSourceType: resource"),
        [
            "13: spec.metricsSources[0].protocolType: is not used: metricSourceType resource "
            "reads metrics.k8s.io (metrics-server); remove protocolType",
            "14: spec.metricsSources[0].port: is not used: metricSourceType resource "
            "reads metrics.k8s.io (metrics-server); remove port",
            "15: spec.metricsSources[0].path: is not used: metricSourceType resource "
            "reads metrics.k8s.io (metrics-server); remove path",
            "16: spec.metricsSources[0].targetMetric: metricSourceType resource takes "
            "targetMetric cpu or memory, got the string 'requests'; for another metric use "
            "metricSourceType custom or pod",
        ],
        id="resource-rules",
    ),
    pytest.param(
        HEAD + SPEC + "  subTargetSelector: {roleName: prefill}\n",
        [
            "18: spec.subTargetSelector: subTargetSelector (StormService roles) is an AIbrix field "
            "this daemon does not act on yet; remove it and point scaleTargetRef at the workload to scale"
        ],
        id="aibrix-field-not-acted-on",
    ),
    pytest.param(
        HEAD + SPEC + "  targetMetric: foo\n",
        [
            "18: spec.targetMetric: spec.targetMetric moved into spec.metricsSources[].targetMetric "
            "in AIbrix v0.2; move it there"
        ],
        id="legacy-top-level-target-metric",
    ),
    pytest.param(
        HEAD
        + SPEC.replace("  metricsSources:\n", "  metricsSources: []\n").split("    - metric")[0],
        ["11: spec.metricsSources: must be a list with at least one metric source, got a list"],
        id="no-metric-sources",
    ),
    pytest.param(
        HEAD.replace("  name: web\n", "") + SPEC,
        ["3: metadata: name is required"],
        id="name-missing",
    ),
    pytest.param(
        HEAD + '  annotations:\n    kpa.autoscaling.aibrix.ai/stable-windw: "30s"\n' + SPEC,
        [
            "7: metadata.annotations[kpa.autoscaling.aibrix.ai/stable-windw]: unknown annotation "
            "'kpa.autoscaling.aibrix.ai/stable-windw'; did you mean 'kpa.autoscaling.aibrix.ai/stable-window'?"
        ],
        id="annotation-typo",
    ),
    pytest.param(
        HEAD + '  annotations:\n    kpa.autoscaling.aibrix.ai/stable-window: "30"\n' + SPEC,
        [
            "7: metadata.annotations[kpa.autoscaling.aibrix.ai/stable-window]: '30' has no unit; "
            "write e.g. 30s (units: ms, s, m, h)"
        ],
        id="annotation-duration-no-unit",
    ),
    pytest.param(
        HEAD + '  annotations:\n    kpa.autoscaling.aibrix.ai/stable-window: "2h"\n' + SPEC,
        [
            "7: metadata.annotations[kpa.autoscaling.aibrix.ai/stable-window]: must be at least 6s "
            "and at most 1h, got 2h"
        ],
        id="annotation-duration-range",
    ),
    pytest.param(
        HEAD + '  annotations:\n    kpa.autoscaling.aibrix.ai/panic-threshold: "1"\n' + SPEC,
        [
            "7: metadata.annotations[kpa.autoscaling.aibrix.ai/panic-threshold]: must be more than 1 "
            "and at most 1000, got 1"
        ],
        id="annotation-panic-threshold-range",
    ),
    pytest.param(
        HEAD + '  annotations:\n    autoscaling.aibrix.ai/max-scale-up-rate: "fast"\n' + SPEC,
        [
            "7: metadata.annotations[autoscaling.aibrix.ai/max-scale-up-rate]: must be a number, "
            "got the string 'fast'"
        ],
        id="annotation-float-type",
    ),
    pytest.param(
        HEAD + '  annotations:\n    kpa.autoscaling.aibrix.ai/activation-scale: "0"\n' + SPEC,
        [
            "7: metadata.annotations[kpa.autoscaling.aibrix.ai/activation-scale]: must be at least 1, got 0"
        ],
        id="annotation-activation-scale",
    ),
    pytest.param(
        HEAD + '  annotations:\n    apa.autoscaling.aibrix.ai/window: "30s"\n' + SPEC,
        [
            "7: metadata.annotations[apa.autoscaling.aibrix.ai/window]: applies to scalingStrategy "
            "APA, but this policy uses KPA"
        ],
        id="annotation-wrong-strategy",
    ),
    pytest.param(
        HEAD
        + "  annotations:\n"
        + '    apa.autoscaling.aibrix.ai/up-fluctuation-tolerance: "0.2"\n'
        + '    autoscaling.aibrix.ai/scale-up-tolerance: "0.3"\n'
        + SPEC.replace("scalingStrategy: KPA", "scalingStrategy: APA"),
        [
            "8: metadata.annotations[autoscaling.aibrix.ai/scale-up-tolerance]: sets the same "
            "parameter as 'apa.autoscaling.aibrix.ai/up-fluctuation-tolerance'; keep only one of them"
        ],
        id="annotation-alias-twice",
    ),
    pytest.param(
        HEAD
        + "  annotations:\n"
        + '    kpa.autoscaling.aibrix.ai/stable-window: "10s"\n'
        + '    kpa.autoscaling.aibrix.ai/panic-window: "20s"\n'
        + SPEC,
        [
            "8: metadata.annotations[kpa.autoscaling.aibrix.ai/panic-window]: the panic window (20s) "
            "must not be longer than the stable window (10s)"
        ],
        id="panic-window-longer-than-stable",
    ),
    pytest.param(
        HEAD + '  annotations:\n    autoscaling.aibrix.ai/scale-to-zero: "true"\n' + SPEC,
        [
            "7: metadata.annotations[autoscaling.aibrix.ai/scale-to-zero]: set spec.minReplicas: 0 to allow scale to zero"
        ],
        id="scale-to-zero-needs-min-zero",
    ),
    pytest.param(
        HEAD + SPEC + "  behavior: {scaleDown: {stabilizationWindowSeconds: 60}}\n",
        ["18: spec.behavior: applies to scalingStrategy HPA; this policy uses KPA"],
        id="behavior-on-kpa",
    ),
    pytest.param(
        HEAD
        + SPEC.replace("scalingStrategy: KPA", "scalingStrategy: HPA")
        + "  behavior:\n    scaleUp:\n      selectPolicy: Biggest\n      policies:\n"
        + "        - {type: Pod, value: 4, periodSeconds: 15}\n",
        [
            "20: spec.behavior.scaleUp.selectPolicy: must be Max, Min or Disabled, got the string 'Biggest'",
            "22: spec.behavior.scaleUp.policies[0].type: type must be Pods or Percent, got the string 'Pod'",
        ],
        id="hpa-behavior-bad-values",
    ),
    pytest.param(
        HEAD + SPEC + "  fallback: {failureThreshold: 0, replicas: 9}\n",
        [
            "18: spec.fallback.failureThreshold: must be at least 1, got 0",
            "18: spec.fallback.replicas: is above maxReplicas (4)",
        ],
        id="fallback-bad",
    ),
    pytest.param(
        HEAD + SPEC + "  minReplicas: 2\n",
        ["18: spec.minReplicas: duplicate key; it is also set at line 8"],
        id="duplicate-key",
    ),
    pytest.param(
        HEAD + SPEC + "---\n" + HEAD + SPEC,
        ["22: metadata.name: default/web is defined twice; the first is at {file}:4"],
        id="duplicate-policy-name",
    ),
    pytest.param(
        HEAD + SPEC + "---\n" + HEAD.replace("name: web", "name: web2") + SPEC,
        [
            "25: spec.scaleTargetRef.name: Deployment default/web is already scaled by default/web "
            "({file}:4); two autoscalers on one target would fight"
        ],
        id="two-policies-one-target",
    ),
    pytest.param(
        "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nscrapeInterval: 1s\nscrapeTimeout: 2s\n",
        ["4: scrapeTimeout: must be below scrapeInterval (1s), got 2s"],
        id="daemon-timeout-above-interval",
    ),
    pytest.param(
        "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nbodySizeLimit: 32MiB\n"
        "bodyBudget: 16MiB\n",
        [
            "4: bodyBudget: must be at least bodySizeLimit (33554432 bytes) so that one page of "
            "the largest allowed size can be read, got 16MiB; raise bodyBudget or lower "
            "bodySizeLimit"
        ],
        id="daemon-body-budget-below-the-limit",
    ),
    pytest.param(
        "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nbodyBudget: lots\n",
        ["3: bodyBudget: 'lots' is not a size; write e.g. 16MiB, 512KiB or 1000000"],
        id="daemon-body-budget-not-a-size",
    ),
    pytest.param(
        "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nscrapeIntervl: 1s\n",
        ["3: scrapeIntervl: unknown field 'scrapeIntervl'; did you mean 'scrapeInterval'?"],
        id="daemon-typo",
    ),
    pytest.param(
        "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\n"
        "leaderElection: {leaseDuration: 5s, renewDeadline: 10s}\n",
        [
            "3: leaderElection: needs leaseDuration > renewDeadline > 1.2 × retryPeriod (got 5s, 10s, 2s)"
        ],
        id="daemon-leader-election-order",
    ),
    pytest.param(
        "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\n---\n"
        "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\n",
        ["5: kind: only one DaemonConfig is allowed; the first is at {file}:2"],
        id="two-daemon-configs",
    ),
    pytest.param(
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\nkind: [PodAutoscaler]\n",
        ["2: kind: unknown kind a list; expected PodAutoscaler or DaemonConfig"],
        id="kind-not-a-string",
    ),
    pytest.param(
        HEAD + SPEC.replace("metricSourceType: pod", "metricSourceType: {type: pod}"),
        [
            "12: spec.metricsSources[0].metricSourceType: must be pod, resource, custom, external, domain or prometheus, got a mapping"
        ],
        id="source-type-not-a-string",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_broken_policy_reports_exact_lines(tmp_path: Path, text: str, expected: list[str]) -> None:
    f = tmp_path / "p.yaml"
    assert problems_of(tmp_path, text) == [e.replace("{file}", str(f)) for e in expected]


def test_all_problems_of_a_file_are_reported_in_one_run(tmp_path: Path) -> None:
    text = HEAD + SPEC.replace("  minReplicas: 1\n", "  minReplicas: 9\n").replace(
        'port: "8000"', "port: 0"
    ).replace("protocolType: http", "protocolType: ftp")
    assert len(problems_of(tmp_path, text)) == 3


def test_valid_policy_with_every_extension(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        HEAD
        + "  annotations:\n"
        + '    kpa.autoscaling.aibrix.ai/stable-window: "30s"\n'
        + "    kpa.autoscaling.aibrix.ai/panic-window: 10s\n"
        + '    kpa.autoscaling.aibrix.ai/scale-down-delay: "1m30s"\n'
        + '    autoscaling.aibrix.ai/max-scale-up-rate: "2"\n'
        + "    kubectl.kubernetes.io/last-applied-configuration: '{}'\n"
        + SPEC.replace("protocolType: http", "protocolType: https").replace(
            "targetMetric: requests",
            "targetMetric: 'vllm:num_requests_running{model_name=\"llama\"}'",
        )
        + "      tlsConfig: {caFile: /ca.crt, serverName: web.default.svc, minVersion: TLS13}\n"
        + "      authorization: {credentialsFile: /token}\n"
        + "  fallback: {failureThreshold: 5, replicas: 2}\n"
    )
    policy = load_config([str(f)]).policies[0]
    assert policy.kpa.stable_window_seconds == 30.0
    assert policy.kpa.panic_window_seconds == 10.0
    assert policy.kpa.scale_down_delay_seconds == 90.0
    assert policy.kpa.max_scale_up_rate == 2.0
    source = policy.sources[0]
    assert source.selector.metric == "vllm:num_requests_running"
    assert source.selector.matchers[0].matches("llama")
    assert source.tls.server_name == "web.default.svc"
    assert source.authorization is not None and source.authorization.credentials_file == "/token"
    assert policy.fallback is not None and policy.fallback.replicas == 2


def test_aibrix_sample_shapes_load(tmp_path: Path) -> None:
    """Ports and target values as numbers or strings, path with or without the leading /."""
    f = tmp_path / "p.yaml"
    f.write_text(
        HEAD
        + SPEC.replace('port: "8000"', "port: 8000")
        .replace("path: /metrics", "path: metrics")
        .replace('targetValue: "10"', "targetValue: 10.5")
        .replace("scalingStrategy: KPA", 'scalingStrategy: "APA"')
        .replace("  minReplicas: 1\n", "")
    )
    policy = load_config([str(f)]).policies[0]
    assert policy.strategy is Strategy.APA
    assert policy.min_replicas == 1
    assert (policy.sources[0].port, policy.sources[0].path) == (8000, "/metrics")
    assert policy.sources[0].target_value == 10.5


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config([str(tmp_path / "nope.yaml"), str(tmp_path)])
    assert [p.message for p in info.value.problems] == [
        "no such file or directory",
        "no *.yaml or *.yml files in this directory",
    ]


@pytest.mark.parametrize(
    ("settings", "limit", "budget"),
    [
        pytest.param("", 16 << 20, 64 << 20, id="defaults"),
        pytest.param("bodyBudget: 128MiB\n", 16 << 20, 128 << 20, id="budget"),
        pytest.param("bodySizeLimit: 100MiB\n", 100 << 20, 100 << 20, id="default-raised-to-limit"),
        pytest.param("bodySizeLimit: 1MiB\nbodyBudget: 1MiB\n", 1 << 20, 1 << 20, id="equal"),
    ],
)
def test_body_budget_is_never_below_the_body_size_limit(
    tmp_path: Path, settings: str, limit: int, budget: int
) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\n" + settings)
    daemon = load_config([str(f)]).daemon
    assert (daemon.body_size_limit_bytes, daemon.body_budget_bytes) == (limit, budget)

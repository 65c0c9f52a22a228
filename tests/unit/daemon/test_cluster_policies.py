"""Cluster mode's policy set (`daemon/cluster_policies.py`): claims, invalid objects, clashes
with files and between objects, the parse cache; and the objects' side of the DaemonConfig
and of `policy_from_object` (`config/pod_autoscaler_object.py`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import FakePodAutoscalers

from autoscalerd.config.load import read_documents
from autoscalerd.config.model import PodAutoscalerSettings, Policy
from autoscalerd.config.parse import parse_documents
from autoscalerd.config.pod_autoscaler_object import (
    claimed,
    policy_from_object,
    spec_message,
    valid_spec_reason,
)
from autoscalerd.daemon.cluster_policies import ClusterPolicies, _ParseCache, resolve

MANAGED = {"autoscalerd.io/managed": "true"}


def obj(
    name: str,
    *,
    target: str | None = None,
    ns: str = "default",
    annotations: dict[str, str] | None = None,
    created: str = "2026-01-01T00:00:00Z",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target or name},
        "minReplicas": 1,
        "maxReplicas": 4,
        "scalingStrategy": "KPA",
        "metricsSources": [
            {"metricSourceType": "pod", "protocolType": "http", "port": "8000",
             "path": "/metrics", "targetMetric": "requests", "targetValue": "10"}
        ],
    }  # fmt: skip
    for k, v in spec.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return {
        "apiVersion": "autoscaling.aibrix.ai/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": created,
            "annotations": MANAGED if annotations is None else annotations,
        },
        "spec": body,
    }


def objects(*items: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in items}


def file_policies(text: str) -> list[Policy]:
    docs, problems = read_documents("/etc/autoscalerd/p.yaml", text)
    config, problems = parse_documents(docs)
    assert problems == []
    return list(config.policies)


FILE = """\
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata: {name: web, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 4
  scalingStrategy: KPA
  metricsSources:
    - {metricSourceType: pod, protocolType: http, port: '8000', path: /metrics,
       targetMetric: requests, targetValue: '10'}
"""


@pytest.mark.parametrize(
    ("annotations", "claim", "expected"),
    [
        (MANAGED, "annotated", True),
        ({}, "annotated", False),
        ({"autoscalerd.io/managed": "True"}, "annotated", False),
        ({"autoscalerd.io/managed": "false"}, "annotated", False),
        ({}, "all", True),
    ],
)
def test_claim(annotations: dict[str, str], claim: str, expected: bool) -> None:
    assert claimed(obj("a", annotations=annotations), claim) is expected


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        (
            {"minReplicas": 5},
            "InvalidBounds",
            "spec.minReplicas: minReplicas (5) is above maxReplicas (4); "
            "raise maxReplicas or lower minReplicas",
        ),
        (
            {"scalingStrategy": "kpa"},
            "InvalidScalingStrategy",
            "spec.scalingStrategy: must be KPA, APA or HPA; did you mean 'KPA'?",
        ),
        ({"maxReplicas": None}, "InvalidBounds", "spec: maxReplicas is required"),
        ({"scaleTargetRef": None}, "MissingScaleTargetRef", "spec: scaleTargetRef is required"),
        ({"metricsSources": [{"metricSourceType": "pod"}]}, "MetricsConfigError", "spec.metrics"),
        ({"panicWindow": 3}, "InvalidSpec", "spec.panicWindow: "),
    ],
)
def test_an_invalid_object_gets_validates_message_with_the_field_path(
    spec: dict[str, Any], reason: str, message: str
) -> None:
    policy, problems = policy_from_object(obj("a", **spec))
    assert policy is None
    assert valid_spec_reason(problems) == reason
    assert spec_message(problems).startswith(message)


def test_server_metadata_and_status_do_not_make_an_object_invalid() -> None:
    o = obj("a")
    o["metadata"] |= {
        "managedFields": [{"manager": "kubectl"}],
        "deletionGracePeriodSeconds": 0,
        "annotations": {**MANAGED, "kubectl.kubernetes.io/last-applied-configuration": "{}"},
    }
    o["status"] = {"desiredScale": 3, "conditions": []}
    policy, problems = policy_from_object(o)
    assert problems == [] and policy is not None and policy.key == "default/a"


def test_resolve_active_invalid_unclaimed() -> None:
    verdicts = resolve(
        objects(obj("a"), obj("bad", maxReplicas=0), obj("theirs", annotations={})),
        [],
        "annotated",
    )
    assert {k[1]: v.state for k, v in verdicts.items()} == {"a": "active", "bad": "invalid"}
    assert verdicts[("default", "bad")].reason == "InvalidBounds"


def test_a_file_policy_wins_a_name_or_a_target_clash() -> None:
    files = file_policies(FILE)
    verdicts = resolve(
        objects(obj("web", target="other"), obj("also-web", target="web")), files, "annotated"
    )
    name = verdicts[("default", "web")]
    target = verdicts[("default", "also-web")]
    assert (name.state, name.reason) == ("clash", "NameClash")
    assert "/etc/autoscalerd/p.yaml:3" in name.message and "rename" in name.message
    assert (target.state, target.reason) == ("clash", "TargetClash")
    assert "the policy default/web in /etc/autoscalerd/p.yaml:3" in target.message


def test_between_objects_the_older_keeps_the_target() -> None:
    verdicts = resolve(
        objects(
            obj("young", target="t", created="2026-01-02T00:00:00Z"),
            obj("old", target="t", created="2026-01-01T00:00:00Z"),
            obj("elsewhere", target="t", ns="other"),
        ),
        [],
        "annotated",
    )
    assert verdicts[("default", "old")].state == "active"
    assert verdicts[("default", "young")].state == "clash"
    assert "PodAutoscaler object default/old" in verdicts[("default", "young")].message
    assert verdicts[("other", "elsewhere")].state == "active", "another namespace's target"


def test_the_parse_cache_reparses_only_on_a_change_other_than_status() -> None:
    cache = _ParseCache()
    a = obj("a")
    first = resolve(objects(a), [], "annotated", cache)[("default", "a")].policy
    with_status = {**a, "status": {"desiredScale": 2}}
    again = resolve(objects(with_status), [], "annotated", cache)[("default", "a")].policy
    assert again is first
    edited = obj("a", maxReplicas=6)
    third = resolve(objects(edited), [], "annotated", cache)[("default", "a")].policy
    assert third is not first and third is not None and third.max_replicas == 6
    resolve({}, [], "annotated", cache)
    assert cache._entries == {}


async def test_cluster_policies_calls_back_on_each_change_and_stops_the_feed() -> None:
    feed = FakePodAutoscalers()
    changes: list[int] = []
    cp = ClusterPolicies(feed, PodAutoscalerSettings(), lambda: changes.append(feed.generation))
    task = asyncio.create_task(cp.run())
    await asyncio.sleep(0)
    assert feed.started
    feed.put(obj("a"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert changes == [1]
    assert [p.key for p in cp.policies([])] == ["default/a"]
    feed.delete("default", "a")
    for _ in range(5):
        await asyncio.sleep(0)
    assert changes == [1, 2] and cp.policies([]) == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not feed.started


@pytest.mark.parametrize(
    ("block", "expected", "problem"),
    [
        ("{}", PodAutoscalerSettings(), None),
        (
            "{namespaces: [a, b, a], labelSelector: 'team=ml', claim: all}",
            PodAutoscalerSettings(namespaces=("a", "b"), label_selector="team=ml", claim="all"),
            None,
        ),
        ("{claim: some}", None, "podAutoscalers.claim: must be annotated"),
        ("{namespaces: a}", None, "podAutoscalers.namespaces: must be a list"),
        ("{namespace: [a]}", None, "podAutoscalers.namespace: unknown"),
    ],
)
def test_daemon_config_pod_autoscalers_block(
    block: str, expected: PodAutoscalerSettings | None, problem: str | None
) -> None:
    text = f"apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\npodAutoscalers: {block}\n"
    docs, _ = read_documents("d.yaml", text)
    config, problems = parse_documents(docs)
    if problem is None:
        assert problems == [] and config.daemon.pod_autoscalers == expected
    else:
        assert len(problems) == 1 and problem in str(problems[0])
        assert str(problems[0]).startswith("d.yaml:3: ")

"""Cluster mode: the real `autoscalerd run --podautoscalers` against the sandbox's
PodAutoscaler objects (create, edit, delete, invalid, claim rules, a clash with a file, a
dropped watch, two leader-elected daemons)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e_harness import policy_yaml, run_demo, write
from waiting import wait_for

from autoscalerd.sandbox import MetricsEndpoint, Sandbox
from autoscalerd.sandbox import podautoscalers as pa

pytestmark = pytest.mark.e2e

NS, NAME, METRIC = "kube-system", "metrics-server", "go_threads"
PA = "metrics-server-pa"
MANAGED = {"autoscalerd.io/managed": "true"}
FAST = {
    "kpa.autoscaling.aibrix.ai/stable-window": "6s",
    "kpa.autoscaling.aibrix.ai/panic-window": "2s",
}


def pa_object(
    name: str = PA,
    *,
    annotations: dict[str, str] | None = None,
    min_replicas: int = 1,
    max_replicas: int = 4,
    target: str = NAME,
) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling.aibrix.ai/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": NS,
            "annotations": {**MANAGED, **FAST} if annotations is None else annotations,
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "scalingStrategy": "KPA",
            "metricsSources": [
                {
                    "metricSourceType": "pod",
                    "protocolType": "http",
                    "port": "8080",
                    "path": "/metrics",
                    "targetMetric": METRIC,
                    "targetValue": "20",
                }
            ],
        },
    }


async def workload(sb: Sandbox, name: str = NAME) -> Any:
    return await sb.add_deployment(
        NS, name, replicas=1, labels={"app": name},
        metrics=MetricsEndpoint(port=8080, tls="plain", metric=METRIC),
    )  # fmt: skip


def status_of(sb: Sandbox, name: str = PA) -> dict[str, Any]:
    obj = pa.get(sb.store, NS, name)
    return (obj or {}).get("status") or {}


def condition(sb: Sandbox, type_: str, name: str = PA) -> dict[str, Any]:
    for c in status_of(sb, name).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def status_writes(sb: Sandbox, name: str = PA) -> list[Any]:
    return [w for w in sb.writes if w.path.endswith(f"/podautoscalers/{name}/status")]


def policies(status: dict[str, Any]) -> list[str]:
    return [f"{p['namespace']}/{p['name']}" for p in status["policies"]]


async def test_create_scale_status_edit_delete(sandbox: Sandbox, start_daemon: Any) -> None:
    await workload(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    daemon = await start_daemon(args=("--podautoscalers",))
    pa.create(sandbox.store, pa_object())
    await daemon.wait_status(lambda s: policies(s) == [f"{NS}/{PA}"])
    await wait_for(lambda: condition(sandbox, "Ready").get("status") == "True", timeout=15)
    ready = condition(sandbox, "Ready")
    assert set(ready) == {
        "type", "status", "observedGeneration", "lastTransitionTime", "reason", "message"
    }  # fmt: skip
    assert condition(sandbox, "ValidSpec")["reason"] == "AsExpected"
    assert condition(sandbox, "AbleToScale")["reason"] == "SucceededGetScale"
    assert condition(sandbox, "ScalingActive") | {"lastTransitionTime": ""} == {
        "type": "ScalingActive", "status": "False", "observedGeneration": 1,
        "lastTransitionTime": "", "reason": "Stable", "message": "desired=1, actual=1",
    }  # fmt: skip
    assert status_of(sandbox)["desiredScale"] == 1 and status_of(sandbox)["actualScale"] == 1

    # only when changed: a steady daemon does not write the status every tick
    writes = len(status_writes(sandbox))
    ticks = (await daemon.status())["policies"][0]["ticks"]
    await daemon.wait_status(lambda s: s["policies"][0]["ticks"] >= ticks + 4)
    assert len(status_writes(sandbox)) == writes

    sandbox.set_load(NS, NAME, METRIC, 70)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=15)
    await wait_for(lambda: status_of(sandbox).get("actualScale") == 4, timeout=10)
    st = status_of(sandbox)
    assert st["desiredScale"] == 4 and st["lastScaleTime"]
    history = st["scalingHistory"]
    assert 1 <= len(history) <= 5 and history[-1]["newScale"] == 4 and history[-1]["success"]
    await wait_for(lambda: "SuccessfulRescale" in sandbox.event_reasons(NS, PA), timeout=5)

    # an edit of the bounds takes effect within a tick or two, windows kept
    before = daemon.logs(lambda d: d.get("event") == "policy changed; restarting it")
    pa.edit_spec(sandbox.store, NS, PA, {"maxReplicas": 2})
    await sandbox.wait_for_spec_replicas(NS, NAME, 2, timeout=10)
    assert daemon.logs(lambda d: d.get("event") == "policy changed; restarting it") == before
    kept = "policy bounds changed; windows and panic state kept"
    line = await daemon.wait_log(lambda d: d.get("event") == kept)
    assert line["max_replicas"] == 2
    await wait_for(
        lambda: condition(sandbox, "ValidSpec").get("observedGeneration") == 2, timeout=10
    )

    # deleted: stops at once
    pa.delete(sandbox.store, NS, PA)
    await daemon.wait_status(lambda s: s["policies"] == [], timeout=5)
    sandbox.set_load(NS, NAME, METRIC, 200)
    writes = len(sandbox.scale_writes())
    await daemon.wait_log(lambda d: d.get("event") == "policy removed")
    assert len(sandbox.scale_writes()) == writes
    assert await daemon.stop() == 0


async def test_invalid_object_is_never_acted_on_and_says_why(
    sandbox: Sandbox, start_daemon: Any
) -> None:
    await workload(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 70)
    daemon = await start_daemon(args=("--podautoscalers",))
    pa.create(sandbox.store, pa_object(min_replicas=3, max_replicas=2))
    await wait_for(lambda: condition(sandbox, "ValidSpec").get("status") == "False", timeout=10)
    valid = condition(sandbox, "ValidSpec")
    assert valid["reason"] == "InvalidBounds"
    assert valid["message"] == (
        "spec.minReplicas: minReplicas (3) is above maxReplicas (2); "
        "raise maxReplicas or lower minReplicas"
    )
    assert condition(sandbox, "Ready")["status"] == "False"
    await wait_for(lambda: "InvalidSpec" in sandbox.event_reasons(NS, PA), timeout=5)
    assert (await daemon.status())["policies"] == []
    assert sandbox.scale_writes() == []

    pa.edit_spec(sandbox.store, NS, PA, {"minReplicas": 1})  # fixed: now it scales
    await sandbox.wait_for_spec_replicas(NS, NAME, 2, timeout=15)
    await wait_for(lambda: condition(sandbox, "ValidSpec").get("status") == "True", timeout=10)
    assert await daemon.stop() == 0


async def test_claim_rules_and_a_clash_with_a_file(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await workload(sandbox)
    await workload(sandbox, "other")
    sandbox.set_load(NS, NAME, METRIC, 20)
    sandbox.set_load(NS, "other", METRIC, 20)
    file_policy = write(
        tmp_path,
        "p.yaml",
        policy_yaml(name="from-file", namespace=NS, target="other", protocol="http", port=8080),
    )
    daemon = await start_daemon(file_policy, args=("--podautoscalers",))
    pa.create(sandbox.store, pa_object("unclaimed", annotations={}))
    pa.create(sandbox.store, pa_object("claimed"))
    pa.create(sandbox.store, pa_object("same-target", target="other"))
    await daemon.wait_status(lambda s: sorted(policies(s)) == [f"{NS}/claimed", f"{NS}/from-file"])
    await wait_for(
        lambda: condition(sandbox, "MultiPodAutoscalerConflict", "same-target"), timeout=10
    )
    clash = condition(sandbox, "MultiPodAutoscalerConflict", "same-target")
    assert clash["status"] == "True" and clash["reason"] == "TargetClash"
    assert "from-file" in clash["message"] and str(file_policy) in clash["message"]
    await wait_for(lambda: condition(sandbox, "Ready", "claimed"), timeout=10)
    assert status_of(sandbox, "unclaimed") == {}, "an unclaimed object is never written"
    assert status_writes(sandbox, "unclaimed") == []
    assert await daemon.stop() == 0

    config = write(
        tmp_path,
        "d.yaml",
        "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\n"
        f"podAutoscalers: {{claim: all, namespaces: [{NS}]}}\n",
    )
    daemon = await start_daemon(config, args=("--podautoscalers",))
    # claim: all takes every object; "unclaimed" and "claimed" share a target, and at the
    # same creation second the name decides
    await daemon.wait_status(
        lambda s: sorted(policies(s)) == [f"{NS}/claimed", f"{NS}/same-target"]
    )
    await wait_for(
        lambda: condition(sandbox, "MultiPodAutoscalerConflict", "unclaimed"), timeout=10
    )
    assert await daemon.stop() == 0


async def test_a_dropped_and_expired_watch_loses_no_change(
    sandbox: Sandbox, start_daemon: Any
) -> None:
    await workload(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    daemon = await start_daemon(args=("--podautoscalers",))
    pa.create(sandbox.store, pa_object())
    await daemon.wait_status(lambda s: policies(s) == [f"{NS}/{PA}"])
    sandbox.faults.drop_watches(abrupt=True)
    await workload(sandbox, "other")
    pa.create(sandbox.store, pa_object("second", target="other"))
    await daemon.wait_status(lambda s: len(policies(s)) == 2, timeout=15)
    sandbox.store.compact()
    sandbox.faults.expire_watches()
    pa.delete(sandbox.store, NS, "second")
    await daemon.wait_status(lambda s: policies(s) == [f"{NS}/{PA}"], timeout=15)
    await daemon.wait_log(lambda d: d.get("event") == "podautoscaler watch expired, re-listing")
    assert await daemon.stop() == 0


LEASE = """\
apiVersion: autoscalerd.io/v1alpha1
kind: DaemonConfig
leaderElection: {leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 500ms, leaseNamespace: default}
"""


async def test_two_daemons_only_the_leader_writes_status_and_scale(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await workload(sandbox)
    sandbox.set_load(NS, NAME, METRIC, 20)
    config = write(tmp_path, "d.yaml", LEASE)
    args = ("--podautoscalers", "--leader-elect")
    a = await start_daemon(config, args=args, env={"POD_NAME": "autoscalerd-a"})
    await a.wait_log(lambda d: d.get("event") == "leadership acquired")
    b = await start_daemon(config, args=args, env={"POD_NAME": "autoscalerd-b"})
    pa.create(sandbox.store, pa_object())
    await b.wait_status(
        lambda s: s["leader"] is False and bool(s["policies"]) and s["policies"][0]["ticks"] >= 2
    )
    await wait_for(lambda: condition(sandbox, "Ready").get("status") == "True", timeout=10)
    sandbox.set_load(NS, NAME, METRIC, 70)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=15)
    await wait_for(lambda: status_of(sandbox).get("actualScale") == 4, timeout=10)
    await a.wait_log(lambda d: d.get("event") == "scaled")
    await a.wait_log(lambda d: d.get("event") == "podautoscaler status written")
    assert not b.logs(lambda d: d.get("event") == "scaled")
    assert not b.logs(lambda d: d.get("event") == "podautoscaler status written")
    # the holder goes away: the other takes over, and writes only what changed
    writes = len(status_writes(sandbox))
    assert await a.stop() == 0
    await b.wait_log(lambda d: d.get("event") == "leadership acquired", timeout=15)
    sandbox.set_load(NS, NAME, METRIC, 20)
    pa.edit_spec(sandbox.store, NS, PA, {"maxReplicas": 3})
    await sandbox.wait_for_spec_replicas(NS, NAME, 3, timeout=15)
    await wait_for(lambda: status_of(sandbox).get("actualScale") == 3, timeout=10)
    assert len(status_writes(sandbox)) > writes
    await b.wait_log(lambda d: d.get("event") == "scaled")
    await b.wait_log(lambda d: d.get("event") == "podautoscaler status written")
    assert await b.stop() == 0


async def test_demo_shows_the_status_being_written() -> None:
    text = await run_demo("--podautoscalers", "--duration", "12", timeout=90)
    assert "status desired=" in text and "Ready=True (ScalingStable)" in text, text
    assert "kubectl describe podautoscaler" in text
    assert "ValidSpec        True    AsExpected" in text
    assert "Scaling History:" in text and "1 -> " in text

"""The PodAutoscaler feed and status writes of `kube/podautoscalers.py` against the sandbox:
all or named namespaces, label selectors, dropped and expired watches, status-only changes."""

from __future__ import annotations

from typing import Any

import pytest
from kube_helpers import eventually

from autoscalerd.kube import KubeClient
from autoscalerd.kube.errors import KubeNotFound
from autoscalerd.sandbox import Sandbox
from autoscalerd.sandbox import podautoscalers as pa


def obj(name: str, ns: str = "default", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling.aibrix.ai/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels or {},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
        },
        "spec": {"maxReplicas": 4},
    }


async def test_lists_watches_and_follows_every_change(sb: Sandbox, kc: KubeClient) -> None:
    pa.create(sb.store, obj("a"))
    feed = kc.pod_autoscalers()
    feed.start()
    await eventually(lambda: feed.synced and set(feed.objects()) == {("default", "a")})
    a = feed.get("default", "a")
    assert a is not None and a["metadata"]["annotations"] == {}, "kubectl's copy is dropped"
    pa.create(sb.store, obj("b", "other"))
    await eventually(lambda: ("other", "b") in feed.objects())
    gen = feed.generation
    await kc.patch_pod_autoscaler_status("other", "b", {"desiredScale": 2})
    await eventually(lambda: (feed.get("other", "b") or {}).get("status") == {"desiredScale": 2})
    assert feed.generation == gen, "a status-only change does not wake the daemon"
    pa.edit_spec(sb.store, "other", "b", {"maxReplicas": 5})
    await eventually(lambda: feed.generation > gen)
    pa.delete(sb.store, "default", "a")
    await eventually(lambda: set(feed.objects()) == {("other", "b")})
    await feed.stop()


async def test_named_namespaces_and_a_label_selector(sb: Sandbox, kc: KubeClient) -> None:
    pa.create(sb.store, obj("in", "ns1", {"team": "ml"}))
    pa.create(sb.store, obj("wrong-label", "ns1", {"team": "web"}))
    pa.create(sb.store, obj("other-ns", "ns3", {"team": "ml"}))
    pa.create(sb.store, obj("in2", "ns2", {"team": "ml"}))
    feed = kc.pod_autoscalers(["ns1", "ns2"], "team=ml")
    feed.start()
    await eventually(lambda: feed.synced)
    await eventually(lambda: set(feed.objects()) == {("ns1", "in"), ("ns2", "in2")})
    pa.edit_spec(sb.store, "ns1", "wrong-label", {})  # no change: nothing
    await feed.stop()


async def test_dropped_and_expired_watches_lose_no_change(sb: Sandbox, kc: KubeClient) -> None:
    feed = kc.pod_autoscalers()
    feed.start()
    await eventually(lambda: feed.synced)
    sb.faults.drop_watches(abrupt=True)
    pa.create(sb.store, obj("during-drop"))
    await eventually(lambda: ("default", "during-drop") in feed.objects())
    sb.store.compact()
    sb.faults.expire_watches()
    pa.delete(sb.store, "default", "during-drop")
    pa.create(sb.store, obj("after-410"))
    await eventually(lambda: set(feed.objects()) == {("default", "after-410")})
    assert feed.relists >= 2, "a 410 re-lists"
    await feed.stop()


async def test_status_of_a_missing_object_is_not_found(sb: Sandbox, kc: KubeClient) -> None:
    with pytest.raises(KubeNotFound):
        await kc.patch_pod_autoscaler_status("default", "nope", {"desiredScale": 1})

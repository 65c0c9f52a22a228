"""The PodAutoscaler feed and status writes of `kube/podautoscalers.py` against the sandbox:
all or named namespaces, label selectors, dropped and expired watches, status-only changes."""

from __future__ import annotations

from typing import Any

import pytest
from waiting import wait_until

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
    await wait_until(
        lambda: feed.synced and set(feed.objects()) == {("default", "a")},
        "the feed lists default/a",
        state=lambda: sorted(feed.objects()),
    )
    a = feed.get("default", "a")
    assert a is not None and a["metadata"]["annotations"] == {}, "kubectl's copy is dropped"
    pa.create(sb.store, obj("b", "other"))
    await wait_until(
        lambda: ("other", "b") in feed.objects(),
        "other/b is seen",
        state=lambda: sorted(feed.objects()),
    )
    gen = feed.generation
    await kc.patch_pod_autoscaler_status("other", "b", {"desiredScale": 2})
    await wait_until(
        lambda: (feed.get("other", "b") or {}).get("status") == {"desiredScale": 2},
        "other/b's status is seen",
        state=lambda: sorted(feed.objects()),
    )
    assert feed.generation == gen, "a status-only change does not wake the daemon"
    pa.edit_spec(sb.store, "other", "b", {"maxReplicas": 5})
    await wait_until(
        lambda: feed.generation > gen,
        "the feed's generation moves",
        state=lambda: sorted(feed.objects()),
    )
    pa.delete(sb.store, "default", "a")
    await wait_until(
        lambda: set(feed.objects()) == {("other", "b")},
        "only other/b is left",
        state=lambda: sorted(feed.objects()),
    )
    await feed.stop()


async def test_named_namespaces_and_a_label_selector(sb: Sandbox, kc: KubeClient) -> None:
    pa.create(sb.store, obj("in", "ns1", {"team": "ml"}))
    pa.create(sb.store, obj("wrong-label", "ns1", {"team": "web"}))
    pa.create(sb.store, obj("other-ns", "ns3", {"team": "ml"}))
    pa.create(sb.store, obj("in2", "ns2", {"team": "ml"}))
    feed = kc.pod_autoscalers(["ns1", "ns2"], "team=ml")
    feed.start()
    await wait_until(
        lambda: feed.synced,
        "the feed has listed",
        state=lambda: sorted(feed.objects()),
    )
    await wait_until(
        lambda: set(feed.objects()) == {("ns1", "in"), ("ns2", "in2")},
        "the named namespaces' objects only",
        state=lambda: sorted(feed.objects()),
    )
    pa.edit_spec(sb.store, "ns1", "wrong-label", {})  # no change: nothing
    await feed.stop()


async def test_dropped_and_expired_watches_lose_no_change(sb: Sandbox, kc: KubeClient) -> None:
    feed = kc.pod_autoscalers()
    feed.start()
    await wait_until(
        lambda: feed.synced,
        "the feed has listed",
        state=lambda: sorted(feed.objects()),
    )
    sb.faults.drop_watches(abrupt=True)
    pa.create(sb.store, obj("during-drop"))
    await wait_until(
        lambda: ("default", "during-drop") in feed.objects(),
        "the object created during the drop is seen",
        state=lambda: sorted(feed.objects()),
    )
    sb.store.compact()
    sb.faults.expire_watches()
    pa.delete(sb.store, "default", "during-drop")
    pa.create(sb.store, obj("after-410"))
    await wait_until(
        lambda: set(feed.objects()) == {("default", "after-410")},
        "the re-list after 410 holds only after-410",
        state=lambda: sorted(feed.objects()),
    )
    assert feed.relists >= 2, "a 410 re-lists"
    await feed.stop()


async def test_status_of_a_missing_object_is_not_found(sb: Sandbox, kc: KubeClient) -> None:
    with pytest.raises(KubeNotFound):
        await kc.patch_pod_autoscaler_status("default", "nope", {"desiredScale": 1})

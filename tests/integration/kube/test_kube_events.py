"""Kubernetes Events on scale targets: fields, aggregation, throttled patches, failures."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from kube_helpers import ClientFactory

from autoscalerd.config.model import ScaleTargetRef
from autoscalerd.kube import EventSettings, KubeClient
from autoscalerd.sandbox import Sandbox
from autoscalerd.sandbox.apiserver import CORE_EVENTS

DEPLOY = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="web")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_event_fields(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("prod", "web", replicas=1)
    scale = await kc.get_scale("prod", DEPLOY)
    await kc.record_event(
        "prod",
        DEPLOY,
        "Normal",
        "SuccessfulRescale",
        "New size: 3; reason: go_threads above target",
        uid=scale.uid,
    )
    [ev] = sb.events
    assert ev["metadata"]["namespace"] == "prod"
    assert ev["metadata"]["name"].startswith("web.")
    assert ev["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "namespace": "prod",
        "uid": scale.uid,
    }
    assert ev["type"] == "Normal"
    assert ev["reason"] == "SuccessfulRescale"
    assert ev["message"] == "New size: 3; reason: go_threads above target"
    assert ev["source"] == {"component": "autoscalerd"}
    assert ev["reportingComponent"] == "autoscalerd"
    assert ev["reportingInstance"] == kc.identity
    assert ev["count"] == 1
    for field in ("firstTimestamp", "lastTimestamp"):
        assert RFC3339_UTC.match(ev[field]), ev[field]
        when = datetime.strptime(ev[field], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - when).total_seconds()) < 5
    assert sb.event_reasons("prod", "web") == ["SuccessfulRescale"]


async def test_repeats_are_aggregated(sb: Sandbox, new_client: ClientFactory) -> None:
    kc = await new_client(events=EventSettings(min_patch_interval=0))
    for _ in range(3):
        await kc.record_event(
            "default", DEPLOY, "Warning", "FailedGetMetrics", "pod web-1: timeout"
        )
    await kc.record_event("default", DEPLOY, "Warning", "FailedGetMetrics", "pod web-2: refused")
    await kc.record_event("default", DEPLOY, "Warning", "FailedRescale", "pod web-1: timeout")
    events = sb.events
    assert [(e["reason"], e["message"], e["count"]) for e in events] == [
        ("FailedGetMetrics", "pod web-1: timeout", 3),
        ("FailedGetMetrics", "pod web-2: refused", 1),
        ("FailedRescale", "pod web-1: timeout", 1),
    ]
    posts = [w for w in sb.writes if "/events" in w.path]
    assert [w.method for w in posts] == ["POST", "PATCH", "PATCH", "POST", "POST"]
    assert all(w.content_type.startswith("application/merge-patch+json") for w in posts[1:3])


async def test_repeat_patches_are_throttled_and_flushed(
    sb: Sandbox, new_client: ClientFactory
) -> None:
    kc = await new_client(events=EventSettings(min_patch_interval=60))
    for _ in range(5):
        await kc.record_event("default", DEPLOY, "Warning", "FailedGetScale", "boom")
    [ev] = sb.events
    assert ev["count"] == 1  # repeats counted locally, not one PATCH per tick
    await kc.close()  # sends the pending count
    [ev] = sb.events
    assert ev["count"] == 5


async def test_expired_event_is_created_again(sb: Sandbox, new_client: ClientFactory) -> None:
    kc = await new_client(events=EventSettings(min_patch_interval=0))
    await kc.record_event("default", DEPLOY, "Normal", "SuccessfulRescale", "New size: 2")
    [ev] = sb.events
    sb.store.delete(CORE_EVENTS, "default", ev["metadata"]["name"])  # the server's event TTL
    await kc.record_event("default", DEPLOY, "Normal", "SuccessfulRescale", "New size: 2")
    [again] = sb.events
    assert again["metadata"]["name"] != ev["metadata"]["name"]
    assert again["count"] == 2


async def test_failures_are_logged_not_raised(sb: Sandbox, kc: KubeClient) -> None:
    sb.faults.add("POST", r"/events", status=500, count=1)
    await kc.record_event("default", DEPLOY, "Warning", "FailedRescale", "x")  # no exception
    assert sb.events == []
    sb.faults.add("POST", r"/events", status=403, count=1)
    await kc.record_event("default", DEPLOY, "Warning", "FailedRescale", "y")
    assert sb.events == []
    await kc.record_event("default", DEPLOY, "Warning", "FailedRescale", "z")
    assert [e["message"] for e in sb.events] == ["z"]

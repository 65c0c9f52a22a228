"""`/scale` read and write against the sandbox: kinds, retries, errors, timeouts."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from kube_helpers import ClientFactory

from autoscalerd.config.model import ScaleTargetRef
from autoscalerd.kube import (
    KubeClient,
    KubeConflict,
    KubeForbidden,
    KubeNotFound,
    KubeTooManyRequests,
    KubeUnavailable,
    RetryPolicy,
)
from autoscalerd.sandbox import Sandbox

DEPLOY = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="web")
STS = ScaleTargetRef(api_version="apps/v1", kind="StatefulSet", name="db")
RS = ScaleTargetRef(api_version="apps/v1", kind="ReplicaSet", name="rs")
WIDGET = ScaleTargetRef(api_version="example.com/v1", kind="Widget", name="gizmo")

SCALE_PATH = r"/deployments/web/scale"


def now() -> float:
    return asyncio.get_running_loop().time()


@pytest.mark.parametrize(
    ("target", "add"),
    [
        (DEPLOY, "add_deployment"),
        (STS, "add_statefulset"),
        (RS, "add_replicaset"),
        (WIDGET, "add_widget"),
    ],
    ids=["deployment", "statefulset", "replicaset", "custom-resource"],
)
async def test_get_and_set_scale_of_each_kind(
    sb: Sandbox, kc: KubeClient, target: ScaleTargetRef, add: str
) -> None:
    await getattr(sb, add)("apps", target.name, replicas=1, labels={"app": target.name})
    info = await kc.get_scale("apps", target)
    assert info.replicas == 1
    assert info.selector == f"app={target.name}"
    assert info.resource_version
    assert info.uid

    after = await kc.set_replicas("apps", target, 3, observed=info)
    assert after.replicas == 3
    assert sb.replicas("apps", target.name) == 3
    [write] = sb.scale_writes("apps", target.name)
    assert write.method == "PATCH"
    assert write.status == 200
    # merge patch for every kind (the custom-object endpoint refuses strategic merge),
    # carrying the read resourceVersion as a precondition
    assert write.content_type.startswith("application/merge-patch+json")
    assert write.body == {
        "spec": {"replicas": 3},
        "metadata": {"resourceVersion": info.resource_version},
    }
    assert "fieldManager=autoscalerd" in write.query
    await sb.wait_for_replicas("apps", target.name, 3)


async def test_no_write_when_already_at_target(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=2)
    info = await kc.set_replicas("default", DEPLOY, 2)
    assert info.replicas == 2
    assert sb.scale_writes() == []


async def test_conflict_rereads_and_does_not_write_twice(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    stale = await kc.get_scale("default", DEPLOY)
    # someone else scales to 4 after our read: our patch carries the stale resourceVersion
    await sb.scale("default", "web", 4)
    info = await kc.set_replicas("default", DEPLOY, 4, observed=stale)
    assert info.replicas == 4
    # one 409 answer, then the re-read shows 4 already: no second write
    assert [w.status for w in sb.scale_writes()] == [409]

    # a conflict on the way to a different count is retried after a re-read
    stale = await kc.get_scale("default", DEPLOY)
    await sb.scale("default", "web", 2)
    info = await kc.set_replicas("default", DEPLOY, 5, observed=stale)
    assert info.replicas == 5
    assert [w.status for w in sb.scale_writes()] == [409, 409, 200]


async def test_conflicts_are_bounded(sb: Sandbox, new_client: ClientFactory) -> None:
    kc = await new_client(retry=RetryPolicy(max_conflicts=2))
    await sb.add_deployment("default", "web", replicas=1)
    sb.faults.add("PATCH", SCALE_PATH, status=409, count=None)
    with pytest.raises(KubeConflict, match=re.escape("patch deployments/scale.apps default/web")):
        await kc.set_replicas("default", DEPLOY, 3)
    assert len(sb.scale_writes()) == 3


async def test_429_honours_retry_after(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    sb.faults.add("PATCH", SCALE_PATH, status=429, retry_after=1, count=1)
    info = await kc.set_replicas("default", DEPLOY, 2)
    assert info.replicas == 2
    first, second = sb.scale_writes()
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0, "the write waited for Retry-After (server's clock)"


async def test_429_beyond_the_deadline_gives_up_at_once(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    sb.faults.add("PATCH", SCALE_PATH, status=429, retry_after=5, count=1)
    deadline = now() + 2.0
    with pytest.raises(KubeTooManyRequests) as err:
        await kc.set_replicas("default", DEPLOY, 2, deadline=deadline)
    assert err.value.retry_after == 5
    assert now() < deadline, "gave up instead of sleeping past its own deadline"
    assert [w.status for w in sb.scale_writes()] == [429]
    assert sb.replicas("default", "web") == 1


async def test_5xx_is_retried_with_backoff(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    sb.faults.add("PATCH", SCALE_PATH, status=500, count=2)
    sb.faults.add("GET", SCALE_PATH, status=503, retry_after=0, count=1)
    info = await kc.set_replicas("default", DEPLOY, 3)
    assert info.replicas == 3
    assert [w.status for w in sb.scale_writes()] == [500, 500, 200]


async def test_5xx_gives_up_by_the_deadline(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    sb.faults.add("PATCH", SCALE_PATH, status=503, retry_after=0, count=None)
    wall_deadline = time.time() + 1.5
    with pytest.raises(KubeUnavailable, match=re.escape("server error 503")):
        await kc.set_replicas("default", DEPLOY, 3, deadline=now() + 1.5)
    writes = sb.scale_writes()
    assert all(w.time < wall_deadline for w in writes), "nothing is sent after the deadline"
    assert 2 <= len(writes) <= 8
    assert sb.replicas("default", "web") == 1


async def test_5xx_gives_up_after_max_attempts(sb: Sandbox, new_client: ClientFactory) -> None:
    kc = await new_client(retry=RetryPolicy(max_attempts=3, base_delay=0.05))
    await sb.add_deployment("default", "web", replicas=1)
    sb.faults.add("PATCH", SCALE_PATH, status=500, count=None)
    with pytest.raises(KubeUnavailable):
        await kc.set_replicas("default", DEPLOY, 3)
    assert len(sb.scale_writes()) == 3


async def test_forbidden_names_the_missing_rule(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("kube-system", "web", replicas=1)
    sb.faults.add("GET", SCALE_PATH, status=403, count=1)
    with pytest.raises(KubeForbidden) as err:
        await kc.get_scale("kube-system", DEPLOY)
    msg = str(err.value)
    assert "get deployments/scale.apps kube-system/web" in msg
    assert "needs get on deployments/scale in namespace kube-system" in msg
    assert "apiGroups [apps]" in msg


async def test_not_found_and_unknown_kinds(sb: Sandbox, kc: KubeClient) -> None:
    with pytest.raises(
        KubeNotFound, match=re.escape("get deployments/scale.apps default/web: not found")
    ):
        await kc.get_scale("default", DEPLOY)
    gadget = ScaleTargetRef(api_version="example.com/v1", kind="Gadget", name="g")
    with pytest.raises(KubeNotFound, match=re.escape("Gadget is not served by example.com/v1")):
        await kc.get_scale("default", gadget)
    nogroup = ScaleTargetRef(api_version="nothere.io/v1", kind="Thing", name="t")
    with pytest.raises(KubeNotFound, match=re.escape("/apis/nothere.io/v1 is not served")):
        await kc.set_replicas("default", nogroup, 2)
    pods = ScaleTargetRef(api_version="v1", kind="Pod", name="p")
    with pytest.raises(KubeNotFound, match=re.escape("no /scale subresource")):
        await kc.get_scale("default", pods)
    assert sb.scale_writes() == []


async def test_discovery_is_cached(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_widget("default", "gizmo", replicas=1)
    before = sb._api.requests
    for n in (2, 3, 4):
        await kc.set_replicas("default", WIDGET, n)
    # per set_replicas: one GET and one PATCH of /scale; discovery once in all
    assert sb._api.requests - before == 7


async def test_every_call_has_a_timeout(sb: Sandbox, new_client: ClientFactory) -> None:
    kc = await new_client(api_timeout=0.5)
    await sb.add_deployment("default", "web", replicas=1)
    sb.faults.add("GET", SCALE_PATH, status=None, delay=5.0, count=1)
    start = now()
    with pytest.raises(KubeUnavailable, match=re.escape("timed out after 0.5s")):
        await kc.get_scale("default", DEPLOY)
    assert now() - start < 1.6
    # and the client keeps working
    assert (await kc.get_scale("default", DEPLOY)).replicas == 1


async def test_deadline_bounds_the_write(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    sb.faults.add("PATCH", SCALE_PATH, status=None, delay=5.0, count=None)
    start = now()
    with pytest.raises(KubeUnavailable):
        await kc.set_replicas("default", DEPLOY, 2, deadline=now() + 0.8)
    assert now() - start < 1.0

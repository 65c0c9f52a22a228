"""The sandbox API server answers kubernetes_asyncio like the real API does."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from autoscalerd.sandbox import Sandbox

T = 5  # _request_timeout of every API call

NS, NAME = "kube-system", "metrics-server"


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


async def test_discovery_and_version(sandbox: Sandbox, api: client.ApiClient) -> None:
    version = await client.VersionApi(api).get_code(_request_timeout=T)
    assert version.major == "1"
    groups = await client.ApisApi(api).get_api_versions(_request_timeout=T)
    names = {g.name for g in groups.groups}
    assert {"apps", "coordination.k8s.io", "events.k8s.io", "example.com"} <= names
    res = await client.AppsV1Api(api).get_api_resources(_request_timeout=T)
    assert "deployments/scale" in {r.name for r in res.resources}


async def test_token_is_required(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession() as s:
        ssl_ctx = __import__("ssl").create_default_context(cafile=str(sandbox.api_ca_file))
        url = f"{sandbox.api_url}/api/v1/namespaces/default/pods"
        async with s.get(url, ssl=ssl_ctx) as r:
            assert r.status == 401
            body = await r.json()
        assert body["kind"] == "Status" and body["reason"] == "Unauthorized" and body["code"] == 401
        async with s.get(url, ssl=ssl_ctx, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with s.get(f"{sandbox.api_url}/healthz", ssl=ssl_ctx) as r:
            assert r.status == 200


async def test_client_certificate_context(make_client: Any, ms: Sandbox) -> None:
    async with await make_client(ms, context="sandbox-cert") as api:
        scale = await client.AppsV1Api(api).read_namespaced_deployment_scale(
            NAME, NS, _request_timeout=T
        )
    assert scale.spec.replicas == 1


async def test_deployment_scale_read_and_patch(ms: Sandbox, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    scale = await apps.read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert scale.spec.replicas == 1 and scale.status.replicas == 1
    assert scale.status.selector == "k8s-app=metrics-server"
    rv0 = int(scale.metadata.resource_version)

    # a dict body goes out as strategic-merge-patch+json
    out = await apps.patch_namespaced_deployment_scale(
        NAME, NS, {"spec": {"replicas": 3}}, _request_timeout=T
    )
    assert out.spec.replicas == 3 and int(out.metadata.resource_version) > rv0
    assert ms.writes[-1].content_type == "application/strategic-merge-patch+json"
    assert ms.replicas(NS, NAME) == 3
    await ms.wait_for_replicas(NS, NAME, 3)
    dep = await apps.read_namespaced_deployment(NAME, NS, _request_timeout=T)
    assert dep.spec.replicas == 3 and dep.status.ready_replicas == 3
    assert dep.spec.selector.match_labels == {"k8s-app": "metrics-server"}
    assert dep.metadata.generation == 2

    # a list body goes out as json-patch
    await apps.patch_namespaced_deployment_scale(
        NAME, NS, [{"op": "replace", "path": "/spec/replicas", "value": 2}], _request_timeout=T
    )
    assert ms.replicas(NS, NAME) == 2
    # merge patch forced
    await apps.patch_namespaced_deployment_scale(
        NAME, NS, {"spec": {"replicas": 1}}, _content_type="application/merge-patch+json",
        _request_timeout=T,
    )  # fmt: skip
    assert ms.replicas(NS, NAME) == 1
    assert [w.status for w in ms.scale_writes(NS, NAME)] == [200, 200, 200]
    assert [r for _, r in ms.replica_history(NS, NAME)] == [1, 3, 2, 1]
    await ms.wait_for_replicas(NS, NAME, 1)
    # the pods belong to the ReplicaSet of the Deployment
    rs_list = await apps.list_namespaced_replica_set(NS, _request_timeout=T)
    assert [rs.spec.replicas for rs in rs_list.items] == [1]
    pod = (await client.CoreV1Api(api).list_namespaced_pod(NS, _request_timeout=T)).items[0]
    assert pod.metadata.owner_references[0].kind == "ReplicaSet"
    assert pod.metadata.owner_references[0].name == rs_list.items[0].metadata.name


async def test_unsupported_patch_type_and_invalid_replicas(
    ms: Sandbox, api: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment_scale(
            NAME, NS, {"spec": {"replicas": 2}}, _content_type="application/json",
            _request_timeout=T,
        )  # fmt: skip
    assert exc.value.status == 415 and status_of(exc.value)["reason"] == "UnsupportedMediaType"
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment_scale(
            NAME, NS, {"spec": {"replicas": -1}}, _request_timeout=T
        )
    assert exc.value.status == 422 and status_of(exc.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as exc:
        await apps.read_namespaced_deployment_scale("nope", NS, _request_timeout=T)
    st = status_of(exc.value)
    assert exc.value.status == 404 and st["reason"] == "NotFound"
    assert st["message"] == 'deployments.apps "nope" not found'
    assert st["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    assert ms.replicas(NS, NAME) == 1


async def test_stale_put_conflicts(ms: Sandbox, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    scale = await apps.read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
    await ms.scale(NS, NAME, 2)  # someone else writes in between
    scale.spec.replicas = 4
    with pytest.raises(ApiException) as exc:
        await apps.replace_namespaced_deployment_scale(NAME, NS, scale, _request_timeout=T)
    st = status_of(exc.value)
    assert exc.value.status == 409 and st["reason"] == "Conflict"
    assert "the object has been modified" in st["message"]
    fresh = await apps.read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
    fresh.spec.replicas = 4
    out = await apps.replace_namespaced_deployment_scale(NAME, NS, fresh, _request_timeout=T)
    assert out.spec.replicas == 4 and ms.replicas(NS, NAME) == 4
    # a merge patch carrying a stale resourceVersion is a precondition too
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment_scale(
            NAME, NS, {"metadata": {"resourceVersion": scale.metadata.resource_version},
                       "spec": {"replicas": 1}},
            _content_type="application/merge-patch+json", _request_timeout=T,
        )  # fmt: skip
    assert exc.value.status == 409


async def test_statefulset_and_replicaset_scale(sandbox: Sandbox, api: client.ApiClient) -> None:
    await sandbox.add_statefulset("default", "web", 2, labels={"app": "web"})
    await sandbox.add_replicaset("default", "rs", 1)
    apps = client.AppsV1Api(api)
    await apps.patch_namespaced_stateful_set_scale(
        "web", "default", {"spec": {"replicas": 3}}, _request_timeout=T
    )
    await sandbox.wait_for_replicas("default", "web", 3)
    assert sorted(p.name for p in sandbox.pods("default", "web")) == ["web-0", "web-1", "web-2"]
    await apps.patch_namespaced_stateful_set_scale(
        "web", "default", {"spec": {"replicas": 1}}, _request_timeout=T
    )
    await sandbox.wait_for_replicas("default", "web", 1)
    assert [p.name for p in sandbox.pods("default", "web")] == ["web-0"]
    scale = await apps.read_namespaced_replica_set_scale("rs", "default", _request_timeout=T)
    assert scale.status.selector == "app=rs"
    await apps.patch_namespaced_replica_set_scale(
        "rs", "default", {"spec": {"replicas": 2}}, _request_timeout=T
    )
    await sandbox.wait_for_replicas("default", "rs", 2)


async def test_custom_resource_scale(sandbox: Sandbox, api: client.ApiClient) -> None:
    await sandbox.add_widget("default", "w", 1, labels={"app": "w"})
    co = client.CustomObjectsApi(api)
    args = ("example.com", "v1", "default", "widgets", "w")
    scale = await co.get_namespaced_custom_object_scale(*args, _request_timeout=T)
    assert scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == "app=w"
    # the library's default content type for a dict here is json-patch: rejected
    with pytest.raises(ApiException) as exc:
        await co.patch_namespaced_custom_object_scale(
            *args, {"spec": {"replicas": 2}}, _request_timeout=T
        )
    assert exc.value.status == 400
    # strategic merge is not accepted for custom resources
    with pytest.raises(ApiException) as exc:
        await co.patch_namespaced_custom_object_scale(
            *args, {"spec": {"replicas": 2}},
            _content_type="application/strategic-merge-patch+json", _request_timeout=T,
        )  # fmt: skip
    assert exc.value.status == 415
    out = await co.patch_namespaced_custom_object_scale(
        *args,
        {"spec": {"replicas": 2}},
        _content_type="application/merge-patch+json",
        _request_timeout=T,
    )
    assert out["spec"]["replicas"] == 2
    await co.patch_namespaced_custom_object_scale(
        *args, [{"op": "replace", "path": "/spec/replicas", "value": 3}], _request_timeout=T
    )
    await sandbox.wait_for_replicas("default", "w", 3)
    obj = await co.get_namespaced_custom_object(*args, _request_timeout=T)
    assert obj["kind"] == "Widget" and obj["status"]["replicas"] == 3


async def test_events_core_and_events_v1(ms: Sandbox, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="metrics-server."),
        involved_object=client.V1ObjectReference(
            api_version="apps/v1", kind="Deployment", name=NAME, namespace=NS
        ),
        reason="SuccessfulRescale",
        message="New size: 4; reason: go_threads above target",
        type="Normal",
        count=1,
        source=client.V1EventSource(component="autoscalerd"),
    )
    created = await v1.create_namespaced_event(NS, ev, _request_timeout=T)
    assert created.metadata.name.startswith("metrics-server.")
    await v1.patch_namespaced_event(created.metadata.name, NS, {"count": 2}, _request_timeout=T)
    ev2 = client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="ms.2"),
        event_time="2024-01-01T00:00:00.000000Z",
        regarding=client.V1ObjectReference(kind="Deployment", name=NAME, namespace=NS),
        reason="FailedGetMetrics",
        note="no pod answered",
        type="Warning",
        action="Scrape",
        reporting_controller="autoscalerd",
        reporting_instance="autoscalerd-1",
    )
    await client.EventsV1Api(api).create_namespaced_event(NS, ev2, _request_timeout=T)
    assert ms.event_reasons(NS, NAME) == ["SuccessfulRescale", "FailedGetMetrics"]
    assert ms.events[0]["count"] == 2
    with pytest.raises(ApiException) as exc:
        await client.EventsV1Api(api).create_namespaced_event(NS, ev2, _request_timeout=T)
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "AlreadyExists"


async def test_leases(sandbox: Sandbox, api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    body = client.V1Lease(
        metadata=client.V1ObjectMeta(name="autoscalerd", namespace="kube-system"),
        spec=client.V1LeaseSpec(
            holder_identity="a", lease_duration_seconds=15, lease_transitions=0
        ),
    )
    created = await coord.create_namespaced_lease("kube-system", body, _request_timeout=T)
    with pytest.raises(ApiException) as exc:
        await coord.create_namespaced_lease("kube-system", body, _request_timeout=T)
    assert exc.value.status == 409
    created.spec.holder_identity = "b"
    replaced = await coord.replace_namespaced_lease(
        "autoscalerd", "kube-system", created, _request_timeout=T
    )
    assert replaced.spec.holder_identity == "b"
    created.spec.holder_identity = "c"  # stale resourceVersion
    with pytest.raises(ApiException) as exc:
        await coord.replace_namespaced_lease(
            "autoscalerd", "kube-system", created, _request_timeout=T
        )
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "Conflict"
    assert sandbox.lease("kube-system", "autoscalerd")["spec"]["holderIdentity"] == "b"
    await coord.patch_namespaced_lease(
        "autoscalerd", "kube-system", {"spec": {"holderIdentity": None}},
        _content_type="application/merge-patch+json", _request_timeout=T,
    )  # fmt: skip
    assert "holderIdentity" not in sandbox.leases[("kube-system", "autoscalerd")]["spec"]
    await coord.delete_namespaced_lease("autoscalerd", "kube-system", _request_timeout=T)
    with pytest.raises(ApiException) as exc:
        await coord.read_namespaced_lease("autoscalerd", "kube-system", _request_timeout=T)
    assert exc.value.status == 404


async def test_faults_429_409_500(ms: Sandbox, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    ms.faults.add("PATCH", r"/scale$", status=429, retry_after=3)
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment_scale(
            NAME, NS, {"spec": {"replicas": 2}}, _request_timeout=T
        )
    assert exc.value.status == 429
    assert exc.value.headers["Retry-After"] == "3"
    assert status_of(exc.value)["reason"] == "TooManyRequests"
    assert status_of(exc.value)["details"] == {"retryAfterSeconds": 3}
    ms.faults.add("PATCH", r"/scale$", status=409, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            await apps.patch_namespaced_deployment_scale(
                NAME, NS, {"spec": {"replicas": 2}}, _request_timeout=T
            )
        assert exc.value.status == 409
    ms.faults.add("GET", r"/scale$", status=503)
    with pytest.raises(ApiException) as exc:
        await apps.read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
    assert exc.value.status == 503 and exc.value.headers["Retry-After"] == "1"
    ms.faults.add("*", r"deployments", status=500)
    with pytest.raises(ApiException) as exc:
        await apps.read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
    assert exc.value.status == 500 and status_of(exc.value)["reason"] == "InternalError"
    assert ms.replicas(NS, NAME) == 1
    await apps.patch_namespaced_deployment_scale(
        NAME, NS, {"spec": {"replicas": 2}}, _request_timeout=T
    )
    assert [w.status for w in ms.scale_writes()] == [429, 409, 409, 200]
    assert ms.replicas(NS, NAME) == 2


async def test_fault_delay_hits_request_timeout(ms: Sandbox, api: client.ApiClient) -> None:
    ms.faults.add("GET", r"/scale$", status=None, delay=2)
    with pytest.raises(TimeoutError):
        await client.AppsV1Api(api).read_namespaced_deployment_scale(NAME, NS, _request_timeout=0.3)


async def test_exec_plugin_incluster_files_and_token_rotation(
    make_client: Any, ms: Sandbox
) -> None:
    async with await make_client(ms, context="sandbox-exec") as api:
        apps = client.AppsV1Api(api)
        assert (
            await apps.read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
        ).spec.replicas == 1
        old = ms.token
        new = ms.rotate_token(grace_seconds=0)
        assert new != old and ms.token_file.read_text() == new
        assert (ms.serviceaccount_dir / "token").read_text() == new
        with pytest.raises(ApiException) as exc:  # the library cached the old token
            await apps.read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
        assert exc.value.status == 401
    async with await make_client(ms, context="sandbox-exec") as api:
        await client.AppsV1Api(api).read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
    async with await make_client(ms) as api:  # the static user was rewritten too
        await client.AppsV1Api(api).read_namespaced_deployment_scale(NAME, NS, _request_timeout=T)
    env = ms.incluster_env()
    assert env["KUBERNETES_SERVICE_PORT"] == ms.api_url.rsplit(":", 1)[1]
    assert (ms.serviceaccount_dir / "namespace").read_text() == "kube-system"
    assert (ms.serviceaccount_dir / "ca.crt").read_bytes() == ms.api_ca_file.read_bytes()

"""The sandbox's PodAutoscaler custom resource answers like a CRD with a status subresource."""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from autoscalerd.sandbox import Sandbox
from autoscalerd.sandbox import podautoscalers as pa

T = 5
G, V, P = "autoscaling.aibrix.ai", "v1alpha1", "podautoscalers"
MERGE = "application/merge-patch+json"


def body(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "PodAutoscaler",
        "metadata": {"name": name, "labels": {"team": "ml"}},
        "spec": {"maxReplicas": 4, "scalingStrategy": "KPA", **spec},
        "status": {"desiredScale": 99},
    }


async def test_main_resource_and_status_are_written_separately(
    sandbox: Sandbox, api: client.ApiClient
) -> None:
    co = client.CustomObjectsApi(api)
    created = await co.create_namespaced_custom_object(
        G, V, "default", P, body(), _request_timeout=T
    )
    assert "status" not in created, "create ignores .status"
    assert created["metadata"]["generation"] == 1

    st = await co.patch_namespaced_custom_object_status(
        G, V, "default", P, "web",
        {"status": {"desiredScale": 3}, "spec": {"maxReplicas": 100}},
        _content_type=MERGE, _request_timeout=T,
    )  # fmt: skip
    assert st["status"] == {"desiredScale": 3}
    assert st["spec"]["maxReplicas"] == 4, "a status write never changes the spec"
    assert st["metadata"]["generation"] == 1, "nor the generation"
    assert int(st["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    main = await co.patch_namespaced_custom_object(
        G, V, "default", P, "web",
        {"spec": {"maxReplicas": 8}, "status": {"desiredScale": 0}},
        _content_type=MERGE, _request_timeout=T,
    )  # fmt: skip
    assert main["status"] == {"desiredScale": 3}, "a write to the resource never changes status"
    assert main["spec"]["maxReplicas"] == 8 and main["metadata"]["generation"] == 2

    listed = await co.list_cluster_custom_object(
        G, V, P, label_selector="team=ml", _request_timeout=T
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]
    assert listed["items"][0]["kind"] == "PodAutoscaler", "custom resources' items keep kind"

    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
             "status": {"desiredScale": 1}}  # fmt: skip
    with pytest.raises(ApiException) as exc:
        await co.patch_namespaced_custom_object_status(
            G, V, "default", P, "web", stale, _content_type=MERGE, _request_timeout=T
        )
    assert exc.value.status == 409
    with pytest.raises(ApiException) as exc:
        await co.patch_namespaced_custom_object_status(
            G, V, "default", P, "nope", {"status": {}}, _content_type=MERGE, _request_timeout=T
        )
    assert exc.value.status == 404 and json.loads(exc.value.body)["reason"] == "NotFound"


async def test_discovery_lists_the_status_subresource(
    sandbox: Sandbox, api: client.ApiClient
) -> None:
    ssl_ctx = ssl.create_default_context(cafile=str(sandbox.api_ca_file))
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{sandbox.api_url}/apis/{G}/{V}", ssl=ssl_ctx, headers=headers) as r,
    ):
        res = await r.json()
    names = {r["name"]: r for r in res["resources"]}
    assert names["podautoscalers"]["shortNames"] == ["pa"]
    assert names["podautoscalers/status"]["kind"] == "PodAutoscaler"


def test_in_process_helpers_keep_status_and_bump_generation(sandbox: Sandbox) -> None:
    created = pa.create(sandbox.store, body())
    assert "status" not in created
    pa.edit_spec(sandbox.store, "default", "web", {"maxReplicas": 6}, annotations={"a": "b"})
    obj = pa.get(sandbox.store, "default", "web")
    assert obj is not None and obj["metadata"]["generation"] == 2
    assert obj["metadata"]["annotations"] == {"a": "b"}
    with pytest.raises(ValueError):
        pa.create(sandbox.store, body())
    assert pa.delete(sandbox.store, "default", "web") is True
    assert pa.delete(sandbox.store, "default", "web") is False

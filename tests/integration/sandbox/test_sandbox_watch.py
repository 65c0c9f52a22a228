"""Pod list and watch behave like the real API: events as pods come and go, 410 Gone
for a too-old resourceVersion, bookmarks, server-side timeouts, dropped streams."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException
from waiting import wait_until

from autoscalerd.sandbox import Sandbox

T = 5  # _request_timeout of every API call

NS, NAME, SEL = "kube-system", "metrics-server", "k8s-app=metrics-server"


def watches(sb: Sandbox) -> Callable[[], str]:
    """What ``wait_until`` reports: the open watches and the watch requests so far."""
    return lambda: (
        f"{sb.open_watches} open, {sum('watch' in r.query for r in sb.requests)} watch requests"
    )


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def collect(stream: watch.Watch, until, limit: float = 10.0) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    async def run() -> None:
        async for ev in stream:
            seen.append((ev["type"], ev["object"]))
            if until(seen):
                return

    await asyncio.wait_for(run(), limit)
    return seen


async def test_list_selectors(ms: Sandbox, api: client.ApiClient) -> None:
    await ms.add_deployment("default", "other", 2, labels={"app": "other", "tier": "x"})
    v1 = client.CoreV1Api(api)
    for sel, expected in [
        (SEL, 1),
        ("k8s-app==metrics-server", 1),
        ("app in (other, y)", 2),
        ("app notin (other)", 1),
        ("tier", 2),
        ("!tier", 1),
        ("app=other,tier!=x", 0),
    ]:
        pods = await v1.list_pod_for_all_namespaces(label_selector=sel, _request_timeout=T)
        assert len(pods.items) == expected, sel
    with pytest.raises(ApiException) as exc:
        await v1.list_namespaced_pod(NS, label_selector="a in b", _request_timeout=T)
    assert exc.value.status == 400
    pods = await v1.list_namespaced_pod(
        "default", field_selector="status.phase=Running", limit=1, _request_timeout=T
    )
    assert len(pods.items) == 1 and pods.metadata._continue
    more = await v1.list_namespaced_pod(
        "default", limit=1, _continue=pods.metadata._continue, _request_timeout=T
    )
    assert len(more.items) == 1 and not more.metadata._continue
    assert more.items[0].metadata.name != pods.items[0].metadata.name


async def test_watch_follows_scaling(ms: Sandbox, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    pods = await v1.list_namespaced_pod(NS, label_selector=SEL, _request_timeout=T)
    assert len(pods.items) == 1 and ready(pods.items[0])
    assert (
        pods.items[0].status.pod_ip
        and pods.items[0].spec.containers[0].ports[0].container_port == 10250
    )
    rv = pods.metadata.resource_version
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_pod, NS, label_selector=SEL, resource_version=rv,
            timeout_seconds=30, _request_timeout=T,
        )  # fmt: skip
        await apps.patch_namespaced_deployment_scale(
            NAME, NS, {"spec": {"replicas": 3}}, _request_timeout=T
        )
        added: set[str] = set()
        readied: set[str] = set()

        def two_ready(seen: list[tuple[str, Any]]) -> bool:
            for t, pod in seen:
                if t == "ADDED":
                    added.add(pod.metadata.name)
                if t == "MODIFIED" and ready(pod):
                    readied.add(pod.metadata.name)
            return len(added) == 2 and readied == added

        seen = await collect(stream, two_ready)
        pending = [p for t, p in seen if t == "ADDED"]
        assert all(p.status.phase == "Pending" and p.status.pod_ip is None for p in pending)
        versions = [int(p.metadata.resource_version) for _, p in seen]
        assert versions == sorted(versions) and versions[0] > int(rv)

        await apps.patch_namespaced_deployment_scale(
            NAME, NS, {"spec": {"replicas": 1}}, _request_timeout=T
        )
        seen = await collect(stream, lambda s: sum(t == "DELETED" for t, _ in s) == 2)
        terminating = [p for t, p in seen if t == "MODIFIED" and p.metadata.deletion_timestamp]
        assert len(terminating) == 2 and not any(ready(p) for p in terminating)
    await ms.wait_for_replicas(NS, NAME, 1)


async def test_watch_without_resource_version_starts_with_added(
    ms: Sandbox, api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(api)
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_pod, NS, label_selector=SEL, timeout_seconds=1, _request_timeout=T
        )
        events = [ev async for ev in stream]
    assert [ev["type"] for ev in events] == ["ADDED"]


async def test_too_old_resource_version_gives_410_and_relist_works(
    ms: Sandbox, api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(api)
    pods = await v1.list_namespaced_pod(NS, _request_timeout=T)
    old_rv = pods.metadata.resource_version
    await ms.scale(NS, NAME, 2)
    await ms.wait_for_replicas(NS, NAME, 2)
    ms.faults.expire_watches()
    async with watch.Watch() as w:
        with pytest.raises(ApiException) as exc:
            stream = w.stream(
                v1.list_namespaced_pod,
                NS,
                resource_version=old_rv,
                timeout_seconds=5,
                _request_timeout=T,
            )
            async for _ in stream:
                pass
    assert exc.value.status == 410
    # the client's answer: re-list, then watch from the new resourceVersion
    pods = await v1.list_namespaced_pod(NS, _request_timeout=T)
    assert len(pods.items) == 2
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_pod, NS, resource_version=pods.metadata.resource_version,
            timeout_seconds=5, _request_timeout=T,
        )  # fmt: skip
        await ms.scale(NS, NAME, 3)
        seen = await collect(stream, lambda s: any(t == "ADDED" for t, _ in s))
    assert seen[0][0] == "ADDED"


async def test_expire_sends_error_to_open_watches(ms: Sandbox, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    pods = await v1.list_namespaced_pod(NS, _request_timeout=T)
    async with watch.Watch() as w:
        # watch forever mode: the library retries one 410 itself, then raises
        stream = w.stream(
            v1.list_namespaced_pod,
            NS,
            resource_version=pods.metadata.resource_version,
            _request_timeout=T,
        )

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(consume())
        await wait_until(lambda: ms.open_watches == 1, "the watch is open", state=watches(ms))
        assert ms.faults.expire_watches() == 1
        with pytest.raises(ApiException) as exc:
            await asyncio.wait_for(task, 5)
    assert exc.value.status == 410


async def test_raw_watch_stream_shapes(ms: Sandbox) -> None:
    """Bookmarks, ERROR events with a Status object, clean end at timeoutSeconds."""
    ctx = ssl.create_default_context(cafile=str(ms.api_ca_file))
    headers = {"Authorization": f"Bearer {ms.token}"}
    base = f"{ms.api_url}/api/v1/namespaces/{NS}/pods"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as s:
        async with s.get(base, ssl=ctx) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        params = {
            "watch": "true",
            "resourceVersion": rv,
            "timeoutSeconds": "1",
            "allowWatchBookmarks": "true",
        }
        async with s.get(base, params=params, ssl=ctx) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            lines = [json.loads(line) async for line in r.content if line.strip()]
        assert lines and {ev["type"] for ev in lines} == {"BOOKMARK"}
        assert (
            lines[0]["object"]["kind"] == "Pod"
            and "resourceVersion" in lines[0]["object"]["metadata"]
        )
        ms.faults.expire_watches()
        params = {"watch": "1", "resourceVersion": rv}
        async with s.get(base, params=params, ssl=ctx) as r:
            assert r.status == 200
            lines = [json.loads(line) async for line in r.content if line.strip()]
        assert len(lines) == 1 and lines[0]["type"] == "ERROR"
        st = lines[0]["object"]
        assert st["kind"] == "Status" and st["code"] == 410 and st["reason"] == "Expired"


async def test_dropped_watch_is_resumed_by_the_client(ms: Sandbox, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    pods = await v1.list_namespaced_pod(NS, _request_timeout=T)
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_pod,
            NS,
            resource_version=pods.metadata.resource_version,
            _request_timeout=T,
        )
        seen: list[str] = []

        async def consume() -> None:
            async for ev in stream:
                seen.append(ev["type"])
                if "ADDED" in seen:
                    return

        task = asyncio.create_task(consume())
        await wait_until(lambda: ms.open_watches == 1, "the watch is open", state=watches(ms))
        first = set(ms.store.watchers)
        assert ms.faults.drop_watches() == 1  # clean end: the library reconnects from its rv
        await wait_until(
            lambda: len(ms.store.watchers - first) == 1,
            "the client watches again, on a new stream",
            state=watches(ms),
        )
        await ms.scale(NS, NAME, 2)
        await asyncio.wait_for(task, 5)
    assert "ADDED" in seen


async def test_abrupt_drop_surfaces_as_a_connection_error(
    ms: Sandbox, api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(api)
    async with watch.Watch() as w:
        stream = w.stream(v1.list_namespaced_pod, NS, timeout_seconds=30, _request_timeout=T)

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(consume())
        await wait_until(lambda: ms.open_watches == 1, "the watch is open", state=watches(ms))
        assert ms.faults.drop_watches(abrupt=True) == 1
        with pytest.raises((aiohttp.ClientError, ConnectionError)):
            await asyncio.wait_for(task, 5)

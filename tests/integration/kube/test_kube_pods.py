"""The watch-based pod cache against the sandbox: scaling, dropped watches, 410, sharing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from kube_helpers import ClientFactory
from waiting import wait_until

from autoscalerd.config.model import ScaleTargetRef
from autoscalerd.kube import KubeClient, PodCache, WatchSettings, connect
from autoscalerd.sandbox import Sandbox

DEPLOY = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="web")


def counted(cache: PodCache) -> list[str]:
    return sorted(p.name for p in cache.pods() if p.counts)


def live(cache: PodCache) -> list[str]:
    return sorted(p.name for p in cache.pods() if not p.deleting)


def sandbox_ready(sb: Sandbox) -> list[str]:
    return sorted(p.name for p in sb.pods("default", "web") if p.ready)


async def test_follows_pods_as_the_deployment_scales(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1, startup_seconds=0.3)
    await sb.add_deployment("default", "other", replicas=1)
    scale = await kc.get_scale("default", DEPLOY)
    cache = kc.pods.acquire("default", scale.selector)
    assert await cache.wait_synced(5)
    assert cache.synced
    assert counted(cache) == sandbox_ready(sb)
    [pod] = cache.pods()
    assert pod.phase == "Running" and pod.ready and pod.ip.startswith("127.")
    assert pod.labels["app"] == "web"  # "other" is not selected

    await kc.set_replicas("default", DEPLOY, 3)
    # new pods appear first as not ready, then become ready
    await wait_until(lambda: len(live(cache)) == 3, "three live pods", state=lambda: live(cache))
    await sb.wait_for_replicas("default", "web", 3)
    await wait_until(
        lambda: counted(cache) == sandbox_ready(sb) and len(counted(cache)) == 3,
        "the three ready pods counted",
        state=lambda: (counted(cache), sandbox_ready(sb)),
    )

    await kc.set_replicas("default", DEPLOY, 1)
    await sb.wait_for_replicas("default", "web", 1)
    await wait_until(
        lambda: [p.name for p in cache.pods()] == sandbox_ready(sb),
        "the cache has the ready pods",
        state=lambda: ([p.name for p in cache.pods()], sandbox_ready(sb)),
    )
    assert cache.relists == 1  # everything came through the watch
    assert cache.last_error is None


async def test_deleting_pods_are_flagged_before_they_go(sb: Sandbox, kc: KubeClient) -> None:
    sb.deletion_grace_seconds = 0.5
    await sb.add_deployment("default", "web", replicas=2)
    cache = kc.pods.acquire("default", "app=web")
    assert await cache.wait_synced(5)
    await sb.scale("default", "web", 1)
    await wait_until(
        lambda: any(p.deleting for p in cache.pods()),
        "a pod is deleting",
        state=lambda: cache.pods(),
    )
    assert len(counted(cache)) == 1
    await wait_until(lambda: len(cache.pods()) == 1, "one pod", state=lambda: cache.pods())


@pytest.mark.parametrize("abrupt", [False, True], ids=["clean-end", "connection-reset"])
async def test_survives_a_dropped_watch(sb: Sandbox, kc: KubeClient, abrupt: bool) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    cache = kc.pods.acquire("default", "app=web")
    assert await cache.wait_synced(5)
    await wait_until(
        lambda: len(sb._api.store.watchers) == 1,
        "one watcher",
        state=lambda: sb._api.store.watchers,
    )
    assert sb.faults.drop_watches(abrupt=abrupt) == 1
    await sb.scale("default", "web", 2)
    await sb.wait_for_replicas("default", "web", 2)
    await wait_until(
        lambda: counted(cache) == sandbox_ready(sb),
        "the ready pods counted",
        state=lambda: (counted(cache), sandbox_ready(sb)),
    )
    assert len(counted(cache)) == 2
    assert cache.synced


async def test_relists_after_410_gone(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    cache = kc.pods.acquire("default", "app=web")
    assert await cache.wait_synced(5)
    await wait_until(
        lambda: len(sb._api.store.watchers) == 1,
        "one watcher",
        state=lambda: sb._api.store.watchers,
    )
    # history compacted: the open watch gets an ERROR 410 event, and a re-watch from
    # the old resourceVersion would be refused too, so the cache must list again
    await sb.scale("default", "web", 2)
    sb.faults.expire_watches()
    await wait_until(lambda: cache.relists >= 2, "a re-list", state=lambda: cache.relists)
    await sb.wait_for_replicas("default", "web", 2)
    await wait_until(
        lambda: counted(cache) == sandbox_ready(sb),
        "the ready pods counted",
        state=lambda: (counted(cache), sandbox_ready(sb)),
    )
    # and it keeps following changes afterwards
    await sb.scale("default", "web", 1)
    await sb.wait_for_replicas("default", "web", 1)
    await wait_until(
        lambda: [p.name for p in cache.pods()] == sandbox_ready(sb),
        "the cache has the ready pods",
        state=lambda: ([p.name for p in cache.pods()], sandbox_ready(sb)),
    )


async def test_watch_410_answer_relists(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    cache = kc.pods.acquire("default", "app=web")
    assert await cache.wait_synced(5)
    await wait_until(
        lambda: len(sb._api.store.watchers) == 1,
        "one watcher",
        state=lambda: sb._api.store.watchers,
    )
    sb.faults.add("GET", r"/pods\?.*watch", status=410, count=1)
    sb.faults.drop_watches()
    await wait_until(lambda: cache.relists >= 2, "a re-list", state=lambda: cache.relists)
    assert cache.synced


async def test_recovers_from_watch_errors_and_timeouts(
    sb: Sandbox, new_client: ClientFactory
) -> None:
    kc = await new_client(api_timeout=0.5, watch=WatchSettings(backoff_base=0.05, backoff_max=0.2))
    await sb.add_deployment("default", "web", replicas=1)
    cache = kc.pods.acquire("default", "app=web")
    assert await cache.wait_synced(5)
    await wait_until(
        lambda: len(sb._api.store.watchers) == 1,
        "one watcher",
        state=lambda: sb._api.store.watchers,
    )
    # the next watches hang before answering (bounded by api_timeout), then fail with 500s
    sb.faults.add("GET", r"/pods\?.*watch", status=None, delay=3.0, count=1)
    sb.faults.add("GET", r"/pods\?", status=500, count=3)
    sb.faults.drop_watches(abrupt=True)
    await wait_until(
        lambda: cache.last_error is not None, "a watch error", state=lambda: cache.last_error
    )
    await sb.scale("default", "web", 3)
    await sb.wait_for_replicas("default", "web", 3)
    await wait_until(
        lambda: len(counted(cache)) == 3,
        "three pods counted",
        timeout=8,
        state=lambda: counted(cache),
    )
    await wait_until(
        lambda: cache.last_error is None, "the error cleared", state=lambda: cache.last_error
    )
    assert cache.synced


async def test_watch_ends_by_server_timeout_and_resumes(
    sb: Sandbox, new_client: ClientFactory
) -> None:
    kc = await new_client(watch=WatchSettings(watch_timeout=(1.0, 1.0), read_grace=1.0))
    await sb.add_deployment("default", "web", replicas=1)
    cache = kc.pods.acquire("default", "app=web")
    assert await cache.wait_synced(5)
    # each watch ends after timeoutSeconds=1; the cache watches again from where it was
    start_requests = sb._api.requests
    await wait_until(
        lambda: sb._api.requests >= start_requests + 2,
        "two more requests (watches)",
        timeout=4,
        state=lambda: sb._api.requests - start_requests,
    )
    await sb.scale("default", "web", 2)
    await sb.wait_for_replicas("default", "web", 2)
    await wait_until(
        lambda: len(counted(cache)) == 2, "two pods counted", state=lambda: counted(cache)
    )
    assert cache.relists == 1  # resumed from the resourceVersion, no re-list


async def test_caches_are_shared_and_stopped_when_unused(sb: Sandbox, kc: KubeClient) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    a = kc.pods.acquire("default", "app=web")
    b = kc.pods.acquire("default", "app=web")
    assert a is b
    assert await a.wait_synced(5)
    other = kc.pods.acquire("default", "app=other")  # a selector change → another cache
    assert other is not a
    assert await other.wait_synced(5)
    assert other.pods() == []
    assert [p.labels["app"] for p in a.pods()] == ["web"]
    # ... on the same namespace watch
    await wait_until(lambda: sb.open_watches == 1, "one watch open", state=lambda: sb.open_watches)
    assert kc.pods.watched_namespaces() == ["default"]
    elsewhere = kc.pods.acquire("prod", "app=web")  # another namespace → another watch
    await wait_until(
        lambda: sb.open_watches == 2, "two watches open", state=lambda: sb.open_watches
    )
    await kc.pods.release(elsewhere)
    await wait_until(lambda: sb.open_watches == 1, "one watch open", state=lambda: sb.open_watches)
    await kc.pods.release(other)
    assert kc.pods.watched_namespaces() == ["default"]
    # "app=web" still uses the namespace's watch: it goes on delivering, and stays the only one
    await sb.scale("default", "web", 2)
    await wait_until(lambda: len(a.pods()) == 2, "two pods", state=lambda: a.pods())
    assert sb.open_watches == 1
    await kc.pods.release(a)
    assert kc.pods.active() == [a]
    await kc.pods.release(b)
    assert kc.pods.active() == []
    assert kc.pods.watched_namespaces() == []
    await wait_until(lambda: sb.open_watches == 0, "no watch open", state=lambda: sb.open_watches)
    with pytest.raises(ValueError):
        kc.pods.acquire("default", "")


async def test_half_open_watch_is_dropped_by_the_read_timeout(tmp_path: Path) -> None:
    """A server that accepts the watch and then never sends a byte (a half-open TCP
    connection looks the same to the client): the cache gives up on it after
    timeoutSeconds + read_grace and watches again, instead of hanging forever."""
    watches = 0
    hang = asyncio.Event()

    async def pods(request: web.Request) -> web.StreamResponse:
        nonlocal watches
        if request.query.get("watch") != "true":
            pod = {
                "metadata": {"name": "p", "labels": {"app": "x"}, "resourceVersion": "5"},
                "status": {"phase": "Running", "podIP": "10.0.0.1"},
            }
            return web.json_response({"metadata": {"resourceVersion": "7"}, "items": [pod]})
        watches += 1
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await hang.wait()  # never writes, never ends
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/default/pods", pods)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    settings = WatchSettings(watch_timeout=(1.0, 1.0), read_grace=0.5, backoff_base=0.05)
    kc = await connect(str(kubeconfig), None, False, 2.0, watch=settings)
    try:
        cache = kc.pods.acquire("default", "app=x")
        assert await cache.wait_synced(3)
        assert [p.name for p in cache.pods()] == ["p"]
        await wait_until(
            lambda: cache.last_error is not None,
            "a watch error",
            timeout=4,
            state=lambda: cache.last_error,
        )
        # the read timeout fired: timeoutSeconds (1 s) + read_grace (0.5 s)
        assert "no data for 1.5s" in str(cache.last_error)
        await wait_until(  # it watched again
            lambda: watches >= 2, "a second watch", timeout=3, state=lambda: watches
        )
        assert [p.name for p in cache.pods()] == ["p"]  # and kept what it knew
    finally:
        hang.set()
        await kc.close()
        await runner.cleanup()

"""One pod watch per namespace, shared by every selector in it and filtered client-side."""

from __future__ import annotations

import asyncio
from typing import Any

from kube_helpers import ClientFactory
from waiting import wait_until

from autoscalerd.kube import KubeClient, PodCache, WatchSettings
from autoscalerd.sandbox import Sandbox
from autoscalerd.sandbox.apiserver import PODS
from autoscalerd.sandbox.selectors import matches, parse_label_selector

PODS_PATH = "/api/v1/namespaces/{}/pods"


def names(cache: PodCache) -> list[str]:
    return [p.name for p in cache.pods()]


def server_side(sb: Sandbox, namespace: str, selector: str) -> list[str]:
    """What the API server itself would select (the sandbox's own selector code)."""
    reqs = parse_label_selector(selector)
    return sorted(
        o["metadata"]["name"]
        for o in sb.store.list(PODS, namespace)
        if matches(reqs, o["metadata"].get("labels"))
    )


def pod_requests(sb: Sandbox, namespace: str) -> tuple[list[str], list[str]]:
    """(list queries, watch queries) the API server received for the namespace's pods."""
    queries = [r.query for r in sb.requests if r.path == PODS_PATH.format(namespace)]
    watches = [q for q in queries if "watch=true" in q]
    return [q for q in queries if q not in watches], watches


def relabel(sb: Sandbox, namespace: str, name: str, **changes: str | None) -> None:
    obj: Any = sb.store.get(PODS, namespace, name)
    labels = obj["metadata"].setdefault("labels", {})
    for key, value in changes.items():
        key = key.replace("_", "-")
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    sb.store.replace(PODS, obj)


SELECTORS = [
    "app=web",
    "app==api",
    "app!=web",
    "app in (web,api)",
    "app notin (web)",
    "app",
    "!app",
    "app=db,!canary",
    "app=web,pod-template-hash",
    "app in (nothing)",
]


async def test_many_selectors_in_one_namespace_share_one_watch(sb: Sandbox, kc: KubeClient) -> None:
    for name, replicas in (("web", 2), ("api", 1), ("db", 1)):
        await sb.add_deployment("default", name, replicas=replicas)
    await sb.add_deployment("prod", "web", replicas=1)
    caches = [kc.pods.acquire("default", s) for s in SELECTORS]
    caches += [kc.pods.acquire("default", s) for s in SELECTORS]  # the same views again
    assert caches[: len(SELECTORS)] == caches[len(SELECTORS) :]
    for cache in caches:
        assert await cache.wait_synced(5)
    for cache in caches:
        assert names(cache) == server_side(sb, "default", cache.selector), cache.selector
    await wait_until(lambda: sb.open_watches == 1, "one watch open", state=lambda: sb.open_watches)
    lists, watches = pod_requests(sb, "default")
    assert len(lists) == 1 and len(watches) == 1
    assert not [q for q in lists + watches if "labelSelector" in q]  # filtered client-side
    assert all(c.relists == 1 for c in caches)

    # changes reach the views they concern, and only those
    by_selector = {c.selector: c for c in caches}
    untouched = [by_selector[s] for s in ("app==api", "app=db,!canary", "!app")]
    generations = [c.generation for c in untouched]
    await sb.scale("default", "web", 4)
    await sb.wait_for_replicas("default", "web", 4)
    await wait_until(
        lambda: len(by_selector["app=web"].pods()) == 4,
        "four app=web pods",
        state=lambda: names(by_selector["app=web"]),
    )
    for cache in caches:
        await wait_until(
            lambda c=cache: names(c) == server_side(sb, "default", c.selector),
            f"{cache.selector} agrees with the server",
            state=lambda c=cache: (names(c), server_side(sb, "default", c.selector)),
        )
    assert [c.generation for c in untouched] == generations
    assert sb.open_watches == 1 and pod_requests(sb, "default")[0] == lists

    for cache in caches:
        await kc.pods.release(cache)
    assert kc.pods.active() == [] and kc.pods.watched_namespaces() == []
    await wait_until(lambda: sb.open_watches == 0, "no watch open", state=lambda: sb.open_watches)


async def test_pods_move_in_and_out_of_a_selector_when_labels_change(
    sb: Sandbox, kc: KubeClient
) -> None:
    await sb.add_deployment("default", "web", replicas=2)
    stable = kc.pods.acquire("default", "app=web,track!=canary")
    canary = kc.pods.acquire("default", "app=web,track in (canary)")
    assert await stable.wait_synced(5) and await canary.wait_synced(5)
    first, second = names(stable)
    assert canary.pods() == []

    gen = canary.generation
    relabel(sb, "default", first, track="canary")  # moves from `stable` to `canary`
    assert await canary.wait_changed(gen, timeout=3) != gen
    assert names(canary) == [first]
    await wait_until(
        lambda: names(stable) == [second],
        "stable holds only the second pod",
        state=lambda: names(stable),
    )
    assert canary.pods()[0].labels["track"] == "canary"

    relabel(sb, "default", first, track=None)  # and back
    await wait_until(
        lambda: names(stable) == [first, second] and canary.pods() == [],
        "stable holds both pods, canary none",
        state=lambda: (names(stable), names(canary)),
    )

    relabel(sb, "default", second, app="other")  # out of both
    await wait_until(
        lambda: names(stable) == [first],
        "stable holds only the first pod",
        state=lambda: names(stable),
    )
    assert canary.pods() == []
    # a label change that does not concern a view leaves it alone
    gen = canary.generation
    relabel(sb, "default", first, team="blue")
    await wait_until(
        lambda: stable.pods()[0].labels.get("team") == "blue",
        "stable sees team=blue on its pod",
        state=lambda: stable.pods(),
    )
    assert canary.generation == gen
    assert await canary.wait_changed(gen, timeout=0.2) == gen


async def test_a_later_selector_is_served_from_the_running_watch(
    sb: Sandbox, kc: KubeClient
) -> None:
    await sb.add_deployment("default", "web", replicas=2)
    await sb.add_deployment("default", "api", replicas=1)
    web = kc.pods.acquire("default", "app=web")
    assert await web.wait_synced(5)
    await wait_until(lambda: sb.open_watches == 1, "one watch open", state=lambda: sb.open_watches)
    api = kc.pods.acquire("default", "app=api")
    assert api.synced  # at once: no second LIST, no second watch
    assert names(api) == server_side(sb, "default", "app=api") and len(names(api)) == 1
    lists, watches = pod_requests(sb, "default")
    assert len(lists) == 1 and len(watches) == 1
    # released and acquired again after the namespace watch stopped: a fresh list and watch
    await kc.pods.release(web)
    await kc.pods.release(api)
    await wait_until(lambda: sb.open_watches == 0, "no watch open", state=lambda: sb.open_watches)
    again = kc.pods.acquire("default", "app=api")
    assert not again.synced
    assert await again.wait_synced(5) and names(again) == names(api)
    assert len(pod_requests(sb, "default")[0]) == 2


async def test_malformed_selector_never_syncs_and_opens_no_watch(
    sb: Sandbox, kc: KubeClient
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    bad = kc.pods.acquire("default", "app in (web")
    assert not await bad.wait_synced(0.3)
    assert not bad.synced and bad.pods() == [] and bad.relists == 0
    assert bad.last_error is not None and "invalid label selector" in bad.last_error
    assert sb.open_watches == 0 and kc.pods.watched_namespaces() == []
    assert kc.pods.acquire("default", "app in (web") is bad
    await kc.pods.release(bad)
    await kc.pods.release(bad)
    assert kc.pods.active() == []


async def test_list_is_paginated(sb: Sandbox, new_client: ClientFactory) -> None:
    kc = await new_client(watch=WatchSettings(list_page_size=2))
    await sb.add_deployment("default", "web", replicas=5)
    cache = kc.pods.acquire("default", "app=web")
    assert await cache.wait_synced(5)
    assert len(cache.pods()) == 5 and cache.relists == 1
    lists, _ = pod_requests(sb, "default")
    assert len(lists) == 3 and all("limit=2" in q for q in lists)
    assert ["continue=" in q for q in lists] == [False, True, True]
    # the watch resumes from the list's resourceVersion: changes arrive without a re-list
    await sb.scale("default", "web", 6)
    await wait_until(lambda: len(cache.pods()) == 6, "six pods", state=lambda: names(cache))
    assert cache.relists == 1


async def test_many_namespaces_one_watch_each(sb: Sandbox, kc: KubeClient) -> None:
    caches = [
        kc.pods.acquire(f"team-{i}", selector)
        for i in range(5)
        for selector in ("app=web", "app=api", "app")
    ]
    await wait_until(
        lambda: sb.open_watches == 5, "five watches open", state=lambda: sb.open_watches
    )
    assert kc.pods.watched_namespaces() == [f"team-{i}" for i in range(5)]
    await asyncio.gather(*(c.wait_synced(5) for c in caches))
    for cache in caches[:3]:  # one namespace's views
        await kc.pods.release(cache)
    await wait_until(
        lambda: sb.open_watches == 4, "four watches open", state=lambda: sb.open_watches
    )
    assert "team-0" not in kc.pods.watched_namespaces()

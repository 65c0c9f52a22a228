"""kubernetes_asyncio's own leader election (LeaseLock) works against the sandbox, and
the request observation helpers count what clients do."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from autoscalerd.sandbox import Sandbox

T = 5  # _request_timeout of every API call


async def test_lease_lock_election_and_takeover(make_client: Any, sandbox: Sandbox) -> None:
    leaders: list[str] = []
    async with await make_client(sandbox) as api_a, await make_client(sandbox) as api_b:

        def candidate(identity: str, api: client.ApiClient) -> asyncio.Task[None]:
            async def lead() -> None:
                leaders.append(identity)
                await asyncio.sleep(3600)

            async def stopped() -> None:
                pass

            cfg = electionconfig.Config(
                LeaseLock("autoscalerd", "kube-system", identity, api),
                lease_duration=3, renew_deadline=2, retry_period=1.5,
                onstarted_leading=lead, onstopped_leading=stopped,
            )  # fmt: skip
            return asyncio.create_task(leaderelection.LeaderElection(cfg).run())

        a = candidate("a", api_a)
        await asyncio.sleep(0.3)
        b = candidate("b", api_b)
        try:
            for _ in range(100):
                if leaders:
                    break
                await asyncio.sleep(0.05)
            assert leaders == ["a"]
            assert sandbox.lease("kube-system", "autoscalerd")["spec"]["holderIdentity"] == "a"
            a.cancel()  # the leader dies without releasing: b takes over after the lease
            for _ in range(200):
                if len(leaders) == 2:
                    break
                await asyncio.sleep(0.05)
            assert leaders == ["a", "b"]
            lease = sandbox.lease("kube-system", "autoscalerd")
            assert lease["spec"]["holderIdentity"] == "b"
        finally:
            for t in (a, b):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t


async def test_request_observation(make_client: Any, sandbox: Sandbox) -> None:
    await sandbox.add_deployment("default", "app", 1)
    before = sandbox.api_request_count
    async with await make_client(sandbox) as api:
        v1 = client.CoreV1Api(api)
        await v1.list_namespaced_pod("default", label_selector="app=app", _request_timeout=T)
        resp = await v1.list_namespaced_pod(
            "default", watch=True, timeout_seconds=5, _preload_content=False, _request_timeout=T
        )
        for _ in range(50):
            if sandbox.open_watches == 1:
                break
            await asyncio.sleep(0.02)
        assert sandbox.open_watches == 1
        resp.close()
    assert sandbox.api_request_count - before == 2
    last = sandbox.requests[-2:]
    assert [r.path for r in last] == ["/api/v1/namespaces/default/pods"] * 2
    assert "labelSelector=app%3Dapp" in last[0].query and "watch" in last[1].query
    for _ in range(50):
        if sandbox.open_watches == 0:
            break
        await asyncio.sleep(0.02)
    assert sandbox.open_watches == 0

"""kubernetes_asyncio's own leader election (LeaseLock) works against the sandbox, and
the request observation helpers count what clients do."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock
from waiting import wait_until

from autoscalerd.sandbox import Sandbox

T = 5  # _request_timeout of every API call


async def test_lease_lock_election_and_takeover(make_client: Any, sandbox: Sandbox) -> None:
    leaders: list[str] = []
    async with await make_client(sandbox) as api_a, await make_client(sandbox) as api_b:

        def candidate(identity: str, api: client.ApiClient) -> asyncio.Task[None]:
            async def lead() -> None:  # kubernetes_asyncio runs it in a task of its own
                leaders.append(identity)

            async def stopped() -> None:
                pass

            cfg = electionconfig.Config(
                LeaseLock("autoscalerd", "kube-system", identity, api),
                lease_duration=3, renew_deadline=2, retry_period=1.5,
                onstarted_leading=lead, onstopped_leading=stopped,
            )  # fmt: skip
            return asyncio.create_task(leaderelection.LeaderElection(cfg).run())

        a = candidate("a", api_a)
        b: asyncio.Task[None] | None = None
        try:
            await wait_until(lambda: leaders == ["a"], "a leads", state=lambda: leaders)
            b = candidate("b", api_b)
            assert sandbox.lease("kube-system", "autoscalerd")["spec"]["holderIdentity"] == "a"
            a.cancel()  # the leader dies without releasing: b takes over after the lease
            await wait_until(
                lambda: len(leaders) == 2, "b takes over", timeout=10, state=lambda: leaders
            )
            assert leaders == ["a", "b"]
            lease = sandbox.lease("kube-system", "autoscalerd")
            assert lease["spec"]["holderIdentity"] == "b"
        finally:
            for t in (a, b):
                if t is None:
                    continue
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
        await wait_until(
            lambda: sandbox.open_watches == 1,
            "the watch is open",
            state=lambda: sandbox.open_watches,
        )
        resp.close()
    assert sandbox.api_request_count - before == 2
    last = sandbox.requests[-2:]
    assert [r.path for r in last] == ["/api/v1/namespaces/default/pods"] * 2
    assert "labelSelector=app%3Dapp" in last[0].query and "watch" in last[1].query
    await wait_until(
        lambda: sandbox.open_watches == 0, "the watch is closed", state=lambda: sandbox.open_watches
    )

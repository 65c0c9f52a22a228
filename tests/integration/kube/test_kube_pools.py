"""Connection pools: long-lived watches never starve ordinary calls or lease renewals, and
token refresh reaches every pool."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import yaml
from kube_helpers import ClientFactory, pod_service_account
from waiting import wait_until

from autoscalerd.config.model import LeaderElection, ScaleTargetRef
from autoscalerd.kube import KubeClient, connect
from autoscalerd.sandbox import Sandbox

DEPLOY = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="web")
FAST = LeaderElection(
    lease_duration_seconds=2.0,
    renew_deadline_seconds=1.5,
    retry_period_seconds=0.3,
    lease_name="autoscalerd",
    lease_namespace="ops",
)
WATCHES = 150
"""More watches than kubernetes_asyncio's default pool (`connection_pool_maxsize` = 100)."""


async def test_150_watches_do_not_starve_calls_or_lease_renewals(
    sb: Sandbox, new_client: ClientFactory
) -> None:
    """The scale benchmark's stall: 100+ watches held every pooled connection and each
    `/scale` read, Event and Lease renewal waited for its timeout."""
    kc = await new_client(api_timeout=3.0)
    await sb.add_deployment("default", "web", replicas=1)
    elector = kc.leader_elector(FAST)
    elector.start()
    assert await elector.wait_leading(3)

    caches = [kc.pods.acquire(f"ns-{i:03d}", "app=web") for i in range(WATCHES)]
    await wait_until(
        lambda: sb.open_watches == WATCHES,
        "all the watches open",
        timeout=30,
        state=lambda: sb.open_watches,
    )
    assert all(c.synced for c in caches)

    # every kind of ordinary call gets a connection (a starved call fails with its 3 s timeout)
    assert (await kc.get_scale("default", DEPLOY)).replicas == 1
    assert (await kc.set_replicas("default", DEPLOY, 2)).replicas == 2
    assert await kc.server_version()
    await kc.record_event("default", DEPLOY, "Normal", "SuccessfulRescale", "to 2")
    await wait_until(
        lambda: "SuccessfulRescale" in sb.event_reasons("default", "web"),
        "a SuccessfulRescale Event",
        timeout=3,
        state=lambda: sb.event_reasons("default", "web"),
    )
    # many concurrent calls too (more than the call pool's own limit)
    results = await asyncio.gather(*(kc.get_scale("default", DEPLOY) for _ in range(120)))
    assert {r.replicas for r in results} == {2}

    # the leader keeps renewing while all the watches stream
    lease = sb.lease("ops", "autoscalerd")
    assert lease is not None
    renewed = lease["spec"]["renewTime"]

    def renewed_since() -> bool:
        now = sb.lease("ops", "autoscalerd")
        return now is not None and now["spec"]["renewTime"] > renewed

    await wait_until(
        renewed_since,
        "the lease renewed",
        timeout=1.0,
        state=lambda: sb.lease("ops", "autoscalerd"),
    )
    assert elector.is_leader
    assert sb.open_watches == WATCHES  # the watches stayed open all along

    for c in caches:
        await kc.pods.release(c)
    await wait_until(
        lambda: sb.open_watches == 0, "no watch open", timeout=10, state=lambda: sb.open_watches
    )


async def test_pools_share_one_token_and_close_together(sb: Sandbox, kc: KubeClient) -> None:
    kc.leader_elector(FAST)
    clients = [kc._api_client, kc._stream_api_client, kc._lease_api_client]
    assert len({id(c.rest_client.pool_manager) for c in clients}) == 3
    confs = [c.configuration for c in clients]
    # one api_key dict: a token refreshed before a call on any pool is used by all
    assert all(c.api_key is confs[0].api_key for c in confs)
    assert kc._api_client.rest_client.pool_manager.connector.limit == 100
    assert kc._stream_api_client.rest_client.pool_manager.connector.limit == 0  # no limit
    assert kc._lease_api_client.rest_client.pool_manager.connector.limit == 2
    await kc.close()
    assert all(c.rest_client.pool_manager.closed for c in clients)


@pytest.fixture
def service_account(sb: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("KUBECONFIG", "POD_NAME"):
        monkeypatch.delenv(var, raising=False)
    return pod_service_account(sb, tmp_path / "serviceaccount", "default", monkeypatch)


async def test_in_cluster_rotated_token_reaches_the_watch_pool(
    sb: Sandbox, service_account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    async with await connect(None, None, True, 2.0, service_account_dir=service_account) as kc:
        cache = kc.pods.acquire("default", "app=web")
        assert await cache.wait_synced(5)
        await wait_until(
            lambda: sb.open_watches == 1, "one watch open", state=lambda: sb.open_watches
        )
        # the kubelet rotates the projected token; the old one is refused at once
        (service_account / "token").write_text(sb.rotate_token())
        sb.faults.drop_watches()
        # only the watch reconnects (no LIST): it must send the re-read token
        await sb.scale("default", "web", 2)
        await sb.wait_for_replicas("default", "web", 2)
        await wait_until(
            lambda: len([p for p in cache.pods() if p.counts]) == 2,
            "two pods counted",
            state=lambda: cache.pods(),
        )
        assert cache.relists == 1 and cache.last_error is None
        assert not [r for r in sb.requests if r.status == 401]


EXEC_PLUGIN = """
import json, pathlib, sys
counter, token = sys.argv[1], sys.argv[2]
p = pathlib.Path(counter)
runs = int(p.read_text()) if p.exists() else 0
p.write_text(str(runs + 1))
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": token if runs >= 1 else "expired-token"}}))
"""


async def test_exec_plugin_token_refreshed_after_401_serves_the_watch_pool(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    script = tmp_path / "plugin.py"
    script.write_text(EXEC_PLUGIN)
    runs = tmp_path / "runs"
    cfg = yaml.safe_load(sb.kubeconfig_path.read_text())
    cfg["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(script), str(runs), sb.token],
        }
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    await sb.add_deployment("default", "web", replicas=1)
    async with await connect(str(path), None, False, 3.0) as kc:
        # the first LIST gets 401 with the plugin's first (bad) token; the 401 forces a
        # re-run; the watch, on its own pool, then uses the refreshed token
        cache = kc.pods.acquire("default", "app=web")
        assert await cache.wait_synced(8)
        await wait_until(
            lambda: sb.open_watches == 1, "one watch open", state=lambda: sb.open_watches
        )
        await sb.scale("default", "web", 2)
        await sb.wait_for_replicas("default", "web", 2)
        await wait_until(
            lambda: len([p for p in cache.pods() if p.counts]) == 2,
            "two pods counted",
            state=lambda: cache.pods(),
        )
        assert runs.read_text() == "2"
        watch_statuses = {r.status for r in sb.requests if "watch=true" in r.query}
        assert 401 not in watch_statuses

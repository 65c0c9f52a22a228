"""Credentials: kubeconfig (token, client cert, tls-server-name, exec plugin), in cluster."""

from __future__ import annotations

import asyncio
import datetime
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_helpers import pod_service_account
from kubernetes_asyncio.client import Configuration

from autoscalerd.config.model import LeaderElection, ScaleTargetRef
from autoscalerd.kube import (
    KubeConfigError,
    KubeUnauthorized,
    KubeUnavailable,
    connect,
)
from autoscalerd.sandbox import Sandbox

DEPLOY = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="web")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "POD_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config
    return monkeypatch


def write_kubeconfig(sb: Sandbox, path: Path, **changes: Any) -> Path:
    """A copy of the sandbox kubeconfig with cluster/user fields changed."""
    cfg = yaml.safe_load(sb.kubeconfig_path.read_text())
    cfg["clusters"][0]["cluster"].update(changes.pop("cluster", {}))
    if "user" in changes:
        cfg["users"][0]["user"] = changes.pop("user")
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_kubeconfig_token(sb: Sandbox, clean_env: pytest.MonkeyPatch) -> None:
    await sb.add_deployment("default", "web", replicas=2)
    default_before = Configuration._default
    async with await connect(str(sb.kubeconfig_path), None, None, 2.0) as kc:
        assert kc.source == f"kubeconfig:{sb.kubeconfig_path}@sandbox"
        assert kc.server == sb.api_url
        assert kc.default_namespace == "default"
        assert not kc.in_cluster
        assert kc.api_timeout == 2.0
        assert await kc.server_version() == "v1.31.0-autoscalerd-sandbox"
        assert (await kc.get_scale("default", DEPLOY)).replicas == 2
        session = kc._api_client.rest_client.pool_manager
    assert session.closed  # closed on exit: no "Unclosed client session"
    assert Configuration._default is default_before  # the global default is never touched


async def test_client_certificate_context(sb: Sandbox, clean_env: pytest.MonkeyPatch) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    async with await connect(str(sb.kubeconfig_path), "sandbox-cert", False, 2.0) as kc:
        assert kc.source.endswith("@sandbox-cert")
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1


async def test_kubeconfig_from_environment(sb: Sandbox, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KUBECONFIG", str(sb.kubeconfig_path))
    # a KUBECONFIG given explicitly wins over the in-cluster auto-detection
    clean_env.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    clean_env.setenv("KUBERNETES_SERVICE_PORT", "443")
    async with await connect(None, None, None, 2.0) as kc:
        assert kc.source.startswith(f"kubeconfig:{sb.kubeconfig_path}")
        assert await kc.server_version()


async def test_config_errors(sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="not found"):
        await connect(str(tmp_path / "missing"), None, None, 2.0)
    with pytest.raises(KubeConfigError, match="not found"):
        await connect(None, None, None, 2.0)  # no $KUBECONFIG, no ~/.kube/config
    with pytest.raises(KubeConfigError, match=r"context 'nope' not found \(available: sandbox"):
        await connect(str(sb.kubeconfig_path), "nope", None, 2.0)
    with pytest.raises(KubeConfigError, match="in-cluster credentials"):
        await connect(None, None, True, 2.0, service_account_dir=tmp_path / "no-sa")


async def test_tls_server_name(sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    good = write_kubeconfig(sb, tmp_path / "good", cluster={"tls-server-name": "localhost"})
    async with await connect(str(good), None, False, 2.0) as kc:
        assert await kc.server_version()
    bad = write_kubeconfig(sb, tmp_path / "bad", cluster={"tls-server-name": "other.example"})
    async with await connect(str(bad), None, False, 2.0) as kc:
        with pytest.raises(KubeUnavailable, match="TLS certificate verification failed"):
            await kc.server_version()


EXEC_PLUGIN = """
import datetime, json, pathlib, sys
counter, token, lifetime, bad_runs = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
p = pathlib.Path(counter)
runs = int(p.read_text()) if p.exists() else 0
p.write_text(str(runs + 1))
status = {"token": token if runs >= bad_runs else "expired-token"}
if lifetime >= 0:
    exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
    status["expirationTimestamp"] = exp.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential", "status": status}))
"""


def exec_kubeconfig(
    sb: Sandbox, tmp_path: Path, lifetime: float, bad_runs: int
) -> tuple[Path, Path]:
    script = tmp_path / "plugin.py"
    script.write_text(EXEC_PLUGIN)
    counter = tmp_path / "runs"
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(script), str(counter), sb.token, str(lifetime), str(bad_runs)],
        }
    }
    return write_kubeconfig(sb, tmp_path / "exec-kubeconfig", user=user), counter


async def test_exec_plugin_token_is_refreshed_before_expiry(
    sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    # the library refreshes 5 minutes before expirationTimestamp: 302 s ≈ 2 s from now
    path, runs = exec_kubeconfig(sb, tmp_path, lifetime=302, bad_runs=0)
    async with await connect(str(path), None, None, 3.0) as kc:
        await kc.get_scale("default", DEPLOY)
        await kc.get_scale("default", DEPLOY)
        assert runs.read_text() == "1"  # cached while valid
        await asyncio.sleep(2.1)
        await kc.get_scale("default", DEPLOY)
        assert runs.read_text() == "2"


async def test_exec_plugin_is_rerun_after_401(
    sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    path, runs = exec_kubeconfig(sb, tmp_path, lifetime=-1, bad_runs=1)  # no expiry given
    async with await connect(str(path), None, None, 3.0) as kc:
        with pytest.raises(KubeUnauthorized, match="unauthorized"):
            await kc.get_scale("default", DEPLOY)
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1
        assert runs.read_text() == "2"


@pytest.fixture
def service_account(sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    sa = pod_service_account(sb, tmp_path / "serviceaccount", "autoscaling", clean_env)
    clean_env.setenv("POD_NAME", "autoscalerd-7d9f-abcde")
    return sa


async def test_in_cluster_auto_detected(
    sb: Sandbox, service_account: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from kubernetes_asyncio.config import incluster_config

    # re-read the token file on every request instead of every 60 s
    clean_env.setattr(incluster_config, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))
    await sb.add_deployment("autoscaling", "web", replicas=1)
    async with await connect(None, None, None, 2.0, service_account_dir=service_account) as kc:
        assert kc.in_cluster and kc.source == "in-cluster"
        assert kc.default_namespace == "autoscaling"
        assert kc.identity == "autoscalerd-7d9f-abcde"
        assert (await kc.get_scale("autoscaling", DEPLOY)).replicas == 1
        elector = kc.leader_elector(LeaderElection())
        assert elector.namespace == "autoscaling"
        # the kubelet rotates the projected token: the new file content is used
        (service_account / "token").write_text("rotated-and-wrong")
        with pytest.raises(KubeUnauthorized):
            await kc.get_scale("autoscaling", DEPLOY)
        (service_account / "token").write_text(sb.token)
        assert (await kc.get_scale("autoscaling", DEPLOY)).replicas == 1

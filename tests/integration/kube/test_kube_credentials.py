"""Credentials: kubeconfig (token, client cert, tls-server-name, exec plugin), in cluster."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_helpers import pod_service_account
from kubernetes_asyncio.client import Configuration
from waiting import wait_for

from autoscalerd.config.model import LeaderElection, ScaleTargetRef
from autoscalerd.kube import (
    KubeClient,
    KubeConfigError,
    KubeUnauthorized,
    KubeUnavailable,
    connect,
)
from autoscalerd.sandbox import Sandbox, certs

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


async def call_until(
    kc: KubeClient, done: Callable[[], bool], what: str, timeout: float = 10.0
) -> int:
    """Read /scale (every call must succeed) until `done()`; return the number of calls."""
    calls = 0

    async def called_until_done() -> bool:
        nonlocal calls
        if done():
            return True
        await kc.get_scale("default", DEPLOY)
        calls += 1
        return False

    await wait_for(called_until_done, timeout=timeout, what=lambda: f"{what} ({calls} calls)")
    return calls


async def test_exec_plugin_token_is_refreshed_before_its_own_expiry(
    sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    # a 3-second token (2-3 s, the timestamp has whole seconds): refreshed ~20 % early, not
    # before every call as with the library's fixed 5-minute skew
    path, runs = exec_kubeconfig(sb, tmp_path, lifetime=3, bad_runs=0)
    async with await connect(str(path), None, None, 3.0) as kc:
        for _ in range(5):
            await kc.get_scale("default", DEPLOY)
        assert runs.read_text() == "1"  # cached while valid
        calls = await call_until(
            kc, lambda: runs.read_text() == "2", "the plugin ran a second time"
        )
        assert calls >= 5, "not re-run at once"
        for _ in range(5):
            await kc.get_scale("default", DEPLOY)
        assert runs.read_text() == "2"
        assert kc.credentials_rejected is None


async def test_concurrent_401s_run_the_plugin_once(
    sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    path, runs = exec_kubeconfig(sb, tmp_path, lifetime=-1, bad_runs=1)  # first token is bad
    async with await connect(str(path), None, None, 3.0) as kc:
        results = await asyncio.gather(
            *(kc.get_scale("default", DEPLOY) for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, KubeUnauthorized) for r in results)
        outcomes = await asyncio.gather(*(kc.get_scale("default", DEPLOY) for _ in range(10)))
        assert {s.replicas for s in outcomes} == {1}
        assert runs.read_text() == "2", "ten 401s to one token: one re-run"
        assert kc.credentials_rejected is None


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
    await sb.add_deployment("autoscaling", "web", replicas=1)
    async with await connect(None, None, None, 2.0, service_account_dir=service_account) as kc:
        assert kc.in_cluster and kc.source == "in-cluster"
        assert kc.default_namespace == "autoscaling"
        assert kc.identity == "autoscalerd-7d9f-abcde"
        assert (await kc.get_scale("autoscaling", DEPLOY)).replicas == 1
        elector = kc.leader_elector(LeaderElection())
        assert elector.namespace == "autoscaling"
        # the kubelet rotates the projected token: the new file content is used at once
        (service_account / "token").write_text("rotated-and-wrong")
        with pytest.raises(KubeUnauthorized):
            await kc.get_scale("autoscaling", DEPLOY)
        (service_account / "token").write_text(sb.token)
        assert (await kc.get_scale("autoscaling", DEPLOY)).replicas == 1


async def test_token_file_is_reread_when_rotated(
    sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    path = write_kubeconfig(sb, tmp_path / "kc", user={"tokenFile": str(sb.token_file)})
    async with await connect(str(path), None, None, 3.0) as kc:
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1
        sb.rotate_token(grace_seconds=0)  # the old token answers 401 from now on
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1
        assert kc.credentials_rejected is None
        statuses = [r.status for r in sb._api.request_log]
        assert 401 not in statuses, "the new file was read before the next call"


async def test_rejected_credentials_are_one_problem_that_clears_by_itself(
    sb: Sandbox, clean_env: pytest.MonkeyPatch
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    async with await connect(str(sb.kubeconfig_path), None, None, 3.0) as kc:
        await kc.get_scale("default", DEPLOY)
        assert kc.credentials_rejected is None
        sb._api.revoke_token(sb.token)
        for _ in range(3):
            with pytest.raises(KubeUnauthorized):
                await kc.get_scale("default", DEPLOY)
        rejected = kc.credentials_rejected
        assert rejected is not None
        assert rejected.problem == "credentials_rejected" and rejected.calls == 3
        assert "kubectl --context sandbox get --raw /version" in rejected.message
        assert str(sb.kubeconfig_path) in rejected.message
        assert sb.token not in rejected.message  # secrets never in messages
        sb._api.restore_token(sb.token)
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1
        assert kc.credentials_rejected is None


@pytest.mark.parametrize(
    ("provider", "replacement"),
    [("oidc", "kubelogin"), ("gcp", "gke-gcloud-auth-plugin"), ("azure", "kubelogin")],
)
async def test_auth_providers_are_refused_with_the_exec_replacement(
    sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path, provider: str, replacement: str
) -> None:
    user = {"auth-provider": {"name": provider, "config": {"id-token": "x", "expiry": "never"}}}
    path = write_kubeconfig(sb, tmp_path / "kc", user=user)
    with pytest.raises(KubeConfigError, match=f"{provider}.*auth-provider.*{replacement}"):
        await connect(str(path), None, None, 3.0)


CERT_PLUGIN = """
import base64, datetime, json, pathlib, sys
counter, cert, key, lifetime = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
p = pathlib.Path(counter)
p.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))
exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
status = {"clientCertificateData": pathlib.Path(cert).read_text(),
          "clientKeyData": pathlib.Path(key).read_text(),
          "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1",
                  "kind": "ExecCredential", "status": status}))
"""


def serial_of(cert_file: Path) -> str:
    """The serial number as `getpeercert()` spells it (upper-case hex of its bytes)."""
    from cryptography import x509

    serial = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number
    return serial.to_bytes((serial.bit_length() + 7) // 8, "big").hex().upper()


def issue_client_cert(sb: Sandbox, directory: Path, stem: str, current: Path) -> str:
    """Issue a client certificate from the API CA, make it the plugin's current one, and
    return its serial."""
    files = certs.issue(sb.api_ca, directory, stem, "exec-user", common_name="exec-user")
    (current / "tls.crt").write_bytes(files.cert_file.read_bytes())
    (current / "tls.key").write_bytes(files.key_file.read_bytes())
    return serial_of(files.cert_file)


async def test_exec_client_certificate_rotates_with_the_tls_context(
    sb: Sandbox, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    current = tmp_path / "current"
    current.mkdir()
    first = issue_client_cert(sb, tmp_path / "issued", "first", current)
    script = tmp_path / "cert-plugin.py"
    script.write_text(CERT_PLUGIN)
    runs = tmp_path / "runs"
    args = [str(script), str(runs), str(current / "tls.crt"), str(current / "tls.key"), "600"]
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": args,
        }
    }
    path = write_kubeconfig(sb, tmp_path / "kc", user=user)
    async with await connect(str(path), None, None, 3.0) as kc:
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1
        assert runs.read_text() == "1"
        # the issuer rotates the certificate and revokes the old one: the idle connection
        # (handshaken with the old one) is rejected once, the plugin re-runs, the TLS
        # context is rebuilt and the next call goes out with the new certificate
        issue_client_cert(sb, tmp_path / "issued", "second", current)
        sb._api.revoked_client_certs.add(first)
        with pytest.raises(KubeUnauthorized):
            await kc.get_scale("default", DEPLOY)
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1
        assert runs.read_text() == "2"
        assert kc.credentials_rejected is None
        leases = kc.leader_elector(LeaderElection(lease_namespace="default"))
        assert leases is not None  # a pool made after the rotation uses the new certificate
        assert await kc.server_version()

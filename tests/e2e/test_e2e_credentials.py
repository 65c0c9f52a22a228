"""API credentials that rotate, against the real `autoscalerd run` process (issue 16).

Each case: the daemon keeps scaling, or says why it cannot, without a restart.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_harness import FAST, policy_yaml, write
from waiting import wait_for

from autoscalerd.sandbox import MetricsEndpoint, Sandbox, certs

pytestmark = pytest.mark.e2e

NS, NAME, METRIC = "default", "web", "requests"
LEASE_SECONDS = 3.0
ELECTION = f"""\
apiVersion: autoscalerd.io/v1alpha1
kind: DaemonConfig
leaderElection:
  leaseDuration: {LEASE_SECONDS:g}s
  renewDeadline: 2s
  retryPeriod: 500ms
  leaseNamespace: default
"""

TOKEN_PLUGIN = """
import datetime, hashlib, hmac, json, pathlib, sys, time
counter, key, lifetime = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_bytes(), int(sys.argv[3])
counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
expires = int(time.time()) + lifetime
payload = f"exp.{expires}"
token = payload + "." + hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
stamp = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token, "expirationTimestamp": stamp}}))
"""
"""Mints a token the sandbox accepts for `lifetime` seconds (HMAC with the shared key)."""

CERT_PLUGIN = """
import datetime, json, pathlib, sys
counter, cert, key, lifetime = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
status = {"clientCertificateData": pathlib.Path(cert).read_text(),
          "clientKeyData": pathlib.Path(key).read_text(),
          "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": status}))
"""
"""Returns the client certificate currently in `cert`/`key` (the test rotates them)."""


async def web(sb: Sandbox, load: float = 10) -> None:
    await sb.add_deployment(
        NS, NAME, replicas=1, labels={"app": "web"},
        metrics=MetricsEndpoint(port=8000, tls="plain", metric=METRIC),
    )  # fmt: skip
    sb.set_load(NS, NAME, METRIC, load)  # 10 per pod is the target: stays at 1


def policy(tmp_path: Path) -> Path:
    text = policy_yaml(namespace=NS, name=NAME, target=NAME, protocol="http", port=8000,
                       metric=METRIC, target_value=10, annotations=FAST)  # fmt: skip
    return write(tmp_path, "policy.yaml", text)


def kubeconfig_with_user(sb: Sandbox, tmp_path: Path, user: dict[str, Any]) -> Path:
    cfg = yaml.safe_load(sb.kubeconfig_path.read_text())
    cfg["users"][0]["user"] = user
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


def exec_user(script: Path, *args: str) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script), *args],
            "interactiveMode": "Never",
        }
    }


def rejected_calls(sb: Sandbox) -> int:
    return sum(1 for r in sb._api.request_log if r.status == 401)


def events(daemon: Any, name: str) -> list[dict[str, Any]]:
    return daemon.logs(lambda d: d.get("event") == name)


async def ticks_at_least(daemon: Any, n: int, timeout: float) -> None:
    await daemon.wait_status(lambda s: s["policies"][0]["ticks"] >= n, timeout=timeout, poll=0.2)


async def readyz_until(daemon: Any, code: int, timeout: float) -> str:
    last: tuple[int, str] = (0, "")

    async def answered() -> tuple[int, str] | None:
        nonlocal last
        daemon.check_running()
        last = await daemon.get("/readyz")
        return last if last[0] == code else None

    _, body = await wait_for(
        answered, timeout=timeout, poll=0.1, what=lambda: f"/readyz answering {code}; last: {last}"
    )
    return body


async def test_exec_plugin_with_8_second_tokens_runs_about_once_per_expiry(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    key = secrets.token_bytes(32)
    sandbox._api.token_signing_key = key
    (tmp_path / "signing.key").write_bytes(key)
    script = write(tmp_path, "token-plugin.py", TOKEN_PLUGIN)
    runs = tmp_path / "runs"
    user = exec_user(script, str(runs), str(tmp_path / "signing.key"), "8")
    kubeconfig = kubeconfig_with_user(sandbox, tmp_path, user)
    await web(sandbox)
    election = write(tmp_path, "daemon.yaml", ELECTION)
    # leader election renews every 0.5 s: a steady stream of API calls, each of which ran
    # the plugin when tokens under 5 minutes were always "expired"
    daemon = await start_daemon(
        policy(tmp_path), election, args=("--kubeconfig", str(kubeconfig), "--leader-elect")
    )
    await daemon.wait_log(lambda d: d.get("event") == "leadership acquired")
    await ticks_at_least(daemon, 20, timeout=60)
    sandbox.set_load(NS, NAME, METRIC, 35)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=20)
    await ticks_at_least(daemon, 40, timeout=60)  # ~40 s at the 1 s scrape interval
    count = int(runs.read_text())
    # five 8-second lifetimes, each refreshed ~1.6 s early: about 6-7 runs (was ~1 per call)
    assert 4 <= count <= 10, f"{count} plugin runs over 40 ticks"
    assert len(events(daemon, "kube credentials refreshed")) == count - 1
    assert rejected_calls(sandbox) == 0, "every token was replaced before it expired"
    status = await daemon.status()
    assert status["problems"] == [] and status["leader"] is True
    assert await daemon.stop() == 0


async def test_rotated_token_file_with_the_old_token_revoked(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    kubeconfig = kubeconfig_with_user(sandbox, tmp_path, {"tokenFile": str(sandbox.token_file)})
    await web(sandbox)
    daemon = await start_daemon(policy(tmp_path), args=("--kubeconfig", str(kubeconfig)))
    await ticks_at_least(daemon, 2, timeout=15)
    sandbox.rotate_token(grace_seconds=0)  # the file changes; the old token answers 401
    sandbox.set_load(NS, NAME, METRIC, 35)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=20)
    refreshed = events(daemon, "kube credentials refreshed")
    assert refreshed and refreshed[-1]["kind"] == "token file"
    assert (await daemon.status())["problems"] == []
    assert events(daemon, "kube credentials rejected") == []
    assert await daemon.stop() == 0


def serial_of(cert_file: Path) -> str:
    """The serial number as `getpeercert()` spells it (upper-case hex of its bytes)."""
    from cryptography import x509

    serial = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number
    return serial.to_bytes((serial.bit_length() + 7) // 8, "big").hex().upper()


def rotate_client_cert(sb: Sandbox, tmp_path: Path, stem: str) -> str:
    """Issue a new client certificate, make it the plugin's current one; return its serial."""
    files = certs.issue(sb.api_ca, tmp_path / "issued", stem, "exec-user", common_name="exec")
    current = tmp_path / "current"
    current.mkdir(exist_ok=True)
    (current / "tls.key").write_bytes(files.key_file.read_bytes())
    (current / "tls.crt").write_bytes(files.cert_file.read_bytes())
    return serial_of(files.cert_file)


async def test_exec_plugin_client_certificates_that_rotate(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    first = rotate_client_cert(sandbox, tmp_path, "first")
    script = write(tmp_path, "cert-plugin.py", CERT_PLUGIN)
    runs = tmp_path / "runs"
    current = tmp_path / "current"
    user = exec_user(script, str(runs), str(current / "tls.crt"), str(current / "tls.key"), "4")
    kubeconfig = kubeconfig_with_user(sandbox, tmp_path, user)
    await web(sandbox)
    daemon = await start_daemon(policy(tmp_path), args=("--kubeconfig", str(kubeconfig)))
    await ticks_at_least(daemon, 2, timeout=15)
    rotate_client_cert(sandbox, tmp_path, "second")
    sandbox._api.revoked_client_certs.add(first)
    sandbox.set_load(NS, NAME, METRIC, 35)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=20)
    assert int(runs.read_text()) >= 2
    assert (await daemon.status())["problems"] == []
    assert events(daemon, "kube credentials rejected") == []
    assert await daemon.stop() == 0


async def test_revoked_credentials_are_reported_and_recovered_from(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await web(sandbox)
    election = write(tmp_path, "daemon.yaml", ELECTION)
    daemon = await start_daemon(policy(tmp_path), election, args=("--leader-elect",))
    await daemon.wait_log(lambda d: d.get("event") == "leadership acquired")
    sandbox._api.revoke_token(sandbox.token)
    # rejected on every call for longer than one lease duration: not ready, and why
    body = await readyz_until(daemon, 503, timeout=LEASE_SECONDS + 15)
    assert "credentials_rejected" in body and "get --raw /version" in body
    problems = (await daemon.status())["problems"]
    assert [p["problem"] for p in problems] == ["credentials_rejected"]
    assert "kubectl --context sandbox get --raw /version" in problems[0]["message"]
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscalerd", "status", "--url", f"http://127.0.0.1:{daemon.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(cli.communicate(), 30)
    assert "problem: credentials_rejected" in out.decode()
    sandbox.set_load(NS, NAME, METRIC, 35)  # cannot scale while rejected
    await ticks_at_least(daemon, (await daemon.status())["policies"][0]["ticks"] + 2, 15)
    assert sandbox.replicas(NS, NAME) == 1
    sandbox._api.restore_token(sandbox.token)
    await readyz_until(daemon, 200, timeout=15)
    await sandbox.wait_for_spec_replicas(NS, NAME, 4, timeout=20)
    assert len(events(daemon, "kube credentials rejected")) == 1, "logged once"
    assert events(daemon, "kube credentials accepted again")
    assert (await daemon.status())["problems"] == []
    assert await daemon.stop() == 0

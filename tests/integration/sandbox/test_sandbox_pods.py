"""Simulated pods: metrics endpoints in each TLS mode, token auth, the load model,
startup delay, pod faults, address allocation."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest
from waiting import wait_until

from autoscalerd.sandbox import MetricsEndpoint, Sandbox, SimPod

NS = "default"
TIMEOUT = aiohttp.ClientTimeout(total=5)


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def fetch(
    url: str, ssl_ctx: ssl.SSLContext | bool = True, server_hostname: str | None = None, **kw
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(url, ssl=ssl_ctx, server_hostname=server_hostname, **kw) as r,
    ):
        return r.status, await r.text(errors="replace")


def value_of(page: str, metric: str) -> float:
    for line in page.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{metric} not in page")


async def one_pod(sb: Sandbox, name: str, ep: MetricsEndpoint, **kw) -> SimPod:
    await sb.add_deployment(NS, name, 1, metrics=ep, **kw)
    return sb.pods(NS, name)[0]


async def test_plain_and_load_model(sandbox: Sandbox) -> None:
    ep = MetricsEndpoint(
        port=8080, path="/metrics", tls="plain", metric="go_threads", page_size_bytes=20_000
    )
    await sandbox.add_deployment(NS, "app", 2, metrics=ep)
    sandbox.set_load(NS, "app", "go_threads", 70)
    sandbox.set_load(NS, "app", 'vllm:num_requests_running{model_name="llama"}', 9)
    pods = sandbox.pods(NS, "app")
    assert len({p.ip for p in pods}) == 2 and all(p.url.startswith("http://") for p in pods)
    status, page = await fetch(pods[0].url)
    assert status == 200 and 19_000 < len(page) < 23_000
    assert value_of(page, "go_threads") == 35
    assert value_of(page, 'vllm:num_requests_running{model_name="llama"}') == 4.5
    assert page.count("# TYPE go_threads gauge") == 1
    assert "process_resident_memory_bytes" in page and "_bucket{" in page
    sandbox.set_pod_value(NS, pods[1].name, "go_threads", 99)
    assert value_of((await fetch(pods[1].url))[1], "go_threads") == 99
    assert value_of((await fetch(pods[0].url))[1], "go_threads") == 35
    assert pods[0].requests == 2
    assert (await fetch(pods[0].url.replace("/metrics", "/other")))[0] == 404


async def test_self_signed_like_metrics_server(sandbox: Sandbox) -> None:
    pod = await one_pod(sandbox, "ms", MetricsEndpoint(tls="self-signed"))
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as exc:
        await fetch(pod.url)
    assert "self-signed certificate in certificate chain" in str(exc.value)
    assert (await fetch(pod.url, insecure()))[0] == 200


async def test_ca_signed_needs_server_name(sandbox: Sandbox) -> None:
    wl_pod = await one_pod(sandbox, "cam", MetricsEndpoint(tls="ca", server_name="cam.default.svc"))
    wl = wl_pod.workload
    assert wl.ca_file == sandbox.metrics_ca_file and wl.server_name == "cam.default.svc"
    ctx = ssl.create_default_context(cafile=str(wl.ca_file))
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as exc:
        await fetch(wl_pod.url, ctx)  # by IP: the certificate names only the DNS name
    assert "IP address mismatch" in str(exc.value) or "doesn't match" in str(exc.value)
    status, _ = await fetch(wl_pod.url, ctx, server_hostname=wl.server_name)
    assert status == 200
    # the API CA does not sign pod certificates
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await fetch(
            wl_pod.url,
            ssl.create_default_context(cafile=str(sandbox.api_ca_file)),
            server_hostname=wl.server_name,
        )


async def test_ca_signed_with_ip_sans(sandbox: Sandbox) -> None:
    await sandbox.add_deployment(NS, "ips", 2, metrics=MetricsEndpoint(tls="ca", ip_sans=True))
    ctx = ssl.create_default_context(cafile=str(sandbox.metrics_ca_file))
    for pod in sandbox.pods(NS, "ips"):
        assert (await fetch(pod.url, ctx))[0] == 200


async def test_mtls(sandbox: Sandbox) -> None:
    pod = await one_pod(sandbox, "mt", MetricsEndpoint(tls="mtls"))
    wl = pod.workload
    ctx = ssl.create_default_context(cafile=str(wl.ca_file))
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await fetch(pod.url, ctx, server_hostname=wl.server_name)
    ctx.load_cert_chain(str(wl.client_cert_file), str(wl.client_key_file))
    assert (await fetch(pod.url, ctx, server_hostname=wl.server_name))[0] == 200


async def test_bearer_token(sandbox: Sandbox) -> None:
    pod = await one_pod(sandbox, "tok", MetricsEndpoint(tls="self-signed", token_required=True))
    wl = pod.workload
    assert wl.token_file is not None and Path(wl.token_file).read_text() == wl.token
    assert (await fetch(pod.url, insecure()))[0] == 401
    status, body = await fetch(pod.url, insecure(), headers={"Authorization": "Bearer wrong"})
    assert status == 403 and "cannot get path" in body
    headers = {"Authorization": f"Bearer {wl.token}"}
    assert (await fetch(pod.url, insecure(), headers=headers))[0] == 200


async def test_startup_delay_and_deletion(sandbox: Sandbox) -> None:
    ep = MetricsEndpoint(tls="plain", port=9090)
    await sandbox.add_deployment(NS, "slow", 1, metrics=ep, startup_seconds=0.5)
    sandbox.set_load(NS, "slow", "go_threads", 10)
    await sandbox.scale(NS, "slow", 2)
    await sandbox.wait_for_replicas(NS, "slow", 2, ready=False)
    new = [p for p in sandbox.pods(NS, "slow") if not p.ready]
    assert len(new) == 1 and new[0].phase == "Running" and new[0].ip
    assert value_of((await fetch(new[0].url))[1], "go_threads") == 0  # not Ready yet
    await sandbox.wait_for_replicas(NS, "slow", 2)
    assert value_of((await fetch(new[0].url))[1], "go_threads") == 5
    await sandbox.scale(NS, "slow", 1)
    gone = [p for p in sandbox.pods(NS, "slow", include_terminating=True) if p.terminating]
    await sandbox.wait_for_replicas(NS, "slow", 1)
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(gone[0].url)


async def test_pod_faults(sandbox: Sandbox) -> None:
    await sandbox.add_deployment(NS, "f", 2, metrics=MetricsEndpoint(tls="self-signed"))
    a, b = sandbox.pods(NS, "f")
    ctx = insecure()
    fault = sandbox.faults.pod(NS, a.name, "error", status=503)
    assert (await fetch(a.url, ctx))[0] == 503 and (await fetch(b.url, ctx))[0] == 200
    sandbox.faults.remove(fault)
    sandbox.faults.pod(NS, a.name, "garbage")
    status, body = await fetch(a.url, ctx)
    assert status == 200 and "not prometheus" in body
    sandbox.faults.clear()
    sandbox.faults.pod(NS, a.name, "slow", delay=1.0)
    with pytest.raises(asyncio.TimeoutError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
            await s.get(a.url, ssl=ctx)
    sandbox.faults.clear()
    sandbox.faults.pod(NS, a.name, "reset")
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        await fetch(a.url, ctx)
    sandbox.faults.clear()
    sandbox.faults.workload(NS, "f", "refuse")
    await wait_until(
        lambda: not a.listening and not b.listening,
        "both pods stopped listening",
        state=lambda: {p.name: p.listening for p in (a, b)},
    )
    for pod in (a, b):
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(pod.url, ctx)
    await sandbox.scale(NS, "f", 3)  # new pods of the workload refuse too
    await sandbox.wait_for_replicas(NS, "f", 3)
    c = next(p for p in sandbox.pods(NS, "f") if p not in (a, b))
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(c.url, ctx)
    sandbox.faults.clear()
    await wait_until(
        lambda: all(p.listening for p in (a, b, c)),
        "the three pods listen again",
        state=lambda: {p.name: p.listening for p in (a, b, c)},
    )
    for pod in (a, b, c):
        assert (await fetch(pod.url, ctx))[0] == 200


async def test_taken_addresses_are_skipped_and_sandboxes_coexist(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.77.2", 10250))
        blocker.listen()
        async with (
            Sandbox(tmp_path / "a", ip_base="127.0.77") as a,
            Sandbox(tmp_path / "b", ip_base="127.0.77") as b,
        ):
            await a.add_deployment(NS, "x", 2, metrics=MetricsEndpoint(tls="plain"))
            await b.add_deployment(NS, "x", 2, metrics=MetricsEndpoint(tls="plain"))
            ips = [p.ip for sb in (a, b) for p in sb.pods(NS, "x")]
            assert "127.0.77.2" not in ips and len(set(ips)) == 4
            for sb in (a, b):
                for p in sb.pods(NS, "x"):
                    assert (await fetch(p.url))[0] == 200


async def test_cli_prints_kubeconfig(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        __import__("sys").executable, "-m", "autoscalerd.sandbox", "--workdir", str(tmp_path),
        "--duration", "0.5", "--workloads", "2", "--pods", "2",
        "--info-file", str(tmp_path / "info.json"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    assert f"kubeconfig: {tmp_path / 'kubeconfig'}" in out.decode()
    assert (tmp_path / "kubeconfig").exists()
    info = __import__("json").loads((tmp_path / "info.json").read_text())
    assert info["kubeconfig"] == str(tmp_path / "kubeconfig")
    assert [len(w["pods"]) for w in info["workloads"]] == [1, 2, 2]
    assert info["workloads"][0]["selector"] == "k8s-app=metrics-server"

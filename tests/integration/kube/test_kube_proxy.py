"""The API server behind a proxy: `HTTPS_PROXY`/`NO_PROXY` are honoured (resolved once, at
connect, as kubectl does), a kubeconfig `proxy-url` wins, and proxy credentials are sent as
`Proxy-Authorization`, through a real HTTP CONNECT proxy on loopback."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import yaml
from kube_helpers import ClientFactory

from autoscalerd.config.model import ScaleTargetRef
from autoscalerd.sandbox import Sandbox

DEPLOY = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="web")


@dataclass
class ConnectProxy:
    port: int = 0
    tunnels: list[str] = field(default_factory=list)
    """`host:port` of every CONNECT request."""
    auth: list[str | None] = field(default_factory=list)
    """The `Proxy-Authorization` header of every CONNECT request (None when absent)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    """A minimal HTTP CONNECT proxy (what corporate proxies in front of bastions speak)."""
    proxy = ConnectProxy()
    pipes: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in head[1:] if line)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        proxy.tunnels.append(target)
        proxy.auth.append(headers.get("Proxy-Authorization"))
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        for task in (
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "ALL_PROXY", "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


async def test_https_proxy_from_the_environment_carries_every_call(
    sb: Sandbox, new_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sb.add_deployment("default", "web", replicas=2)
    async with connect_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://ops:s3cret@"))
        kc = await new_client()
        monkeypatch.delenv("HTTPS_PROXY")  # resolved once, at connect
        assert (await kc.get_scale("default", DEPLOY)).replicas == 2
        await kc.set_replicas("default", DEPLOY, 3)
        assert (await kc.get_scale("default", DEPLOY)).replicas == 3
    api = sb.api_url.removeprefix("https://")
    assert proxy.tunnels and set(proxy.tunnels) == {api}
    expected = "Basic " + base64.b64encode(b"ops:s3cret").decode()
    assert set(proxy.auth) == {expected}


async def test_no_proxy_bypasses_the_proxy(
    sb: Sandbox, new_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    async with connect_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        kc = await new_client()
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1
    assert proxy.tunnels == []


async def test_kubeconfig_proxy_url_wins_over_the_environment(
    sb: Sandbox, new_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sb.add_deployment("default", "web", replicas=1)
    async with connect_proxy() as used, connect_proxy() as ignored:
        doc = yaml.safe_load(sb.kubeconfig_path.read_text())
        doc["clusters"][0]["cluster"]["proxy-url"] = used.url
        sb.kubeconfig_path.write_text(yaml.safe_dump(doc))
        monkeypatch.setenv("HTTPS_PROXY", ignored.url)
        kc = await new_client()
        assert (await kc.get_scale("default", DEPLOY)).replicas == 1
    assert used.tunnels and ignored.tunnels == []

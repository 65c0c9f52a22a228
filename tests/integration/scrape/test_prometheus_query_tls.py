"""`prometheus` sources over TLS done right, against a real TLS server (trustme) that speaks the
Prometheus query API: verification on by default, caFile, serverName, the explicit bypass,
bearer token from a file, the body size limit and the deadline."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from autoscalerd.config.model import (
    Authorization,
    DaemonConfig,
    MetricSource,
    SeriesSelector,
    TLSConfig,
)
from autoscalerd.scrape.errors import ScrapeErrorKind
from autoscalerd.scrape.prometheus_query import PrometheusQuery

ANSWER = {"status": "success", "data": {"resultType": "vector",
                                        "result": [{"metric": {}, "value": [1, "42"]}]}}  # fmt: skip


@dataclass
class Api:
    port: int
    ca_file: str
    seen: list[dict[str, str]] = field(default_factory=list)
    delay: float = 0.0
    body: bytes = json.dumps(ANSWER).encode()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    ca = trustme.CA()
    cert = ca.issue_cert("prometheus.monitoring.svc")  # a DNS name only: not the IP
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    state = Api(0, str(ca_file))

    async def query(request: web.Request) -> web.Response:
        state.seen.append({"query": request.query.get("query", ""),
                           "auth": request.headers.get("Authorization", "")})  # fmt: skip
        if state.delay:
            await asyncio.sleep(state.delay)
        return web.Response(body=state.body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state
    await runner.cleanup()


def source(api: Api, tls: TLSConfig, auth: Authorization | None = None) -> MetricSource:
    return MetricSource(type="prometheus", protocol="https", endpoint=f"https://127.0.0.1:{api.port}",
                        query="sum(x)", target_metric="x", selector=SeriesSelector(metric="x"),
                        target_value=1.0, tls=tls, authorization=auth)  # fmt: skip


async def ask(src: MetricSource, daemon: DaemonConfig | None = None, timeout: float = 2.0):  # type: ignore[no-untyped-def]
    q = PrometheusQuery()
    try:
        return await q.query(src, daemon=daemon or DaemonConfig(), timeout=timeout)
    finally:
        await q.close()


async def test_verification_is_on_by_default(api: Api) -> None:
    out = await ask(source(api, TLSConfig()))
    assert out.error is not None and out.error.kind == ScrapeErrorKind.TLS_VERIFY
    assert "tlsConfig.caFile" in str(out.error)
    assert api.seen == [], "nothing was sent to an unverified server"


async def test_ca_file_and_server_name_verify(api: Api, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    tls = TLSConfig(ca_file=api.ca_file, server_name="prometheus.monitoring.svc")
    out = await ask(source(api, tls, Authorization(credentials_file=str(token))))
    assert (out.value, out.error) == (42.0, None)
    assert api.seen == [{"query": "sum(x)", "auth": "Bearer s3cret"}]


async def test_the_ca_alone_does_not_verify_a_name_the_certificate_lacks(api: Api) -> None:
    out = await ask(source(api, TLSConfig(ca_file=api.ca_file)))
    assert out.error is not None and out.error.kind == ScrapeErrorKind.TLS_VERIFY


async def test_the_explicit_bypass(api: Api) -> None:
    out = await ask(source(api, TLSConfig(insecure_skip_verify=True)))
    assert out.value == 42.0


async def test_body_size_limit_and_deadline(api: Api) -> None:
    tls = TLSConfig(insecure_skip_verify=True)
    api.body = b'{"status": "success", "data": {"resultType": "vector", "result": [' + b" " * 5000
    out = await ask(source(api, tls), DaemonConfig(body_size_limit_bytes=1024))
    assert out.error is not None and out.error.kind == ScrapeErrorKind.TOO_LARGE
    api.delay = 1.0
    out = await ask(source(api, tls), timeout=0.3)
    assert out.error is not None and out.error.kind == ScrapeErrorKind.TIMEOUT

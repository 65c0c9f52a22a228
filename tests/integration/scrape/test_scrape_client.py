"""The scraper against real servers on loopback: aiohttp over plain HTTP and TLS (trustme).

Every failure class is produced by a real server behaving badly, and each test checks both the
classification (`kind`) and that the message says what to do.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from autoscalerd.config.model import (
    Authorization,
    DaemonConfig,
    LabelMatcher,
    MatchOp,
    MetricSource,
    SeriesSelector,
    TLSConfig,
)
from autoscalerd.scrape.client import USER_AGENT, Scraper, ScrapeTarget
from autoscalerd.scrape.errors import ScrapeErrorKind
from autoscalerd.scrape.tls import insecure_skip_verify_warning

PAGE = """\
# HELP go_threads Number of OS threads created.
# TYPE go_threads gauge
go_threads 20
vllm:num_requests_running{model_name="llama"} 3
vllm:num_requests_running{model_name="other"} 4
"""
TIMEOUT = 2.0
GZIP_BOMB = gzip.compress(b"go_threads 1\n" + b"#" * (32 * 1024 * 1024), compresslevel=6)
"""32 MiB of text in about 32 KiB on the wire."""


@dataclass
class Seen:
    """What the server observed: request headers and the client connections (peer addresses)."""

    headers: list[dict[str, str]] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    token: str = "s3cret-1"


def make_app(seen: Seen) -> web.Application:
    async def record(request: web.Request) -> None:
        seen.headers.append(dict(request.headers))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            seen.peers.add((peer[0], peer[1]))

    async def metrics(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text=PAGE, content_type="text/plain")

    async def auth(request: web.Request) -> web.Response:
        await record(request)
        if request.headers.get("Authorization") != f"Bearer {seen.token}":
            return web.Response(status=401, text="Unauthorized")
        return web.Response(text=PAGE)

    async def forbidden(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(
            status=403,
            text='forbidden: User "system:anonymous" cannot get path "/metrics"',
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text=PAGE)

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="go_threads 1\n" + "# padding\n" * 200_000)

    async def bomb(request: web.Request) -> web.Response:
        return web.Response(body=GZIP_BOMB, headers={"Content-Encoding": "gzip"})

    async def gzipped(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=gzip.compress(PAGE.encode()), headers={"Content-Encoding": "gzip"})

    async def html(request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
        )

    async def nan(request: web.Request) -> web.Response:
        return web.Response(text="go_threads NaN\n")

    async def malformed(request: web.Request) -> web.Response:
        return web.Response(text='go_threads{x="1} 3\n')

    async def reset(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(1)
        return web.Response(text=PAGE)

    async def notfound(request: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found")

    app = web.Application()
    for path, handler in {
        "/metrics": metrics,
        "/auth": auth,
        "/forbidden": forbidden,
        "/slow": slow,
        "/big": big,
        "/bomb": bomb,
        "/gzip": gzipped,
        "/html": html,
        "/nan": nan,
        "/malformed": malformed,
        "/reset": reset,
        "/404": notfound,
    }.items():
        app.router.add_get(path, handler)
    return app


@asynccontextmanager
async def serve(
    seen: Seen, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    runner = web.AppRunner(
        make_app(seen), handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield port
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Certs:
    ca_file: str
    client_cert: str
    client_key: str
    ip_server: ssl.SSLContext  # CA-signed, SAN 127.0.0.1
    dns_server: ssl.SSLContext  # CA-signed, SAN metrics.example.svc only
    self_signed: ssl.SSLContext
    mtls_server: ssl.SSLContext  # CA-signed for 127.0.0.1, requires a CA-signed client cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))

    def server(*names: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        return ctx

    other = trustme.CA()  # a CA nobody trusts; its own certificate is self-signed
    self_signed = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.private_key_pem.write_to_path(str(d / "ss.key"))
    other.cert_pem.write_to_path(str(d / "ss.pem"))
    self_signed.load_cert_chain(str(d / "ss.pem"), str(d / "ss.key"))
    mtls = server("127.0.0.1")
    mtls.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(mtls)
    client = ca.issue_cert("scraper@example")
    client.cert_chain_pems[0].write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    return Certs(
        ca_file=str(d / "ca.pem"),
        client_cert=str(d / "client.pem"),
        client_key=str(d / "client.key"),
        ip_server=server("127.0.0.1"),
        dns_server=server("metrics.example.svc"),
        self_signed=self_signed,
        mtls_server=mtls,
    )


def source(
    port: int,
    path: str = "/metrics",
    *,
    https: bool = False,
    metric: str = "go_threads",
    matchers: tuple[LabelMatcher, ...] = (),
    tls: TLSConfig = TLSConfig(),
    auth: Authorization | None = None,
) -> MetricSource:
    selector = SeriesSelector(metric=metric, matchers=matchers)
    return MetricSource(
        protocol="https" if https else "http",
        port=port,
        path=path,
        target_metric=str(selector),
        selector=selector,
        target_value=10.0,
        tls=tls,
        authorization=auth,
    )


def target(src: MetricSource, ip: str = "127.0.0.1") -> ScrapeTarget:
    return ScrapeTarget(pod="pod-a", ip=ip, source=src)


async def scrape_one(
    src: MetricSource, daemon: DaemonConfig | None = None, timeout: float = TIMEOUT
):  # type: ignore[no-untyped-def]
    async with Scraper(daemon=daemon) as scraper:
        [outcome] = await scraper.scrape([target(src)], timeout=timeout)
    return outcome


async def test_plain_http_and_request_headers() -> None:
    seen = Seen()
    async with serve(seen) as port:
        outcome = await scrape_one(source(port))
    assert outcome.ok and outcome.value == 20.0 and outcome.matched == 1
    headers = seen.headers[0]
    assert headers["User-Agent"] == USER_AGENT
    assert headers["Accept"].startswith("text/plain;version=0.0.4")
    assert headers["Accept-Encoding"] == "gzip"
    assert headers["X-Prometheus-Scrape-Timeout-Seconds"] == "2"
    assert "Authorization" not in headers


async def test_gzip_page_and_label_matchers_sum() -> None:
    seen = Seen()
    async with serve(seen) as port:
        ok = await scrape_one(source(port, "/gzip", metric="vllm:num_requests_running"))
        none = await scrape_one(
            source(
                port,
                "/gzip",
                metric="vllm:num_requests_running",
                matchers=(LabelMatcher(name="model_name", op=MatchOp.EQ, value="nope"),),
            )
        )
    assert ok.value == 7.0 and ok.matched == 2
    assert none.error is not None and none.error.kind is ScrapeErrorKind.ABSENT
    assert "present but no series matches" in str(none.error)


async def test_self_signed_fails_with_subject_and_fix(certs: Certs) -> None:
    async with serve(Seen(), certs.self_signed) as port:
        outcome = await scrape_one(source(port, https=True))
    assert outcome.value is None and outcome.error is not None
    assert outcome.error.kind is ScrapeErrorKind.TLS_VERIFY
    message = str(outcome.error)
    assert f"https://127.0.0.1:{port}/metrics" in message
    assert "self-signed" in message or "self signed" in message
    assert "subject" in message and "O=trustme" in message
    assert "tlsConfig.caFile" in message and "tlsConfig.insecureSkipVerify: true" in message


async def test_insecure_skip_verify_works_and_is_noted_once(certs: Certs) -> None:
    """The bypass works; the scraper notes it once at debug (the daemon warns, with the policy)."""
    from structlog.testing import capture_logs

    async with serve(Seen(), certs.self_signed) as port:
        src = source(port, https=True, tls=TLSConfig(insecure_skip_verify=True))
        with capture_logs() as logs:
            async with Scraper() as scraper:
                for _ in range(3):
                    [outcome] = await scraper.scrape([target(src)], timeout=TIMEOUT)
                    assert outcome.value == 20.0
    notes = [e for e in logs if e["event"] == "tls verification disabled"]
    assert len(notes) == 1 and "insecureSkipVerify" in notes[0]["detail"]
    assert notes[0]["log_level"] == "debug"
    assert insecure_skip_verify_warning(src) is not None
    assert insecure_skip_verify_warning(source(1)) is None


async def test_daemon_default_insecure_applies_to_sources(certs: Certs) -> None:
    async with serve(Seen(), certs.self_signed) as port:
        outcome = await scrape_one(
            source(port, https=True), DaemonConfig(tls=TLSConfig(insecure_skip_verify=True))
        )
    assert outcome.value == 20.0


async def test_ca_file(certs: Certs) -> None:
    async with serve(Seen(), certs.ip_server) as port:
        without = await scrape_one(source(port, https=True))
        with_ca = await scrape_one(source(port, https=True, tls=TLSConfig(ca_file=certs.ca_file)))
    assert without.error is not None and without.error.kind is ScrapeErrorKind.TLS_VERIFY
    assert "system trust store" in str(without.error)
    assert with_ca.value == 20.0


async def test_dns_name_cert_scraped_by_ip_fixed_by_server_name(certs: Certs) -> None:
    async with serve(Seen(), certs.dns_server) as port:
        wrong = await scrape_one(source(port, https=True, tls=TLSConfig(ca_file=certs.ca_file)))
        right = await scrape_one(
            source(
                port,
                https=True,
                tls=TLSConfig(ca_file=certs.ca_file, server_name="metrics.example.svc"),
            )
        )
    assert wrong.error is not None and wrong.error.kind is ScrapeErrorKind.TLS_VERIFY
    message = str(wrong.error)
    assert "'127.0.0.1'" in message and "DNS:metrics.example.svc" in message
    assert "tlsConfig.serverName" in message
    assert right.value == 20.0


async def test_ip_not_in_the_certificate_advises_server_name_not_ca_file(certs: Certs) -> None:
    """Verify error 64 (the pod IP is not in the certificate), metrics-server's commonest case:
    the CA is right, so the fix is serverName, never caFile."""
    async with serve(Seen(), certs.dns_server) as port:
        outcome = await scrape_one(source(port, https=True, tls=TLSConfig(ca_file=certs.ca_file)))
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.TLS_VERIFY
    message = str(outcome.error)
    assert "IP address mismatch" in message
    fix = message.split("Fix: ", 1)[1]
    assert fix.startswith(
        "the certificate does not list the IP 127.0.0.1: set tlsConfig.serverName"
    )
    assert "caFile" not in fix


async def test_mtls(certs: Certs) -> None:
    tls = TLSConfig(ca_file=certs.ca_file)
    async with serve(Seen(), certs.mtls_server) as port:
        without = await scrape_one(source(port, https=True, tls=tls))
        with_cert = await scrape_one(
            source(
                port,
                https=True,
                tls=TLSConfig(
                    ca_file=certs.ca_file, cert_file=certs.client_cert, key_file=certs.client_key
                ),
            )
        )
    assert without.error is not None, without
    assert without.error.kind in (ScrapeErrorKind.TLS_HANDSHAKE,), without.error
    assert "tlsConfig.certFile" in str(without.error)
    assert with_cert.value == 20.0


async def test_bearer_token_required_and_rotated(tmp_path: Path) -> None:
    seen = Seen()
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-1\n")
    auth = Authorization(credentials_file=str(token_file))
    async with serve(seen) as port:
        missing = await scrape_one(source(port, "/auth"))
        async with Scraper() as scraper:
            [first] = await scraper.scrape(
                [target(source(port, "/auth", auth=auth))], timeout=TIMEOUT
            )
            # The kubelet rotates the projected token: the server now wants the new one.
            seen.token = "s3cret-2"
            token_file.write_text("s3cret-2\n")
            [second] = await scraper.scrape(
                [target(source(port, "/auth", auth=auth))], timeout=TIMEOUT
            )
            [third] = await scraper.scrape(
                [target(source(port, "/auth", auth=auth))], timeout=TIMEOUT
            )
            assert scraper._tokens.reads == 2  # unchanged file is not re-read
    assert missing.error is not None and missing.error.kind is ScrapeErrorKind.UNAUTHORIZED
    assert "authorization.credentialsFile" in str(missing.error)
    assert first.value == second.value == third.value == 20.0
    assert seen.headers[-1]["Authorization"] == "Bearer s3cret-2"


async def test_daemon_default_token_is_never_sent_over_plain_http(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("daemon-wide")
    daemon = DaemonConfig(authorization=Authorization(credentials_file=str(token_file)))
    seen = Seen()
    async with serve(seen) as port, Scraper(daemon=daemon) as scraper:
        [plain] = await scraper.scrape([target(source(port, "/auth"))], timeout=TIMEOUT)
    assert plain.error is not None and plain.error.kind is ScrapeErrorKind.UNAUTHORIZED
    assert "Authorization" not in seen.headers[-1]


async def test_token_never_in_messages(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("do-not-leak")
    async with serve(Seen()) as port:
        outcome = await scrape_one(
            source(port, "/auth", auth=Authorization(credentials_file=str(token_file)))
        )
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.UNAUTHORIZED
    assert "do-not-leak" not in str(outcome.error)


async def test_missing_token_file() -> None:
    async with serve(Seen()) as port:
        outcome = await scrape_one(
            source(port, "/auth", auth=Authorization(credentials_file="/nonexistent/token"))
        )
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.AUTH_CONFIG
    assert "/nonexistent/token" in str(outcome.error)


async def test_forbidden_has_rbac_hint() -> None:
    async with serve(Seen()) as port:
        outcome = await scrape_one(source(port, "/forbidden"))
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.FORBIDDEN
    message = str(outcome.error)
    assert 'nonResourceURLs: ["/metrics"]' in message
    assert "--authorization-always-allow-paths=/metrics" in message
    assert "system:anonymous" in message


@pytest.mark.parametrize(
    ("path", "kind", "fragment"),
    [
        pytest.param("/slow", ScrapeErrorKind.TIMEOUT, "within 0.3s", id="slow"),
        pytest.param("/big", ScrapeErrorKind.TOO_LARGE, "1048576 bytes", id="oversized"),
        pytest.param("/bomb", ScrapeErrorKind.TOO_LARGE, "gzip", id="gzip-bomb"),
        pytest.param("/html", ScrapeErrorKind.PARSE, "not Prometheus", id="garbage"),
        pytest.param("/malformed", ScrapeErrorKind.PARSE, "line 1", id="malformed"),
        pytest.param("/nan", ScrapeErrorKind.INVALID_VALUE, "NaN", id="nan"),
        pytest.param("/reset", ScrapeErrorKind.CONNECTION_RESET, "closed or reset", id="reset"),
        pytest.param("/404", ScrapeErrorKind.HTTP_STATUS, "HTTP 404", id="not-found"),
    ],
)
async def test_failures(path: str, kind: ScrapeErrorKind, fragment: str) -> None:
    daemon = DaemonConfig(body_size_limit_bytes=1024 * 1024)
    async with serve(Seen()) as port:
        outcome = await scrape_one(source(port, path), daemon, timeout=0.3)
    assert outcome.value is None and outcome.error is not None
    assert outcome.error.kind is kind, outcome.error
    assert fragment in str(outcome.error)


async def test_absent_metric() -> None:
    async with serve(Seen()) as port:
        outcome = await scrape_one(source(port, metric="go_thread"))
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.ABSENT
    assert "no series named go_thread" in str(outcome.error)


async def test_refused_port() -> None:
    async with serve(Seen()) as port:
        pass  # the port is now closed
    outcome = await scrape_one(source(port))
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.CONNECT_REFUSED
    assert f"port {port}" in str(outcome.error)


async def test_https_to_plain_port_and_http_to_tls_port(certs: Certs) -> None:
    async with serve(Seen()) as plain, serve(Seen(), certs.ip_server) as tls_port:
        wrong_tls = await scrape_one(source(plain, https=True))
        wrong_plain = await scrape_one(source(tls_port))
    assert wrong_tls.error is not None and wrong_tls.error.kind is ScrapeErrorKind.TLS_HANDSHAKE
    assert "protocolType: http" in str(wrong_tls.error)
    assert wrong_plain.error is not None
    assert wrong_plain.error.kind in (ScrapeErrorKind.CONNECTION_RESET, ScrapeErrorKind.HTTP_STATUS)


async def test_unusable_tls_files() -> None:
    outcome = await scrape_one(source(1, https=True, tls=TLSConfig(ca_file="/nonexistent/ca.pem")))
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.TLS_CONFIG
    assert "/nonexistent/ca.pem" in str(outcome.error)


async def test_connections_reused_and_pages_deduplicated(certs: Certs) -> None:
    """Several rounds over several TLS servers: one handshake per server, then only reuse."""
    seens = [Seen() for _ in range(4)]
    tls = TLSConfig(ca_file=certs.ca_file)
    async with (
        serve(seens[0], certs.ip_server) as p0,
        serve(seens[1], certs.ip_server) as p1,
        serve(seens[2], certs.ip_server) as p2,
        serve(seens[3], certs.ip_server) as p3,
    ):
        ports = [p0, p1, p2, p3]
        targets = [target(source(p, https=True, tls=tls)) for p in ports]
        # A second selector on the same pages: must not cause a second fetch.
        llama = (LabelMatcher(name="model_name", op=MatchOp.EQ, value="llama"),)
        targets += [
            target(
                source(p, https=True, tls=tls, metric="vllm:num_requests_running", matchers=llama)
            )
            for p in ports
        ]
        async with Scraper() as scraper:
            for _ in range(5):
                outcomes = await scraper.scrape(targets, timeout=TIMEOUT)
                assert [o.value for o in outcomes] == [20.0] * 4 + [3.0] * 4
            assert scraper.stats.connections_created == 4
            assert scraper.stats.requests == 20
            assert scraper.stats.connections_reused == 16
    for seen in seens:
        assert len(seen.headers) == 5  # one fetch per round, not one per selector
        assert len(seen.peers) == 1  # server side: a single connection (one handshake)


async def test_concurrency_bound() -> None:
    """With max_concurrent_scrapes=2, at most two requests are in flight at once."""
    in_flight = 0
    peak = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return web.Response(text=PAGE)

    app = web.Application()
    app.router.add_get("/{n}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with Scraper(daemon=DaemonConfig(max_concurrent_scrapes=2)) as scraper:
            outcomes = await scraper.scrape(
                [target(source(port, f"/{n}")) for n in range(8)], timeout=TIMEOUT
            )
    finally:
        await runner.cleanup()
    assert all(o.value == 20.0 for o in outcomes)
    assert peak == 2


async def test_outcomes_follow_the_order_of_targets() -> None:
    """One outcome per target, in the targets' order, whatever order the pages complete in,
    with shared pages (the same URL twice) and failures mixed in."""
    llama = (LabelMatcher(name="model_name", op=MatchOp.EQ, value="llama"),)
    async with serve(Seen()) as port:
        targets = [
            target(source(port, "/slow")),
            target(source(port)),
            target(source(port, "/404")),
            target(source(port, metric="vllm:num_requests_running", matchers=llama)),
            target(source(port)),
            target(source(port, "/nan")),
        ]
        async with Scraper() as scraper:
            outcomes = await scraper.scrape(targets, timeout=0.5)
    assert [o.target for o in outcomes] == targets
    assert [o.value for o in outcomes] == [None, 20.0, None, 3.0, 20.0, None]
    assert [o.error.kind if o.error else None for o in outcomes] == [
        ScrapeErrorKind.TIMEOUT,
        None,
        ScrapeErrorKind.HTTP_STATUS,
        None,
        None,
        ScrapeErrorKind.INVALID_VALUE,
    ]


async def test_a_round_leaves_no_cyclic_garbage(certs: Certs) -> None:
    """A finished round is freed by reference counting. A cycle (round → request → round) once
    kept every page of every round (~40 KiB each) alive until the cyclic collector ran: ~35 MiB
    of garbage a second at 1,000 scrapes a second, and most of the daemon's collector CPU."""
    seen = Seen()
    async with serve(seen, certs.ip_server) as port, Scraper() as scraper:
        targets = [target(source(port, https=True, tls=TLSConfig(ca_file=certs.ca_file)))]
        await scraper.scrape(targets, timeout=TIMEOUT)  # connect, warm the caches
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                outcomes = await scraper.scrape(targets, timeout=TIMEOUT)
                assert outcomes[0].ok
            del outcomes
            garbage = gc.collect()
        finally:
            gc.enable()
    assert garbage < 20, f"{garbage} objects in reference cycles after 20 rounds"

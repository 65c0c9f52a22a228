"""The scrape HTTP/1.1 client against real servers on loopback.

Raw asyncio servers give byte-exact control (chunked framing split at odd places, idle closes,
partial responses, oversized headers); an aiohttp TLS server (trustme) checks keep-alive over
TLS. Each test goes through `Scraper` where the error classification matters, or through
`HTTP11Client` directly where the connection bookkeeping does.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from waiting import wait_until

from autoscalerd.config.model import (
    Authorization,
    DaemonConfig,
    MetricSource,
    SeriesSelector,
    TLSConfig,
)
from autoscalerd.scrape.client import Scraper, ScrapeTarget
from autoscalerd.scrape.errors import ScrapeErrorKind
from autoscalerd.scrape.http11 import (
    MAX_HEAD_BYTES,
    HTTP11Client,
    Request,
    build_get,
)

PAGE = b"# TYPE go_threads gauge\ngo_threads 20\n"
TIMEOUT = 2.0


@dataclass
class Conn:
    """One accepted connection, as the raw server sees it."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: int = 0

    async def read_request(self) -> bytes | None:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.requests += 1
        return head

    async def send(self, *parts: bytes, pause: float = 0.0) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()
            if pause:
                await asyncio.sleep(pause)


@dataclass
class Raw:
    port: int
    conns: list[Conn] = field(default_factory=list)


Handler = Callable[[Conn], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[Raw]:
    raw = Raw(port=0)
    handlers: set[asyncio.Task[None]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)  # asyncio's server does not stop its client handlers
        conn = Conn(index=len(raw.conns), reader=reader, writer=writer)
        raw.conns.append(conn)
        try:
            await handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        server.close()
        for conn in raw.conns:
            conn.writer.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def ok(body: bytes = PAGE, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def chunked(body: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        out += b"%x\r\n" % len(body[i : i + size]) + body[i : i + size] + b"\r\n"
    return out + b"0\r\n\r\n"


async def serve_forever(conn: Conn, response: bytes) -> None:
    while await conn.read_request():
        await conn.send(response)


def source(port: int, *, https: bool = False, tls: TLSConfig = TLSConfig()) -> MetricSource:
    return MetricSource(
        protocol="https" if https else "http",
        port=port,
        path="/metrics",
        target_metric="go_threads",
        selector=SeriesSelector(metric="go_threads"),
        target_value=10.0,
        tls=tls,
    )


def target(port: int, **kwargs: object) -> ScrapeTarget:
    return ScrapeTarget(pod="p", ip="127.0.0.1", source=source(port, **kwargs))  # type: ignore[arg-type]


async def fetch(client: HTTP11Client, port: int, limit: int = 1 << 20) -> Request:
    """One GET through the client directly; returns the finished request."""
    done: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
    request = Request(
        host="127.0.0.1",
        port=port,
        ssl=None,
        server_hostname=None,
        head=build_get(f"127.0.0.1:{port}", "/metrics", []),
        limit=limit,
        on_done=done.set_result,
    )
    client.submit(request)
    return await asyncio.wait_for(done, TIMEOUT)


@dataclass
class Counters:
    requests: int = 0
    connections_created: int = 0
    late_kept: int = 0
    late_dropped: int = 0


async def test_chunked_split_at_every_boundary() -> None:
    # 50 distinct series (one series repeated would be refused as a duplicate, not summed).
    body = b"".join(b'go_threads{i="%d"} 20\n' % i for i in range(50))

    async def handler(conn: Conn) -> None:
        while await conn.read_request():
            raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 100)
            # Odd-sized writes with pauses: every framing element gets split somewhere.
            await conn.send(*(raw[i : i + 37] for i in range(0, len(raw), 37)), pause=0.0005)

    async with raw_server(handler) as srv, Scraper() as scraper:
        for _ in range(3):
            [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
            assert outcome.value == 20.0 * 50, outcome.error
        assert scraper.stats.connections_created == 1
    assert len(srv.conns) == 1 and srv.conns[0].requests == 3


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_gzip_response(framing: str) -> None:
    z = gzip.compress(PAGE)
    if framing == "length":
        response = ok(z, b"Content-Encoding: gzip")
    else:
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked(z, 10)
        )
    seen: list[bytes] = []

    async def handler(conn: Conn) -> None:
        while head := await conn.read_request():
            seen.append(head)
            await conn.send(response)

    async with raw_server(handler) as srv, Scraper() as scraper:
        [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
    assert outcome.value == 20.0
    assert b"\r\nAccept-Encoding: gzip\r\n" in seen[0]
    assert seen[0].startswith(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n".encode())


async def test_chunked_gzip_bomb_is_too_large() -> None:
    bomb = gzip.compress(b"go_threads 1\n" + b"#" * (16 << 20))

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        await conn.send(head + chunked(bomb, 4096))

    async with raw_server(handler) as srv:
        async with Scraper(daemon=DaemonConfig(body_size_limit_bytes=1 << 20)) as scraper:
            [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.TOO_LARGE
    assert "gzip encoding" in str(outcome.error) and "1048576 bytes" in str(outcome.error)


async def test_keep_alive_reuse_and_idle_close_by_server() -> None:
    """Reuse while the server keeps the connection; a fresh one after it closed it idle."""
    close_after_first = asyncio.Event()

    async def handler(conn: Conn) -> None:
        while await conn.read_request():
            await conn.send(ok())
            if close_after_first.is_set():
                return  # the server's idle timeout: close without saying so in a header

    counters = Counters()
    client = HTTP11Client(max_in_flight=4, counters=counters)
    async with raw_server(handler) as srv:
        for _ in range(3):
            request = await fetch(client, srv.port)
            assert request.error is None and request.parser is not None
            assert request.parser.body == PAGE
        assert (counters.requests, counters.connections_created) == (3, 1)
        close_after_first.set()
        await fetch(client, srv.port)  # served, then the server closes the idle connection
        # the close is noticed while the connection is idle
        await wait_until(lambda: client.idle_connections == 0, "the idle close noticed")
        request = await fetch(client, srv.port)
        assert request.error is None and not request.reused and not request.retried
    await client.close()
    assert counters.connections_created == 2 and len(srv.conns) == 2


async def test_stale_connection_retried_once_on_a_fresh_one() -> None:
    """The server drops a kept-alive connection as our request arrives: retried, succeeds."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(ok())
        if conn.index == 0:
            await conn.read_request()  # the reused connection: hang up without an answer
            conn.writer.transport.abort()
            return
        await serve_forever(conn, ok())

    async with raw_server(handler) as srv, Scraper() as scraper:
        for _ in range(3):
            [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
            assert outcome.value == 20.0, outcome.error
        assert scraper.stats.connections_created == 2
        assert scraper.stats.requests == 4  # 3 rounds + the one retry
    assert [c.requests for c in srv.conns] == [2, 2]


async def test_fresh_connection_failure_is_not_retried() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        conn.writer.transport.abort()

    async with raw_server(handler) as srv, Scraper() as scraper:
        [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.CONNECTION_RESET
    assert len(srv.conns) == 1


async def test_stale_connection_failing_twice_is_a_reset() -> None:
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.send(ok())
        await conn.read_request()
        conn.writer.transport.abort()

    async with raw_server(handler) as srv, Scraper() as scraper:
        [first] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
        [second] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
    assert first.value == 20.0
    assert second.error is not None and second.error.kind is ScrapeErrorKind.CONNECTION_RESET
    assert len(srv.conns) == 2  # one retry, not more


async def test_connection_close_and_http10_are_not_reused() -> None:
    responses = [
        ok(PAGE, b"Connection: close"),
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + PAGE,  # body until close
        ok(PAGE),
    ]

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(responses[min(conn.index, 2)])
        if conn.index < 2:
            return  # close, as announced / as HTTP/1.0 framing requires
        await serve_forever(conn, ok())

    async with raw_server(handler) as srv, Scraper() as scraper:
        for _ in range(4):
            [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
            assert outcome.value == 20.0, outcome.error
        assert scraper.stats.connections_created == 3
    assert [c.requests for c in srv.conns] == [1, 1, 2]


@pytest.mark.parametrize(
    ("response", "kind", "fragment"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ngo_threads 1\n",
            ScrapeErrorKind.TRUNCATED,
            "bytes before the end of the body",
            id="partial-body",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Ty",
            ScrapeErrorKind.TRUNCATED,
            "middle of the response headers",
            id="partial-head",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\ngo_th",
            ScrapeErrorKind.TRUNCATED,
            "chunked body",
            id="partial-chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
            ScrapeErrorKind.MALFORMED_RESPONSE,
            f"header section larger than {MAX_HEAD_BYTES} bytes",
            id="header-too-large",
        ),
        pytest.param(
            b"SSH-2.0-OpenSSH_9.6\r\n",
            ScrapeErrorKind.MALFORMED_RESPONSE,
            "malformed HTTP response",
            id="not-http",
        ),
    ],
)
async def test_broken_responses(response: bytes, kind: ScrapeErrorKind, fragment: str) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(response)

    async with raw_server(handler) as srv, Scraper() as scraper:
        [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
    assert outcome.error is not None and outcome.error.kind is kind, outcome.error
    assert fragment in str(outcome.error)


async def test_forbidden_keeps_connection_large_error_body_drops_it() -> None:
    small = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden"
    big = b"HTTP/1.1 500 Oops\r\nContent-Length: 10000000\r\n\r\n" + b"e" * 200_000

    async def handler(conn: Conn) -> None:
        while await conn.read_request():
            await conn.send(small if conn.index == 0 and conn.requests < 3 else big)

    async with raw_server(handler) as srv, Scraper() as scraper:
        for _ in range(2):
            [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
            assert outcome.error is not None
            assert outcome.error.kind is ScrapeErrorKind.FORBIDDEN
        assert scraper.stats.connections_created == 1  # a 403 does not cost a connection
        [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
        assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.HTTP_STATUS
        assert "HTTP 500 Oops" in str(outcome.error) and "eeee" in str(outcome.error)
        [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
        assert scraper.stats.connections_created == 2  # the cut-off body dropped the first


async def test_bytes_on_an_idle_connection_drop_it() -> None:
    answered = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(ok())
        if conn.index == 0:
            await answered.wait()  # the first answer was read: the connection is idle
            await conn.send(b"HTTP/1.1 200 OK\r\n")  # unsolicited: must not answer the next GET
            await conn.reader.read()  # until the client drops the connection
            return
        await serve_forever(conn, ok())

    async with raw_server(handler) as srv, Scraper() as scraper:
        [first] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
        assert scraper._http.idle_connections == 1
        answered.set()
        await wait_until(lambda: scraper._http.idle_connections == 0, "the idle connection dropped")
        [second] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
        assert first.value == second.value == 20.0
        assert scraper.stats.connections_created == 2


async def test_timeout_aborts_the_connection_and_the_next_round_recovers() -> None:
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ngo_")
            await conn.reader.read()  # never finishes the body; waits for the abort
            return
        await serve_forever(conn, ok())

    async with raw_server(handler) as srv, Scraper() as scraper:
        [slow] = await scraper.scrape([target(srv.port)], timeout=0.2)
        assert slow.error is not None and slow.error.kind is ScrapeErrorKind.TIMEOUT
        assert "within 0.2s" in str(slow.error)
        [fine] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
        assert fine.value == 20.0
        assert scraper._http.in_flight == 0
        # the half-answered connection was aborted
        await wait_until(srv.conns[0].reader.at_eof, "the abort seen by the server")


async def test_interim_100_continue_is_skipped() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n", ok())

    async with raw_server(handler) as srv, Scraper() as scraper:
        [outcome] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
    assert outcome.value == 20.0


async def test_concurrency_bound_holds_across_concurrent_calls() -> None:
    in_flight = peak = 0

    async def handler(conn: Conn) -> None:
        nonlocal in_flight, peak
        while await conn.read_request():
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            await conn.send(ok())

    async with raw_server(handler) as a, raw_server(handler) as b:
        async with Scraper(daemon=DaemonConfig(max_concurrent_scrapes=3)) as scraper:
            calls = [
                scraper.scrape([target(port)], timeout=TIMEOUT)
                for port in (a.port, b.port)
                for _ in range(4)
            ]
            results = await asyncio.gather(*calls)
            assert scraper._http.in_flight == 0
    assert all(r[0].value == 20.0 for r in results)
    assert peak == 3


async def test_close_during_a_request_reports_and_does_not_hang() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.reader.read()  # never answers

    async with raw_server(handler) as srv:
        scraper = Scraper()
        call = asyncio.ensure_future(scraper.scrape([target(srv.port)], timeout=3.0))
        await wait_until(lambda: bool(srv.conns) and srv.conns[0].requests == 1, "the request")
        await scraper.close()
        [outcome] = await asyncio.wait_for(call, 1.0)
        assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.CONNECT_FAILED
        assert "closed" in str(outcome.error)
        [after] = await scraper.scrape([target(srv.port)], timeout=1.0)
        assert after.error is not None and "closed" in str(after.error)


async def test_client_cancel_many_frees_slots() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.reader.read()  # never answers

    counters = Counters()
    client = HTTP11Client(max_in_flight=1, counters=counters)
    finished: list[Request] = []
    async with raw_server(handler) as srv:
        requests = [
            Request(
                host="127.0.0.1",
                port=srv.port,
                ssl=None,
                server_hostname=None,
                head=build_get("x", "/", []),
                limit=100,
                on_done=finished.append,
            )
            for _ in range(3)
        ]
        for r in requests:
            client.submit(r)
        await wait_until(lambda: bool(srv.conns) and srv.conns[0].requests == 1, "the request")
        assert client.in_flight == 1 and counters.connections_created == 1  # two queued
        client.cancel_many(requests)
        assert client.in_flight == 0 and all(r.finished for r in requests)
        await wait_until(lambda: client.open_connections == 0, "the connection aborted")
        assert finished == [] and len(srv.conns) == 1
    await client.close()


@pytest.fixture(scope="module")
def tls_server_context(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("h11") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx, str(ca_file)


async def test_tls_keep_alive_with_aiohttp_server_and_idle_timeout(
    tls_server_context: tuple[ssl.SSLContext, str],
) -> None:
    """Over TLS against aiohttp: reuse across rounds; after the server's keep-alive timeout
    closed the connection, exactly one new handshake."""
    server_ctx, ca_file = tls_server_context
    peers: list[tuple[str, int]] = []

    async def metrics(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[:2])
        return web.Response(body=PAGE, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False, keepalive_timeout=0.3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with Scraper() as scraper:
            t = target(port, https=True, tls=TLSConfig(ca_file=ca_file))
            for _ in range(3):
                [outcome] = await scraper.scrape([t], timeout=TIMEOUT)
                assert outcome.value == 20.0, outcome.error
            assert scraper.stats.connections_created == 1
            # the server's keep-alive timeout closes the connection, seen while idle
            await wait_until(lambda: scraper._http.idle_connections == 0, "the server's close")
            [outcome] = await scraper.scrape([t], timeout=TIMEOUT)
            assert outcome.value == 20.0, outcome.error
            assert scraper.stats.connections_created == 2
            assert scraper.stats.requests == 4  # no failed attempt: the close was seen idle
    finally:
        await runner.cleanup()
    assert len(set(peers)) == 2


async def test_unencodable_token_is_a_config_error(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\u20ac\u20ac", encoding="utf-8")
    src = MetricSource(
        protocol="http",
        port=1,
        path="/metrics",
        target_metric="go_threads",
        selector=SeriesSelector(metric="go_threads"),
        target_value=10.0,
        authorization=Authorization(credentials_file=str(token)),
    )
    async with Scraper() as scraper:
        [outcome] = await scraper.scrape(
            [ScrapeTarget(pod="p", ip="127.0.0.1", source=src)], timeout=TIMEOUT
        )
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.AUTH_CONFIG
    assert "latin-1" in str(outcome.error) and "t\u20ac" not in str(outcome.error)

"""Hostile and broken metrics endpoints (issue 11): none may let a wrong value through.

Every case is a real server on 127.0.0.1 that misbehaves in exactly one way: raw asyncio
servers for byte-exact HTTP, blocking `ssl` sockets in a thread for TLS streams whose end is
scripted (trustme certificates). Each test checks the classification and the fix in words,
and that no value is read from a page that is cut, malformed or not UTF-8.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import socket
import ssl
import threading
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trustme

from autoscalerd.config.model import DaemonConfig, MetricSource, SeriesSelector, TLSConfig
from autoscalerd.scrape.client import ScrapeOutcome, Scraper, ScrapeTarget
from autoscalerd.scrape.errors import ScrapeErrorKind
from autoscalerd.scrape.http11 import MAX_INTERIM_RESPONSES

PAGE = b"# TYPE go_threads gauge\ngo_threads 60\n"
TIMEOUT = 3.0
LIMIT = 256 * 1024

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bool:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    return True


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 running `handler` per connection; yields its port."""
    writers: list[asyncio.StreamWriter] = []
    handlers: set[asyncio.Task[object]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        pending = {t for t in handlers if not t.done()}
        if pending:  # the handlers end on their own once their connection is closed
            await asyncio.wait(pending, timeout=TIMEOUT)


def answer(response: bytes) -> Handler:
    """A handler that answers every request on a connection with `response`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(response)
            await writer.drain()

    return handler


def ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def target(port: int, *, https: bool = False, tls: TLSConfig = TLSConfig()) -> ScrapeTarget:
    src = MetricSource(
        protocol="https" if https else "http",
        port=port,
        path="/metrics",
        target_metric="go_threads",
        selector=SeriesSelector(metric="go_threads"),
        target_value=10.0,
        tls=tls,
    )
    return ScrapeTarget(pod="p", ip="127.0.0.1", source=src)


async def scrape_plain(handler: Handler) -> ScrapeOutcome:
    async with raw_server(handler) as port, Scraper() as scraper:
        [outcome] = await scraper.scrape([target(port)], timeout=TIMEOUT)
    return outcome


def failed(outcome: ScrapeOutcome, kind: ScrapeErrorKind) -> str:
    """Assert the outcome is a failure of `kind` with no value; return its message."""
    assert outcome.value is None, outcome
    assert outcome.error is not None and outcome.error.kind is kind, outcome.error
    assert "Fix: " in outcome.error.message, outcome.error
    return str(outcome.error)


# -- TLS: the end of a close-delimited body must be proven by close_notify ---------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("hostile") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@contextmanager
def tls_thread_server(script: Callable[[socket.socket], None]) -> Iterator[int]:
    """One TCP connection on 127.0.0.1 handed to `script` in a thread; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT * 2)

    def run() -> None:
        try:
            sock, _ = listener.accept()
            sock.settimeout(TIMEOUT * 2)
            with sock:
                script(sock)
        except OSError:
            pass  # the client gave up; the test's assertions say what counts

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(TIMEOUT * 3)


def tls_script(
    ca: trustme.CA, response: bytes, *, close_notify: bool
) -> Callable[[socket.socket], None]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)

    def script(sock: socket.socket) -> None:
        conn = ctx.wrap_socket(sock, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        conn.sendall(response)
        if close_notify:
            conn.unwrap()
        # else: the socket closes with a bare TCP FIN

    return script


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "bare-fin"])
async def test_tls_close_delimited_body_needs_close_notify(
    ca: trustme.CA, ca_file: str, close_notify: bool
) -> None:
    """RFC 9112 §9.8: a close-delimited body over TLS ends only with close_notify. The page
    is cut inside its last sample (`go_threads 6` of `60`): with a bare FIN it must not be
    read at all."""
    response = b"HTTP/1.0 200 OK\r\n\r\n" + (PAGE if close_notify else PAGE[:-2])
    with tls_thread_server(tls_script(ca, response, close_notify=close_notify)) as port:
        async with Scraper() as scraper:
            [outcome] = await scraper.scrape(
                [target(port, https=True, tls=TLSConfig(ca_file=ca_file))], timeout=TIMEOUT
            )
    if close_notify:
        assert outcome.value == 60.0, outcome.error
    else:
        message = failed(outcome, ScrapeErrorKind.TRUNCATED)
        assert "without close_notify" in message and "RFC 9112" in message


async def test_tls_peer_hanging_up_mid_handshake_is_a_handshake_failure() -> None:
    """The port accepts TCP, reads the ClientHello and hangs up: a TLS problem, not an
    unreachable pod."""

    def script(sock: socket.socket) -> None:
        data = b""
        while len(data) < 5:  # at least the TLS record header of the ClientHello
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk
        sock.shutdown(socket.SHUT_WR)  # FIN, mid-handshake
        sock.recv(4096)  # until the client closes

    with tls_thread_server(script) as port:
        async with Scraper() as scraper:
            [outcome] = await scraper.scrape(
                [target(port, https=True, tls=TLSConfig(insecure_skip_verify=True))],
                timeout=TIMEOUT,
            )
    message = failed(outcome, ScrapeErrorKind.TLS_HANDSHAKE)
    assert "during the TLS handshake" in message
    assert "pod IP is reachable" not in message
    assert "serves TLS" in message


# -- bodies: strict UTF-8, every gzip member, bounded -----------------------------------------


async def test_label_value_not_utf8_is_an_error_with_its_offset() -> None:
    body = b'# TYPE go_threads gauge\ngo_threads{pod="a\xff\xfeb"} 60\n'
    outcome = await scrape_plain(answer(ok(body)))
    message = failed(outcome, ScrapeErrorKind.MALFORMED_RESPONSE)
    offset = body.index(b"\xff")
    assert f"byte offset {offset} (line 2," in message
    assert "not valid UTF-8" in message
    assert "\ufffd" not in message


async def test_gzip_body_of_several_members_is_read_whole() -> None:
    """The series is in the second member: reading the first only would say it is absent."""
    first = gzip.compress(b"# TYPE go_threads gauge\n")
    second = gzip.compress(b"go_threads 60\n")
    third = gzip.compress(b"")
    outcome = await scrape_plain(answer(ok(first + second + third, b"Content-Encoding: gzip")))
    assert outcome.value == 60.0, outcome.error


async def test_gzip_members_past_the_limit_stop_at_the_limit() -> None:
    """A bomb of many members is bounded as one: the decompressed total counts."""
    member = gzip.compress(b"#" * (LIMIT // 4))
    body = b"".join([gzip.compress(b"go_threads 1\n"), *[member] * 64])  # 16x the limit
    async with raw_server(answer(ok(body, b"Content-Encoding: gzip"))) as port:
        async with Scraper(daemon=DaemonConfig(body_size_limit_bytes=LIMIT)) as scraper:
            [outcome] = await scraper.scrape([target(port)], timeout=TIMEOUT)
    assert outcome.value is None and outcome.error is not None
    assert outcome.error.kind is ScrapeErrorKind.TOO_LARGE, outcome.error


async def test_garbage_after_a_gzip_member_is_malformed() -> None:
    body = gzip.compress(b"go_threads 60\n") + b"not gzip at all"
    outcome = await scrape_plain(answer(ok(body, b"Content-Encoding: gzip")))
    assert "cannot decompress the gzip body" in failed(outcome, ScrapeErrorKind.MALFORMED_RESPONSE)


# -- heads: interim responses capped, obs-fold unfolded, garbage classified --------------------


@pytest.mark.parametrize("interim", [MAX_INTERIM_RESPONSES, MAX_INTERIM_RESPONSES + 1])
async def test_interim_responses_are_capped(interim: int) -> None:
    response = b"HTTP/1.1 100 Continue\r\n\r\n" * interim + ok(PAGE)
    outcome = await scrape_plain(answer(response))
    if interim <= MAX_INTERIM_RESPONSES:
        assert outcome.value == 60.0, outcome.error
    else:
        message = failed(outcome, ScrapeErrorKind.MALFORMED_RESPONSE)
        assert f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses" in message


async def test_endless_interim_responses_end_quickly() -> None:
    """A pod that streams `100 Continue` forever is cut at the cap, long before the deadline."""
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        while not writer.is_closing():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)
            sent += 100
            await writer.drain()

    outcome = await scrape_plain(handler)
    assert "interim (1xx)" in failed(outcome, ScrapeErrorKind.MALFORMED_RESPONSE)
    assert outcome.error is not None and outcome.error.kind is not ScrapeErrorKind.TIMEOUT


async def test_obsolete_folded_header_is_unfolded() -> None:
    """RFC 9112 §5.2: a client replaces obs-fold with SP; the folded field still counts."""
    response = (
        b"HTTP/1.1 200 OK\r\nX-Note: first\r\n  second\r\nContent-Length:\r\n\t%d\r\n\r\n"
        % len(PAGE)
        + PAGE
    )
    outcome = await scrape_plain(answer(response))
    assert outcome.value == 60.0, outcome.error


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", "not HTTP/1.1", id="ssh"),
        pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", "invalid status line", id="status-line"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
            "invalid Content-Length",
            id="two-lengths",
        ),
    ],
)
async def test_malformed_response_is_not_an_http_status(response: bytes, fragment: str) -> None:
    outcome = await scrape_plain(answer(response))
    message = failed(outcome, ScrapeErrorKind.MALFORMED_RESPONSE)
    assert fragment in message
    assert "serves plain HTTP" not in message and "protocolType" not in message


async def test_plain_http_to_a_tls_port_says_so(ca: trustme.CA) -> None:
    """A real TLS server answering our plain-HTTP request: the bytes are a TLS record."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the client speaks first; answer as a TLS server would
        writer.write(b"\x15\x03\x03\x00\x02\x02\x46")  # alert: fatal, protocol_version
        await writer.drain()

    outcome = await scrape_plain(handler)
    message = failed(outcome, ScrapeErrorKind.MALFORMED_RESPONSE)
    assert "protocolType: https" in message


# -- memory: a failed body is freed when its scrape ends ---------------------------------------


def endless_body() -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"4000\r\n" + b"#" * 0x4000 + b"\r\n"
        for _ in range(4 * LIMIT // len(chunk)):  # "endless": far past the limit, then stop
            writer.write(chunk)
            await writer.drain()

    return handler


def gzip_bomb() -> Handler:
    bomb = gzip.compress(b"go_threads 1\n" + b"#" * (8 * LIMIT))
    return answer(ok(bomb, b"Content-Encoding: gzip"))


def truncated() -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b"# x\n" * (LIMIT // 8) + PAGE
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + 10) + body)
        await writer.drain()

    return handler


SCRAPER_CODE = [tracemalloc.Filter(True, "*/autoscalerd/*", all_frames=True)]
"""Count only what the daemon's code allocated (the test's servers allocate too)."""

BUFFER_TYPES = (bytes, bytearray, memoryview)


async def test_failed_bodies_are_freed_when_their_scrape_ends() -> None:
    """After many hostile scrapes (endless body, gzip bomb, truncated, invalid UTF-8) the
    memory the scraper still holds does not grow with their number, and no body, parser,
    request or exception is left in a reference cycle: each failure's buffers (up to the
    body limit) go when its scrape ends, not when the cyclic collector runs."""
    hostile = [endless_body(), gzip_bomb(), truncated(), answer(ok(b"go_threads 1\xff\n"))]
    async with (
        raw_server(hostile[0]) as p0,
        raw_server(hostile[1]) as p1,
        raw_server(hostile[2]) as p2,
        raw_server(hostile[3]) as p3,
        Scraper(daemon=DaemonConfig(body_size_limit_bytes=LIMIT)) as scraper,
    ):
        targets = [target(port) for port in (p0, p1, p2, p3)]

        async def rounds(n: int) -> None:
            for _ in range(n):
                outcomes = await scraper.scrape(targets, timeout=TIMEOUT)
                assert all(o.value is None and o.error is not None for o in outcomes), outcomes
                assert [o.error.kind for o in outcomes if o.error] == [
                    ScrapeErrorKind.TOO_LARGE,
                    ScrapeErrorKind.TOO_LARGE,
                    ScrapeErrorKind.TRUNCATED,
                    ScrapeErrorKind.MALFORMED_RESPONSE,
                ]

        await rounds(3)  # warm caches, pools, the loop's free lists
        gc.collect()
        gc.disable()
        tracemalloc.start(12)
        try:
            await rounds(2)
            baseline = tracemalloc.take_snapshot().filter_traces(SCRAPER_CODE)
            await rounds(10)
            after = tracemalloc.take_snapshot().filter_traces(SCRAPER_CODE)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            garbage = list(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            tracemalloc.stop()
            gc.enable()
    # Each round reads 4 x LIMIT of body bytes; holding even one of them would show here.
    grown = sum(stat.size_diff for stat in after.compare_to(baseline, "filename"))
    assert grown < LIMIT // 4, f"{grown} bytes retained by the scraper after 10 hostile rounds"
    # asyncio's own transports leave a small cycle each (a bound method kept on the
    # transport); nothing of ours may be in one, least of all a buffer.
    ours = [o for o in garbage if type(o).__module__.startswith("autoscalerd")]
    held = sum(len(o) for o in garbage if isinstance(o, BUFFER_TYPES))
    errors = [o for o in garbage if isinstance(o, BaseException)]
    assert not ours and not errors, f"in reference cycles: {ours[:5]} {errors[:5]}"
    assert held < 4096, f"{held} bytes of buffers in reference cycles"


# -- the exposition rules, end to end through the scraper ---------------------------------------

OPENMETRICS = b"Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"


async def test_openmetrics_page_cut_before_eof_is_truncated() -> None:
    outcome = await scrape_plain(
        answer(ok(b"# TYPE go_threads gauge\ngo_threads 60\n", OPENMETRICS))
    )
    assert "# EOF" in failed(outcome, ScrapeErrorKind.TRUNCATED)


async def test_openmetrics_page_with_eof_is_read() -> None:
    outcome = await scrape_plain(
        answer(ok(b"# TYPE go_threads gauge\ngo_threads 60\n# EOF\n", OPENMETRICS))
    )
    assert outcome.error is None and outcome.value == 60


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(
            ok(b"# TYPE go_threads gauge\ngo_threads 6"), id="content-length-inside-the-line"
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\n\r\n# TYPE go_threads gauge\ngo_threads 6", id="http10-close"
        ),
    ],
)
async def test_page_cut_inside_its_last_sample_is_not_read(response: bytes) -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader):
            writer.write(response)
            await writer.drain()

    outcome = await scrape_plain(once)
    assert "go_threads 6" in failed(outcome, ScrapeErrorKind.TRUNCATED)


async def test_a_series_repeated_on_the_page_is_not_summed() -> None:
    outcome = await scrape_plain(answer(ok(b"go_threads 60\ngo_threads 60\n")))
    message = failed(outcome, ScrapeErrorKind.PARSE)
    assert "repeats the series of line 1" in message

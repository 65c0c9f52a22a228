"""The scrape client's own TLS layer (`ssl.SSLObject` over `MemoryBIO`s on plain TCP).

Servers here are blocking `ssl` sockets in a thread, scripted per test, so that the bytes on
the wire (a handshake in tiny fragments, close_notify or not, a hang-up mid-handshake, TLS 1.3
session tickets) are exactly what the test says.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import pytest
import trustme
from waiting import wait_until

from autoscalerd.config.model import MetricSource, SeriesSelector, TLSConfig
from autoscalerd.scrape.client import ScrapeOutcome, Scraper, ScrapeTarget
from autoscalerd.scrape.errors import ScrapeErrorKind
from autoscalerd.scrape.http11 import HTTP11Client, Request, build_get

PAGE = b"# TYPE go_threads gauge\ngo_threads 20\n"
TIMEOUT = 3.0


@dataclass(frozen=True)
class Certs:
    ca_file: str
    ca: trustme.CA
    client_cert: str
    client_key: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tmp = tmp_path_factory.mktemp("tls-layer")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    client = ca.issue_cert("scraper@example")
    client.cert_chain_pems[0].write_to_path(str(tmp / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp / "client.key"))
    return Certs(str(tmp / "ca.pem"), ca, str(tmp / "client.pem"), str(tmp / "client.key"))


def server_context(certs: Certs, name: str = "127.0.0.1") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.ca.issue_cert(name).configure_cert(ctx)
    return ctx


def ok(body: bytes = PAGE) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def read_request(conn: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


Script = Callable[[socket.socket], None]


@contextmanager
def thread_server(script: Script, *, connections: int = 1) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 whose accepted sockets are handed to `script` in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT * 2)
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(connections):
                sock, _ = listener.accept()
                sock.settimeout(TIMEOUT * 2)
                with sock:
                    script(sock)
        except (TimeoutError, OSError) as exc:  # the client gave up: the test says what counts
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(TIMEOUT * 3)


def source(port: int, tls: TLSConfig) -> MetricSource:
    return MetricSource(
        protocol="https",
        port=port,
        path="/metrics",
        target_metric="go_threads",
        selector=SeriesSelector(metric="go_threads"),
        target_value=10.0,
        tls=tls,
    )


def target(port: int, tls: TLSConfig, ip: str = "127.0.0.1") -> ScrapeTarget:
    return ScrapeTarget(pod="p", ip=ip, source=source(port, tls))


@asynccontextmanager
async def fragmenting_proxy(upstream: int, piece: int = 7) -> AsyncIterator[int]:
    """Forward TCP both ways, cutting each direction into `piece`-byte writes with pauses."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                for i in range(0, len(data), piece):
                    writer.write(data[i : i + piece])
                    await writer.drain()
                    await asyncio.sleep(0)
        except ConnectionError:
            pass
        finally:
            writer.close()

    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)  # asyncio's server does not stop its client handlers
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def serve_requests(
    ctx: ssl.SSLContext, responses: int, *, end: str = "close_notify", response: bytes = ok()
) -> Script:
    def script(sock: socket.socket) -> None:
        conn = ctx.wrap_socket(sock, server_side=True)
        for _ in range(responses):
            if not read_request(conn):
                return
            conn.sendall(response)
        if end == "close_notify":
            conn.unwrap()
        # else: the socket is closed with no close_notify

    return script


async def scrape_once(script: Script, certs: Certs) -> ScrapeOutcome:
    """Scrape one page from a server running `script`, verifying against the test CA."""
    with thread_server(script) as port:
        async with Scraper() as scraper:
            [outcome] = await scraper.scrape(
                [target(port, TLSConfig(ca_file=certs.ca_file))], timeout=TIMEOUT
            )
    return outcome


async def test_handshake_and_response_in_tiny_fragments(certs: Certs) -> None:
    """Every TLS record (handshake, tickets, data) arrives in 7-byte pieces; both TLS 1.3
    (with its post-handshake session tickets) and TLS 1.2."""
    for maximum in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = server_context(certs)
        ctx.maximum_version = maximum
        with thread_server(serve_requests(ctx, 3)) as port:
            async with fragmenting_proxy(port) as proxy:
                async with Scraper() as scraper:
                    t = target(proxy, TLSConfig(ca_file=certs.ca_file))
                    for _ in range(3):
                        [outcome] = await scraper.scrape([t], timeout=TIMEOUT)
                        assert outcome.value == 20.0, outcome.error
                    assert scraper.stats.connections_created == 1
                    assert scraper.stats.requests == 3


async def test_tls13_session_tickets_sent_late_are_consumed(certs: Certs) -> None:
    """The tickets come only after the first response: the idle connection stays usable."""
    ctx = server_context(certs)
    ctx.num_tickets = 0  # no tickets with the handshake...

    def script(sock: socket.socket) -> None:
        conn = ctx.wrap_socket(sock, server_side=True)
        assert conn.version() == "TLSv1.3"
        for _ in range(2):
            read_request(conn)
            conn.sendall(ok())
        conn.unwrap()

    with thread_server(script) as port:
        async with Scraper() as scraper:
            t = target(port, TLSConfig(ca_file=certs.ca_file))
            for _ in range(2):
                [outcome] = await scraper.scrape([t], timeout=TIMEOUT)
                assert outcome.value == 20.0, outcome.error
            assert scraper.stats.connections_created == 1


@pytest.mark.parametrize("end", ["close_notify", "abrupt"])
async def test_close_delimited_body_with_and_without_close_notify(certs: Certs, end: str) -> None:
    """A TLS stream ended by a bare TCP FIN proves nothing about the end of a close-delimited
    body (RFC 9112 §9.8): only close_notify does."""
    response = b"HTTP/1.0 200 OK\r\n\r\n" + PAGE
    outcome = await scrape_once(
        serve_requests(server_context(certs), 1, end=end, response=response), certs
    )
    if end == "close_notify":
        assert outcome.value == 20.0, outcome.error
    else:
        assert outcome.value is None and outcome.error is not None
        assert outcome.error.kind is ScrapeErrorKind.TRUNCATED, outcome.error
        assert "without close_notify" in str(outcome.error)


async def test_bodies_of_many_records_then_close_notify_in_the_same_read(certs: Certs) -> None:
    """Bodies of one, two and dozens of TLS records on one kept-alive connection (more than the
    feeding slice and the shared plaintext buffer hold), then a close-delimited body whose
    close_notify arrives with it: every byte reaches the parser, in order, before the end."""
    ctx = server_context(certs)
    bodies = [bytes(range(256)) * (size // 256) for size in (4096, 20480, 300 * 1024)]
    last = b"tail-" * 20000

    def script(sock: socket.socket) -> None:
        conn = ctx.wrap_socket(sock, server_side=True)
        for body in bodies:
            read_request(conn)
            conn.sendall(ok(body))
        read_request(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + last)
        conn.unwrap()

    with thread_server(script) as port:
        counters = _Counters()
        client = HTTP11Client(max_in_flight=1, counters=counters)
        context = ssl.create_default_context(cafile=certs.ca_file)
        loop = asyncio.get_running_loop()
        try:
            for expected in [*bodies, last]:
                future: asyncio.Future[Request] = loop.create_future()
                client.submit(
                    Request(
                        host="127.0.0.1",
                        port=port,
                        ssl=context,
                        server_hostname=None,
                        head=build_get("x", "/metrics", []),
                        limit=1 << 20,
                        on_done=future.set_result,
                    )
                )
                request = await asyncio.wait_for(future, TIMEOUT)
                assert request.error is None, request.error
                assert request.parser is not None and request.parser.body == expected
            assert counters.connections_created == 1
        finally:
            await client.close()


@pytest.mark.parametrize("end", ["close_notify", "abrupt"])
async def test_close_in_the_middle_of_a_body_is_a_truncation(certs: Certs, end: str) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + PAGE
    outcome = await scrape_once(
        serve_requests(server_context(certs), 1, end=end, response=response), certs
    )
    assert outcome.error is not None
    assert outcome.error.kind is ScrapeErrorKind.TRUNCATED, outcome.error
    assert "bytes before the end of the body" in str(outcome.error)


async def test_idle_close_notify_drops_the_connection_without_a_failed_request(
    certs: Certs,
) -> None:
    ctx = server_context(certs)
    with thread_server(serve_requests(ctx, 1), connections=2) as port:
        async with Scraper() as scraper:
            t = target(port, TLSConfig(ca_file=certs.ca_file))
            [outcome] = await scraper.scrape([t], timeout=TIMEOUT)
            assert outcome.value == 20.0, outcome.error
            await wait_until(lambda: scraper._http.idle_connections == 0, "the close_notify seen")
            [outcome] = await scraper.scrape([t], timeout=TIMEOUT)
            assert outcome.value == 20.0, outcome.error
            assert scraper.stats.connections_created == 2
            assert scraper.stats.requests == 2  # the close was seen idle: no retry needed


@pytest.mark.parametrize("after", [0, 1])
async def test_server_hangs_up_during_the_handshake(after: int) -> None:
    """Closed right away, or after reading part of the ClientHello: a failure, no hang."""

    def script(sock: socket.socket) -> None:
        if after:
            sock.recv(after)

    with thread_server(script) as port:
        async with Scraper() as scraper:
            [outcome] = await scraper.scrape(
                [target(port, TLSConfig(insecure_skip_verify=True))], timeout=TIMEOUT
            )
    assert outcome.error is not None
    # A TLS problem, not an unreachable pod: TCP connected, the handshake did not finish.
    assert outcome.error.kind is ScrapeErrorKind.TLS_HANDSHAKE, outcome.error
    assert "during the TLS handshake" in str(outcome.error)
    assert "reachable" not in str(outcome.error)


async def test_server_silent_during_the_handshake_is_bounded_by_the_deadline() -> None:
    def script(sock: socket.socket) -> None:
        sock.recv(4096)
        sock.recv(1)  # until the client gives up

    with thread_server(script) as port:
        async with Scraper() as scraper:
            [outcome] = await scraper.scrape(
                [target(port, TLSConfig(insecure_skip_verify=True))], timeout=0.3
            )
    # The server never answers and holds the socket open far longer (TIMEOUT * 2): only the
    # scrape's own deadline can have ended the wait.
    assert outcome.error is not None and outcome.error.kind is ScrapeErrorKind.TIMEOUT
    assert "within 0.3s" in str(outcome.error)


async def test_verification_failure_keeps_the_ssl_exception(certs: Certs) -> None:
    """The raw error is `ssl.SSLCertVerificationError` with its verify code (IP SAN check)."""
    ctx = server_context(certs, name="pod.example")
    with thread_server(serve_requests(ctx, 1)) as port:
        counters = _Counters()
        client = HTTP11Client(max_in_flight=1, counters=counters)
        context = ssl.create_default_context(cafile=certs.ca_file)
        done = asyncio.get_running_loop().create_future()
        request = Request(
            host="127.0.0.1",
            port=port,
            ssl=context,
            server_hostname=None,
            head=build_get("127.0.0.1", "/metrics", []),
            limit=1 << 20,
            on_done=done.set_result,
        )
        client.submit(request)
        await asyncio.wait_for(done, TIMEOUT)
        await client.close()
    assert isinstance(request.error, ssl.SSLCertVerificationError), request.error
    assert request.error.verify_code == 64  # X509_V_ERR_IP_ADDRESS_MISMATCH
    assert "IP address mismatch" in request.error.verify_message
    assert request.connecting


async def test_server_name_sent_and_verified(certs: Certs) -> None:
    ctx = server_context(certs, name="pod.example")
    seen: list[str | None] = []
    ctx.sni_callback = lambda sock, name, _ctx: seen.append(name)  # type: ignore[assignment,misc]
    with thread_server(serve_requests(ctx, 1)) as port:
        async with Scraper() as scraper:
            tls = TLSConfig(ca_file=certs.ca_file, server_name="pod.example")
            [outcome] = await scraper.scrape([target(port, tls)], timeout=TIMEOUT)
    assert outcome.value == 20.0, outcome.error
    assert seen == ["pod.example"]


async def test_mtls_client_certificate_presented(certs: Certs) -> None:
    ctx = server_context(certs)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(certs.ca_file)
    peers: list[object] = []

    def script(sock: socket.socket) -> None:
        conn = ctx.wrap_socket(sock, server_side=True)
        peers.append(conn.getpeercert())
        read_request(conn)
        conn.sendall(ok())
        conn.unwrap()

    with thread_server(script) as port:
        async with Scraper() as scraper:
            tls = TLSConfig(
                ca_file=certs.ca_file, cert_file=certs.client_cert, key_file=certs.client_key
            )
            [outcome] = await scraper.scrape([target(port, tls)], timeout=TIMEOUT)
    assert outcome.value == 20.0, outcome.error
    assert peers and peers[0]


async def test_min_version_refused_by_an_older_server(certs: Certs) -> None:
    ctx = server_context(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def script(sock: socket.socket) -> None:
        try:
            ctx.wrap_socket(sock, server_side=True)
        except ssl.SSLError:
            pass

    with thread_server(script) as port:
        async with Scraper() as scraper:
            tls = TLSConfig(ca_file=certs.ca_file, min_version="TLS13")
            [outcome] = await scraper.scrape([target(port, tls)], timeout=TIMEOUT)
    assert outcome.error is not None
    assert outcome.error.kind is ScrapeErrorKind.TLS_HANDSHAKE, outcome.error
    assert "minVersion" in str(outcome.error)


class _Counters:
    requests = 0
    connections_created = 0
    late_kept = 0
    late_dropped = 0


async def test_kept_alive_tls_connections_hold_no_python_buffers(certs: Certs) -> None:
    """Per kept-alive TLS connection, Python-side memory stays small (asyncio's SSL layer held
    a 256 KiB buffer each). Not timed: counts allocations only."""
    n = 40
    ctx = server_context(certs)
    listener = socket.create_server(("127.0.0.1", 0), backlog=n + 1)
    listener.settimeout(TIMEOUT * 2)
    port = listener.getsockname()[1]
    stop = threading.Event()
    conns: list[ssl.SSLSocket] = []

    def serve_one(sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT * 2)
        try:
            conn = ctx.wrap_socket(sock, server_side=True)
            conns.append(conn)
            while not stop.is_set() and read_request(conn):
                conn.sendall(ok(PAGE * 500))  # ~19 KiB: more than one TLS record
        except OSError:
            pass

    def accept() -> None:
        for _ in range(n + 1):
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    client = HTTP11Client(max_in_flight=n, counters=_Counters())
    loop = asyncio.get_running_loop()

    async def fetch_all(contexts: list[ssl.SSLContext]) -> None:
        futures: list[asyncio.Future[Request]] = []
        for context in contexts:  # one context object per pool key: one connection each
            future: asyncio.Future[Request] = loop.create_future()
            client.submit(
                Request(
                    host="127.0.0.1",
                    port=port,
                    ssl=context,
                    server_hostname=None,
                    head=build_get("x", "/metrics", []),
                    limit=1 << 20,
                    on_done=future.set_result,
                )
            )
            futures.append(future)
        for request in await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT * 2):
            assert request.error is None, request.error
            assert request.parser is not None and len(request.parser.body) > 16384

    try:
        await fetch_all([ssl.create_default_context(cafile=certs.ca_file)])  # warm-up
        contexts = [ssl.create_default_context(cafile=certs.ca_file) for _ in range(n)]
        tracemalloc.start()
        await fetch_all(contexts)
        await fetch_all(contexts)  # reused: no new connection, no growth per round
        gc.collect()  # each test Request and its future form a cycle (on_done=set_result)
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*autoscalerd/scrape/*")]
        )
        tracemalloc.stop()
        held = sum(stat.size for stat in snapshot.statistics("filename"))
        assert client.idle_connections == n + 1
        # What the client's own code still holds, per kept-alive connection (the server
        # threads share this process, so the total is not counted): was > 256 KiB with
        # asyncio's SSLProtocol buffer.
        assert held / n < 8 * 1024, held / n
    finally:
        stop.set()
        await client.close()
        listener.close()
        for conn in conns:
            conn.close()

"""A scrape past its deadline is a timeout, but its connection is not thrown away.

The late answer (or the TLS handshake still under way) gets a grace of one more timeout: it is
read to its end, kept nowhere, and the connection goes back to the pool, so the next round
needs no new connection. Past the grace, or when it fails, the connection is closed. Real
servers on loopback: raw asyncio ones for byte-exact control, a thread with a blocking TLS
socket for a handshake that waits.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable

import pytest
import trustme
from test_http11_client import TIMEOUT, Conn, Counters, ok, raw_server, target
from waiting import wait_until

from autoscalerd.config.model import DaemonConfig, TLSConfig
from autoscalerd.scrape.budget import FREE_BODY_ALLOWANCE_BYTES
from autoscalerd.scrape.client import Scraper
from autoscalerd.scrape.errors import ScrapeErrorKind
from autoscalerd.scrape.http11 import HTTP11Client, Request, build_get

LATE = 0.2
"""The scrape timeout of these tests: the server answers only after it has passed."""


def timed_out(outcome: object) -> bool:
    error = getattr(outcome, "error", None)
    return error is not None and error.kind is ScrapeErrorKind.TIMEOUT


def answers_after(release: asyncio.Event) -> Callable[[Conn], Awaitable[None]]:
    """A server that answers its first request once `release` is set (after the scrape gave
    up), and every later one at once."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await release.wait()
        await conn.send(ok())
        while await conn.read_request():
            await conn.send(ok())

    return handler


async def test_a_late_answer_keeps_its_connection_for_the_next_round() -> None:
    release = asyncio.Event()
    async with raw_server(answers_after(release)) as srv, Scraper() as scraper:
        [first] = await scraper.scrape([target(srv.port)], timeout=LATE)
        assert timed_out(first), first
        assert scraper.stats.late_kept == 0
        release.set()
        await wait_until(lambda: scraper.stats.late_kept == 1, "the late answer read")
        [second] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
        assert second.value == 20.0, second.error
        assert len(srv.conns) == 1 and srv.conns[0].requests == 2
        assert scraper.stats.connections_created == 1 and scraper.stats.late_dropped == 0


async def test_an_answer_later_than_the_grace_closes_its_connection() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.reader.read()  # never answers; returns at the client's close

    async with raw_server(handler) as srv, Scraper() as scraper:
        [outcome] = await scraper.scrape([target(srv.port)], timeout=LATE)
        assert timed_out(outcome), outcome
        await wait_until(lambda: scraper.stats.late_dropped == 1, "the grace to run out")
        await wait_until(lambda: srv.conns[0].reader.at_eof(), "the connection closed")
        assert scraper.stats.late_kept == 0
        [again] = await scraper.scrape([target(srv.port)], timeout=LATE)
        assert timed_out(again)
        assert scraper.stats.connections_created == 2


async def test_a_late_answer_that_fails_closes_its_connection() -> None:
    release = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await release.wait()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut")  # then closes

    async with raw_server(handler) as srv, Scraper() as scraper:
        [outcome] = await scraper.scrape([target(srv.port)], timeout=LATE)
        assert timed_out(outcome), outcome
        release.set()
        await wait_until(lambda: scraper.stats.late_dropped == 1, "the cut answer")
        assert scraper.stats.late_kept == 0


async def test_a_drained_answer_keeps_nothing_of_its_body() -> None:
    """A large late body gives its share of the body budget back at the deadline, and is read
    to its end without being kept; the connection is then reused."""
    size = 3 * FREE_BODY_ALLOWANCE_BYTES
    page = b"go_threads 20\n" + b"#" * (size - 15) + b"\n"
    release = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        response = ok(page)
        await conn.send(response[: len(response) - 1000])
        await release.wait()
        await conn.send(response[len(response) - 1000 :])
        while await conn.read_request():
            await conn.send(ok())

    daemon = DaemonConfig(body_size_limit_bytes=8 * FREE_BODY_ALLOWANCE_BYTES)
    async with raw_server(handler) as srv, Scraper(daemon=daemon) as scraper:
        [outcome] = await scraper.scrape([target(srv.port)], timeout=0.5)
        assert timed_out(outcome), outcome
        assert scraper.body_budget.peak > 0, "the body was past the free allowance"
        assert scraper.body_budget.reserved == 0, "a drained answer holds no budget"
        release.set()
        await wait_until(lambda: scraper.stats.late_kept == 1, "the late body read")
        assert scraper.body_budget.reserved == 0
        [second] = await scraper.scrape([target(srv.port)], timeout=TIMEOUT)
        assert second.value == 20.0, second.error
        assert len(srv.conns) == 1


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, str]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("late") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


async def test_a_late_handshake_is_finished_and_its_connection_kept(
    ca_file: tuple[trustme.CA, str],
) -> None:
    """The server accepts TCP but starts TLS only after the scrape gave up: the handshake
    finishes in the grace and the next round uses that connection, with no new one."""
    ca, path = ca_file
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT * 2)
    go = threading.Event()
    accepted = threading.Event()
    served: list[int] = []

    def run() -> None:
        try:
            sock, _ = listener.accept()
            accepted.set()
            sock.settimeout(TIMEOUT * 2)
            go.wait(TIMEOUT * 2)
            with ctx.wrap_socket(sock, server_side=True) as conn:
                data = b""
                while True:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                    while b"\r\n\r\n" in data:
                        _, data = data.split(b"\r\n\r\n", 1)
                        served.append(1)
                        conn.sendall(ok())
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    tls = TLSConfig(ca_file=path)
    try:
        async with Scraper() as scraper:
            [first] = await scraper.scrape([target(port, https=True, tls=tls)], timeout=LATE)
            assert timed_out(first), first
            assert accepted.is_set()
            go.set()
            await wait_until(lambda: scraper.stats.late_kept == 1, "the late handshake")
            assert served == [], "the given-up request is not sent"
            [second] = await scraper.scrape([target(port, https=True, tls=tls)], timeout=TIMEOUT)
            assert second.value == 20.0, second.error
            assert scraper.stats.connections_created == 1 and served == [1]
    finally:
        go.set()
        listener.close()
        await asyncio.to_thread(thread.join, TIMEOUT * 3)


def silent_request(port: int) -> Request:
    return Request(
        host="127.0.0.1",
        port=port,
        ssl=None,
        server_hostname=None,
        head=build_get("x", "/", []),
        limit=100,
        on_done=lambda _: pytest.fail("on_done of a request given up"),
    )


async def test_at_most_max_in_flight_drains_the_rest_are_closed_and_close_ends_them() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.reader.read()  # never answers

    counters = Counters()
    client = HTTP11Client(max_in_flight=1, counters=counters)
    async with raw_server(handler) as one, raw_server(handler) as two:
        first = silent_request(one.port)
        client.submit(first)
        await wait_until(lambda: len(one.conns) == 1 and one.conns[0].requests == 1, "first")
        client.cancel_many([first], grace=60.0)
        assert client.in_flight == 0 and client.draining == 1 and first.finished
        second = silent_request(two.port)
        client.submit(second)
        await wait_until(lambda: len(two.conns) == 1 and two.conns[0].requests == 1, "second")
        client.cancel_many([second], grace=60.0)
        assert client.draining == 1, "drains are capped at max_in_flight"
        await wait_until(lambda: two.conns[0].reader.at_eof(), "the second connection closed")
        assert not one.conns[0].reader.at_eof(), "the first one still waits for its answer"
        await client.close()
        assert client.draining == 0 and counters.late_dropped == 1
        await wait_until(lambda: one.conns[0].reader.at_eof(), "the first connection closed")


async def test_the_next_round_waits_for_a_late_answer_instead_of_opening_a_connection() -> None:
    """The next round starts while the late answer is still coming: its request waits for
    that connection rather than paying a new connection (and TLS handshake) for it."""
    release = asyncio.Event()
    async with raw_server(answers_after(release)) as srv, Scraper() as scraper:
        [first] = await scraper.scrape([target(srv.port)], timeout=LATE)
        assert timed_out(first), first
        second = asyncio.ensure_future(scraper.scrape([target(srv.port)], timeout=TIMEOUT))
        await asyncio.sleep(0)  # the second round's request is out (waiting for the first)
        release.set()
        [outcome] = await second
        assert outcome.value == 20.0, outcome.error
        assert len(srv.conns) == 1 and srv.conns[0].requests == 2
        assert scraper.stats.connections_created == 1 and scraper.stats.late_kept == 1


async def test_a_request_waiting_for_a_late_answer_that_fails_opens_its_own() -> None:
    release = asyncio.Event()

    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.read_request()
            await release.wait()  # then closes without answering
            return
        while await conn.read_request():
            await conn.send(ok())

    async with raw_server(handler) as srv, Scraper() as scraper:
        [first] = await scraper.scrape([target(srv.port)], timeout=LATE)
        assert timed_out(first), first
        second = asyncio.ensure_future(scraper.scrape([target(srv.port)], timeout=TIMEOUT))
        await wait_until(lambda: scraper._http.in_flight == 1, "the second request out")
        assert len(srv.conns) == 1, "it waits for the first connection"
        release.set()
        [outcome] = await second
        assert outcome.value == 20.0, outcome.error
        assert len(srv.conns) == 2 and scraper.stats.late_dropped == 1


async def test_a_waiting_request_past_its_own_deadline_is_a_timeout_and_close_is_clean() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.reader.read()  # never answers

    async with raw_server(handler) as srv:
        scraper = Scraper()
        [first] = await scraper.scrape([target(srv.port)], timeout=LATE)
        [second] = await scraper.scrape([target(srv.port)], timeout=LATE / 2)
        assert timed_out(first) and timed_out(second)
        assert len(srv.conns) == 1, "the second waited for the first's connection"
        assert scraper._http.in_flight == 0
        await scraper.close()
        assert scraper._http.draining == 0

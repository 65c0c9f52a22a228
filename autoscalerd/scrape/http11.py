"""A minimal HTTP/1.1 keep-alive client for the scrape hot path, on `asyncio.Protocol`.

It implements exactly what scraping needs and nothing else: one prebuilt GET per page, a pool
of kept-alive connections per (host, port, SSL context, server_hostname), and a response parser
for a status line, headers, a Content-Length or chunked body, and gzip/deflate decompression
bounded *after* decompression. It exists because aiohttp's general-purpose request machinery
(request/response objects, header multidicts, stream readers, a task per request) was ~70 % of
the scraper's CPU at 200 targets per second; see bench/README-scrape.md for the profile.

This module is the pool (`HTTP11Client`) and the request (`Request`); the pure response parser
is scrape/response_parser.py and the connection (TCP or TLS over memory BIOs) is
scrape/connection.py, which talks to the pool through `ConnectionOwner`. Their public names are
re-exported here.

Design:
- **No task per request.** `HTTP11Client.submit()` writes the request on an idle connection
  right away (or queues it while `max_in_flight` requests are out) and the protocol's
  `data_received` feeds `ResponseParser`; completion is a plain callback (`Request.on_done`).
  A task exists only while a new connection is opened (TCP connect + TLS handshake).
- **No timers per request.** The caller owns the deadline (the scraper uses one `call_at` per
  round) and calls `cancel_many()` for the requests still out. Without a grace period their
  connections are aborted, because a connection with an unanswered request cannot be reused.
- **Late answers keep their connection.** With `cancel_many(..., grace=G)` a request given up
  is *drained* instead: its late response is still read (and dropped) for up to G seconds,
  and a handshake still under way is let finish, after which the connection goes back to the
  pool. Aborting at the deadline turned a server that was slow for a moment (or a daemon
  starved of CPU) into a new TCP connection and TLS handshake per late scrape on the next
  round, on both sides: more CPU, more late scrapes, a spiral. A new request for a key whose
  connections are all draining waits for one of them (it gets the connection when the late
  answer ends, or opens its own if the drain fails) instead of opening a second one. A drain
  holds no concurrency slot; at most `max_in_flight` run at once (past that, abort as before)
  and one timer per batch aborts those still out when their grace ends.
- **Stale connections.** A server may close an idle kept-alive connection at any time. Closes
  seen while idle drop the connection from the pool; one that races with our request (the
  request went out on a reused connection and the connection failed before any response
  byte) is retried once on a fresh connection, which is safe for GET.
- **Limits.** The header section is bounded (`MAX_HEAD_BYTES`), the body is bounded by the
  caller's limit counted after decompression (decompression stops one byte past the limit, so a
  gzip bomb costs at most the limit), and a non-200 body is read only up to
  `ERROR_BODY_CAP_BYTES` (the caller quotes the start of it), then the connection is dropped.
- **One budget for large bodies.** With a `BodyBudget` (scrape/budget.py), each response's
  parser reserves the bytes past the free allowance from it. A request ends in one of two
  places, `finish` (complete, failed, client closed) and `cancel_many` (the caller gave up).
  There a failed or abandoned response's buffers are dropped and its reservation given back
  (`_release`); a complete one's is given back after `on_done`, which may take it over with
  the body (`ResponseParser.take_reservation`). Releasing is idempotent (the parser zeroes
  what it held), so a path that ends a request twice cannot give back twice.

About 630 lines: the pool and the request lifecycle (queueing, reuse, retry of a GET that
received nothing, cancellation, drains and the requests waiting for them, the body budget's
release) share one state; the response parser, the connection and the one-off exchange of
the failure diagnosis (scrape/oneshot.py) are their own modules.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from autoscalerd.errors import AutoscalerdError
from autoscalerd.scrape.budget import BodyBudget, BodyBudgetExhausted
from autoscalerd.scrape.connection import (
    PLAIN_BUFFER_BYTES,
    RECV_BUFFER_BYTES,
    Connection,
    HandshakeDisconnected,
)
from autoscalerd.scrape.response_parser import (
    ERROR_BODY_CAP_BYTES,
    MAX_HEAD_BYTES,
    MAX_INTERIM_RESPONSES,
    BodyTooLarge,
    HTTPProtocolError,
    ResponseParser,
    ServerDisconnected,
    TruncatedResponse,
)

__all__ = [
    "ERROR_BODY_CAP_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_INTERIM_RESPONSES",
    "BodyBudget",
    "BodyBudgetExhausted",
    "BodyTooLarge",
    "ClientClosed",
    "Counters",
    "HTTP11Client",
    "HTTPProtocolError",
    "HandshakeDisconnected",
    "PoolKey",
    "Request",
    "ResponseParser",
    "ServerDisconnected",
    "TruncatedResponse",
    "build_get",
    "consume_handshake",
    "drop_tracebacks",
]

PoolKey = tuple[str, int, Any, str | None]
"""(host, port, ssl.SSLContext or None, server_hostname): what makes connections shareable.

The SSL context is compared by identity (SSLContext has no value equality), which is what we
want: `TLSContextCache` hands out one object per distinct setting, and a rebuilt context (a
rotated certificate) gets fresh connections."""


class ClientClosed(RuntimeError, AutoscalerdError):
    """The client was closed while the request was pending, or before it was submitted."""


def build_get(host_header: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The bytes of a keep-alive `GET target HTTP/1.1` with a Host header and `headers`.

    Raises ValueError if any part contains CR, LF or NUL (header injection) or a character
    outside latin-1.
    """
    lines = [f"GET {target} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if any(c in line for line in lines for c in "\r\n\0"):
        raise ValueError("request line or header contains a control character")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"request line or header is not latin-1 text: {exc.reason}") from exc


class _State(enum.Enum):
    NEW = 0
    QUEUED = 1
    CONNECTING = 2
    SENT = 3
    DRAINING = 4
    WAITING = 5
    DONE = 6


class Counters(Protocol):
    """Where the client counts requests sent, connections opened and drains (`ScrapeStats`)."""

    requests: int
    connections_created: int
    late_kept: int
    """Requests given up with a grace whose late answer (or handshake) completed in it: their
    connection went back to the pool."""
    late_dropped: int
    """Requests given up with a grace that still failed or ran out of it: connection closed."""


class Request:
    """One GET to send: where, the prebuilt bytes, the body limit, and the completion callback.

    `on_done(request)` is called exactly once, unless the request is cancelled: then `parser`
    holds the response (`error is None`) or `error` the exception (`connecting` says whether it
    happened while opening a new connection: TCP connect or TLS handshake). `context` is free
    for the caller.
    """

    __slots__ = (
        "_conn",
        "_state",
        "_task",
        "connecting",
        "context",
        "error",
        "head",
        "host",
        "key",
        "limit",
        "on_done",
        "parser",
        "port",
        "retried",
        "reused",
        "server_hostname",
        "ssl",
    )

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ssl: Any,
        server_hostname: str | None,
        head: bytes,
        limit: int,
        on_done: Callable[[Request], None],
        context: Any = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.key: PoolKey = (host, port, ssl, server_hostname)
        self.head = head
        self.limit = limit
        self.on_done = on_done
        self.context = context
        self.parser: ResponseParser | None = None
        self.error: BaseException | None = None
        self.connecting = False
        self.reused = False
        self.retried = False
        self._state = _State.NEW
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        """Complete, failed or given up: `on_done` has been called or never will be."""
        return self._state is _State.DONE or self._state is _State.DRAINING


class HTTP11Client:
    """Send `Request`s over pooled keep-alive connections, at most `max_in_flight` at once.

    With a `budget`, every response's body past the budget's allowance is reserved from it.
    """

    def __init__(
        self, *, max_in_flight: int, counters: Counters, budget: BodyBudget | None = None
    ) -> None:
        self._max = max(1, max_in_flight)
        self._counters = counters
        self._budget = budget
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._conns: set[Connection] = set()
        self._queue: deque[Request] = deque()
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining: dict[Request, float] = {}
        """Requests given up with a grace, and the loop time their grace ends."""
        self._drains_by_key: dict[PoolKey, int] = {}
        self._waiting: dict[PoolKey, deque[Request]] = {}
        """Requests for a key whose connections are all draining: each waits for one."""
        self._drain_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.recv_view = memoryview(bytearray(RECV_BUFFER_BYTES))
        self.plain_view = memoryview(bytearray(PLAIN_BUFFER_BYTES))

    @property
    def in_flight(self) -> int:
        return self._active

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    @property
    def draining(self) -> int:
        """Requests given up whose late answer or handshake is still awaited."""
        return len(self._draining)

    # -- submit / complete --------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Send `request` now if a slot is free, else queue it; must run inside the loop."""
        if self._closed:
            raise ClientClosed("the HTTP client is closed")
        if self._active < self._max:
            self._start(request)
        else:
            request._state = _State.QUEUED
            self._queue.append(request)

    def _start(self, request: Request) -> None:
        self._active += 1
        self._assign(request)

    def _assign(self, request: Request) -> None:
        """Send on an idle connection; else wait for a draining one; else open one."""
        key = request.key
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                if not idle:
                    del self._idle[key]
                request.reused = True
                self._send(conn, request)
                return
        if idle is not None:
            del self._idle[key]
        drains = self._drains_by_key.get(key, 0)
        if drains:
            waiting = self._waiting.get(key)
            if waiting is None:
                self._waiting[key] = waiting = deque()
            if len(waiting) < drains:
                # A late answer is still coming on this key's connection: its end frees the
                # connection (or the grace ends); don't open a second one meanwhile.
                request._state = _State.WAITING
                waiting.append(request)
                return
        self._connect(request)

    def _send(self, conn: Connection, request: Request) -> None:
        self._counters.requests += 1
        request._state = _State.SENT
        request._conn = conn
        request.connecting = False
        request.parser = ResponseParser(request.limit, self._budget)
        conn.request = request
        try:
            conn.send(request.head)
        except (ssl.SSLError, OSError, ValueError) as exc:
            # The TLS layer refused (e.g. the server's close_notify arrived first); nothing
            # reached the server, so a reused connection is retried like a stale one.
            conn.request = None
            conn.abort()
            self.finish(request, exc if isinstance(exc, OSError) else ServerDisconnected(exc))

    def _connect(self, request: Request) -> None:
        self._counters.connections_created += 1
        request.reused = False
        request.connecting = True
        request._state = _State.CONNECTING
        request._conn = None
        task = asyncio.get_running_loop().create_task(self._open(request))
        request._task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, request: Request) -> None:
        """TCP connect, then (for https) the TLS handshake run by the protocol itself."""
        loop = asyncio.get_running_loop()
        conn: Connection | None = None
        try:
            conn = Connection(
                self,
                request.key,
                request.ssl,
                (request.server_hostname or request.host) if request.ssl else None,
            )
            await loop.create_connection(lambda: conn, request.host, request.port)
            if conn.handshake is not None:
                await conn.handshake
        except asyncio.CancelledError:
            if conn is not None:
                conn.abort()  # the handshake may have finished just before the cancellation
                consume_handshake(conn.handshake)
            self.finish(request, ClientClosed("the HTTP client was closed"))  # no-op if DONE
            raise
        except Exception as exc:
            request._task = None
            if conn is not None:
                conn.abort()
                consume_handshake(conn.handshake)
            self.finish(request, exc)
            return
        request._task = None
        if request._state is _State.DRAINING:
            # Given up while connecting: the handshake is paid for, keep the connection.
            if self._closed or conn.closed:
                conn.abort()
                self._end_drain(request, kept=False)
            else:
                self.put_idle(conn)
                self._end_drain(request, kept=True)
            return
        if request._state is not _State.CONNECTING or self._closed or conn.closed:
            conn.abort()
            if request._state is _State.CONNECTING:
                self.finish(
                    request,
                    ClientClosed("the HTTP client was closed")
                    if self._closed
                    else ServerDisconnected("the server closed the connection right away"),
                )
            return
        self._send(conn, request)

    def finish(self, request: Request, exc: BaseException | None) -> None:
        if request._state is _State.DONE:
            return
        if request._state is _State.DRAINING:
            # A late answer: read to its end (the connection went back to the pool if it
            # allows keep-alive) or failed; nobody waits for it any more.
            if exc is not None:
                drop_tracebacks(exc)
            conn = request._conn
            self._end_drain(request, kept=exc is None and conn is not None and not conn.closed)
            return
        if (
            exc is not None
            and request.reused
            and not request.retried
            and not self._closed
            and isinstance(exc, OSError)  # ServerDisconnected, resets, TLS errors on a reused one
            and request.parser is not None
            and not request.parser.received
        ):
            # The server closed the idle connection as we reused it: nothing was processed;
            # a GET is safe to send again, once, on a fresh connection (keeps the slot).
            request.parser.release_budget()  # nothing was received: a no-op, kept for clarity
            request.retried = True
            self._connect(request)
            return
        request._state = _State.DONE
        request._conn = None
        parser = request.parser
        if exc is not None:
            # Nothing of a failed response may outlive the scrape: its buffers go now, and
            # the exception keeps no traceback (whose frames hold the parser and the data,
            # and the request itself: a cycle only the collector would break).
            drop_tracebacks(exc)
            if parser is not None:
                _release(parser)
        request.error = exc
        self._active -= 1
        if self._queue:
            self._pump()
        if exc is not None or parser is None or not parser.reserved:
            request.on_done(request)
            return
        # A large complete body: `on_done` may take its reservation with the body; what it
        # leaves is given back however `on_done` ends.
        try:
            request.on_done(request)
        finally:
            parser.release_budget()

    def _pump(self) -> None:
        queue = self._queue
        while queue and self._active < self._max:
            request = queue.popleft()
            if request._state is _State.QUEUED:
                self._start(request)

    def cancel_many(self, requests: Iterable[Request], *, grace: float = 0.0) -> None:
        """Give up on requests (the caller's deadline passed); `on_done` is not called for them.

        Queued ones are dropped. With `grace` > 0, connecting and sent ones are drained (see
        the module docstring): a handshake under way may finish and a response under way is
        read to its end for up to `grace` seconds, then the connection goes back to the pool.
        Otherwise (no grace, or `max_in_flight` drains already running) connecting ones are
        cancelled and sent ones have their connection aborted.
        """
        requests = list(requests)
        active = [r for r in requests if r._state in (_State.CONNECTING, _State.SENT)]
        for request in requests:
            if request._state is _State.QUEUED:
                request._state = _State.DONE
            elif request._state is _State.WAITING:
                self._stop_waiting(request)
                request._state = _State.DONE
                self._active -= 1
        until = 0.0
        if grace > 0 and active and not self._closed:
            until = asyncio.get_running_loop().time() + grace
        for request in active:
            self._active -= 1
            if until and len(self._draining) < self._max:
                if request.parser is not None:
                    request.parser.drain()
                request.context = None  # nobody reads it now: let the caller's round go
                request._state = _State.DRAINING
                self._draining[request] = until
                self._drains_by_key[request.key] = self._drains_by_key.get(request.key, 0) + 1
                continue
            self._abort(request)
        if until and self._drain_timer is None and self._draining:
            self._drain_timer = asyncio.get_running_loop().call_at(until, self._sweep_drains)
        if self._queue:
            self._pump()

    def _abort(self, request: Request) -> None:
        """End a connecting or sent request now (its connection can't be reused)."""
        if request._task is not None:
            request._task.cancel()  # still connecting
            request._task = None
        elif request._conn is not None:
            conn = request._conn
            conn.request = None
            conn.abort()
        if request.parser is not None:
            _release(request.parser)
        request._state = _State.DONE
        request._conn = None

    def _end_drain(self, request: Request, *, kept: bool) -> None:
        if self._draining.pop(request, None) is not None:
            key = request.key
            left = self._drains_by_key[key] - 1
            if left:
                self._drains_by_key[key] = left
            else:
                del self._drains_by_key[key]
        request._state = _State.DONE
        request._conn = None
        if request.parser is not None:
            _release(request.parser)
        if kept:
            self._counters.late_kept += 1
        else:
            self._counters.late_dropped += 1
        waiting = self._waiting.get(request.key)
        if waiting:
            # The connection is back in the pool (kept), or gone: the next waiter takes it,
            # or opens its own.
            waiter = waiting.popleft()
            if not waiting:
                del self._waiting[request.key]
            if not self._closed:
                self._assign(waiter)

    def _stop_waiting(self, request: Request) -> None:
        waiting = self._waiting.get(request.key)
        if waiting and request in waiting:
            waiting.remove(request)
            if not waiting:
                del self._waiting[request.key]

    def _sweep_drains(self) -> None:
        """The timer of the oldest drain: abort the drains whose grace ended."""
        self._drain_timer = None
        now = asyncio.get_running_loop().time()
        for request, until in list(self._draining.items()):
            if until <= now and request._state is _State.DRAINING:
                self._abort(request)
                self._end_drain(request, kept=False)
        if self._draining and not self._closed:
            self._drain_timer = asyncio.get_running_loop().call_at(
                min(self._draining.values()), self._sweep_drains
            )

    # -- pool (and the rest of ConnectionOwner, what its connections call) ----------------

    def opened(self, conn: Connection) -> None:
        self._conns.add(conn)

    def lost(self, conn: Connection) -> None:
        self._conns.discard(conn)

    def put_idle(self, conn: Connection) -> None:
        conn.idle_since = time.monotonic()
        idle = self._idle.get(conn.key)
        if idle is None:
            self._idle[conn.key] = [conn]
        else:
            idle.append(conn)

    def forget_idle(self, conn: Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def close_idle(self, older_than: float) -> int:
        """Close idle connections unused for more than `older_than` seconds; return how many."""
        cutoff = time.monotonic() - older_than
        stale = [c for conns in self._idle.values() for c in conns if c.idle_since < cutoff]
        for conn in stale:
            self.forget_idle(conn)
            conn.close()
        return len(stale)

    async def close(self) -> None:
        """Fail pending requests, close every connection; the client is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        pending = list(self._queue)
        self._queue.clear()
        for request in pending:
            if request._state is _State.QUEUED:
                request._state = _State.SENT  # so that _finish accounts it like an active one
                self._active += 1
                self.finish(request, ClientClosed("the HTTP client was closed"))
        waiting = [r for queue in self._waiting.values() for r in queue]
        self._waiting.clear()
        for request in waiting:
            self.finish(request, ClientClosed("the HTTP client was closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for conn in list(self._conns):
            if conn.request is not None:
                request = conn.request
                conn.request = None
                conn.abort()
                self.finish(request, ClientClosed("the HTTP client was closed"))
            else:
                conn.close()
        self._idle.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Requests whose connect task was cancelled: report them closed too.
        await asyncio.sleep(0)


def _release(parser: ResponseParser) -> None:
    """A request that failed or was given up: drop its buffers, give back its reservation."""
    parser.discard()
    parser.release_budget()


def drop_tracebacks(exc: BaseException) -> None:
    """Clear the tracebacks of `exc` and of the exceptions chained to it."""
    seen = 0
    error: BaseException | None = exc
    while error is not None and seen < 8:
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
        seen += 1


def consume_handshake(future: asyncio.Future[None] | None) -> None:
    """Mark a handshake future's exception as retrieved (nobody awaits it any more)."""
    if future is None:
        return
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.cancel()

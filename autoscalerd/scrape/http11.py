"""A minimal HTTP/1.1 keep-alive client for the scrape hot path, on `asyncio.Protocol`.

It implements exactly what scraping needs and nothing else: one prebuilt GET per page, a pool
of kept-alive connections per (host, port, SSL context, server_hostname), and a response parser
for a status line, headers, a Content-Length or chunked body, and gzip/deflate decompression
bounded *after* decompression. It exists because aiohttp's general-purpose request machinery
(request/response objects, header multidicts, stream readers, a task per request) was ~70 % of
the scraper's CPU at 200 targets per second; see bench/README-scrape.md for the profile.

Design:
- **No task per request.** `HTTP11Client.submit()` writes the request on an idle connection
  right away (or queues it while `max_in_flight` requests are out) and the protocol's
  `data_received` feeds `ResponseParser`; completion is a plain callback (`Request.on_done`).
  A task exists only while a new connection is opened (TCP connect + TLS handshake).
- **No timers.** The caller owns the deadline (the scraper uses one `call_at` per round) and
  calls `cancel_many()` for the requests still out; their connections are aborted, because a
  connection with an unanswered request cannot be reused.
- **Stale connections.** A server may close an idle kept-alive connection at any time. Closes
  seen while idle drop the connection from the pool; one that races with our request (the
  request went out on a reused connection and the connection failed before any response
  byte) is retried once on a fresh connection, which is safe for GET.
- **Limits.** The header section is bounded (`MAX_HEAD_BYTES`), the body is bounded by the
  caller's limit counted after decompression (decompression stops one byte past the limit, so a
  gzip bomb costs at most the limit), and a non-200 body is read only up to
  `ERROR_BODY_CAP_BYTES` (the caller quotes the start of it), then the connection is dropped.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

__all__ = [
    "ERROR_BODY_CAP_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_INTERIM_RESPONSES",
    "BodyTooLarge",
    "ClientClosed",
    "HTTP11Client",
    "HTTPProtocolError",
    "HandshakeDisconnected",
    "PoolKey",
    "Request",
    "ResponseParser",
    "ServerDisconnected",
    "TruncatedResponse",
    "build_get",
]

MAX_HEAD_BYTES = 64 * 1024
"""Largest accepted status line + header section (Go's net/http client allows 1 MiB, aiohttp
8 KiB per line; metrics endpoints send a few hundred bytes)."""

MAX_INTERIM_RESPONSES = 5
"""Most interim (1xx) responses accepted before the final one; more is an error (Go's
net/http client stops at 5, too). Each is parsed and skipped, so a pod sending an endless
stream of `100 Continue` would otherwise cost CPU for as long as it kept going."""

MAX_CHUNK_LINE_BYTES = 4096
"""Largest accepted chunk-size line (size plus chunk extensions) or trailer line."""

RECV_BUFFER_BYTES = 256 * 1024
"""Size of the receive buffer shared by all of a client's connections."""

PLAIN_BUFFER_BYTES = 64 * 1024
"""Size of the decrypted-bytes buffer shared by all of a client's TLS connections. Records are
decrypted into it one after another and handed to the parser as one piece when no room for
another whole record (16 KiB) is left, or when the received bytes are all decrypted."""

TLS_RECORD_BYTES = 16 * 1024
"""Most plaintext one TLS record carries."""

TLS_MAX_RECORD_WIRE_BYTES = 5 + TLS_RECORD_BYTES + 256
"""Largest TLS 1.3 record on the wire: header, 2^14 bytes of plaintext plus 256 of expansion."""

TLS_FEED_BYTES = 16 * 1024
"""Ciphertext is handed to a connection's incoming `MemoryBIO` at most this much at a time,
decrypting in between once the BIO may hold a whole record: OpenSSL's memory BIO keeps the
largest size it ever held for the life of the connection, so feeding a 256 KiB read at once
would cost 256 KiB per connection. Bounded feeding keeps it at about one record plus this."""

ERROR_BODY_CAP_BYTES = 64 * 1024
"""How much of a non-200 body is read; a longer one is cut there and its connection dropped."""

PoolKey = tuple[str, int, Any, str | None]
"""(host, port, ssl.SSLContext or None, server_hostname): what makes connections shareable.

The SSL context is compared by identity (SSLContext has no value equality), which is what we
want: `TLSContextCache` hands out one object per distinct setting, and a rebuilt context (a
rotated certificate) gets fresh connections."""


class HTTPProtocolError(Exception):
    """The server's bytes are not a valid HTTP/1.x response (or use a feature we don't speak).

    `looks_like_tls`: the bytes start like a TLS record (a plain-HTTP request sent to a TLS
    port gets an alert or a handshake record back).
    """

    def __init__(self, message: str, *, looks_like_tls: bool = False) -> None:
        super().__init__(message)
        self.looks_like_tls = looks_like_tls


class BodyTooLarge(Exception):
    """The (decompressed) body passed the limit; `detail` says how that was seen."""

    def __init__(self, limit: int, detail: str) -> None:
        super().__init__(f"body larger than {limit} bytes ({detail})")
        self.limit = limit
        self.detail = detail


class ServerDisconnected(ConnectionError):
    """The server closed the connection before the response was complete."""


class TruncatedResponse(ServerDisconnected):
    """The response started but its end is missing or unproven (cut body, no close_notify)."""


class HandshakeDisconnected(ConnectionResetError):
    """The server hung up (FIN or reset) in the middle of the TLS handshake."""


class ClientClosed(RuntimeError):
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


class _Mode(enum.Enum):
    LENGTH = 1
    CHUNKED = 2
    UNTIL_CLOSE = 3
    EMPTY = 4


class _Chunk(enum.Enum):
    SIZE = 1
    DATA = 2
    DATA_END = 3
    TRAILER = 4


_TOKEN_SPLIT = str.maketrans({",": " "})


class ResponseParser:
    """Incremental parser of one HTTP/1.x response (to a GET), body bounded and decompressed.

    `feed(data)` returns True once the response is complete; `feed_eof()` is called when the
    connection ends and returns True if that completes the response (a body delimited by the
    close) or raises `ServerDisconnected`. Both raise `HTTPProtocolError` or `BodyTooLarge`.
    After completion: `status`, `reason`, `body` (decompressed bytes), `encoding`,
    `keep_alive` (the connection may carry another request), `truncated` (a non-200 body was
    cut at `error_cap`). `received` says whether any byte arrived (a failure before that is
    safe to retry for a GET).
    """

    __slots__ = (
        "_buf",
        "_chunk",
        "_chunks",
        "_decomp",
        "_error_cap",
        "_in_head",
        "_interim",
        "_limit",
        "_mode",
        "_remaining",
        "_size",
        "body",
        "done",
        "encoding",
        "keep_alive",
        "openmetrics",
        "reason",
        "received",
        "status",
        "truncated",
    )

    def __init__(self, limit: int, *, error_cap: int = ERROR_BODY_CAP_BYTES) -> None:
        self._limit = limit
        self._error_cap = error_cap
        self._buf = bytearray()
        self._in_head = True
        self._interim = 0
        self._mode = _Mode.EMPTY
        self._chunk = _Chunk.SIZE
        self._remaining = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._decomp: Any = None
        self.status = 0
        self.reason = ""
        self.body = b""
        self.encoding = "identity"
        self.keep_alive = False
        self.openmetrics = False
        self.received = False
        self.done = False
        self.truncated = False

    # -- input ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        if not data:
            return self.done
        self.received = True
        if self.done:
            self.keep_alive = False  # bytes after the response: the connection is unusable
            return True
        if self._in_head:
            rest = self._feed_head(data)
            if rest is None:
                return False
            data = rest
            if self.done:
                if data:
                    self.keep_alive = False
                return True
            if not data:
                return False
        mode = self._mode
        if mode is _Mode.LENGTH:
            remaining = self._remaining
            n = len(data)
            if n < remaining:
                self._remaining = remaining - n
                self._emit(data)
                return self.done
            if n > remaining:
                self.keep_alive = False  # pipelined or stray bytes: don't reuse
                data = data[:remaining]
            self._remaining = 0
            self._emit(data)
            if not self.done:
                self._complete()
            return True
        if mode is _Mode.CHUNKED:
            return self._feed_chunked(data)
        # UNTIL_CLOSE
        self._emit(data)
        return self.done

    def feed_eof(self, *, proven: bool = True) -> bool:
        """The connection ended (cleanly). Complete a close-delimited body or raise.

        `proven` says the end is the server's own: a plain TCP FIN, or a TLS close_notify. A
        TLS stream ended by a bare TCP FIN is not (anyone on the path can send a FIN), so a
        close-delimited 200 body then raises `TruncatedResponse` (RFC 9112 §9.8).
        """
        if self.done:
            return True
        if self._in_head:
            if not self.received:
                raise ServerDisconnected("the server closed the connection without responding")
            raise TruncatedResponse(
                "the server closed the connection in the middle of the response headers"
            )
        if self._mode is _Mode.UNTIL_CLOSE:
            if not proven and self.status == 200:
                raise TruncatedResponse(
                    "the TLS stream ended with a bare TCP FIN, without close_notify, inside a "
                    "body delimited by the connection's close: the body may be truncated "
                    "(RFC 9112 §9.8)"
                )
            self._complete()
            return True
        if self._mode is _Mode.LENGTH:
            raise TruncatedResponse(
                f"the server closed the connection {self._remaining} bytes before the end of "
                "the body (Content-Length)"
            )
        raise TruncatedResponse(
            "the server closed the connection before the end of the chunked body"
        )

    def discard(self) -> None:
        """Drop every buffer (the request failed): nothing of the body outlives the scrape."""
        self._buf = bytearray()
        self._chunks = []
        self._decomp = None
        self.body = b""

    # -- head -----------------------------------------------------------------------------

    def _feed_head(self, data: bytes) -> bytes | None:
        """Consume header bytes; return the bytes after the head, or None if it is incomplete."""
        buf = self._buf
        while True:
            if buf:
                # Search only the new bytes (and the 3 before them, where a terminator may
                # start): rescanning the whole buffer per read is quadratic on a trickle.
                scanned = len(buf) - 3
                buf += data
                source: bytes | bytearray = buf
                end = buf.find(b"\r\n\r\n", scanned if scanned > 0 else 0)
            else:
                source = data
                end = data.find(b"\r\n\r\n")
            if end < 0:
                if not b"HTTP/"[: len(source)].startswith(bytes(source[:5])):
                    raise _not_http(source)
                if len(source) > MAX_HEAD_BYTES:
                    raise HTTPProtocolError(
                        f"response header section larger than {MAX_HEAD_BYTES} bytes"
                    )
                if source is data:
                    buf += data
                return None
            if end > MAX_HEAD_BYTES:
                raise HTTPProtocolError(
                    f"response header section larger than {MAX_HEAD_BYTES} bytes"
                )
            head = bytes(source[:end])
            rest = bytes(source[end + 4 :])
            buf.clear()
            if self._parse_head(head):
                self._in_head = False
                return rest
            # An interim 1xx response: parse the next head from what follows.
            self._interim += 1
            if self._interim > MAX_INTERIM_RESPONSES:
                raise HTTPProtocolError(
                    f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses before the "
                    "final one"
                )
            data = rest
            if not data:
                return None

    def _parse_head(self, head: bytes) -> bool:
        """Parse a head; False for an interim (1xx) response to skip."""
        fields = _HEAD_CACHE.get(head)
        if fields is None:
            fields = _parse_head_fields(head)
            if fields is None:
                return False
            if len(_HEAD_CACHE) >= HEAD_CACHE_SIZE:
                _HEAD_CACHE.clear()
            _HEAD_CACHE[head] = fields
        status, reason, keep_alive, mode, length, encoding, openmetrics = fields
        self.openmetrics = openmetrics
        self.status = status
        self.reason = reason
        self.keep_alive = keep_alive
        self._mode = mode
        if status != 200:
            self._limit = min(self._limit, self._error_cap)
        if mode is _Mode.LENGTH:
            self._remaining = length
        if encoding in ("gzip", "x-gzip"):
            self._decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decomp = _DEFLATE_PENDING
        self.encoding = encoding
        if status == 200 and mode is _Mode.LENGTH and self._decomp is None and length > self._limit:
            raise BodyTooLarge(self._limit, f"Content-Length is {length} bytes")
        if mode is _Mode.EMPTY or (mode is _Mode.LENGTH and length == 0):
            self._complete()
        return True

    # -- body -----------------------------------------------------------------------------

    def _feed_chunked(self, data: bytes) -> bool:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while not self.done:
            state = self._chunk
            if state is _Chunk.DATA:
                if pos == end:
                    break
                take = min(end - pos, self._remaining)
                self._emit(bytes(buf[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk = _Chunk.DATA_END
            elif state is _Chunk.DATA_END:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise HTTPProtocolError("chunk data not followed by CRLF")
                pos += 2
                self._chunk = _Chunk.SIZE
            else:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_CHUNK_LINE_BYTES:
                        raise HTTPProtocolError("chunk-size or trailer line too long")
                    break
                if nl - pos > MAX_CHUNK_LINE_BYTES:
                    raise HTTPProtocolError("chunk-size or trailer line too long")
                line = bytes(buf[pos:nl])
                pos = nl + 2
                if state is _Chunk.SIZE:
                    size_text = line.split(b";", 1)[0].strip()
                    if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                        raise HTTPProtocolError(f"invalid chunk size {line[:40]!r}")
                    size = int(size_text, 16)
                    if size:
                        self._remaining = size
                        self._chunk = _Chunk.DATA
                    else:
                        self._chunk = _Chunk.TRAILER
                elif not line:  # the empty line that ends the trailer section
                    if pos != end:
                        self.keep_alive = False
                    self._complete()
        del buf[:pos]
        return self.done

    def _emit(self, data: bytes) -> None:
        """Add body bytes: decompress if needed, enforce the limit."""
        decomp = self._decomp
        if decomp is not None:
            if decomp is _DEFLATE_PENDING:
                # RFC 9110 "deflate" is zlib-wrapped; some servers send raw deflate.
                wbits = zlib.MAX_WBITS if data[:1] and data[0] & 0x0F == 8 else -zlib.MAX_WBITS
                decomp = self._decomp = zlib.decompressobj(wbits)
            while True:
                if decomp.eof and data:
                    # A gzip body may hold several members (RFC 1952 §2.2): decode them all.
                    decomp = self._next_member(data)
                try:
                    out = decomp.decompress(data, self._limit + 1 - self._size)
                except zlib.error as exc:
                    raise HTTPProtocolError(
                        f"cannot decompress the {self.encoding} body: {exc}"
                    ) from None
                # Output is capped at one byte past the limit: a bomb costs at most the limit.
                if not decomp.eof or not decomp.unused_data:
                    data = out
                    break
                data = decomp.unused_data
                self._add(out)
                if self.done:
                    return
        if data:
            self._chunks.append(data)
            self._size += len(data)
        if self._size > self._limit:
            self._over_limit()

    def _add(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
        if self._size > self._limit:
            self._over_limit()

    def _next_member(self, data: bytes) -> Any:
        """A fresh decompressor for the bytes after a finished gzip member."""
        if self.encoding == "deflate":
            raise HTTPProtocolError(
                f"{len(data)} bytes after the end of the deflate body (deflate has one stream)"
            )
        decomp = self._decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return decomp

    def _over_limit(self) -> None:
        if self.status == 200:
            raise BodyTooLarge(self._limit, f"the body exceeded it ({self.encoding} encoding)")
        # A non-200 body is only quoted: keep its start, drop the connection.
        self.truncated = True
        self.keep_alive = False
        self._decomp = None
        self.body = b"".join(self._chunks)[: self._limit]
        self._chunks = []
        self.done = True

    def _complete(self) -> None:
        decomp = self._decomp
        if decomp is not None and decomp is not _DEFLATE_PENDING:
            if not decomp.eof:
                raise HTTPProtocolError(f"the {self.encoding} body is truncated")
            tail = decomp.flush()
            if tail:
                self._chunks.append(tail)
                self._size += len(tail)
                if self._size > self._limit:
                    self._over_limit()
                    return
        chunks = self._chunks
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self.done = True


HEAD_CACHE_SIZE = 256
"""How many distinct response heads `_HEAD_CACHE` keeps (cleared wholesale when full)."""

_HeadFields = tuple[int, str, bool, _Mode, int, str, bool]
"""(status, reason, keep_alive, body mode, Content-Length or 0, content coding, whether the
Content-Type is OpenMetrics) of a head."""

_HEAD_CACHE: dict[bytes, _HeadFields] = {}
"""Parsed final-response heads by their exact bytes. A fleet of exporters answers with a few
distinct heads per second (they differ by Date and Content-Length at most), and parsing one is
most of the response parser's cost for a 20 KiB page; the parse is a pure function of the
bytes, so a hit gives exactly what parsing would."""


def _parse_head_fields(head: bytes) -> _HeadFields | None:
    """Parse a response head; None for an interim (1xx) response. Raises HTTPProtocolError."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    if "\r\n " in text or "\r\n\t" in text:
        lines = _unfold(lines)
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise HTTPProtocolError(f"invalid status line {lines[0][:100]!r}")
    status = int(code)
    if 100 <= status < 200:
        if status == 101:
            raise HTTPProtocolError("the server switched protocols (HTTP 101)")
        return None
    length: int | None = None
    transfer = ""
    encoding = "identity"
    connection = ""
    openmetrics = False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t" or name[0] in " \t":
            raise HTTPProtocolError(f"invalid header line {line[:100]!r}")
        lname = name.lower()
        if lname == "content-length":
            value = value.strip()
            if not (value.isascii() and value.isdigit()) or (
                length is not None and length != int(value)
            ):
                raise HTTPProtocolError(f"invalid Content-Length {value[:40]!r}")
            length = int(value)
        elif lname == "transfer-encoding":
            transfer = f"{transfer},{value}" if transfer else value
        elif lname == "content-encoding":
            encoding = value.strip().lower() or "identity"
        elif lname == "connection":
            connection = f"{connection},{value}"
        elif lname == "content-type":
            media_type = value.partition(";")[0].strip().lower()
            openmetrics = media_type == "application/openmetrics-text"
    tokens = connection.lower().translate(_TOKEN_SPLIT).split()
    if version == "HTTP/1.1":
        keep_alive = "close" not in tokens
    else:
        keep_alive = "keep-alive" in tokens and "close" not in tokens
    if transfer:
        codings = [c.strip() for c in transfer.lower().split(",") if c.strip()]
        if codings != ["chunked"]:
            raise HTTPProtocolError(f"unsupported Transfer-Encoding {transfer.strip()!r}")
        mode = _Mode.CHUNKED
        if length is not None:
            keep_alive = False  # both framings given: RFC 9112 §6.3 says close after
    elif status in (204, 304):
        mode = _Mode.EMPTY
    elif length is not None:
        mode = _Mode.LENGTH
    else:
        mode = _Mode.UNTIL_CLOSE
        keep_alive = False
    if encoding not in ("gzip", "x-gzip", "deflate", "identity"):
        raise HTTPProtocolError(
            f"unsupported Content-Encoding {encoding!r} (the request accepted only gzip)"
        )
    return status, reason.strip(), keep_alive, mode, length or 0, encoding, openmetrics


_OWS = " \t"


def _unfold(lines: list[str]) -> list[str]:
    """Join obsolete folded header lines (RFC 9112 §5.2: a line starting with SP or HTAB
    continues the previous field); a client replaces each fold with one SP."""
    out = [lines[0]]
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if len(out) == 1:
                raise HTTPProtocolError(f"folded line before the first header field {line[:100]!r}")
            out[-1] = out[-1].rstrip(_OWS) + " " + line.strip(_OWS)
        else:
            out.append(line)
    return out


def _not_http(source: bytes | bytearray) -> HTTPProtocolError:
    """The error for a response that does not start with `HTTP/`."""
    # A TLS record starts with its content type (20-23) and major version 3.
    tls = len(source) >= 2 and 20 <= source[0] <= 23 and source[1] == 3
    return HTTPProtocolError(
        f"the response does not start with an HTTP status line: {bytes(source[:40])!r}",
        looks_like_tls=tls,
    )


_DEFLATE_PENDING: Any = object()
"""Marks a deflate body whose wrapping (zlib or raw) is decided by its first byte."""


class _State(enum.Enum):
    NEW = 0
    QUEUED = 1
    CONNECTING = 2
    SENT = 3
    DONE = 4


class Counters(Protocol):
    """Where the client counts requests sent and connections opened (e.g. `ScrapeStats`)."""

    requests: int
    connections_created: int


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
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self._state is _State.DONE


class _Connection(asyncio.BufferedProtocol):
    """One kept-alive connection; carries at most one request at a time.

    A `BufferedProtocol` on a plain TCP transport, reading into the client's one shared receive
    buffer. Sharing is safe because every `buffer_updated` consumes (copies) what it needs
    before returning.

    TLS is done here, not by asyncio's `SSLProtocol`: an `ssl.SSLObject` over two `MemoryBIO`s
    (`SSLContext.wrap_bio`). asyncio's layer allocates a 256 KiB buffer per connection (535 MiB
    RSS at 1,000 kept-alive connections) and its Python plumbing was ~21 % of the scraper's
    CPU. Here ciphertext goes from the shared receive buffer into the incoming BIO in
    `TLS_FEED_BYTES` slices and is decrypted into the client's shared plaintext buffer, so a
    connection owns no buffer of its own beyond OpenSSL's state. The handshake starts in
    `connection_made`; `handshake` is the future the opener awaits (its exceptions are the
    `ssl` module's own: `SSLCertVerificationError`, alerts as `SSLError`, and
    `ConnectionResetError` for a server that hangs up during the handshake, as with asyncio).
    """

    __slots__ = (
        "_client",
        "_handshaking",
        "_in",
        "_out",
        "_tls",
        "closed",
        "handshake",
        "idle_since",
        "key",
        "request",
        "transport",
    )

    def __init__(
        self,
        client: HTTP11Client,
        key: PoolKey,
        context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.closed = False
        self.idle_since = 0.0
        self._tls: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._handshaking = False
        self.handshake: asyncio.Future[None] | None = None
        if context is not None:
            self._in = ssl.MemoryBIO()
            self._out = ssl.MemoryBIO()
            # Raises (e.g. ValueError for an empty name) before any connection is made.
            self._tls = context.wrap_bio(
                self._in, self._out, server_side=False, server_hostname=server_hostname
            )
            self._handshaking = True
            self.handshake = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._client._conns.add(self)
        if self._tls is not None:
            self._do_handshake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._client._recv_view

    def buffer_updated(self, nbytes: int) -> None:
        view = self._client._recv_view
        if self._tls is None:
            self.data_received(view[:nbytes].tobytes())
            return
        incoming = self._in
        assert incoming is not None
        # Plaintext accumulates in the shared buffer across the feeding slices and goes to
        # the parser once per read (one bytes object, one parser call) where it fits.
        filled = 0
        pos = 0
        while pos < nbytes and not self.closed:
            end = min(pos + TLS_FEED_BYTES, nbytes)
            incoming.write(view[pos:end])
            pos = end
            if self._handshaking:
                self._do_handshake()
                if self._handshaking:
                    continue
            if pos < nbytes and incoming.pending < TLS_MAX_RECORD_WIRE_BYTES:
                # No complete record can be in the BIO yet: feed the next slice before
                # decrypting (a read now could only raise SSLWantReadError). The BIO still
                # holds at most one record plus one slice.
                continue
            filled = self._decrypt(filled)
            if filled < 0:
                return
        if filled:
            self.data_received(self._client._plain_view[:filled].tobytes())
        if not self.closed:
            self._flush()

    def data_received(self, data: bytes) -> None:
        request = self.request
        if request is None:
            # Bytes on an idle connection can't belong to any future request.
            self.abort()
            return
        parser = request.parser
        assert parser is not None
        try:
            done = parser.feed(data)
        except Exception as exc:
            self.request = None
            self.abort()
            self._client._finish(request, exc)
            return
        if done:
            self.request = None
            if parser.keep_alive and not self.closed:
                self._client._put_idle(self)
            else:
                self.close()
            self._client._finish(request, None)

    def eof_received(self) -> bool | None:
        if self._handshaking:
            self._handshake_failed(
                HandshakeDisconnected("the server closed the connection during the TLS handshake")
            )
            return None
        # After the handshake a TCP EOF without close_notify ends the stream, but proves
        # nothing about the end of the data: the parser refuses it as the end of a
        # close-delimited body (a Content-Length or chunked body ends on its own framing).
        self._end(None, proven=self._tls is None)
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshaking:
            reason = f" ({exc})" if exc is not None else ""
            self._handshake_failed(
                HandshakeDisconnected(f"the connection was lost during the TLS handshake{reason}")
            )
        self._end(exc)
        self._client._conns.discard(self)

    def _end(self, exc: BaseException | None, *, proven: bool = True) -> None:
        self.closed = True
        self._client._forget_idle(self)  # also after abort() of an idle one
        request = self.request
        if request is None:
            return
        self.request = None
        parser = request.parser
        assert parser is not None
        if exc is None:
            try:
                parser.feed_eof(proven=proven)
            except Exception as error:
                exc = error
        self._client._finish(request, exc)

    # -- TLS ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the TLS layer wrote to the outgoing BIO (handshake records, alerts)."""
        out = self._out
        if out is not None and out.pending and self.transport is not None:
            self.transport.write(out.read())

    def _do_handshake(self) -> None:
        tls = self._tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except Exception as exc:  # SSLError (alerts, verification), CertificateError
            self._flush()  # the alert we send, if any
            self._handshake_failed(exc)
            return
        self._handshaking = False
        self._flush()
        waiter = self.handshake
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _handshake_failed(self, exc: BaseException) -> None:
        self._handshaking = False
        self.closed = True
        waiter = self.handshake
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()  # after the alert, if one was written

    def _decrypt(self, filled: int) -> int:
        """Decrypt what the incoming BIO holds into the shared buffer after its first `filled`
        bytes; return how many plaintext bytes it then holds, not yet given to the parser.

        The buffer goes to the parser when it has no room for another full record. Returns -1
        if the connection ended (close_notify, a TLS error, or the parser closed it), after
        giving the parser what was decrypted before that.
        """
        tls = self._tls
        incoming = self._in
        assert tls is not None and incoming is not None
        view = self._client._plain_view
        size = len(view)
        # With a buffer, read() returns the byte count (typeshed says bytes).
        read: Callable[[int, memoryview], int] = tls.read  # type: ignore[assignment]
        error: BaseException | None = None
        while True:
            if filled > size - TLS_RECORD_BYTES:
                self.data_received(view[:filled].tobytes())
                filled = 0
                if self.closed:
                    return -1
            try:
                n = read(size - filled, view[filled:])
            except ssl.SSLWantReadError:
                # Also after post-handshake messages (TLS 1.3 session tickets): consumed.
                return filled
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                n = 0
            except ssl.SSLError as exc:
                error = exc
                n = 0
            if not n:
                break
            filled += n
            if not incoming.pending and not tls.pending():
                # Nothing left to process: the next read could only raise SSLWantReadError
                # (whose raising and catching costs more than this check). Post-handshake
                # messages are bytes in the BIO, so they are still read above.
                return filled
        # close_notify (CPython's read returns 0 for it) or a TLS error: first the plaintext
        # that came before it.
        if filled:
            self.data_received(view[:filled].tobytes())
            if self.closed:
                return -1
        if error is not None:
            self._fail(error)
        else:
            # The server ends the stream cleanly; answer with our close_notify and close.
            self._end(None)
            self.close()
        return -1

    def _fail(self, exc: BaseException) -> None:
        self._end(exc)
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes) -> None:
        """Write `data` (encrypted on a TLS connection); raises `ssl.SSLError` if TLS fails."""
        transport = self.transport
        assert transport is not None
        tls = self._tls
        if tls is None:
            transport.write(data)
            return
        tls.write(data)
        out = self._out
        assert out is not None
        transport.write(out.read())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            tls = self._tls
            if tls is not None and not self._handshaking and not self.transport.is_closing():
                try:
                    tls.unwrap()  # queue our close_notify; we don't wait for the server's
                except (ssl.SSLError, ValueError):
                    pass
                self._flush()
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class HTTP11Client:
    """Send `Request`s over pooled keep-alive connections, at most `max_in_flight` at once."""

    def __init__(self, *, max_in_flight: int, counters: Counters) -> None:
        self._max = max(1, max_in_flight)
        self._counters = counters
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self._conns: set[_Connection] = set()
        self._queue: deque[Request] = deque()
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._recv_view = memoryview(bytearray(RECV_BUFFER_BYTES))
        self._plain_view = memoryview(bytearray(PLAIN_BUFFER_BYTES))

    @property
    def in_flight(self) -> int:
        return self._active

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    @property
    def open_connections(self) -> int:
        return len(self._conns)

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
        idle = self._idle.get(request.key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                if not idle:
                    del self._idle[request.key]
                request.reused = True
                self._send(conn, request)
                return
        if idle is not None:
            del self._idle[request.key]
        self._connect(request)

    def _send(self, conn: _Connection, request: Request) -> None:
        self._counters.requests += 1
        request._state = _State.SENT
        request._conn = conn
        request.connecting = False
        request.parser = ResponseParser(request.limit)
        conn.request = request
        try:
            conn.send(request.head)
        except (ssl.SSLError, OSError, ValueError) as exc:
            # The TLS layer refused (e.g. the server's close_notify arrived first); nothing
            # reached the server, so a reused connection is retried like a stale one.
            conn.request = None
            conn.abort()
            self._finish(request, exc if isinstance(exc, OSError) else ServerDisconnected(exc))

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
        conn: _Connection | None = None
        try:
            conn = _Connection(
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
                _consume(conn.handshake)
            self._finish(request, ClientClosed("the HTTP client was closed"))  # no-op if DONE
            raise
        except Exception as exc:
            request._task = None
            if conn is not None:
                conn.abort()
                _consume(conn.handshake)
            self._finish(request, exc)
            return
        request._task = None
        if request._state is not _State.CONNECTING or self._closed or conn.closed:
            conn.abort()
            if request._state is _State.CONNECTING:
                self._finish(
                    request,
                    ClientClosed("the HTTP client was closed")
                    if self._closed
                    else ServerDisconnected("the server closed the connection right away"),
                )
            return
        self._send(conn, request)

    def _finish(self, request: Request, exc: BaseException | None) -> None:
        if request._state is _State.DONE:
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
            request.retried = True
            self._connect(request)
            return
        request._state = _State.DONE
        request._conn = None
        if exc is not None:
            # Nothing of a failed response may outlive the scrape: its buffers go now, and
            # the exception keeps no traceback (whose frames hold the parser and the data,
            # and the request itself: a cycle only the collector would break).
            _drop_tracebacks(exc)
            if request.parser is not None:
                request.parser.discard()
        request.error = exc
        self._active -= 1
        if self._queue:
            self._pump()
        request.on_done(request)

    def _pump(self) -> None:
        queue = self._queue
        while queue and self._active < self._max:
            request = queue.popleft()
            if request._state is _State.QUEUED:
                self._start(request)

    def cancel_many(self, requests: Iterable[Request]) -> None:
        """Give up on requests (the caller's deadline passed); `on_done` is not called for them.

        Queued ones are dropped, connecting ones cancelled, sent ones have their connection
        aborted (it carries an unanswered request, so it can't be reused).
        """
        requests = list(requests)
        active = [r for r in requests if r._state in (_State.CONNECTING, _State.SENT)]
        for request in requests:
            if request._state is _State.QUEUED:
                request._state = _State.DONE
        for request in active:
            if request._state is _State.CONNECTING and request._task is not None:
                request._task.cancel()
                request._task = None
            elif request._state is _State.SENT and request._conn is not None:
                conn = request._conn
                conn.request = None
                conn.abort()
            request._state = _State.DONE
            request._conn = None
            self._active -= 1
        if self._queue:
            self._pump()

    # -- pool -----------------------------------------------------------------------------

    def _put_idle(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        idle = self._idle.get(conn.key)
        if idle is None:
            self._idle[conn.key] = [conn]
        else:
            idle.append(conn)

    def _forget_idle(self, conn: _Connection) -> None:
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
            self._forget_idle(conn)
            conn.close()
        return len(stale)

    async def close(self) -> None:
        """Fail pending requests, close every connection; the client is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        pending = list(self._queue)
        self._queue.clear()
        for request in pending:
            if request._state is _State.QUEUED:
                request._state = _State.SENT  # so that _finish accounts it like an active one
                self._active += 1
                self._finish(request, ClientClosed("the HTTP client was closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for conn in list(self._conns):
            if conn.request is not None:
                request = conn.request
                conn.request = None
                conn.abort()
                self._finish(request, ClientClosed("the HTTP client was closed"))
            else:
                conn.close()
        self._idle.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Requests whose connect task was cancelled: report them closed too.
        await asyncio.sleep(0)


def _drop_tracebacks(exc: BaseException) -> None:
    """Clear the tracebacks of `exc` and of the exceptions chained to it."""
    seen = 0
    error: BaseException | None = exc
    while error is not None and seen < 8:
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
        seen += 1


def _consume(future: asyncio.Future[None] | None) -> None:
    """Mark a handshake future's exception as retrieved (nobody awaits it any more)."""
    if future is None:
        return
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.cancel()

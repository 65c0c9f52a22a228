"""The HTTP/1.1 response parser of the scrape client: pure, incremental, bounded.

`ResponseParser` takes the bytes of one response to a GET as they arrive and gives the status,
the reason and the body: a status line and header section (bounded by `MAX_HEAD_BYTES`;
interim 1xx responses skipped, at most `MAX_INTERIM_RESPONSES`; obsolete folded lines
unfolded), a Content-Length, chunked or close-delimited body, and gzip (every member) or
deflate decoding, bounded *after* decompression by the caller's limit (decompression stops one
byte past it, so a gzip bomb costs at most the limit). With a `BodyBudget`, the body's bytes
past the budget's free allowance are reserved from it as they arrive (scrape/budget.py); the
reservation is the parser's until `release_budget()` (idempotent) or `take_reservation()`. No I/O and no clock: the connection
(scrape/connection.py) feeds it, and tests feed it whole responses or one byte at a time.
A failed response's buffers are dropped with `discard()`.

About 550 lines: one state machine (`ResponseParser`) and the head parser it caches; splitting
them would put the head's fields and the body modes they select in two places.
"""

from __future__ import annotations

import enum
import zlib
from typing import Any

from autoscalerd.errors import AutoscalerdError
from autoscalerd.scrape.budget import BodyBudget, BodyBudgetExhausted

__all__ = [
    "ERROR_BODY_CAP_BYTES",
    "HEAD_CACHE_SIZE",
    "MAX_CHUNK_LINE_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_INTERIM_RESPONSES",
    "BodyBudgetExhausted",
    "BodyTooLarge",
    "HTTPProtocolError",
    "ResponseParser",
    "ServerDisconnected",
    "TruncatedResponse",
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

ERROR_BODY_CAP_BYTES = 64 * 1024
"""How much of a non-200 body is read; a longer one is cut there and its connection dropped."""


class HTTPProtocolError(AutoscalerdError):
    """The server's bytes are not a valid HTTP/1.x response (or use a feature we don't speak).

    `looks_like_tls`: the bytes start like a TLS record (a plain-HTTP request sent to a TLS
    port gets an alert or a handshake record back).
    """

    def __init__(self, message: str, *, looks_like_tls: bool = False) -> None:
        super().__init__(message)
        self.looks_like_tls = looks_like_tls


class BodyTooLarge(AutoscalerdError):
    """The (decompressed) body passed the limit; `detail` says how that was seen."""

    def __init__(self, limit: int, detail: str) -> None:
        super().__init__(f"body larger than {limit} bytes ({detail})")
        self.limit = limit
        self.detail = detail


class ServerDisconnected(ConnectionError, AutoscalerdError):
    """The server closed the connection before the response was complete."""


class TruncatedResponse(ServerDisconnected):
    """The response started but its end is missing or unproven (cut body, no close_notify)."""


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

    With a `budget`, the body may grow to the budget's allowance for free; past it, every
    `budget.step` bytes are reserved from the budget before they are kept, and a refusal
    raises `BodyBudgetExhausted`. The hot path compares the size with one threshold (`_cap`:
    the allowance, then the allowance plus the reservation, never above the limit) exactly as
    it compared it with the limit, so a body under the allowance costs nothing more.
    `reserved` is what the parser holds; `release_budget()` gives it back (again: a no-op).
    """

    __slots__ = (
        "_budget",
        "_buf",
        "_cap",
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
        "reserved",
        "status",
        "truncated",
    )

    def __init__(
        self,
        limit: int,
        budget: BodyBudget | None = None,
        *,
        error_cap: int = ERROR_BODY_CAP_BYTES,
    ) -> None:
        self._limit = limit
        self._budget = budget
        # (no min(): this runs once per scrape, and a call costs more than the comparison)
        self._cap = limit if budget is None or limit < budget.allowance else budget.allowance
        self.reserved = 0
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

    def drain(self) -> None:
        """Nobody wants this response any more, but its connection is kept if it ends in time:
        read it to its end keeping nothing. Buffers go now, with the budget's reservation; the
        body is no longer decompressed, and its bytes are counted against the limit only."""
        self.discard()
        self.release_budget()
        self._chunks = _Discard()
        self._budget = None
        self._cap = self._limit

    def release_budget(self) -> None:
        """Give the body budget back what this response reserved (a no-op once done)."""
        reserved = self.reserved
        if reserved:
            self.reserved = 0
            self._cap = min(self._cap, self._size)  # any later byte must reserve again
            assert self._budget is not None
            self._budget.release(reserved)

    def take_reservation(self) -> int:
        """Hand the reservation to the caller (who keeps the body and must release it)."""
        reserved = self.reserved
        self.reserved = 0
        return reserved

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
            self._cap = min(self._cap, self._limit)
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
                room = self._cap + 1 - self._size
                try:
                    out = decomp.decompress(data, room)
                except zlib.error as exc:
                    raise HTTPProtocolError(
                        f"cannot decompress the {self.encoding} body: {exc}"
                    ) from None
                # Output is capped at one byte past the threshold: a bomb costs at most the
                # limit. Past the threshold, `_add` reserves more (or raises) and decoding
                # goes on from the input the decompressor left.
                if len(out) == room:
                    data = decomp.unconsumed_tail
                elif decomp.eof and decomp.unused_data:
                    data = decomp.unused_data
                else:
                    data = out
                    break
                self._add(out)
                if self.done:
                    return
        if data:
            self._chunks.append(data)
            self._size += len(data)
        if self._size > self._cap:
            self._past_cap()

    def _add(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
        if self._size > self._cap:
            self._past_cap()

    def _past_cap(self) -> None:
        """The body passed the threshold: the limit, or reserve more of the budget."""
        size = self._size
        if size > self._limit:
            self._over_limit()
            return
        budget = self._budget
        assert budget is not None  # without a budget the threshold is the limit
        # Reserve whole steps up to the size, never past what the limit can need.
        step = budget.step
        want = min(-(-(size - budget.allowance) // step) * step, self._limit - budget.allowance)
        needed = want - self.reserved
        if not budget.try_reserve(needed):
            raise BodyBudgetExhausted(
                total=budget.total, in_use=budget.reserved, needed=needed, size=size
            )
        self.reserved = want
        self._cap = min(self._limit, budget.allowance + want)

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
                self._add(tail)
                if self.done:
                    return
        chunks = self._chunks
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self.done = True


class _Discard(list[bytes]):
    """The body's chunk list of a drained response: what is added is dropped."""

    __slots__ = ()

    def append(self, item: bytes, /) -> None:
        pass


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

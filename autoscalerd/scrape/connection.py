"""One kept-alive scrape connection: HTTP/1.1 over TCP, or over TLS on memory BIOs.

`Connection` is an `asyncio.BufferedProtocol` that carries at most one request at a time; it
feeds the response bytes to the request's `ResponseParser` and reports to its owner (the pool,
`HTTP11Client`) through the small `ConnectionOwner` interface: the shared receive and
plaintext buffers, and callbacks for opened, lost, idle and finished. TLS is done here with an
`ssl.SSLObject` over two `MemoryBIO`s rather than asyncio's SSL layer (see `Connection`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from autoscalerd.errors import AutoscalerdError

if TYPE_CHECKING:
    from autoscalerd.scrape.http11 import PoolKey, Request

__all__ = [
    "PLAIN_BUFFER_BYTES",
    "RECV_BUFFER_BYTES",
    "TLS_FEED_BYTES",
    "TLS_MAX_RECORD_WIRE_BYTES",
    "TLS_RECORD_BYTES",
    "Connection",
    "ConnectionOwner",
    "HandshakeDisconnected",
]

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


class HandshakeDisconnected(ConnectionResetError, AutoscalerdError):
    """The server hung up (FIN or reset) in the middle of the TLS handshake."""


class ConnectionOwner(Protocol):
    """What a connection needs from the pool that owns it (implemented by `HTTP11Client`).

    The two buffers are plain attributes, read on every receive: shared by all connections,
    which is safe because each receive consumes (copies) what it needs before returning.
    """

    recv_view: memoryview
    """The receive buffer of every connection (`RECV_BUFFER_BYTES`)."""
    plain_view: memoryview
    """The decrypted-bytes buffer of every TLS connection (`PLAIN_BUFFER_BYTES`)."""

    def opened(self, conn: Connection) -> None:
        """The TCP connection is up (the TLS handshake, if any, starts now)."""

    def lost(self, conn: Connection) -> None:
        """The connection is gone."""

    def put_idle(self, conn: Connection) -> None:
        """The response is complete and the connection may carry another request."""

    def forget_idle(self, conn: Connection) -> None:
        """The connection ended: it must not be handed out again."""

    def finish(self, request: Request, exc: BaseException | None) -> None:
        """The request is complete (`exc` None: its parser holds the response) or failed."""


class Connection(asyncio.BufferedProtocol):
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
        client: ConnectionOwner,
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
        self._client.opened(self)
        if self._tls is not None:
            self._do_handshake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._client.recv_view

    def buffer_updated(self, nbytes: int) -> None:
        view = self._client.recv_view
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
            self.data_received(self._client.plain_view[:filled].tobytes())
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
            self._client.finish(request, exc)
            return
        if done:
            self.request = None
            if parser.keep_alive and not self.closed:
                self._client.put_idle(self)
            else:
                self.close()
            self._client.finish(request, None)

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
        self._client.lost(self)

    def _end(self, exc: BaseException | None, *, proven: bool = True) -> None:
        self.closed = True
        self._client.forget_idle(self)  # also after abort() of an idle one
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
        self._client.finish(request, exc)

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
        view = self._client.plain_view
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

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER) once the TLS handshake is done, verified or not."""
        tls = self._tls
        if tls is None or self._handshaking:
            return None
        return tls.getpeercert(binary_form=True)

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

"""One request on a connection of its own, outside any pool: the failure diagnosis' probes
(scrape/diagnosis.py) run over the same TCP/TLS code as the scrapes (`exchange_once`)."""

from __future__ import annotations

import asyncio
import ssl

from autoscalerd.scrape.connection import Connection
from autoscalerd.scrape.http11 import (
    ERROR_BODY_CAP_BYTES,
    Request,
    ResponseParser,
    consume_handshake,
    drop_tracebacks,
)

__all__ = ["PROBE_BUFFER_BYTES", "exchange_once"]

PROBE_BUFFER_BYTES = 32 * 1024 + 1
"""Buffers of a one-off exchange: above two TLS records' room, far below a pool's."""


class _OneShot:
    """The ConnectionOwner of one connection outside any pool (`exchange_once`)."""

    def __init__(self) -> None:
        self.recv_view = memoryview(bytearray(PROBE_BUFFER_BYTES))
        self.plain_view = memoryview(bytearray(PROBE_BUFFER_BYTES))
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def opened(self, conn: Connection) -> None:
        pass

    def lost(self, conn: Connection) -> None:
        pass

    def put_idle(self, conn: Connection) -> None:
        conn.close()

    def forget_idle(self, conn: Connection) -> None:
        pass

    def finish(self, request: Request, exc: BaseException | None) -> None:
        if exc is not None:
            drop_tracebacks(exc)
        request.error = exc
        if not self.done.done():
            self.done.set_result(None)


async def exchange_once(
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    head: bytes | None,
    limit: int = ERROR_BODY_CAP_BYTES,
) -> tuple[Request, bytes | None]:
    """One request on a connection of its own, outside any pool, over the same TCP/TLS code
    as the scrapes (for the failure diagnosis' probes; the caller bounds the time).

    Returns the finished request (`error` set, or `parser` holding the response; with
    `head=None` nothing is sent once connected) and the server's certificate (DER), if the TLS
    handshake completed.
    """
    loop = asyncio.get_running_loop()
    owner = _OneShot()
    request = Request(
        host=host,
        port=port,
        ssl=ssl_context,
        server_hostname=server_hostname,
        head=head or b"",
        limit=limit,
        on_done=_ignore,
    )
    request.parser = ResponseParser(limit)
    name = (server_hostname or host) if ssl_context is not None else None
    conn = Connection(owner, request.key, ssl_context, name)
    certificate: bytes | None = None
    try:
        await loop.create_connection(lambda: conn, host, port)
        if conn.handshake is not None:
            await conn.handshake
        certificate = conn.peer_certificate()
        if head is not None:
            conn.request = request
            conn.send(head)
            await owner.done
    except (OSError, ssl.SSLError, ValueError) as exc:
        drop_tracebacks(exc)
        request.error = exc
    finally:
        conn.abort()
        consume_handshake(conn.handshake)
    return request, certificate


def _ignore(request: Request) -> None:
    pass

"""The daemon's coalescing event loop still delivers I/O, timers and callbacks in order."""

from __future__ import annotations

import asyncio
import socket

from autoscalerd.daemon.eventloop import CoalescingSelector, new_event_loop


def test_io_timers_and_callbacks_are_delivered() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop._selector, CoalescingSelector)  # type: ignore[attr-defined]
        seen: list[str] = []
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        got: asyncio.Future[bytes] = loop.create_future()
        loop.add_reader(a.fileno(), lambda: got.set_result(a.recv(100)))
        timer: asyncio.Future[None] = loop.create_future()
        loop.call_later(0.01, lambda: (seen.append("timer"), timer.set_result(None)))
        loop.call_soon(seen.append, "soon")
        b.send(b"ping")
        seen.append((await got).decode())
        loop.remove_reader(a.fileno())
        await asyncio.wait_for(timer, 5)
        a.close()
        b.close()
        return seen

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        assert runner.run(main()) == ["soon", "ping", "timer"]


def test_a_poll_that_must_not_block_returns_at_once() -> None:
    sel = CoalescingSelector()
    a, b = socket.socketpair()
    try:
        sel.register(a, 1)  # EVENT_READ
        assert sel.select(0) == []
        b.send(b"x")
        assert [key.fileobj for key, _ in sel.select(0)] == [a]
        assert [key.fileobj for key, _ in sel.select(None)] == [a]
    finally:
        sel.close()
        a.close()
        b.close()

"""The daemon-wide budget for large bodies (issue 11) through real servers on 127.0.0.1.

Each response buffers its first MiB for free (`FREE_BODY_ALLOWANCE_BYTES`); past it, bytes
come from the scraper's one `BodyBudget`. Here the body limit and the budget are both 2 MiB, so
two responses at most can be past their free MiB at once. The tests check that the ones
beyond the budget fail at once with the message that says so while a healthy page is read in
the same round, and that every way a scrape can end gives its reservation back.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from test_hostile_endpoints import (
    PAGE,
    Handler,
    answer,
    ok,
    raw_server,
    read_request,
    target,
)
from waiting import wait_until

from autoscalerd.config.model import DaemonConfig
from autoscalerd.scrape.budget import FREE_BODY_ALLOWANCE_BYTES
from autoscalerd.scrape.client import Scraper, ScrapeTarget
from autoscalerd.scrape.errors import ScrapeErrorKind

MIB = 1024 * 1024
LIMIT = 2 * MIB
BUDGET = 2 * MIB
PAST_ALLOWANCE = FREE_BODY_ALLOWANCE_BYTES + MIB // 2
"""A body this long needs one step (1 MiB) of the budget."""
CHUNK = b"4000\r\n" + b"#" * 0x4000 + b"\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def stalled() -> Handler:
    """Sends half a MiB past the free allowance, then nothing until the client hangs up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + CHUNK * (PAST_ALLOWANCE // 0x4000))
        await writer.drain()
        await reader.read()  # until the client closes

    return handler


def endless() -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        while not writer.is_closing():
            writer.write(CHUNK)
            await writer.drain()

    return handler


def cut(*, reset: bool) -> Handler:
    """Half a MiB past the allowance of a longer Content-Length, then a close (or a reset)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % LIMIT)
        writer.write(b"#" * PAST_ALLOWANCE)
        await writer.drain()
        if reset:
            writer.transport.abort()

    return handler


def large_page() -> bytes:
    """A valid page past the allowance, below the limit."""
    filler = b"# filler line of a large but valid page\n" * (PAST_ALLOWANCE // 40)
    return ok(filler + PAGE)


def gzip_bomb() -> Handler:
    return answer(ok(gzip.compress(b"#" * (8 * LIMIT)), b"Content-Encoding: gzip"))


def daemon() -> DaemonConfig:
    return DaemonConfig(body_size_limit_bytes=LIMIT, body_budget_bytes=BUDGET)


@asynccontextmanager
async def servers(*handlers: Handler) -> AsyncIterator[list[ScrapeTarget]]:
    async with AsyncExitStack() as stack:
        ports = [await stack.enter_async_context(raw_server(h)) for h in handlers]
        yield [target(port) for port in ports]


async def test_scrapes_beyond_the_budget_fail_at_once_and_a_small_page_is_read() -> None:
    """Five bodies stall past their free MiB: two hold the budget (and time out), the other
    three fail as soon as they need it, with the fix; the healthy page is read all the same."""
    timeout = 2.0
    async with (
        servers(*[stalled() for _ in range(5)], answer(ok(PAGE))) as targets,
        Scraper(daemon=daemon()) as scraper,
    ):
        outcomes = await scraper.scrape(targets, timeout=timeout)
        budget = scraper.body_budget
        assert (budget.reserved, budget.peak, budget.refused) == (0, BUDGET, 3)
    *hostile, healthy = outcomes
    assert healthy.value == 60.0, healthy.error
    kinds = sorted(o.error.kind for o in hostile if o.error is not None)
    assert kinds == [ScrapeErrorKind.TIMEOUT] * 2 + [ScrapeErrorKind.TOO_LARGE] * 3, hostile
    for outcome in hostile:
        assert outcome.value is None and outcome.error is not None
        if outcome.error.kind is ScrapeErrorKind.TOO_LARGE:
            message = outcome.error.message
            assert "daemon-wide budget for large bodies" in message, message
            assert "in use by other scrapes" in message
            assert "raise DaemonConfig bodyBudget" in message
            assert "lower DaemonConfig bodySizeLimit" in message
            assert "pods sending huge bodies" in message
            assert outcome.duration_seconds < timeout / 2, "refused at once, not at the deadline"


async def test_endless_bodies_beyond_the_budget_all_fail_and_give_it_back() -> None:
    async with (
        servers(*[endless() for _ in range(5)], answer(ok(PAGE))) as targets,
        Scraper(daemon=daemon()) as scraper,
    ):
        for _ in range(3):
            *hostile, healthy = await scraper.scrape(targets, timeout=5.0)
            assert healthy.value == 60.0, healthy.error
            assert all(
                o.error is not None and o.error.kind is ScrapeErrorKind.TOO_LARGE for o in hostile
            ), hostile
            assert scraper.body_budget.reserved == 0
        assert scraper.body_budget.peak == BUDGET


async def test_every_way_a_scrape_ends_gives_the_budget_back() -> None:
    """Endless body, gzip bomb, cut, reset, deadline, and a large valid page, round after
    round: each reserves (the peak shows it), and nothing is held once the round is over."""
    handlers = [endless(), gzip_bomb(), cut(reset=False), cut(reset=True), stalled()]
    async with (
        servers(*handlers, answer(large_page())) as targets,
        Scraper(daemon=DaemonConfig(body_size_limit_bytes=LIMIT)) as scraper,
    ):
        budget = scraper.body_budget
        for _ in range(3):
            *hostile, large = await scraper.scrape(targets, timeout=1.0)
            assert large.value == 60.0, large.error
            assert [o.error.kind if o.error else None for o in hostile[:3]] == [
                ScrapeErrorKind.TOO_LARGE,
                ScrapeErrorKind.TOO_LARGE,
                ScrapeErrorKind.TRUNCATED,
            ]
            assert hostile[3].value is None
            assert hostile[4].error is not None and hostile[4].error.kind is ScrapeErrorKind.TIMEOUT
            assert budget.reserved == 0, budget
        assert budget.peak >= 6 * MIB - MIB, "every scrape past its allowance reserved"
        assert budget.refused == 0


@pytest.mark.parametrize("end", ["cancel", "close"])
async def test_a_scrape_cancelled_or_closed_mid_body_gives_the_budget_back(end: str) -> None:
    async with servers(stalled(), stalled()) as targets:
        scraper = Scraper(daemon=daemon())
        try:
            task = asyncio.create_task(scraper.scrape(targets, timeout=30.0))
            budget = scraper.body_budget
            await wait_until(
                lambda: budget.reserved == BUDGET,
                "both bodies past their allowance",
                state=lambda: budget,
            )
            if end == "cancel":
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                await scraper.close()
                outcomes = await task
                assert all(o.value is None for o in outcomes)
            assert budget.reserved == 0, budget
        finally:
            await scraper.close()

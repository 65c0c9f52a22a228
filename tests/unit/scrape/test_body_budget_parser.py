"""The daemon-wide budget for large bodies, on its own and through the response parser (pure:
no sockets; the parser is fed whole responses and one byte at a time)."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from autoscalerd.scrape.budget import BodyBudget, BodyBudgetExhausted
from autoscalerd.scrape.response_parser import BodyTooLarge, ResponseParser

ALLOWANCE = 1000
STEP = 500
LIMIT = 10_000


def budget(total: int = 100_000) -> BodyBudget:
    return BodyBudget(total, allowance=ALLOWANCE, step=STEP)


def response(body: bytes, *headers: bytes, chunked: bool = False) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    if chunked:
        framed = b"".join(
            b"%x\r\n" % len(body[i : i + 300]) + body[i : i + 300] + b"\r\n"
            for i in range(0, len(body), 300)
        )
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            + extra
            + b"\r\n"
            + framed
            + b"0\r\n\r\n"
        )
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def feed(parser: ResponseParser, data: bytes, *, split: bool) -> bool:
    if not split:
        return parser.feed(data)
    done = False
    for i in range(len(data)):
        done = parser.feed(data[i : i + 1])
    return done


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def split(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# -- the budget on its own ---------------------------------------------------------------------


def test_reserve_and_release() -> None:
    b = budget(1500)
    assert b.try_reserve(1000) and b.reserved == 1000 and b.available == 500
    assert not b.try_reserve(501), "never a part of a reservation"
    assert (b.reserved, b.refused) == (1000, 1)
    assert b.try_reserve(500) and b.reserved == 1500
    b.release(1500)
    assert (b.reserved, b.peak) == (0, 1500)


def test_releasing_more_than_is_held_is_an_error() -> None:
    b = budget()
    assert b.try_reserve(STEP)
    b.release(STEP)
    with pytest.raises(RuntimeError, match="released twice"):
        b.release(STEP)
    assert b.reserved == 0


@pytest.mark.parametrize("args", [(-1, 0, 1), (0, -1, 1), (0, 0, 0)])
def test_invalid_budget(args: tuple[int, int, int]) -> None:
    total, allowance, step = args
    with pytest.raises(ValueError, match="invalid body budget"):
        BodyBudget(total, allowance=allowance, step=step)


# -- through the parser ------------------------------------------------------------------------


def test_a_body_under_the_allowance_never_touches_the_budget(split: bool) -> None:
    """An empty budget: a page within the free allowance is read all the same."""
    b = budget(0)
    body = b"x" * ALLOWANCE
    for raw in (
        response(body),
        response(body, chunked=True),
        response(gzip.compress(body), b"Content-Encoding: gzip"),
    ):
        p = ResponseParser(LIMIT, b)
        assert feed(p, raw, split=split)
        assert p.body == body and p.reserved == 0
    assert (b.reserved, b.peak, b.refused) == (0, 0, 0)


@pytest.mark.parametrize("size", [ALLOWANCE + 1, ALLOWANCE + STEP, ALLOWANCE + STEP + 1, LIMIT])
@pytest.mark.parametrize("encoding", ["identity", "chunked", "gzip", "deflate"])
def test_a_large_body_reserves_whole_steps_and_reads_the_same(
    size: int, encoding: str, split: bool
) -> None:
    body = os.urandom(size // 2).hex().encode()[:size].ljust(size, b"#")
    if encoding == "gzip":
        raw = response(gzip.compress(body), b"Content-Encoding: gzip")
    elif encoding == "deflate":
        raw = response(zlib.compress(body), b"Content-Encoding: deflate")
    else:
        raw = response(body, chunked=encoding == "chunked")
    b = budget()
    p = ResponseParser(LIMIT, b)
    assert feed(p, raw, split=split)
    assert p.body == body
    expected = -(-(size - ALLOWANCE) // STEP) * STEP
    assert p.reserved == b.reserved == expected
    assert b.peak == expected, "reserved as it grew, never more than the size needs"
    p.release_budget()
    p.release_budget()  # once only: the second is a no-op
    assert (p.reserved, b.reserved) == (0, 0)


def test_a_gzip_body_of_many_members_past_the_allowance(split: bool) -> None:
    """Decoding goes on past the threshold across member boundaries."""
    members = [gzip.compress(bytes([65 + i]) * 700) for i in range(8)]
    b = budget()
    p = ResponseParser(LIMIT, b)
    assert feed(p, response(b"".join(members), b"Content-Encoding: gzip"), split=split)
    assert p.body == b"".join(bytes([65 + i]) * 700 for i in range(8))
    assert b.reserved == 5000


def test_refused_reservation_fails_at_once_and_keeps_what_it_had() -> None:
    b = budget(STEP)
    p = ResponseParser(LIMIT, b)
    raw = response(b"#" * 5000)
    head = len(raw) - 5000
    assert not p.feed(raw[: head + ALLOWANCE + 100])  # one step reserved
    assert p.reserved == b.reserved == STEP
    with pytest.raises(BodyBudgetExhausted, match="daemon-wide budget for large bodies") as info:
        p.feed(raw[head + ALLOWANCE + 100 :])
    assert (info.value.total, info.value.in_use, info.value.size) == (STEP, STEP, 5000)
    assert info.value.needed == 4000 - STEP, "all a read needs at once, or nothing"
    assert p.reserved == b.reserved == STEP
    p.discard()
    p.release_budget()
    assert b.reserved == 0 and b.refused == 1


def test_the_limit_wins_over_the_budget_and_bounds_the_reservation() -> None:
    """A gzip bomb stops at the limit; it never reserves more than the limit can need."""
    b = budget()
    p = ResponseParser(3000, b)
    with pytest.raises(BodyTooLarge, match="gzip encoding"):
        p.feed(response(gzip.compress(b"#" * 1_000_000), b"Content-Encoding: gzip"))
    assert p.reserved == b.reserved == 3000 - ALLOWANCE
    p.release_budget()
    assert b.reserved == 0


def test_a_limit_below_the_allowance_is_the_only_bound() -> None:
    b = budget(0)
    p = ResponseParser(100, b)
    with pytest.raises(BodyTooLarge, match="Content-Length is 101 bytes"):
        p.feed(response(b"#" * 101))
    p = ResponseParser(100, b)
    with pytest.raises(BodyTooLarge, match="identity encoding"):
        p.feed(response(b"#" * 101, chunked=True))
    assert b.reserved == b.refused == 0


def test_error_body_is_cut_at_its_cap_without_reserving() -> None:
    b = budget(0)
    p = ResponseParser(LIMIT, b, error_cap=64)
    raw = b"HTTP/1.1 500 Oops\r\nContent-Length: 5000\r\n\r\n" + b"e" * 5000
    assert p.feed(raw)
    assert (p.status, p.truncated, len(p.body), p.reserved) == (500, True, 64, 0)


def test_take_reservation_hands_it_over() -> None:
    b = budget()
    p = ResponseParser(LIMIT, b)
    assert p.feed(response(b"#" * 2000))
    assert p.take_reservation() == 1000
    p.release_budget()  # nothing left to give back: the caller holds it
    assert b.reserved == 1000
    b.release(1000)


def test_without_a_budget_the_limit_is_the_threshold() -> None:
    p = ResponseParser(LIMIT)
    assert p.feed(response(b"#" * LIMIT))
    assert p.reserved == 0 and len(p.body) == LIMIT

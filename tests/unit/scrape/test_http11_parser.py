"""The HTTP/1.1 response parser of the scrape client, fed whole and one byte at a time."""

from __future__ import annotations

import gzip
import zlib

import pytest

from autoscalerd.scrape.http11 import (
    MAX_HEAD_BYTES,
    MAX_INTERIM_RESPONSES,
    BodyTooLarge,
    HTTPProtocolError,
    ResponseParser,
    ServerDisconnected,
    TruncatedResponse,
    build_get,
)

BODY = b"go_threads 20\n" * 100
LIMIT = 1 << 20


def feed(parser: ResponseParser, data: bytes, *, split: bool) -> bool:
    """Feed `data` whole, or one byte per call; return whether the response completed."""
    if not split:
        return parser.feed(data)
    done = False
    for i in range(len(data)):
        done = parser.feed(data[i : i + 1])
        if done:
            assert i == len(data) - 1, "completed before the last byte"
    return done


def chunked(body: bytes, size: int = 7, trailer: bytes = b"") -> bytes:
    out = b""
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def split(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_content_length(split: bool) -> None:
    p = ResponseParser(LIMIT)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: b\r\n\r\n" % len(BODY) + BODY
    assert feed(p, raw, split=split)
    assert (p.status, p.reason, p.body, p.keep_alive) == (200, "OK", BODY, True)


def test_chunked_with_extensions_and_trailer(split: bool) -> None:
    p = ResponseParser(LIMIT)
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(
        BODY, trailer=b"X-Trailer: 1\r\n"
    )
    assert feed(p, raw, split=split)
    assert p.body == BODY and p.keep_alive


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_gzip(split: bool, framing: str) -> None:
    z = gzip.compress(BODY)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
    if framing == "length":
        raw = head + b"Content-Length: %d\r\n\r\n" % len(z) + z
    else:
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(z, size=50)
    p = ResponseParser(LIMIT)
    assert feed(p, raw, split=split)
    assert p.body == BODY and p.encoding == "gzip"


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
def test_deflate_both_wrappings(wbits: int) -> None:
    c = zlib.compressobj(wbits=wbits)
    z = c.compress(BODY) + c.flush()
    p = ResponseParser(LIMIT)
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(z)
    assert p.feed(raw + z)
    assert p.body == BODY


def test_http10_body_until_close(split: bool) -> None:
    p = ResponseParser(LIMIT)
    assert not feed(p, b"HTTP/1.0 200 OK\r\n\r\n" + BODY, split=split)
    assert p.feed_eof()
    assert p.body == BODY and not p.keep_alive


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n", False),
        (b"HTTP/1.1 200 OK\r\n", True),
        (b"HTTP/1.0 200 OK\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n", True),
    ],
)
def test_keep_alive_rules(head: bytes, keep: bool) -> None:
    p = ResponseParser(LIMIT)
    assert p.feed(head + b"Content-Length: 2\r\n\r\nok")
    assert p.keep_alive is keep


def test_interim_100_is_skipped(split: bool) -> None:
    p = ResponseParser(LIMIT)
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert feed(p, raw, split=split)
    assert (p.status, p.body) == (200, b"ok")


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    p = ResponseParser(LIMIT)
    assert p.feed(b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status)
    assert p.body == b"" and p.keep_alive


def test_bytes_after_the_response_forbid_reuse() -> None:
    p = ResponseParser(LIMIT)
    assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert p.body == b"ok" and not p.keep_alive


def test_content_length_over_limit_fails_on_the_head() -> None:
    p = ResponseParser(100)
    with pytest.raises(BodyTooLarge, match="Content-Length is 101 bytes"):
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n")


def test_chunked_over_limit() -> None:
    p = ResponseParser(100)
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(BodyTooLarge, match="identity encoding"):
        p.feed(chunked(b"x" * 200, size=10))


def test_gzip_bomb_stops_one_byte_past_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB in ~64 KiB
    p = ResponseParser(1 << 20)
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb))
    with pytest.raises(BodyTooLarge, match="gzip encoding"):
        p.feed(bomb)
    assert p._size <= (1 << 20) + 1  # never decompressed more than limit + 1 bytes


def test_exactly_at_the_limit_is_fine() -> None:
    p = ResponseParser(10)
    assert p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"x" * 10))
    assert p.body == b"x" * 10


def test_error_status_body_is_cut_not_failed() -> None:
    p = ResponseParser(LIMIT, error_cap=64)
    assert p.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1000000\r\n\r\n" + b"f" * 100)
    assert p.status == 403 and p.body == b"f" * 64 and p.truncated and not p.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>502 Bad Gateway</html>\r\n\r\n",
        b"\x15\x03\x03\x00\x02\x02\x46",  # a TLS alert record to a plain-HTTP client
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises(HTTPProtocolError):
        ResponseParser(LIMIT).feed(raw)


def test_garbage_is_detected_before_a_head_end_arrives() -> None:
    with pytest.raises(HTTPProtocolError, match="does not start with an HTTP status line"):
        ResponseParser(LIMIT).feed(b"SSH-2.0-OpenSSH_9.6")


def test_header_section_too_large() -> None:
    p = ResponseParser(LIMIT)
    p.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(HTTPProtocolError, match=f"larger than {MAX_HEAD_BYTES} bytes"):
        for _ in range(MAX_HEAD_BYTES // 1000 + 2):
            p.feed(b"X-Pad: " + b"a" * 991 + b"\r\n")


def test_corrupt_and_truncated_gzip() -> None:
    z = gzip.compress(BODY)
    p = ResponseParser(LIMIT)
    with pytest.raises(HTTPProtocolError, match="cannot decompress"):
        p.feed(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 20\r\n\r\n" + b"x" * 20
        )
    p = ResponseParser(LIMIT)
    cut = z[: len(z) // 2]
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(cut)
    with pytest.raises(HTTPProtocolError, match="truncated"):
        p.feed(raw + cut)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "without responding"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "middle of the response headers"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "7 bytes before the end"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "chunked body"),
    ],
)
def test_partial_responses(raw: bytes, match: str) -> None:
    p = ResponseParser(LIMIT)
    assert not p.feed(raw)
    assert p.received is bool(raw)
    with pytest.raises(ServerDisconnected, match=match):
        p.feed_eof()


def test_build_get() -> None:
    head = build_get("10.0.0.1:10250", "/metrics", [("Accept", "text/plain")])
    assert head == b"GET /metrics HTTP/1.1\r\nHost: 10.0.0.1:10250\r\nAccept: text/plain\r\n\r\n"
    for bad in ("a\r\nX-Injected: 1", "a\nb", "a\0b", "tök€n"):
        with pytest.raises(ValueError):
            build_get("h", "/", [("Authorization", bad)])


def test_cached_heads_parse_like_fresh_ones() -> None:
    """Heads are cached by their bytes; per-parser settings (limit, error cap) still apply."""
    from autoscalerd.scrape import response_parser

    response_parser._HEAD_CACHE.clear()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nContent-Encoding: gzip\r\n\r\n"
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
    for _ in range(2):  # the second round hits the cache
        p = ResponseParser(LIMIT)
        p.feed(plain)
        assert (p.status, p.reason, p.keep_alive, p.encoding) == (200, "OK", True, "identity")
        assert p.feed(b"y" * 50) and p.body == b"y" * 50
        with pytest.raises(BodyTooLarge, match="Content-Length is 50 bytes"):
            ResponseParser(10).feed(plain)
        p = ResponseParser(LIMIT)
        assert not p.feed(ok)
        assert p.encoding == "gzip" and p._decomp is not None
        p = ResponseParser(LIMIT, error_cap=4)
        assert p.feed(b"HTTP/1.0 503 Busy\r\nConnection: keep-alive\r\n\r\nabcdefgh")
        assert (p.status, p.reason, p.body, p.truncated) == (503, "Busy", b"abcd", True)
        with pytest.raises(HTTPProtocolError, match="unsupported Content-Encoding"):
            ResponseParser(LIMIT).feed(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n")
    assert len(response_parser._HEAD_CACHE) == 3  # errors are not cached


def test_head_cache_is_bounded() -> None:
    from autoscalerd.scrape import response_parser

    response_parser._HEAD_CACHE.clear()
    for i in range(response_parser.HEAD_CACHE_SIZE * 2 + 1):
        p = ResponseParser(LIMIT)
        assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % i + b"z" * i)
        assert p.body == b"z" * i
    assert 0 < len(response_parser._HEAD_CACHE) <= response_parser.HEAD_CACHE_SIZE


# -- hostile responses (issue 11) -------------------------------------------------------------


def test_gzip_members_are_all_decoded(split: bool) -> None:
    z = gzip.compress(BODY[:500]) + gzip.compress(b"") + gzip.compress(BODY[500:])
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(z)
    p = ResponseParser(LIMIT)
    assert feed(p, raw + z, split=split)
    assert p.body == BODY


def test_gzip_members_count_towards_one_limit() -> None:
    z = gzip.compress(b"a" * 600) * 4
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(z)
    with pytest.raises(BodyTooLarge):
        ResponseParser(2000).feed(raw + z)


def test_data_after_a_deflate_stream_is_an_error() -> None:
    c = zlib.compressobj()
    z = c.compress(BODY) + c.flush() + b"junk"
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(z)
    with pytest.raises(HTTPProtocolError, match="after the end of the deflate body"):
        ResponseParser(LIMIT).feed(raw + z)


def test_interim_responses_capped(split: bool) -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    p = ResponseParser(LIMIT)
    assert feed(p, interim * MAX_INTERIM_RESPONSES + final, split=split)
    assert p.body == BODY
    with pytest.raises(HTTPProtocolError, match="interim"):
        feed(ResponseParser(LIMIT), interim * (MAX_INTERIM_RESPONSES + 1) + final, split=split)


def test_obs_fold_is_replaced_by_a_space(split: bool) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text;\r\n"
        b"\t version=1.0.0\r\nContent-Length:\r\n  %d\r\n\r\n" % len(BODY) + BODY
    )
    p = ResponseParser(LIMIT)
    assert feed(p, raw, split=split)
    assert p.body == BODY and p.openmetrics


def test_folded_first_header_line_is_refused() -> None:
    with pytest.raises(HTTPProtocolError, match="folded line before the first header"):
        ResponseParser(LIMIT).feed(b"HTTP/1.1 200 OK\r\n X: y\r\n\r\n")


@pytest.mark.parametrize(
    ("content_type", "openmetrics"),
    [
        (b"application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        (b"Application/OpenMetrics-Text", True),
        (b"text/plain; version=0.0.4", False),
        (None, False),
    ],
)
def test_openmetrics_content_type(content_type: bytes | None, openmetrics: bool) -> None:
    header = b"Content-Type: " + content_type + b"\r\n" if content_type else b""
    p = ResponseParser(LIMIT)
    assert p.feed(b"HTTP/1.1 200 OK\r\n" + header + b"Content-Length: 0\r\n\r\n")
    assert p.openmetrics is openmetrics


def test_close_delimited_body_needs_a_proven_end() -> None:
    raw = b"HTTP/1.0 200 OK\r\n\r\n" + BODY
    p = ResponseParser(LIMIT)
    assert not p.feed(raw)
    with pytest.raises(TruncatedResponse, match="close_notify"):
        p.feed_eof(proven=False)
    p = ResponseParser(LIMIT)
    p.feed(raw)
    assert p.feed_eof(proven=True) and p.body == BODY


def test_not_http_bytes_that_look_like_tls_say_so() -> None:
    with pytest.raises(HTTPProtocolError) as tls:
        ResponseParser(LIMIT).feed(b"\x15\x03\x03\x00\x02\x02\x46")
    assert tls.value.looks_like_tls
    with pytest.raises(HTTPProtocolError) as ssh:
        ResponseParser(LIMIT).feed(b"SSH-2.0-OpenSSH_9.6\r\n")
    assert not ssh.value.looks_like_tls


def test_discard_drops_the_buffers() -> None:
    p = ResponseParser(LIMIT)
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"#" * 50000)
    p.discard()
    assert p.body == b"" and not p._chunks and not p._buf

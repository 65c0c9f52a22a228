"""When rotating credentials are refreshed: the pure schedule, with time stepped by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscalerd.kube.refresh import (
    BACKOFF_MAX,
    REFRESH_MARGIN_MAX,
    Fetched,
    RefreshSchedule,
    TokenFileSource,
    backoff,
    refresh_margin,
)


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [(8.0, 1.6), (900.0, 180.0), (3600.0, REFRESH_MARGIN_MAX), (0.0, 0.0), (-5.0, 0.0)],
)
def test_margin_is_proportional_and_capped(lifetime: float, margin: float) -> None:
    assert refresh_margin(lifetime) == pytest.approx(margin)


def test_backoff_doubles_up_to_a_bound() -> None:
    assert [backoff(n) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert backoff(50) == BACKOFF_MAX


def test_an_8_second_token_is_refreshed_once_per_lifetime() -> None:
    s = RefreshSchedule(fallback_interval=600.0)
    s.succeeded(100.0, lifetime=8.0)
    assert not s.due(106.3)
    assert s.due(106.4)
    runs = 1
    now = 100.0
    while now < 140.0:  # a caller asking before every call, 10 calls a second, for 40 s
        if s.due(now):
            s.succeeded(now, lifetime=8.0)
            runs += 1
        now += 0.1
    assert 6 <= runs <= 8


def test_no_expiry_means_the_fallback_interval() -> None:
    s = RefreshSchedule(fallback_interval=60.0)
    s.succeeded(0.0, lifetime=None)
    assert not s.due(59.9) and s.due(60.0)
    s.succeeded(0.0, lifetime=3600.0)  # a long-lived token is still re-checked at the fallback
    assert s.next_due == 60.0


def test_failures_back_off_with_a_bound() -> None:
    s = RefreshSchedule(fallback_interval=600.0)
    now = 0.0
    waits = []
    for _ in range(10):
        s.failed(now)
        waits.append(s.next_due - now)
        now = s.next_due
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(waits) == BACKOFF_MAX
    s.succeeded(now, lifetime=10.0)
    assert s.failures == 0


def test_an_expired_credential_counts_as_a_failure() -> None:
    s = RefreshSchedule(fallback_interval=600.0)
    s.succeeded(10.0, lifetime=-3.0)
    assert s.failures == 1 and s.next_due == 11.0


def test_a_401_refreshes_at_once_then_backs_off_until_accepted() -> None:
    s = RefreshSchedule(fallback_interval=600.0)
    s.succeeded(0.0, lifetime=None)
    s.rejected(5.0)
    assert s.due(5.0), "the first 401 refreshes at once"
    s.succeeded(5.0, lifetime=None)
    s.rejected(5.2)  # the fresh credential is rejected too
    assert not s.due(5.9) and s.due(6.0)
    s.succeeded(6.0, lifetime=None)
    s.rejected(6.1)
    assert not s.due(7.9) and s.due(8.0)
    s.accepted()
    s.succeeded(8.0, lifetime=None)
    s.rejected(9.0)
    assert s.due(9.0), "accepted in between: at once again"


def test_secrets_stay_out_of_repr() -> None:
    fetched = Fetched(token="s3cret", client_cert=b"CERT", client_key=b"KEY", lifetime=5.0)
    assert "s3cret" not in repr(fetched) and "KEY" not in repr(fetched)


async def test_token_file_change_is_seen_by_stat(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    source = TokenFileSource(path)
    assert not source.changed()
    assert (await source.fetch()).token == "one"
    tmp = tmp_path / "token.tmp"
    tmp.write_text("two\n")
    tmp.replace(path)  # atomic, as the kubelet and rotating agents do
    assert source.changed()
    assert (await source.fetch()).token == "two"
    assert not source.changed()
    path.unlink()
    assert source.changed()
    with pytest.raises(OSError):
        await source.fetch()
    assert not source.changed(), "a missing file is retried on the backoff, not every call"
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        await source.fetch()

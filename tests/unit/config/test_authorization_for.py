"""The one rule for which token a source is scraped with (DaemonConfig.authorization_for)."""

from __future__ import annotations

import pytest

from autoscalerd.config.model import Authorization, DaemonConfig, MetricSource, SeriesSelector

DEFAULT = Authorization(credentials_file="/daemon/token")
OWN = Authorization(credentials_file="/source/token")


def source(protocol: str, authorization: Authorization | None = None) -> MetricSource:
    return MetricSource(
        protocol=protocol,
        port=9100,
        path="/metrics",
        target_metric="m",
        selector=SeriesSelector(metric="m"),
        target_value=1.0,
        authorization=authorization,
    )


@pytest.mark.parametrize(
    ("protocol", "own", "expected"),
    [
        ("https", None, DEFAULT),  # the default applies over TLS
        ("http", None, None),  # never in clear text
        ("https", OWN, OWN),  # a source's own token wins
        ("http", OWN, OWN),  # and is its own choice, even over http
    ],
)
def test_daemon_token_only_over_https(
    protocol: str, own: Authorization | None, expected: Authorization | None
) -> None:
    daemon = DaemonConfig(authorization=DEFAULT)
    assert daemon.authorization_for(source(protocol, own)) == expected


def test_no_default_token() -> None:
    assert DaemonConfig().authorization_for(source("https")) is None

"""How a metric source's TLS and token settings combine with the defaults (table-driven)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from autoscalerd.config.model import (
    Authorization,
    DaemonConfig,
    MetricSource,
    SeriesSelector,
    TLSConfig,
)
from autoscalerd.daemon.effective_sources import effective_source
from autoscalerd.daemon.tick_grid import TICK_SLOTS, next_tick, tick_phase

TOKEN = Authorization(credentials_file="/daemon-token")
OWN = Authorization(credentials_file="/own-token")


def source(protocol: str = "https", **fields: object) -> MetricSource:
    base = MetricSource(
        protocol=protocol,
        port=10250,
        path="/metrics",
        target_metric="go_threads",
        selector=SeriesSelector(metric="go_threads"),
        target_value=20,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("src", "daemon", "flag", "insecure", "auth"),
    [
        pytest.param(source(), DaemonConfig(), False, None, None, id="secure-by-default"),
        pytest.param(source(), DaemonConfig(), True, True, None, id="flag-sets-the-default"),
        pytest.param(
            source(tls=TLSConfig(insecure_skip_verify=False)),
            DaemonConfig(),
            True,
            False,
            None,
            id="source-beats-flag",
        ),
        pytest.param(
            source(),
            DaemonConfig(tls=TLSConfig(insecure_skip_verify=False)),
            True,
            False,
            None,
            id="daemon-config-beats-flag",
        ),
        pytest.param(
            source(), DaemonConfig(authorization=TOKEN), False, None, TOKEN, id="daemon-token-https"
        ),
        pytest.param(
            source("http"),
            DaemonConfig(authorization=TOKEN),
            False,
            None,
            None,
            id="daemon-token-never-over-http",
        ),
        pytest.param(
            source("http", authorization=OWN),
            DaemonConfig(authorization=TOKEN),
            False,
            None,
            OWN,
            id="own-token-is-own-choice",
        ),
        pytest.param(
            source("http"),
            DaemonConfig(tls=TLSConfig(insecure_skip_verify=True)),
            True,
            None,
            None,
            id="no-tls-settings-on-http",
        ),
    ],
)
def test_effective_source(
    src: MetricSource,
    daemon: DaemonConfig,
    flag: bool,
    insecure: bool | None,
    auth: Authorization | None,
) -> None:
    eff = effective_source(src, daemon, flag)
    assert eff.tls.insecure_skip_verify is insecure
    assert eff.authorization == auth


def test_tick_phase_is_stable_and_spread_over_the_slots() -> None:
    phases = [tick_phase(f"ns/policy-{i}") for i in range(100)]
    assert phases == [tick_phase(f"ns/policy-{i}") for i in range(100)]
    assert all(0 <= p < 1 for p in phases)
    assert set(phases) == {k / TICK_SLOTS for k in range(TICK_SLOTS)}, "every slot is used"
    assert max(Counter(phases).values()) <= 20, "no slot holds a fifth of the policies"


@pytest.mark.parametrize(
    ("after", "interval", "phase", "expected"),
    [
        (0.0, 1.0, 0.0, 1.0),  # strictly after
        (0.05, 1.0, 0.3, 0.3),
        (0.3, 1.0, 0.3, 1.3),  # on a slot: the next one
        (1000.31, 1.0, 0.3, 1001.3),  # overran: the missed slots are skipped
        (7.0, 15.0, 0.5, 7.5),
        (7.5, 15.0, 0.5, 22.5),
    ],
)
def test_next_tick_is_on_the_slot_grid(
    after: float, interval: float, phase: float, expected: float
) -> None:
    assert next_tick(after, interval, phase) == pytest.approx(expected)


def test_policies_of_one_slot_get_equal_deadlines() -> None:
    """Equal floats, so their timers fire in one loop iteration and the scrapes batch."""
    assert len({next_tick(1234.5 + i * 1e-4, 1.0, 0.4) for i in range(50)}) == 1

"""When a reconciler reads `/scale` again (a table; the reconciler's use of it is in
test_daemon_reconciler.py)."""

from __future__ import annotations

import pytest

from autoscalerd.daemon.scale_refresh import scale_is_fresh


@pytest.mark.parametrize(
    ("age", "replicas", "live_pods", "fresh"),
    [
        pytest.param(0.0, 3, None, True, id="just-read"),
        pytest.param(14.9, 3, 3, True, id="steady-within-the-refresh"),
        pytest.param(15.0, 3, 3, False, id="steady-refresh-due"),
        pytest.param(1.9, 3, 5, True, id="pods-disagree-recheck-not-due"),
        pytest.param(2.0, 3, 5, False, id="pods-disagree-recheck-due"),
        pytest.param(2.0, 3, None, True, id="pods-not-counted-yet"),
    ],
)
def test_scale_is_read_again_when_due(
    age: float, replicas: int, live_pods: int | None, fresh: bool
) -> None:
    assert scale_is_fresh(age, replicas, live_pods) is fresh

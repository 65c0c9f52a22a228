"""Windows: (now − W, now] semantics, AIbrix's window tables, accuracy, speed."""

from __future__ import annotations

import math
import random

import pytest

from autoscalerd.scaling.window import MaxWindow, MeanWindow, MinWindow


@pytest.mark.parametrize(
    ("samples", "now", "want"),
    [
        pytest.param([], 0.0, None, id="empty-window-has-no-average"),
        pytest.param([(0, 10)], 0.0, 10.0, id="sample-at-now-is-in"),
        pytest.param([(0, 10), (5, 20)], 9.999, 15.0, id="sample-just-inside-is-in"),
        pytest.param([(0, 10), (5, 20)], 10.0, 20.0, id="sample-at-now-minus-w-has-left"),
        pytest.param([(0, 10), (0, 20)], 0.0, 15.0, id="same-timestamp-samples-both-count"),
        pytest.param([(0, 10)], 10.0, None, id="everything-left"),
    ],
)
def test_mean_window_holds_now_minus_w_exclusive_to_now_inclusive(
    samples: list[tuple[float, float]], now: float, want: float | None
) -> None:
    w = MeanWindow(10)
    for t, v in samples:
        w.record(t, v)
    assert w.average(now) == want


def test_mean_window_custom_durations_aibrix_client_test() -> None:
    # TestConfigureMetricWindowsUsesCustomDurations: stable 90 s and panic 30 s; 10 at t0,
    # 70 at t0 + 60 → stable 40, panic 70
    stable, panic = MeanWindow(90), MeanWindow(30)
    for w in (stable, panic):
        w.record(0, 10)
        w.record(60, 70)
    assert (stable.average(60), panic.average(60)) == (40.0, 70.0)


def test_extremum_windows_aibrix_gen1_time_window() -> None:
    # window_test.go TimeWindow 5 s: 0..4 at 0..4 s → max 4; 8 at 8 s → min 4; 9 at 9 s → min 8
    hi, lo = MaxWindow(5), MinWindow(5)
    for t in range(5):
        hi.record(t, t)
        lo.record(t, t)
    assert hi.value(4) == 4
    lo.record(8, 8)
    assert lo.value(8) == 4
    lo.record(9, 9)
    assert lo.value(9) == 8


def test_extremum_window_of_zero_length_is_empty() -> None:
    w = MaxWindow(0)
    w.record(1, 5)
    assert w.value(1) is None


def test_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError):
        MeanWindow(-1)
    with pytest.raises(ValueError):
        MaxWindow(-1)


def test_mean_window_does_not_drift_over_a_day_of_fractional_samples() -> None:
    rng = random.Random(4)
    w = MeanWindow(60)
    recent: list[float] = []
    for t in range(86_400):
        v = rng.uniform(0, 1e6) if t % 7 else rng.uniform(0, 1e-3)
        w.record(t, v)
        recent.append(v)
    want = math.fsum(recent[-60:]) / 60
    got = w.average(86_399)
    assert got is not None
    assert got == pytest.approx(want, rel=1e-14)


def test_mean_window_count_and_len() -> None:
    w = MeanWindow(3)
    for t in range(5):
        w.record(t, 1.0)
    assert w.count(4) == 3
    assert len(w) == 3
    w.record(4, 3.0)
    assert w.average(4) == pytest.approx(1.5)

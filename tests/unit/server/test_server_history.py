"""The per-policy ring buffers behind /history and /ui: pure, time stepped by hand."""

from __future__ import annotations

import math

import pytest

from autoscalerd.server.history import (
    MAX_HISTORY_SECONDS,
    HistoryStore,
    Point,
    PolicyHistory,
    point_bytes,
)

KEY = "ns/app"


def rec(
    store: HistoryStore,
    now: float,
    value: float | None,
    *,
    ready: int | None = 1,
    desired: int | None = 1,
    panic: bool = False,
    error: bool = False,
    interval: float = 1.0,
    names: tuple[str, ...] = ("m",),
    targets: tuple[float, ...] = (20.0,),
    key: str = KEY,
) -> None:
    store.record(
        key,
        now,
        interval=interval,
        names=names,
        targets=targets,
        point=Point(
            values=(value,) * len(names), ready=ready, desired=desired, panic=panic, error=error
        ),
    )


def store_with(*keys: str, seconds: float = 10.0) -> HistoryStore:
    s = HistoryStore(seconds)
    s.sync(keys or [KEY])
    return s


def window(store: HistoryStore, now: float, seconds: float = 10.0) -> dict:
    w = store.window(KEY, now=now, seconds=seconds)
    assert w is not None
    return w


def test_points_come_back_in_time_order_with_time_derived_from_the_index() -> None:
    s = store_with()
    for t in range(5):
        rec(s, 100.0 + t + 0.3, 10.0 * t, ready=t, desired=t + 1)  # ticks 100..104
    w = window(s, now=104.9, seconds=5)
    assert w["interval_seconds"] == 1.0
    assert (w["start"], w["end"], w["points"]) == (100.0, 104.0, 5)
    assert w["ready"] == [0, 1, 2, 3, 4]
    assert w["desired"] == [1, 2, 3, 4, 5]
    assert w["metrics"] == [
        {"name": "m", "values": [0.0, 10.0, 20.0, 30.0, 40.0], "targets": [[0, 20.0]]}
    ]


def test_wall_offset_turns_loop_time_into_unix_time() -> None:
    s = store_with()
    rec(s, 7.2, 1.0)
    w = s.window(KEY, now=7.5, seconds=2, wall_offset=1_700_000_000.0)
    assert w is not None
    assert (w["start"], w["end"]) == (1_700_000_007.0, 1_700_000_007.0)


def test_skipped_ticks_are_gaps_never_zeros() -> None:
    s = store_with()
    rec(s, 1.0, 5.0)
    rec(s, 4.0, 6.0)  # ticks 2 and 3 made no decision
    w = window(s, now=4.5, seconds=4)
    assert w["metrics"][0]["values"] == [5.0, None, None, 6.0]
    assert w["ready"] == [1, None, None, 1]
    assert w["panic"] == [0, None, None, 0]


def test_no_data_and_no_decision_are_null() -> None:
    s = store_with()
    rec(s, 1.0, None, desired=None)
    w = window(s, now=1.5, seconds=1)
    assert w["metrics"][0]["values"] == [None]
    assert w["desired"] == [None]
    assert w["ready"] == [1]


def test_flags() -> None:
    s = store_with()
    rec(s, 1.0, 1.0, panic=True)
    rec(s, 2.0, 1.0, error=True)
    w = window(s, now=2.5, seconds=2)
    assert w["panic"] == [1, 0]
    assert w["error"] == [0, 1]
    assert w["schedule"] == [0, 0]


def test_the_ring_keeps_only_its_capacity_and_overwrites_the_oldest() -> None:
    s = store_with(seconds=4)
    for t in range(10):
        rec(s, float(t), float(t))
    h = s.get(KEY)
    assert h is not None and h.capacity == 4
    w = window(s, now=9.5, seconds=100)  # capped to the buffer
    assert w["points"] == 4
    assert w["metrics"][0]["values"] == [6.0, 7.0, 8.0, 9.0]


def test_a_gap_longer_than_the_buffer_clears_it() -> None:
    s = store_with(seconds=4)
    for t in range(4):
        rec(s, float(t), 1.0)
    rec(s, 100.0, 2.0)
    w = window(s, now=100.5, seconds=4)
    assert w["metrics"][0]["values"] == [2.0]  # lists start at the first point present


def test_stale_slots_of_the_previous_lap_are_not_shown_ahead_of_the_head() -> None:
    s = store_with(seconds=4)
    for t in range(4):
        rec(s, float(t), 1.0)
    # asked at tick 6 while the newest point is tick 3: ticks 4..6 are absent (their slots
    # still hold ticks 0..2)
    w = window(s, now=6.5, seconds=4)
    assert w["metrics"][0]["values"] == [1.0, None, None, None]


def test_the_window_ends_at_the_newest_point_while_this_tick_is_still_to_come() -> None:
    s = store_with()
    rec(s, 3.6, 1.0)  # a policy in a late slot: tick 3
    w = window(s, now=4.1, seconds=2)  # tick 4 has begun, its slot not yet
    assert (w["end"], w["metrics"][0]["values"]) == (3.0, [1.0])
    w = window(s, now=5.1, seconds=3)  # a whole tick missed: the gap shows
    assert (w["end"], w["metrics"][0]["values"]) == (5.0, [1.0, None, None])
    w = window(s, now=5.1, seconds=2)  # nothing in the window: no points, but its end
    assert (w["end"], w["points"], w["ready"]) == (5.0, 0, [])


def test_the_same_tick_again_overwrites_and_a_tick_older_than_the_buffer_is_dropped() -> None:
    s = store_with(seconds=4)
    rec(s, 10.2, 1.0)
    rec(s, 10.9, 2.0)  # same tick
    rec(s, 2.0, 99.0)  # older than the buffer
    w = window(s, now=10.95, seconds=4)
    assert w["metrics"][0]["values"] == [2.0]
    assert w["start"] == 10.0


def test_float32_values_come_back_readable() -> None:
    s = store_with()
    rec(s, 1.0, 45.8182)
    assert window(s, now=1.5, seconds=1)["metrics"][0]["values"] == [45.8182]


@pytest.mark.parametrize(
    ("ready", "want"),
    [
        pytest.param(0, 0, id="zero-is-zero"),
        pytest.param(70_000, 65_534, id="clamped-below-the-sentinel"),
        pytest.param(None, None, id="unknown"),
    ],
)
def test_replica_counts(ready: int | None, want: int | None) -> None:
    s = store_with()
    rec(s, 1.0, 1.0, ready=ready)
    assert window(s, now=1.5, seconds=1)["ready"] == [want]


def test_unknown_policy_is_none_and_a_synced_policy_without_points_is_empty() -> None:
    s = store_with()
    assert s.window("other/x", now=1.0, seconds=10) is None
    w = window(s, now=1.0)
    assert (w["points"], w["ready"], w["metrics"]) == (0, [], [])


def test_records_for_keys_not_synced_are_ignored() -> None:
    s = store_with()
    rec(s, 1.0, 1.0, key="gone/policy")
    assert s.window("gone/policy", now=1.0, seconds=1) is None
    assert s.policies() == [KEY]


def test_sync_keeps_history_of_unchanged_keys_and_frees_removed_ones() -> None:
    s = store_with("a/x", "b/y")
    rec(s, 1.0, 1.0, key="a/x")
    rec(s, 1.0, 2.0, key="b/y")
    s.sync(["a/x", "c/z"])
    assert s.policies() == ["a/x", "c/z"]
    a = s.window("a/x", now=1.5, seconds=1)
    assert a is not None and a["metrics"][0]["values"] == [1.0]
    assert s.window("b/y", now=1.5, seconds=1) is None
    assert s.get("b/y") is None


def test_a_changed_spec_keeps_columns_by_name_and_adds_or_drops_others() -> None:
    s = store_with()
    rec(s, 1.0, 1.0, names=("a", "b"), targets=(10.0, 20.0))
    rec(s, 2.0, 2.0, names=("a", "c"), targets=(15.0, 30.0))  # b removed, c added, a re-targeted
    w = window(s, now=2.5, seconds=2)
    assert [m["name"] for m in w["metrics"]] == ["a", "c"]
    a, c = w["metrics"]
    assert a["values"] == [1.0, 2.0]
    assert a["targets"] == [[0, 10.0], [1, 15.0]]  # (index, target in force from there)
    assert c["values"] == [None, 2.0]
    assert c["targets"] == [[1, 30.0]]


def test_two_sources_on_one_metric_get_distinct_columns() -> None:
    s = store_with()
    rec(s, 1.0, 3.0, names=("m", "m"), targets=(1.0, 2.0))
    w = window(s, now=1.5, seconds=1)
    assert [m["name"] for m in w["metrics"]] == ["m", "m#2"]


def test_target_change_points_are_pruned_but_the_one_in_force_stays() -> None:
    s = store_with(seconds=3)
    for t, target in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0]):
        rec(s, float(t), 0.0, targets=(target,))
    h = s.get(KEY)
    assert h is not None
    assert h._targets["m"] == [(4, 5.0)]
    assert window(s, now=6.5, seconds=3)["metrics"][0]["targets"] == [[0, 5.0]]


def test_an_interval_change_starts_afresh() -> None:
    s = store_with(seconds=10)
    rec(s, 1.0, 1.0, interval=1.0)
    rec(s, 4.0, 2.0, interval=2.0)
    h = s.get(KEY)
    assert h is not None and (h.interval, h.capacity) == (2.0, 5)
    w = window(s, now=4.5, seconds=10)
    assert (w["start"], w["metrics"][0]["values"]) == (4.0, [2.0])


def test_the_bound_one_hour_at_one_second_for_a_thousand_policies() -> None:
    """The figure in the module docstring and README: 9 bytes a point, 31 MiB in all."""
    assert point_bytes(1) == 9
    h = PolicyHistory(seconds=3600, interval=1.0)
    h.set_columns(["m"], [1.0], 0)
    assert h.nbytes() == 3600 * point_bytes(1)
    assert 1000 * h.nbytes() / 2**20 == pytest.approx(30.9, abs=0.1)


def test_buffers_are_allocated_in_full_at_the_first_point() -> None:
    s = store_with(seconds=3600)
    assert s.nbytes() == 0
    rec(s, 1.0, 1.0)
    assert s.nbytes() == 3600 * 9


@pytest.mark.parametrize("seconds", [0.0, -1.0, math.nan, math.inf, MAX_HISTORY_SECONDS + 1])
def test_bad_store_lengths_are_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="history seconds"):
        HistoryStore(seconds)


@pytest.mark.parametrize("interval", [0.0, -1.0, math.nan])
def test_bad_intervals_are_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        PolicyHistory(seconds=10, interval=interval)


def _history(ticks: list[int], capacity: int = 10) -> PolicyHistory:
    h = PolicyHistory(seconds=capacity, interval=1.0)
    h.set_columns(["m"], [1.0], ticks[0] if ticks else 0)
    for t in ticks:
        h.record(t, Point(values=(float(t),), ready=1, desired=1))
    return h


@pytest.mark.parametrize(
    ("ticks", "now", "seconds", "first", "rendered"),
    [
        pytest.param([], 100.0, 10, None, 0, id="nothing-recorded"),
        pytest.param([97, 98], 99.0, 10, 8, 2, id="young-buffer-first-point-late-in-window"),
        pytest.param([90, 91, 92], 99.0, 4, None, 0, id="window-after-the-last-point"),
        # ticks 10..19 fill the buffer; the window ends 5 ticks later: its slots after the
        # head hold the points of 10 ticks before (stale), which do not count
        pytest.param(list(range(10, 20)), 24.0, 10, 0, 10, id="stale-slots-after-head"),
        pytest.param([50, 55], 56.0, 3, 2, 1, id="series-starts-at-the-first-point-present"),
    ],
)
def test_first_point_present_and_rendered_points_match_render(
    ticks: list[int], now: float, seconds: float, first: int | None, rendered: int
) -> None:
    """`first` (C-speed search of the flags) agrees with what `render` shows, and
    `rendered_points` is the length of its lists (what decides a sliced render)."""
    snap = _history(ticks).snapshot(KEY, now=now, seconds=seconds)
    doc = snap.render()
    assert snap.first() == first
    assert snap.rendered_points == rendered == doc["points"]

"""`simulate` with derived signals and schedules: `--start`, quantile totals, shaded windows."""

from __future__ import annotations

import importlib.util
import io
import pathlib

import pytest

from autoscalerd.config import load
from autoscalerd.simulate import run_simulate

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "config" / "examples"
POLICY = EXAMPLES / "llm-signals.yaml"
TRACE = EXAMPLES / "traces" / "llm-signals.csv"


def simulate(start: str | None, trace: str = str(TRACE), plot: str | None = None):
    out, err = io.StringIO(), io.StringIO()
    code = run_simulate(
        load.load_config([str(POLICY)]),
        trace,
        output=None,
        plot=plot,
        policy=None,
        pod_startup=60,
        stdout=out,
        stderr=err,
        start=start,
    )
    rows = [line.split(",") for line in out.getvalue().splitlines()[1:]]
    return code, rows, err.getvalue()


def test_office_hours_lift_the_floor_at_08_00_berlin() -> None:
    # trace time 0 is 07:00 in Berlin (CET): the window opens at t=3600
    code, rows, err = simulate("2026-03-02T06:00:00Z")
    assert (code, err) == (0, "")
    by_time = {int(r[0]): r for r in rows}
    assert by_time[3570][2:] == ["1", "", "scale-down"]
    assert by_time[3600][2:] == ["3", "", "schedule-min"]
    assert {"scale-up", "schedule-min"} <= {r[4] for r in rows}
    assert min(int(r[2]) for r in rows if int(r[0]) >= 3600) == 3


def test_the_same_trace_on_a_saturday_never_lifts_it() -> None:
    code, rows, _ = simulate("2026-03-07T06:00:00Z")
    assert code == 0 and "schedule-min" not in {r[4] for r in rows}


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (None, "has schedules: anchor the trace to a wall clock with --start"),
        ("2026-03-02 08:00", "has no time zone; add Z or an offset"),
        ("monday", "is not an ISO 8601 time"),
    ],
)
def test_start_is_required_and_checked(start: str | None, message: str) -> None:
    code, rows, err = simulate(start)
    assert code == 2 and rows == [] and message in err


def test_a_quantile_column_is_a_level_times_ready(tmp_path: pathlib.Path) -> None:
    """p95 0.8 s on 2 ready pods against 0.5 s per pod: APA's ratio is 0.8 / 0.5 = 1.6, so
    ceil(2 × 1.6) = 4 (capped by the scale-up rate 2 → 4)."""
    trace = tmp_path / "t.csv"
    trace.write_text(
        "time,ready,rate(vllm:request_success_total[1m]),"
        '"histogram_quantile(0.95, vllm:time_to_first_token_seconds_bucket[1m])"\n'
        "0,2,2,0.8\n"
    )
    code, rows, err = simulate("2026-03-07T06:00:00Z", str(trace))
    assert (code, err) == (0, "")
    assert rows[0][1:3] == ["2", "4"]


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plot_shades_the_windows(tmp_path: pathlib.Path) -> None:
    png = tmp_path / "p.png"
    code, _, err = simulate("2026-03-02T06:00:00Z", plot=str(png))
    assert (code, err) == (0, "") and png.read_bytes()[:4] == b"\x89PNG"

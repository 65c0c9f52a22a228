"""`autoscalerd simulate`: trace parsing, errors, follow-the-decisions mode, plot, the CLI."""

from __future__ import annotations

import importlib.util
import io
import pathlib
import subprocess
import sys

import pytest

from autoscalerd.config.model import (
    Config,
    KpaParams,
    MetricSource,
    Policy,
    ScaleTargetRef,
    SeriesSelector,
    Strategy,
)
from autoscalerd.simulate import run_simulate

ROOT = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "config" / "examples"


def kpa_policy(name: str = "web", metrics: tuple[str, ...] = ("load",), **kpa: float) -> Policy:
    return Policy(
        namespace="ns",
        name=name,
        target=ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="web"),
        min_replicas=1,
        max_replicas=100,
        strategy=Strategy.KPA,
        sources=tuple(
            MetricSource(
                protocol="http",
                port=8000,
                path="/metrics",
                target_metric=m,
                selector=SeriesSelector(metric=m),
                target_value=50,
            )
            for m in metrics
        ),
        kpa=KpaParams(**kpa),  # type: ignore[arg-type]
    )


TEST_KPA_SCALE2 = kpa_policy(
    stable_window_seconds=30,
    panic_window_seconds=10,
    scale_down_delay_seconds=20,
    max_scale_up_rate=2,
    max_scale_down_rate=2,
)


def run(
    tmp_path: pathlib.Path,
    trace: str,
    config: Config | None = None,
    *,
    plot: str | None = None,
    policy: str | None = None,
    pod_startup: float = 0.0,
) -> tuple[int, str, str]:
    path = tmp_path / "trace.csv"
    path.write_text(trace)
    out, err = io.StringIO(), io.StringIO()
    code = run_simulate(
        config or Config(policies=(TEST_KPA_SCALE2,)),
        str(path),
        output=None,
        plot=plot,
        policy=policy,
        pod_startup=pod_startup,
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue(), err.getvalue().replace(str(path), "T")


def desired_column(csv_text: str) -> list[int]:
    return [int(line.split(",")[2]) for line in csv_text.splitlines()[1:]]


def test_test_kpa_scale2_trace_reproduces_aibrix() -> None:
    trace = (EXAMPLES / "traces" / "kpa-testkpascale2.csv").read_text()
    out, err = io.StringIO(), io.StringIO()
    path = EXAMPLES / "traces" / "kpa-testkpascale2.csv"
    from dataclasses import replace

    policy = replace(
        TEST_KPA_SCALE2,
        sources=(kpa_policy(metrics=("requests_in_flight",)).sources[0],),
    )
    code = run_simulate(
        Config(policies=(policy,)),
        str(path),
        output=None,
        plot=None,
        policy=None,
        pod_startup=0,
        stdout=out,
        stderr=err,
    )
    assert (code, err.getvalue()) == (0, "")
    assert trace.startswith("time,ready,requests_in_flight\n")
    text = out.getvalue()
    assert text.splitlines()[0] == "time,ready,desired,mode,reason"
    assert desired_column(text) == [5, 5, 5, 5, 5, 2, 2, 3, 6, 12, 12]


def test_output_file_and_modes(tmp_path: pathlib.Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("time,ready,load\n0,5,10\n10,5,10\n")
    out_path = tmp_path / "out.csv"
    code = run_simulate(
        Config(policies=(TEST_KPA_SCALE2,)),
        str(trace),
        output=str(out_path),
        plot=None,
        policy=None,
        pod_startup=0,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert code == 0
    assert out_path.read_text() == (
        "time,ready,desired,mode,reason\n0,5,5,panic,panic\n10,5,5,panic,panic\n"
    )


BAD_TRACES = [
    pytest.param("", "T:1: empty trace", id="empty-file"),
    pytest.param("time,ready,load\n", "T:1: the trace has a header but no rows", id="no-rows"),
    pytest.param(
        "time,ready,load,cpu\n0,1,1,1\n", "T:1: unknown column 'cpu'", id="unknown-column"
    ),
    pytest.param("time,ready\n0,1\n", "T:1: missing metric column 'load'", id="missing-metric"),
    pytest.param("ready,load\n1,1\n", "T:1: missing column 'time'", id="missing-time"),
    pytest.param(
        "time,ready,load\n0,1,1\n2,1,1\n1,1,1\n", "T:4: time 1 is not after", id="unsorted"
    ),
    pytest.param("time,ready,load\n0,1,1\n0,1,1\n", "T:3: time 0 is not after", id="repeated-time"),
    pytest.param("time,ready,load\n0,1,abc\n", "T:2: load: not a number: 'abc'", id="non-numeric"),
    pytest.param("time,ready,load\nx,1,1\n", "T:2: time: not a number", id="non-numeric-time"),
    pytest.param("time,ready,load\n0,1.5,1\n", "T:2: ready: not a whole number", id="bad-ready"),
    pytest.param("time,ready,load\n0,1,nan\n", "T:2: load: not a number", id="nan-refused"),
    pytest.param("time,ready,load\n0,1\n", "T:2: expected 3 cells, found 2", id="short-row"),
    pytest.param("time,load,load\n0,1,1\n", "T:1: duplicate column 'load'", id="duplicate"),
]


@pytest.mark.parametrize(("trace", "message"), BAD_TRACES)
def test_bad_traces_exit_2_with_file_line(tmp_path: pathlib.Path, trace: str, message: str) -> None:
    code, out, err = run(tmp_path, trace)
    assert code == 2
    assert out == ""
    assert err.startswith(message), err


def test_every_problem_is_listed(tmp_path: pathlib.Path) -> None:
    code, _, err = run(tmp_path, "time,ready,load\n0,1,a\n1,1,b\n")
    assert code == 2
    assert err.splitlines() == ["T:2: load: not a number: 'a'", "T:3: load: not a number: 'b'"]


def test_empty_cell_is_no_data(tmp_path: pathlib.Path) -> None:
    code, out, _ = run(tmp_path, "time,ready,load\n0,1,100\n1,1,\n")
    assert code == 0
    assert out.splitlines()[2] == "1,1,2,panic,no-data"  # unchanged spec.replicas, no decision


def test_without_ready_the_target_follows_the_decisions(tmp_path: pathlib.Path) -> None:
    # demand 200 at target 50 → 4 pods; pods take 3 s to become ready
    trace = "time,load\n" + "".join(f"{t},200\n" for t in range(6))
    code, out, _ = run(tmp_path, trace, Config(policies=(kpa_policy(),)), pod_startup=3)
    assert code == 0
    rows = [line.split(",") for line in out.splitlines()[1:]]
    assert [int(r[1]) for r in rows] == [1, 1, 1, 4, 4, 4]  # ready
    assert [int(r[2]) for r in rows] == [4, 4, 4, 4, 4, 4]  # desired


def test_without_ready_and_no_startup_pods_count_from_the_next_tick(
    tmp_path: pathlib.Path,
) -> None:
    trace = "time,load\n0,200\n1,200\n"
    code, out, _ = run(tmp_path, trace, Config(policies=(kpa_policy(),)))
    assert code == 0
    assert [line.split(",")[1] for line in out.splitlines()[1:]] == ["1", "4"]


def test_policy_selection(tmp_path: pathlib.Path) -> None:
    two = Config(policies=(kpa_policy("a"), kpa_policy("b")))
    code, _, err = run(tmp_path, "time,load\n0,1\n", two)
    assert code == 2 and "--policy" in err and "ns/a, ns/b" in err
    code, _, err = run(tmp_path, "time,load\n0,1\n", two, policy="ns/b")
    assert (code, err) == (0, "")
    code, _, err = run(tmp_path, "time,load\n0,1\n", two, policy="ns/zzz")
    assert code == 2 and "no policy 'ns/zzz'" in err
    code, _, err = run(tmp_path, "time,load\n0,1\n", Config())
    assert code == 2 and "no PodAutoscaler" in err


def test_missing_trace_file(tmp_path: pathlib.Path) -> None:
    err = io.StringIO()
    code = run_simulate(
        Config(policies=(TEST_KPA_SCALE2,)),
        str(tmp_path / "nope.csv"),
        output=None,
        plot=None,
        policy=None,
        pod_startup=0,
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 2 and "cannot read" in err.getvalue()


def test_two_metric_columns_map_to_sources_by_target_metric(tmp_path: pathlib.Path) -> None:
    cfg = Config(policies=(kpa_policy(metrics=("a", "b")),))
    code, out, _ = run(tmp_path, "time,ready,b,a\n0,1,500,50\n", cfg)
    assert code == 0
    assert desired_column(out) == [10]  # b = 500 → 10 pods (a alone would ask for 1)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plot_writes_a_png(tmp_path: pathlib.Path) -> None:
    png = tmp_path / "p.png"
    trace = (
        (EXAMPLES / "traces" / "kpa-testkpascale2.csv")
        .read_text()
        .replace("requests_in_flight", "load")
    )
    code, _, err = run(tmp_path, trace, plot=str(png))
    assert (code, err) == (0, "")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    code, out, err = run(tmp_path, "time,load\n0,1\n", plot=str(tmp_path / "p.png"))
    assert code == 2
    assert "pip install 'autoscalerd[plot]'" in err
    assert out == ""


def test_cli_simulate_reproduces_test_kpa_scale2() -> None:
    """As a user would: `python -m autoscalerd simulate -c … --trace …`."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoscalerd",
            "simulate",
            "-c",
            str(EXAMPLES / "kpa-testkpascale2.yaml"),
            "--trace",
            str(EXAMPLES / "traces" / "kpa-testkpascale2.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert desired_column(proc.stdout) == [5, 5, 5, 5, 5, 2, 2, 3, 6, 12, 12]

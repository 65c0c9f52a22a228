"""`autoscalerd simulate`: replay a metric trace through one policy, offline (DESIGN.md §5).

Input CSV, header first: `time,ready,<one column per metric source, named as its targetMetric>`.

- `time`: seconds since the start of the trace, strictly increasing; each row is one tick.
- metric cells: the total over the ready pods at that tick; an empty cell is "no data".
- `ready` (optional): the ready pods at that tick. The simulated target's `spec.replicas` starts
  at the first row's `ready` (or `minReplicas` when that is 0) and then follows the decisions;
  pods beyond `ready` count as not ready.
- Without `ready`, the simulated target follows the decisions: it starts with
  `max(minReplicas, 1)` ready pods, a scale-up adds pods that become ready `--pod-startup`
  seconds later (0: at once, so they count from the next tick), a scale-down removes
  not-ready pods first. The metric totals are demand, whatever the number of pods.

- A derived source's column (DESIGN §2.4) is named by its whole `targetMetric` (quote it in
  the header: it holds a comma for `histogram_quantile`) and holds what the daemon computes
  that tick: for `rate()` the total over the ready pods, for `histogram_quantile()` the
  quantile itself, whose total is then value × ready.
- `--start ISO8601` anchors trace time 0 to a wall clock (required when the policy has
  `spec.schedules`); each tick then runs with the bounds of the window active at that time,
  and `--plot` shades the windows.

Output CSV, one row per input row: `time,ready,desired,mode,reason`. `desired` is the replica
count after that tick: the decision, or the unchanged `spec.replicas` when the tick made none
(reason `no-data`, `target-at-zero`).

Bad input (empty file, unknown or missing column, unsorted time, non-numeric cell) is reported
as `FILE:LINE: message` lines on stderr with exit code 2, before anything is simulated.
"""

from __future__ import annotations

import csv
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from autoscalerd.config.model import Config, Policy, SignalKind
from autoscalerd.errors import AutoscalerdError
from autoscalerd.scaling import Autoscaler, SourceSample, Tick

__all__ = ["TraceError", "TraceRow", "read_trace", "run_simulate", "simulate"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
MAX_REPORTED_ERRORS = 50
"""Stop listing problems after this many (a wrong file would print one per row)."""
PLOT_INSTALL_HINT = "pip install 'autoscalerd[plot]'"


class TraceError(AutoscalerdError):
    """The trace is unusable; `problems` are `FILE:LINE: message` strings."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, kw_only=True, slots=True)
class TraceRow:
    time_text: str
    """The time cell as written, echoed in the output."""
    time: float
    ready: int | None
    totals: tuple[float | None, ...]
    """One per policy source, in the policy's order."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SimRow:
    time_text: str
    time: float
    ready: int
    desired: int
    mode: str
    reason: str
    totals: tuple[float | None, ...]
    schedule: str | None = None
    """The `spec.schedules` window active at that tick (with `--start`)."""


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_trace(path: str, policy: Policy, stream: TextIO) -> list[TraceRow]:
    """Parse and check a trace for `policy`; raise TraceError listing every problem."""
    problems: list[str] = []

    def problem(line: int, message: str) -> None:
        problems.append(f"{path}:{line}: {message}")

    reader = csv.reader(stream)
    header: list[str] | None = None
    for fields in reader:
        if fields and any(f.strip() for f in fields):
            header = [f.strip() for f in fields]
            break
    if header is None:
        raise TraceError([f"{path}:1: empty trace: expected a header row 'time,ready,<metric>…'"])
    header_line = reader.line_num
    metric_names = [s.target_metric for s in policy.sources]
    positions: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in positions:
            problem(header_line, f"duplicate column {name!r}")
        elif name not in ("time", "ready") and name not in metric_names:
            known = ", ".join(repr(m) for m in metric_names)
            problem(
                header_line, f"unknown column {name!r}: metric columns of {policy.key}: {known}"
            )
        positions.setdefault(name, i)
    if "time" not in positions:
        problem(header_line, "missing column 'time'")
    for name in metric_names:
        if name not in positions:
            problem(header_line, f"missing metric column {name!r} (the targetMetric of a source)")
    if problems:
        raise TraceError(problems)

    time_at = positions["time"]
    ready_at = positions.get("ready")
    metric_at = [positions[name] for name in metric_names]
    rows: list[TraceRow] = []
    last_time: float | None = None
    for fields in reader:
        line = reader.line_num
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(problems) >= MAX_REPORTED_ERRORS:
            break
        if len(fields) != len(header):
            problem(line, f"expected {len(header)} cells, found {len(fields)}")
            continue
        time_text = fields[time_at].strip()
        time = _parse_float(time_text)
        if time is None:
            problem(line, f"time: not a number: {time_text!r}")
        elif last_time is not None and time <= last_time:
            problem(line, f"time {time_text} is not after the previous row's {last_time:g}")
        ready: int | None = None
        if ready_at is not None:
            text = fields[ready_at].strip()
            value = _parse_float(text)
            if value is None or value < 0 or value != int(value):
                problem(line, f"ready: not a whole number >= 0: {text!r}")
            else:
                ready = int(value)
        totals: list[float | None] = []
        for name, at in zip(metric_names, metric_at, strict=True):
            text = fields[at].strip()
            if not text:
                totals.append(None)
                continue
            total = _parse_float(text)
            if total is None:
                problem(line, f"{name}: not a number: {text!r}")
            totals.append(total)
        if time is not None:
            last_time = time if last_time is None else max(last_time, time)
            rows.append(TraceRow(time_text=time_text, time=time, ready=ready, totals=tuple(totals)))
    if len(problems) >= MAX_REPORTED_ERRORS:
        problems.append(f"{path}: too many problems, stopped after {MAX_REPORTED_ERRORS}")
    if not problems and not rows:
        problem(header_line, "the trace has a header but no rows")
    if problems:
        raise TraceError(problems)
    return rows


def simulate(
    policy: Policy,
    rows: Sequence[TraceRow],
    *,
    pod_startup: float = 0.0,
    start: float | None = None,
) -> list[SimRow]:
    """Run `rows` through a fresh `Autoscaler` for `policy`; one output row per input row.

    `start` (Unix seconds) anchors trace time 0 to a wall clock, for `spec.schedules`. A
    `histogram_quantile()` column holds the quantile itself: its total is value × ready,
    as the daemon computes it (DESIGN §2.4)."""
    quantile = tuple(
        s.signal is not None and s.signal.kind is SignalKind.QUANTILE for s in policy.sources
    )
    autoscaler = Autoscaler(policy)
    out: list[SimRow] = []
    if not rows:
        return out
    follow = rows[0].ready is None
    first_ready = rows[0].ready or 0
    if follow:
        current = max(policy.min_replicas, 1)
    else:
        current = first_ready if first_ready > 0 else policy.min_replicas
    # Without a ready column: the time each pod becomes ready, oldest first.
    pods: deque[float] = deque([-math.inf] * current)
    for row in rows:
        now = row.time
        if follow:
            ready = sum(1 for t in pods if t <= now)
        else:
            ready = row.ready if row.ready is not None else 0
        not_ready = max(0, current - ready)
        samples = tuple(
            SourceSample(total=None, answered=0, missing=ready)
            if total is None
            else SourceSample(total=total * ready if level else total, answered=ready, missing=0)
            for total, level in zip(row.totals, quantile, strict=True)
        )
        decision = autoscaler.decide(
            Tick(
                now=now,
                current_replicas=current,
                ready=ready,
                not_ready=not_ready,
                samples=samples,
                wall=None if start is None else start + now,
            )
        )
        desired = current if decision.desired is None else decision.desired
        autoscaler.applied(now, current, desired)  # the simulated writes always succeed
        out.append(
            SimRow(
                time_text=row.time_text,
                time=now,
                ready=ready,
                desired=desired,
                mode=decision.mode,
                reason=decision.reason,
                totals=row.totals,
                schedule=decision.schedule,
            )
        )
        if follow and desired != current:
            if desired > current:
                pods.extend([now + pod_startup] * (desired - current))
            else:
                # remove the youngest pods first: those still starting go before ready ones
                for _ in range(current - desired):
                    pods.pop()
        current = desired
    return out


def write_output(rows: Sequence[SimRow], stream: TextIO) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(("time", "ready", "desired", "mode", "reason"))
    for r in rows:
        writer.writerow((r.time_text, r.ready, r.desired, r.mode, r.reason))


def _pick_policy(config: Config, wanted: str | None) -> Policy | str:
    policies = config.policies
    if wanted is not None:
        for p in policies:
            if p.key == wanted:
                return p
        known = ", ".join(p.key for p in policies) or "none"
        return f"no policy {wanted!r} in the configuration (policies: {known})"
    if not policies:
        return "the configuration holds no PodAutoscaler policy"
    if len(policies) > 1:
        known = ", ".join(p.key for p in policies)
        return f"the configuration holds {len(policies)} policies; pick one with --policy ({known})"
    return policies[0]


def _import_pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_simulate(
    config: Config,
    trace_path: str,
    *,
    output: str | None,
    plot: str | None,
    policy: str | None,
    pod_startup: float,
    stdout: TextIO,
    stderr: TextIO,
    start: str | None = None,
) -> int:
    """Run `autoscalerd simulate`; return the exit code (0, or 2 on bad input)."""
    picked = _pick_policy(config, policy)
    if isinstance(picked, str):
        print(f"autoscalerd simulate: {picked}", file=stderr)
        return EXIT_BAD_INPUT
    anchor = _parse_start(start)
    if isinstance(anchor, str) or (anchor is None and picked.schedules):
        message = (
            anchor
            if isinstance(anchor, str)
            else (
                f"policy {picked.key} has schedules: anchor the trace to a wall clock with "
                "--start, e.g. --start 2026-03-02T08:00:00Z"
            )
        )
        print(f"autoscalerd simulate: {message}", file=stderr)
        return EXIT_BAD_INPUT
    if pod_startup < 0 or not math.isfinite(pod_startup):
        print("autoscalerd simulate: --pod-startup must be a number of seconds >= 0", file=stderr)
        return EXIT_BAD_INPUT
    plt: Any = None
    if plot is not None:
        try:
            plt = _import_pyplot()
        except ImportError:
            print(
                f"autoscalerd simulate: --plot needs matplotlib: {PLOT_INSTALL_HINT}", file=stderr
            )
            return EXIT_BAD_INPUT
    try:
        with open(trace_path, newline="", encoding="utf-8") as f:
            rows = read_trace(trace_path, picked, f)
    except OSError as exc:
        print(f"autoscalerd simulate: cannot read {trace_path}: {exc.strerror or exc}", file=stderr)
        return EXIT_BAD_INPUT
    except UnicodeDecodeError as exc:
        print(f"{trace_path}:1: not UTF-8 text: {exc.reason}", file=stderr)
        return EXIT_BAD_INPUT
    except TraceError as exc:
        for p in exc.problems:
            print(p, file=stderr)
        return EXIT_BAD_INPUT
    results = simulate(picked, rows, pod_startup=pod_startup, start=anchor)
    try:
        if output is None:
            write_output(results, stdout)
        else:
            with open(output, "w", newline="", encoding="utf-8") as f:
                write_output(results, f)
        if plot is not None:
            draw(plt, picked, results, plot)
    except OSError as exc:
        print(f"autoscalerd simulate: cannot write: {exc}", file=stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _parse_start(text: str | None) -> float | str | None:
    """`--start` as Unix seconds; a message (str) when it is not an ISO 8601 time with a zone."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return f"--start {text!r} is not an ISO 8601 time; write e.g. 2026-03-02T08:00:00Z"
    if when.tzinfo is None:
        return f"--start {text!r} has no time zone; add Z or an offset such as +01:00"
    return when.timestamp()


def _schedule_spans(rows: Sequence[SimRow]) -> list[tuple[float, float, str]]:
    """(start, end, name) of each run of rows with the same active schedule."""
    spans: list[tuple[float, float, str]] = []
    for i, r in enumerate(rows):
        if r.schedule is None:
            continue
        end = rows[i + 1].time if i + 1 < len(rows) else r.time
        if spans and spans[-1][2] == r.schedule and spans[-1][1] == r.time:
            spans[-1] = (spans[-1][0], end, r.schedule)
        else:
            spans.append((r.time, end, r.schedule))
    return spans


def _panic_spans(rows: Sequence[SimRow]) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for i, r in enumerate(rows):
        if r.mode == "panic" and start is None:
            start = r.time
        elif r.mode != "panic" and start is not None:
            spans.append((start, r.time))
            start = None
        if start is not None and i == len(rows) - 1:
            spans.append((start, r.time))
    return spans


def draw(plt: Any, policy: Policy, rows: Sequence[SimRow], path: str) -> None:
    """Write a PNG: metric(s) with the target line, ready and desired replicas, panic shaded."""
    times = [r.time for r in rows]
    fig, (ax_metric, ax_pods) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 6), height_ratios=(3, 2), layout="constrained"
    )
    for i, source in enumerate(policy.sources):
        values = [r.totals[i] if r.totals[i] is not None else math.nan for r in rows]
        level = source.signal is not None and source.signal.kind is SignalKind.QUANTILE
        axis = ax_metric.twinx() if level and len(policy.sources) > 1 else ax_metric
        line = axis.plot(
            times,
            values,
            linewidth=1.2,
            color=f"C{i}",
            label=f"{source.target_metric}" + ("" if level else " (total)"),
        )
        axis.step(
            times,
            [source.target_value * (1 if level else r.ready) for r in rows],
            where="post",
            linestyle="--",
            linewidth=1,
            color=line[0].get_color(),
            alpha=0.7,
            label=(
                f"target ({source.target_value:g})"
                if level
                else f"target × ready ({source.target_value:g} per pod)"
            ),
        )
        if axis is not ax_metric:
            axis.legend(loc="center right", fontsize="small")
    ax_pods.step(times, [r.ready for r in rows], where="post", label="ready", linewidth=1.5)
    ax_pods.step(
        times, [r.desired for r in rows], where="post", label="desired", linewidth=1.2, alpha=0.8
    )
    spans = _panic_spans(rows)
    windows = _schedule_spans(rows)
    for ax in (ax_metric, ax_pods):
        for i, (a, b) in enumerate(spans):
            ax.axvspan(a, b, color="tab:red", alpha=0.12, label="panic" if i == 0 else None)
        named: set[str] = set()
        for a, b, name in windows:
            label = None if name in named else f"schedule {name}"
            named.add(name)
            ax.axvspan(a, b, color="tab:green", alpha=0.10, label=label)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    ax_metric.set_ylabel("metric")
    ax_pods.set_ylabel("replicas")
    ax_pods.set_xlabel("time (s)")
    ax_metric.set_title(
        f"{policy.key}: {policy.strategy} [{policy.min_replicas}, {policy.max_replicas}] replicas"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""Command line: argument parsing and exit codes, nothing else.

Exit codes: 0 success, 2 bad configuration or usage, 1 fatal runtime error (or, for
`status`, daemon unreachable).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from autoscalerd import __version__

__all__ = ["main"]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"AUTOSCALERD_{name}", default)


def _env_flag(name: str) -> bool:
    return (_env(name) or "").strip().lower() in ("1", "true", "yes", "on")


def _env_paths() -> list[str]:
    value = _env("CONFIG")
    return [p for p in value.split(os.pathsep) if p] if value else []


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_config(p: argparse.ArgumentParser, *, help_suffix: str = "") -> None:
    p.add_argument(
        "-c",
        "--config",
        action="append",
        metavar="PATH",
        help="policy file or directory (every *.yaml/*.yml in it); may repeat; "
        "default $AUTOSCALERD_CONFIG" + help_suffix,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autoscalerd",
        description="Autoscale Kubernetes workloads from metrics scraped from their pods "
        "(AIbrix PodAutoscaler policies; KPA, APA and HPA).",
    )
    parser.add_argument("--version", action="version", version=f"autoscalerd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    _add_config(run)
    run.add_argument(
        "--kubeconfig",
        default=_env("KUBECONFIG"),
        help="kubeconfig file (default $KUBECONFIG, then ~/.kube/config)",
    )
    run.add_argument("--context", default=_env("CONTEXT"), help="kubeconfig context")
    run.add_argument(
        "--in-cluster",
        action="store_true",
        default=_env_flag("IN_CLUSTER"),
        help="use the pod's service account (automatic when KUBERNETES_SERVICE_HOST is set and no kubeconfig is given)",
    )
    run.add_argument(
        "--listen",
        default=_env("LISTEN", "127.0.0.1:8080"),
        metavar="HOST:PORT",
        help="address of /healthz, /readyz, /metrics, /status (default 127.0.0.1:8080)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        default=_env_flag("DRY_RUN"),
        help="decide and log, never write to the API",
    )
    run.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        default=_env_flag("INSECURE_SKIP_TLS_VERIFY"),
        help="default tlsConfig.insecureSkipVerify: true for every metric source that does not set it (logged as a warning)",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        default=_env_flag("LEADER_ELECT"),
        help="take part in Lease-based leader election; only the leader scales",
    )
    run.add_argument(
        "--podautoscalers",
        action="store_true",
        default=_env_flag("PODAUTOSCALERS"),
        help="also take policies from PodAutoscaler objects in the cluster (DaemonConfig "
        "podAutoscalers: namespaces, labelSelector, claim) and write their status",
    )
    run.add_argument(
        "--history-seconds",
        type=_history_seconds,
        default=_env("HISTORY_SECONDS", "3600"),
        metavar="SECONDS",
        help="how far back /history and /ui look (in-memory, about 9 bytes per policy per "
        "interval and metric); 0 turns it off (default 3600)",
    )
    _add_logging(run)

    validate = sub.add_parser("validate", help="check policy files; print FILE:LINE: problems")
    _add_config(validate)

    simulate = sub.add_parser("simulate", help="replay a metric trace through a policy offline")
    _add_config(simulate)
    simulate.add_argument(
        "--trace", required=True, metavar="FILE.csv", help="input trace: time,ready,<metric>…"
    )
    simulate.add_argument(
        "--output", metavar="FILE.csv", help="write decisions here (default: standard output)"
    )
    simulate.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw metric, ready and desired replicas (needs autoscalerd[plot])",
    )
    simulate.add_argument(
        "--policy",
        metavar="NAMESPACE/NAME",
        help="the policy to replay when the files hold several",
    )
    simulate.add_argument(
        "--pod-startup",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="without a ready column: delay before new pods count (default 0)",
    )
    simulate.add_argument(
        "--start",
        metavar="ISO8601",
        help="wall-clock time of trace time 0, e.g. 2026-03-02T08:00:00Z "
        "(required when the policy has schedules)",
    )

    status = sub.add_parser("status", help="show the policies of a running daemon")
    status.add_argument(
        "--url",
        default=_env("STATUS_URL", "http://127.0.0.1:8080"),
        help="the daemon's --listen address (default http://127.0.0.1:8080)",
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.add_argument(
        "--watch",
        action="store_true",
        help="redraw every interval until Ctrl-C (plain lines when not on a terminal)",
    )
    status.add_argument(
        "--interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="with --watch: seconds between redraws (default: the daemon's scrape interval)",
    )

    demo = sub.add_parser("demo", help="run the daemon against the built-in sandbox cluster")
    demo.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to run (default 60)",
    )
    demo.add_argument(
        "--workdir", metavar="DIR", help="keep the sandbox files (kubeconfig, certificates) here"
    )
    demo.add_argument(
        "--source",
        choices=("pod", "cpu", "prometheus"),
        default="pod",
        help="the metric source to scale on: pod (the seed, default), cpu (metrics.k8s.io, "
        "HPA utilization) or prometheus (a query against a local Prometheus server)",
    )
    demo.add_argument(
        "--podautoscalers",
        action="store_true",
        help="cluster mode: the policy is a PodAutoscaler object; shows its status being written",
    )
    _add_logging(demo)

    sub.add_parser("version", help="print the version")
    return parser


def _history_seconds(text: str) -> float:
    from autoscalerd.server.history import MAX_HISTORY_SECONDS

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_HISTORY_SECONDS):
        raise argparse.ArgumentTypeError(
            f"{text!r} must be between 0 (off) and {MAX_HISTORY_SECONDS:g} seconds"
        )
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=_env("LOG_FORMAT"),
        help="default: console on a TTY, else json",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=_env("LOG_LEVEL", "info"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "version":
        print(f"autoscalerd {__version__}")
        return EXIT_OK
    if args.command == "validate":
        return _validate(_config_paths(args), sys.stdout)
    if args.command == "run":
        return _run(args)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "status":
        if args.interval is not None and not args.watch:
            parser.error("--interval needs --watch")
        if args.watch:
            return _status_watch(args.url, interval=args.interval, raw=args.json, out=sys.stdout)
        return _status(args.url, raw=args.json, out=sys.stdout)
    if args.command == "demo":
        return _demo(args)
    parser.error(f"unknown command {args.command!r}")


def _config_paths(args: argparse.Namespace) -> list[str]:
    return list(args.config or _env_paths())


def _validate(paths: list[str], out: TextIO) -> int:
    from autoscalerd.config.load import ConfigErrors, load_config

    try:
        load_config(paths)
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=out)
        return EXIT_USAGE
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from autoscalerd.daemon.options import RunOptions
    from autoscalerd.daemon.supervisor import run_daemon

    options = RunOptions(
        config_paths=tuple(_config_paths(args)),
        kubeconfig=args.kubeconfig,
        context=args.context,
        in_cluster=True if args.in_cluster else None,
        listen=args.listen,
        dry_run=args.dry_run,
        insecure_skip_tls_verify=args.insecure_skip_tls_verify,
        leader_elect=args.leader_elect,
        log_format=args.log_format,
        log_level=args.log_level,
        history_seconds=args.history_seconds,
        podautoscalers=args.podautoscalers,
    )
    return run_daemon(options)


def _simulate(args: argparse.Namespace) -> int:
    from autoscalerd.config.load import ConfigErrors, load_config
    from autoscalerd.simulate import run_simulate

    try:
        config = load_config(_config_paths(args))
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    return run_simulate(
        config,
        args.trace,
        output=args.output,
        plot=args.plot,
        policy=args.policy,
        pod_startup=args.pod_startup,
        start=args.start,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )


def _demo(args: argparse.Namespace) -> int:
    from autoscalerd.demo import run_demo

    return run_demo(
        source=args.source,
        duration=args.duration,
        workdir=args.workdir,
        log_format=args.log_format,
        log_level=args.log_level,
        podautoscalers=args.podautoscalers,
    )


def _base_url(url: str) -> str:
    return (url if "://" in url else f"http://{url}").rstrip("/")


def _fetch_status(base: str) -> Any:
    """The daemon's `/status` document; raises OSError or ValueError with the reason."""
    try:
        with urllib.request.urlopen(base + "/status", timeout=5) as resp:
            return json.loads(resp.read(8 * 1024 * 1024))
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from exc


def _status(url: str, *, raw: bool, out: TextIO) -> int:
    base = _base_url(url)
    try:
        payload = _fetch_status(base)
    except (OSError, ValueError) as exc:
        print(f"autoscalerd status: cannot reach {base}/status: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if raw:
        json.dump(payload, out, indent=2)
        out.write("\n")
        return EXIT_OK
    print(format_status(payload), file=out)
    return EXIT_OK


WATCH_DEFAULT_SECONDS = 1.0
"""`status --watch` interval when neither --interval nor the daemon says (unreachable)."""


def _status_watch(url: str, *, interval: float | None, raw: bool, out: TextIO) -> int:
    """Redraw the table every interval until Ctrl-C (exit 0). On a terminal the screen is
    redrawn in place; otherwise each round is printed below the last, after a stamp line.
    An unreachable daemon is shown (and retried), not fatal: a watch outlives restarts."""
    base = _base_url(url)
    tty = out.isatty()
    next_at = time.monotonic()
    try:
        while True:
            every = interval
            try:
                payload = _fetch_status(base)
                body = json.dumps(payload, indent=2) if raw else format_status(payload)
                if every is None and isinstance(payload, dict):
                    every = payload.get("scrape_interval_seconds")
            except (OSError, ValueError) as exc:
                body = f"cannot reach {base}/status: {exc} (retrying)"
            if not isinstance(every, int | float) or not every > 0:
                every = WATCH_DEFAULT_SECONDS
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            if tty:
                width = shutil.get_terminal_size().columns
                lines = [
                    f"every {every:g}s: autoscalerd status {base}   {stamp}",
                    "",
                    *body.splitlines(),
                ]
                out.write(
                    "\x1b[H" + "".join(line[:width] + "\x1b[K\n" for line in lines) + "\x1b[J"
                )
            else:
                out.write(f"--- {stamp} {base}/status\n{body}\n")
            out.flush()
            next_at += every
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (slow answer): start the schedule afresh
                next_at, delay = time.monotonic(), 0.0
            time.sleep(delay)
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
        return EXIT_OK
    except BrokenPipeError:  # `status --watch | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK


def format_status(payload: Any) -> str:
    """Render the `/status` JSON as a table (one row per policy)."""
    policies = payload.get("policies", []) if isinstance(payload, dict) else payload
    header = (
        "NAMESPACE",
        "NAME",
        "STRATEGY",
        "CURRENT",
        "DESIRED",
        "MODE",
        "METRICS",
        "LAST ERROR",
    )
    rows: list[tuple[str, ...]] = [header]
    for p in policies:
        values = p.get("metrics") or {}
        metrics = (
            ", ".join(f"{k}={_fmt_value(v)}" for k, v in values.items())
            if isinstance(values, dict)
            else str(values)
        )
        rows.append(
            (
                str(p.get("namespace", "")),
                str(p.get("name", "")),
                str(p.get("strategy", "")),
                _fmt_value(p.get("current_replicas")),
                _fmt_value(p.get("desired_replicas")),
                str(p.get("mode") or "-"),
                metrics or "-",
                _shorten(str(p.get("last_error") or "-"), 60),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    if isinstance(payload, dict) and payload.get("leader") is not None:
        lines.insert(0, f"leader: {'yes' if payload['leader'] else 'no'}")
    if isinstance(payload, dict):
        for problem in payload.get("problems") or []:
            lines.insert(0, f"problem: {problem.get('problem')}: {problem.get('message')}")
    return "\n".join(lines)


def _fmt_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    raise SystemExit(main())

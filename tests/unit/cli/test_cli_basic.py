"""The command line as a user runs it: exit codes and output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from autoscalerd import __version__

REPO = Path(__file__).resolve().parents[3]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoscalerd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_version_both_ways() -> None:
    assert run("version").stdout.strip() == f"autoscalerd {__version__}"
    assert run("--version").stdout.strip() == f"autoscalerd {__version__}"


def test_validate_valid_prints_nothing() -> None:
    result = run("validate", "-c", "config/examples/metrics-server-kpa.yaml")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_validate_directory() -> None:
    result = run("validate", "-c", "config/examples")
    assert (result.returncode, result.stdout) == (0, "")


def test_validate_invalid_prints_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (REPO / "config/examples/metrics-server-kpa.yaml").read_text().replace('"20"', '"-1"')
    )
    result = run("validate", "-c", str(bad))
    assert result.returncode == 2
    assert (
        result.stdout
        == f"{bad}:19: spec.metricsSources[0].targetValue: must be more than 0, got -1\n"
    )


def test_usage_error_exits_2() -> None:
    assert run("frobnicate").returncode == 2
    assert run().returncode == 2


def test_config_from_environment(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, AUTOSCALERD_CONFIG=str(REPO / "config/examples/metrics-server-kpa.yaml"))
    result = subprocess.run(
        [sys.executable, "-m", "autoscalerd", "validate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "")


def test_status_unreachable_exits_1() -> None:
    result = run("status", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9/status" in result.stderr

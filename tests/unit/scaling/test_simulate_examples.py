"""The example policies load, and each simulates its demand trace (config/examples/)."""

from __future__ import annotations

import io
import pathlib

import pytest

from autoscalerd.config import load
from autoscalerd.simulate import run_simulate

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "config" / "examples"


@pytest.mark.parametrize(
    ("policy_file", "trace", "reasons"),
    [
        pytest.param(
            "kpa-example.yaml", "kpa-demand.csv", {"panic", "scale-down-delayed"}, id="kpa"
        ),
        pytest.param("apa-example.yaml", "apa-demand.csv", {"scale-up", "stabilized"}, id="apa"),
        pytest.param("hpa-example.yaml", "hpa-demand.csv", {"fallback", "no-data"}, id="hpa"),
        pytest.param(
            "kpa-testkpascale2.yaml", "kpa-testkpascale2.csv", {"panic"}, id="testkpascale2"
        ),
    ],
)
def test_example_simulates(policy_file: str, trace: str, reasons: set[str]) -> None:
    config = load.load_config([str(EXAMPLES / policy_file)])
    out, err = io.StringIO(), io.StringIO()
    code = run_simulate(
        config,
        str(EXAMPLES / "traces" / trace),
        output=None,
        plot=None,
        policy=None,
        pod_startup=20,
        stdout=out,
        stderr=err,
    )
    assert (code, err.getvalue()) == (0, "")
    rows = [line.split(",") for line in out.getvalue().splitlines()[1:]]
    assert reasons <= {r[4] for r in rows}
    p = config.policies[0]
    assert all(p.min_replicas <= int(r[2]) <= p.max_replicas for r in rows)


def test_all_examples_validate_together() -> None:
    config = load.load_config([str(EXAMPLES)])
    assert {p.strategy.value for p in config.policies} == {"KPA", "APA", "HPA"}

"""`run --history-seconds` (and AUTOSCALERD_HISTORY_SECONDS): parsed and checked by the CLI."""

from __future__ import annotations

import pytest

from autoscalerd.cli import build_parser, main


@pytest.mark.parametrize(
    ("value", "want"),
    [
        pytest.param("3600", 3600.0, id="an-hour"),
        pytest.param("0", 0.0, id="off"),
        pytest.param("86400", 86400.0, id="the-limit"),
    ],
)
def test_good_values(value: str, want: float) -> None:
    args = build_parser().parse_args(["run", "-c", "x.yaml", "--history-seconds", value])
    assert args.history_seconds == want


def test_default_is_an_hour_and_the_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOSCALERD_HISTORY_SECONDS", raising=False)
    assert build_parser().parse_args(["run"]).history_seconds == 3600.0
    monkeypatch.setenv("AUTOSCALERD_HISTORY_SECONDS", "600")
    assert build_parser().parse_args(["run"]).history_seconds == 600.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("-1", "between 0 (off) and 86400", id="negative"),
        pytest.param("86401", "between 0 (off) and 86400", id="above-a-day"),
        pytest.param("nan", "between 0 (off) and 86400", id="nan"),
        pytest.param("1h", "not a number of seconds", id="a-duration"),
    ],
)
def test_bad_values_exit_2_with_a_message(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "-c", "x.yaml", "--history-seconds", value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err

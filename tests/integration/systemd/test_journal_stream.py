"""journald detection and priority prefixes (`autoscalerd.logconfig`), with real files.

systemd sets `$JOURNAL_STREAM=dev:inode` of the stream it connects to stdout/stderr. A
process whose stderr is something else (a child redirected to a file, a shell started from
the service) inherits the variable but must not prefix its lines.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from autoscalerd.logconfig import configure_logging, stderr_is_journal


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def _stream_id(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_detects_only_the_stream_named_by_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, other = tmp_path / "journal", tmp_path / "other"
    journal.write_text("")
    other.write_text("")
    monkeypatch.setenv("JOURNAL_STREAM", _stream_id(journal))
    with open(journal, "a") as j, open(other, "a") as o:
        assert stderr_is_journal(j)
        assert not stderr_is_journal(o)
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    with open(journal, "a") as j:
        assert not stderr_is_journal(j)
    monkeypatch.delenv("JOURNAL_STREAM")
    with open(journal, "a") as j:
        assert not stderr_is_journal(j)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_priority_prefixes_on_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    path = tmp_path / "journal"
    path.write_text("")
    monkeypatch.setenv("JOURNAL_STREAM", _stream_id(path))
    with open(path, "a") as stream:
        configure_logging(fmt, "debug", stream=stream)
        log = structlog.get_logger("t")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("x")
    lines = [line for line in path.read_text().splitlines() if line.startswith("<")]
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    if fmt == "json":
        docs = [json.loads(line[3:]) for line in lines]
        assert [d["event"] for d in docs] == ["d", "i", "w", "e", "x"]
        assert all("timestamp" not in d for d in docs)


@pytest.mark.usefixtures("restore_logging")
def test_no_prefix_when_stderr_is_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, path = tmp_path / "journal", tmp_path / "file"
    journal.write_text("")
    path.write_text("")
    monkeypatch.setenv("JOURNAL_STREAM", _stream_id(journal))
    with open(path, "a") as stream:
        configure_logging(None, "info", stream=stream)
        structlog.get_logger("t").warning("w")
    (line,) = path.read_text().splitlines()
    doc = json.loads(line)
    assert doc["event"] == "w" and doc["level"] == "warning" and "timestamp" in doc

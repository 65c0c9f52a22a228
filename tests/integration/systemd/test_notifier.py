"""`autoscalerd.daemon.notify.Notifier` against real AF_UNIX datagram sockets."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from autoscalerd.daemon.notify import Notifier


@pytest.fixture
def path_socket() -> Iterator[tuple[socket.socket, str]]:
    with tempfile.TemporaryDirectory(prefix="sdn-", dir="/tmp") as d:
        path = os.path.join(d, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(path)
            s.settimeout(2)
            yield s, path


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"autoscalerd-notifier-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        yield s, "@" + name


def _recv(s: socket.socket) -> list[str]:
    return s.recv(65536).decode().split("\n")


def test_disabled_without_a_socket() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog_interval is None


@pytest.mark.parametrize("value", ["relative/path", "vsock:2:1234", ""])
def test_unsupported_addresses_are_ignored(value: str) -> None:
    assert not Notifier({"NOTIFY_SOCKET": value}).enabled


def test_path_socket_messages(path_socket: tuple[socket.socket, str]) -> None:
    s, path = path_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("2 policies")
    assert _recv(s) == ["READY=1", "STATUS=2 policies"]
    assert n.ready()
    assert _recv(s) == ["READY=1"]
    assert n.status("leader")
    assert _recv(s) == ["STATUS=leader"]
    assert n.stopping()
    assert _recv(s) == ["STOPPING=1"]
    assert n.watchdog()
    assert _recv(s) == ["WATCHDOG=1"]


def test_reloading_carries_monotonic_usec_in_the_same_datagram(
    abstract_socket: tuple[socket.socket, str],
) -> None:
    s, name = abstract_socket
    n = Notifier({"NOTIFY_SOCKET": name})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = _recv(s)
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=", 1)[1]) <= after


def test_an_absent_socket_is_reported_once_and_never_raises(tmp_path: object) -> None:
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent/autoscalerd/notify"})
    with capture_logs() as logs:
        assert n.ready() is False
        assert n.stopping() is False
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["socket"] == "/nonexistent/autoscalerd/notify"


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("0", None, None),
        ("", None, None),
        ("abc", None, None),
        ("-5", None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid(
    usec: str, pid: str | None, interval: float | None
) -> None:
    env = {"WATCHDOG_USEC": usec}
    if pid == "self":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert Notifier(env).watchdog_interval == interval

"""A running daemon whose pods start serving truncated pages does not move replicas (issue 11).

The pods' metrics endpoints are taken over by TLS servers in this process that answer a
close-delimited page cut inside its last sample (`go_threads 3` of `30`) and end the stream
with a bare TCP FIN, no close_notify. Read as a page, each pod would say 3 and the target
would drop from 2 replicas to 1; the daemon must count the pods as missing instead.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from e2e_harness import FAST, policy_yaml, write
from waiting import wait_for

from autoscalerd.sandbox import MetricsEndpoint, Sandbox

pytestmark = pytest.mark.e2e

NS, NAME, METRIC, PORT = "kube-system", "metrics-server", "go_threads", 10250
STABLE_WINDOW_TICKS = 10
"""More ticks than the 6 s stable window of FAST at 1 s per tick: long enough for a wrong
reading to have scaled the target down."""


@contextmanager
def truncating_tls_server(ip: str, port: int, ca: trustme.CA) -> Iterator[list[int]]:
    """On ip:port, answer every request with a close-delimited page cut mid-sample, then a
    bare TCP FIN. Yields a one-item list counting the answers sent."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(ip, "localhost").configure_cert(ctx)
    page = b"# TYPE go_threads gauge\ngo_threads 30\n"
    cut = page[: page.rindex(b"0")]  # "go_threads 3": a valid-looking sample of the wrong value
    answered = [0]
    listener = socket.create_server((ip, port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        with sock:
            sock.settimeout(5)
            try:
                conn = ctx.wrap_socket(sock, server_side=True)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + cut)
                answered[0] += 1
                sock.shutdown(socket.SHUT_WR)  # FIN without close_notify
            except OSError:
                return

    def run() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            serve(sock)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def bindable(ip: str, port: int) -> bool:
    """Whether a server can listen on ip:port now (with SO_REUSEADDR, as the truncating server
    does: the sandbox's closed connections may sit in TIME_WAIT there for a minute)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


async def test_truncated_tls_pages_do_not_move_replicas(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await sandbox.add_deployment(
        NS,
        NAME,
        replicas=2,
        labels={"k8s-app": "metrics-server"},
        metrics=MetricsEndpoint(port=PORT, path="/metrics", tls="self-signed", metric=METRIC),
    )
    sandbox.set_load(NS, NAME, METRIC, 60)  # 30 per pod, target 30: 2 replicas
    policy = write(tmp_path, "p.yaml", policy_yaml(target_value=30, annotations=FAST))
    daemon = await start_daemon(policy, args=("--insecure-skip-tls-verify",))

    async def reading_60() -> bool:
        [p] = (await daemon.status())["policies"]
        return bool(p["metrics"].get(METRIC) == 60.0 and p["desired_replicas"] == 2)

    await wait_for(reading_60, timeout=15, what="the healthy reading of 60 over 2 pods")

    # The pods' own endpoints stop listening; servers that truncate take their addresses.
    sandbox.faults.workload(NS, NAME, "refuse")
    pods = sandbox.pods(NS, NAME)
    assert len(pods) == 2 and all(pod.ip for pod in pods)

    async def released() -> bool:
        return all(bindable(str(pod.ip), PORT) for pod in pods)

    await wait_for(released, timeout=15, what="the sandbox releasing the pods' addresses")
    ca = trustme.CA()
    with (
        truncating_tls_server(str(pods[0].ip), PORT, ca) as first,
        truncating_tls_server(str(pods[1].ip), PORT, ca) as second,
    ):

        async def both_answered() -> dict[str, Any] | None:
            [p] = (await daemon.status())["policies"]
            return dict(p) if first[0] and second[0] else None

        seen = await wait_for(both_answered, timeout=15, what="both truncating servers scraped")
        ticks = int(seen["ticks"])

        async def a_stable_window_later() -> dict[str, Any] | None:
            [p] = (await daemon.status())["policies"]
            return dict(p) if p["ticks"] >= ticks + STABLE_WINDOW_TICKS else None

        later = await wait_for(a_stable_window_later, timeout=30, what="a stable window of ticks")
        assert first[0] >= STABLE_WINDOW_TICKS // 2, "the daemon kept scraping the pods"

    assert sandbox.replicas(NS, NAME) == 2, sandbox.replica_history(NS, NAME)
    assert [n for _, n in sandbox.replica_history(NS, NAME)] == [2]
    assert sandbox.scale_writes() == []
    assert later["metrics"].get(METRIC) != 6.0, later["metrics"]
    errors = " ".join(str(e) for e in later["errors"])
    assert errors.count("without close_notify") >= 2, later["errors"]
    assert await daemon.stop() == 0

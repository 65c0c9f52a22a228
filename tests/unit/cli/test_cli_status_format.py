"""`autoscalerd status` rendering and `--listen` parsing: pure, table-driven."""

from __future__ import annotations

import pytest

from autoscalerd.cli import format_status
from autoscalerd.server.app import parse_listen


def test_status_table() -> None:
    payload = {
        "leader": True,
        "policies": [
            {
                "namespace": "kube-system",
                "name": "metric-server-autoscaler",
                "strategy": "KPA",
                "current_replicas": 4,
                "desired_replicas": 4,
                "mode": "panic",
                "metrics": {"go_threads": 70.0},
                "last_error": None,
            },
            {
                "namespace": "default",
                "name": "api",
                "strategy": "HPA",
                "current_replicas": 3,
                "desired_replicas": None,
                "mode": None,
                "metrics": {"requests": None},
                "last_error": "http://127.0.0.1:8000/metrics: HTTP 500 Internal Server Error. " * 3,
            },
        ],
    }
    lines = format_status(payload).splitlines()
    assert lines[0] == "leader: yes"
    assert lines[1].split() == [
        "NAMESPACE",
        "NAME",
        "STRATEGY",
        "CURRENT",
        "DESIRED",
        "MODE",
        "METRICS",
        "LAST",
        "ERROR",
    ]
    assert lines[2].split() == [
        "kube-system",
        "metric-server-autoscaler",
        "KPA",
        "4",
        "4",
        "panic",
        "go_threads=70",
        "-",
    ]
    assert lines[3].split()[:7] == ["default", "api", "HPA", "3", "-", "-", "requests=-"]
    assert lines[3].endswith("…"), "long errors are shortened"


def test_status_shows_daemon_problems_first() -> None:
    payload = {
        "leader": False,
        "problems": [
            {
                "problem": "credentials_rejected",
                "message": "the Kubernetes API rejects the credentials; run `kubectl get --raw "
                "/version` with the same kubeconfig",
            }
        ],
        "policies": [],
    }
    lines = format_status(payload).splitlines()
    assert lines[0].startswith("problem: credentials_rejected: the Kubernetes API rejects")
    assert lines[1] == "leader: no"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("[::1]:8080", ("::1", 8080)),
        (":8080", ("0.0.0.0", 8080)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "localhost", "host:http", "host:70000"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_listen(listen)

"""Helpers shared by the kube adapter tests (a unique module name: several test
directories have a conftest.py, so tests never import from "conftest")."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from autoscalerd.kube import KubeClient

API_TIMEOUT = 3.0

ClientFactory = Callable[..., Awaitable[KubeClient]]


def pod_service_account(sandbox: Any, directory: Path, namespace: str, env: Any) -> Path:
    """A private copy of a pod's service-account files for `sandbox` (tests rewrite the token),
    with the pod environment (`KUBERNETES_SERVICE_HOST`/`_PORT`) set through `env`."""
    directory.mkdir()
    (directory / "token").write_text(sandbox.token)
    shutil.copy(sandbox.api_ca_file, directory / "ca.crt")
    (directory / "namespace").write_text(f"{namespace}\n")
    for name, value in sandbox.incluster_env().items():
        env.setenv(name, value)
    return directory

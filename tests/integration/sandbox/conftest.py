"""Fixtures for the sandbox tests: a fresh Sandbox and a kubernetes_asyncio client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from autoscalerd.sandbox import MetricsEndpoint, Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(
        tmp_path / "sb", deletion_grace_seconds=0.05, bookmark_interval_seconds=0.2
    ) as sb:
        yield sb


@pytest.fixture
async def ms(sandbox: Sandbox) -> Sandbox:
    """The seed scenario: metrics-server in kube-system, one pod, self-signed TLS."""
    await sandbox.add_deployment(
        "kube-system",
        "metrics-server",
        replicas=1,
        labels={"k8s-app": "metrics-server"},
        metrics=MetricsEndpoint(port=10250, tls="self-signed", metric="go_threads"),
    )
    return sandbox


async def _make_client(sb: Sandbox, context: str | None = None) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(
        config_file=str(sb.kubeconfig_path), context=context, client_configuration=cfg
    )
    return client.ApiClient(cfg)


@pytest.fixture
async def api(sandbox: Sandbox) -> AsyncIterator[client.ApiClient]:
    async with await _make_client(sandbox) as api_client:
        yield api_client


@pytest.fixture
def make_client() -> Any:
    """``await make_client(sb, context=None)``: a kubernetes_asyncio ApiClient for the
    sandbox's kubeconfig (use it with ``async with``)."""
    return _make_client

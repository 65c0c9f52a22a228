"""Fixtures for the kube adapter tests: a fresh sandbox cluster and clients connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kube_helpers import API_TIMEOUT, ClientFactory

from autoscalerd.kube import KubeClient, connect
from autoscalerd.sandbox import Sandbox


@pytest.fixture
async def sb(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(
        tmp_path / "sb", deletion_grace_seconds=0.05, bookmark_interval_seconds=0.2
    ) as sandbox:
        yield sandbox


@pytest.fixture
async def new_client(sb: Sandbox) -> AsyncIterator[ClientFactory]:
    """Connect more clients to the sandbox (each closed at teardown)."""
    made: list[KubeClient] = []

    async def make(**kw: Any) -> KubeClient:
        kw.setdefault("api_timeout", API_TIMEOUT)
        c = await connect(str(sb.kubeconfig_path), kw.pop("context", None), False, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


@pytest.fixture
async def kc(new_client: ClientFactory) -> KubeClient:
    return await new_client()

"""Policy builders shared by the scaling tests (plain HTTP pod sources, a Deployment target)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autoscalerd.config.model import MetricSource, Policy, ScaleTargetRef, SeriesSelector, Strategy


def load_source(target: float, metric: str = "load") -> MetricSource:
    """A pod metric source on `metric` with `targetValue: target`."""
    return MetricSource(
        protocol="http",
        port=8000,
        path="/metrics",
        target_metric=metric,
        selector=SeriesSelector(metric=metric),
        target_value=target,
    )


def make_policy(
    strategy: Strategy,
    *,
    targets: Sequence[float] = (10.0,),
    metrics: Sequence[str] = ("load",),
    namespace: str = "default",
    name: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 100,
    **fields: Any,
) -> Policy:
    """A policy on Deployment `web`; `fields` go to `Policy` as is (kpa=, apa=, hpa=, fallback=)."""
    return Policy(
        namespace=namespace,
        name=name or strategy.value.lower(),
        target=ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="web"),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        strategy=strategy,
        sources=tuple(load_source(t, m) for t, m in zip(targets, metrics, strict=True)),
        **fields,
    )

"""A policy's scrape targets, built once and reused while its pods and sources stay the same.

On the hot path: at 100 policies x 10 pods, building 1,000 `ScrapeTarget`s a second for an
unchanged pod set would be pure waste, so a policy keeps its list and compares by identity.
"""

from __future__ import annotations

from autoscalerd.config.model import MetricSource
from autoscalerd.kube.pods import PodInfo
from autoscalerd.scrape.client import ScrapeTarget

__all__ = ["ScrapeTargets"]


class ScrapeTargets:
    """One target per (source, pod), source-major (`targets[i * len(pods) + j]` is source i
    on pod j)."""

    def __init__(self) -> None:
        self._targets: list[ScrapeTarget] = []
        self._built_from: tuple[tuple[MetricSource, ...], list[PodInfo]] = ((), [])
        """The sources and pods `_targets` was built from."""

    def build(self, sources: tuple[MetricSource, ...], pods: list[PodInfo]) -> list[ScrapeTarget]:
        """The targets for `sources` x `pods`; rebuilt only when a pod or a source changed
        (pod objects are replaced, never mutated, when the watch reports a change; the
        sources tuple is replaced when the daemon settings change)."""
        old_sources, old_pods = self._built_from
        if (
            old_sources is sources
            and len(old_pods) == len(pods)
            and all(a is b for a, b in zip(old_pods, pods, strict=True))
        ):
            return self._targets
        self._targets = [
            ScrapeTarget(pod=pod.name, ip=pod.ip, source=source)
            for source in sources
            for pod in pods
        ]
        self._built_from = (sources, pods)
        return self._targets

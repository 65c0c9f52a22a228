"""Options of `autoscalerd run`, as parsed by the CLI."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunOptions"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RunOptions:
    config_paths: tuple[str, ...]
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None
    """True: use the pod's service account; None: decide (in cluster when
    `KUBERNETES_SERVICE_HOST` is set and no kubeconfig is given)."""
    listen: str = "127.0.0.1:8080"
    dry_run: bool = False
    insecure_skip_tls_verify: bool = False
    leader_elect: bool = False
    log_format: str | None = None
    log_level: str = "info"
    history_seconds: float = 3600.0
    """How far back /history and /ui look (in-memory ring buffers); 0 turns them off."""
    podautoscalers: bool = False
    """Cluster mode (issue 14): also take policies from PodAutoscaler objects."""

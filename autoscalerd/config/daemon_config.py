"""The `DaemonConfig` document: daemon-wide settings (scrape cadence, limits, TLS defaults,
leader election)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from autoscalerd.config.durations import parse_byte_size
from autoscalerd.config.model import (
    DEFAULT_BODY_BUDGET_BYTES,
    DEFAULT_BODY_SIZE_LIMIT_BYTES,
    DaemonConfig,
    LeaderElection,
)
from autoscalerd.config.pod_autoscaler_object import read_pod_autoscaler_settings
from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import (
    check_keys,
    format_seconds,
    read_duration,
    read_int,
    read_mapping,
    read_string,
)
from autoscalerd.config.tls_auth import read_authorization, read_tls

__all__ = ["DAEMON_FIELDS", "LEADER_FIELDS", "read_daemon_config"]

DAEMON_FIELDS = (
    "apiVersion",
    "kind",
    "metadata",
    "scrapeInterval",
    "scrapeTimeout",
    "tlsConfig",
    "authorization",
    "maxConcurrentScrapes",
    "bodySizeLimit",
    "bodyBudget",
    "apiTimeout",
    "leaderElection",
    "podAutoscalers",
)
LEADER_FIELDS = ("leaseDuration", "renewDeadline", "retryPeriod", "leaseName", "leaseNamespace")
_DEFAULT_SCRAPE_INTERVAL_SECONDS = 1.0
_DEFAULT_TIMEOUT_SHARE = 0.8
"""Without scrapeTimeout, a scrape may take this share of the interval."""
_MIN_BODY_SIZE_LIMIT = 1024


def read_daemon_config(doc: Document, data: Mapping[str, Any]) -> DaemonConfig | None:
    """The settings a `DaemonConfig` document gives, or None after recording problems."""
    problems_before = len(doc.problems)
    check_keys(doc, (), data, DAEMON_FIELDS)
    out: dict[str, Any] = {}
    interval = _DEFAULT_SCRAPE_INTERVAL_SECONDS
    if "scrapeInterval" in data:
        parsed = read_duration(doc, ("scrapeInterval",), data["scrapeInterval"], lo=0.1, hi=3600.0)
        if parsed is not None:
            interval = parsed
    out["scrape_interval_seconds"] = interval
    timeout = _DEFAULT_TIMEOUT_SHARE * interval
    if "scrapeTimeout" in data:
        parsed = read_duration(doc, ("scrapeTimeout",), data["scrapeTimeout"], lo=0.0, lo_open=True)
        if parsed is not None:
            if parsed >= interval:
                doc.add(
                    ("scrapeTimeout",),
                    f"must be below scrapeInterval ({format_seconds(interval)}), got {data['scrapeTimeout']}",
                )
            timeout = parsed
    out["scrape_timeout_seconds"] = timeout
    if "tlsConfig" in data and data["tlsConfig"] is not None:
        out["tls"] = read_tls(doc, ("tlsConfig",), data["tlsConfig"])
    if "authorization" in data and data["authorization"] is not None:
        out["authorization"] = read_authorization(doc, ("authorization",), data["authorization"])
    if "maxConcurrentScrapes" in data:
        out["max_concurrent_scrapes"] = read_int(
            doc, ("maxConcurrentScrapes",), data["maxConcurrentScrapes"], lo=1, hi=100000
        )
    if "bodySizeLimit" in data:
        out["body_size_limit_bytes"] = _read_body_size_limit(doc, data["bodySizeLimit"])
    out["body_budget_bytes"] = _read_body_budget(doc, data, out.get("body_size_limit_bytes"))
    if "apiTimeout" in data:
        out["api_timeout_seconds"] = read_duration(
            doc, ("apiTimeout",), data["apiTimeout"], lo=0.0, lo_open=True, hi=300.0
        )
    if "leaderElection" in data:
        out["leader_election"] = _read_leader_election(
            doc, ("leaderElection",), data["leaderElection"]
        )
    if "podAutoscalers" in data:  # issue 14: cluster mode
        out["pod_autoscalers"] = read_pod_autoscaler_settings(
            doc, ("podAutoscalers",), data["podAutoscalers"]
        )
    if len(doc.problems) != problems_before:
        return None
    return DaemonConfig(
        **{k: v for k, v in out.items() if v is not None}, where=doc.where(("kind",))
    )


def _read_body_size_limit(doc: Document, value: Any) -> int | None:
    try:
        size = parse_byte_size(value)
    except (ValueError, TypeError) as exc:
        doc.add(("bodySizeLimit",), str(exc))
        return None
    if size < _MIN_BODY_SIZE_LIMIT:
        doc.add(("bodySizeLimit",), f"must be at least 1KiB, got {value}")
        return None
    return size


def _read_body_budget(doc: Document, data: Mapping[str, Any], limit: int | None) -> int | None:
    """The shared budget for large bodies: at least the body size limit (one page of the
    largest allowed size must fit); without `bodyBudget`, the default raised to that limit."""
    limit = limit if limit is not None else DEFAULT_BODY_SIZE_LIMIT_BYTES
    if "bodyBudget" not in data:
        return max(DEFAULT_BODY_BUDGET_BYTES, limit)
    value = data["bodyBudget"]
    try:
        size = parse_byte_size(value)
    except (ValueError, TypeError) as exc:
        doc.add(("bodyBudget",), str(exc))
        return None
    if size < limit:
        doc.add(
            ("bodyBudget",),
            f"must be at least bodySizeLimit ({limit} bytes) so that one page of the largest "
            f"allowed size can be read, got {value}; raise bodyBudget or lower bodySizeLimit",
        )
        return None
    return size


def _read_leader_election(doc: Document, path: Path, value: Any) -> LeaderElection | None:
    """Lease timings (Kubernetes' client-go rule: duration > deadline > 1.2 × retry) and name."""
    data = read_mapping(doc, path, value)
    if data is None:
        return None
    check_keys(doc, path, data, LEADER_FIELDS)
    changes: dict[str, Any] = {}
    for key, attr in (
        ("leaseDuration", "lease_duration_seconds"),
        ("renewDeadline", "renew_deadline_seconds"),
        ("retryPeriod", "retry_period_seconds"),
    ):
        if key in data:
            changes[attr] = read_duration(
                doc, (*path, key), data[key], lo=0.0, lo_open=True, hi=3600.0
            )
    for key, attr in (("leaseName", "lease_name"), ("leaseNamespace", "lease_namespace")):
        if key in data:
            changes[attr] = read_string(doc, (*path, key), data[key])
    if any(v is None for v in changes.values()):
        return None
    lease = replace(LeaderElection(), **changes)
    if not (
        lease.lease_duration_seconds
        > lease.renew_deadline_seconds
        > 1.2 * lease.retry_period_seconds
    ):
        doc.add(
            path,
            "needs leaseDuration > renewDeadline > 1.2 × retryPeriod (got "
            f"{format_seconds(lease.lease_duration_seconds)}, "
            f"{format_seconds(lease.renew_deadline_seconds)}, "
            f"{format_seconds(lease.retry_period_seconds)})",
            at_key=True,
        )
        return None
    return lease

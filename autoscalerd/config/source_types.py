"""AIbrix's per-type rules for `metricsSources[]` (its webhook and `validateSpec`), plus ours.

| type | required | forbidden (not used by that type) |
|---|---|---|
| `pod` | `protocolType`, `port` | `endpoint`, `query` |
| `external`/`domain` with `endpoint` | `protocolType`, `endpoint`, `path` | `query` |
| `external` without `endpoint` | — | `protocolType`, `port`, `path`, `query`, `tlsConfig`, `authorization` |
| `resource` | `targetMetric` `cpu` or `memory` | `protocolType`, `port`, `path`, `endpoint`, `query`, `tlsConfig`, `authorization` |
| `custom` | a bare metric name in `targetMetric` | as `resource` |
| `prometheus` | `endpoint` (a base URL), `query` | `protocolType`, `port`, `path` |

AIbrix only requires; a field that a type does not use is rejected here with the reason (a
field never silently ignored, DESIGN §2.1). `domain` is read as `external` (AIbrix's old name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import describe, read_string

__all__ = [
    "API_SOURCE_TYPES",
    "SOURCE_TYPES",
    "check_type_fields",
    "normalize_type",
    "read_endpoint",
    "read_prometheus_endpoint",
    "read_query",
]

SOURCE_TYPES = ("pod", "resource", "custom", "external", "domain", "prometheus")
API_SOURCE_TYPES = ("resource", "custom", "external")
"""Types read from a Kubernetes metrics API (external only without `endpoint`)."""

_HOW = {
    "resource": "metricSourceType resource reads metrics.k8s.io (metrics-server)",
    "custom": "metricSourceType custom reads custom.metrics.k8s.io (a metrics adapter)",
    "external-api": (
        "metricSourceType external without endpoint reads external.metrics.k8s.io (a metrics "
        "adapter)"
    ),
    "prometheus": "metricSourceType prometheus takes the whole base URL in endpoint",
    "pod": "metricSourceType pod scrapes each pod at its IP",
    "external-url": "metricSourceType external with endpoint scrapes that one URL",
}
_FORBIDDEN: dict[str, tuple[str, ...]] = {
    "pod": ("endpoint", "query"),
    "external-url": ("query",),
    "external-api": ("protocolType", "port", "path", "query", "tlsConfig", "authorization",
                     "bearerTokenFile"),
    "resource": ("protocolType", "port", "path", "endpoint", "query", "tlsConfig",
                 "authorization", "bearerTokenFile"),
    "custom": ("protocolType", "port", "path", "endpoint", "query", "tlsConfig",
               "authorization", "bearerTokenFile"),
    "prometheus": ("protocolType", "port", "path"),
}  # fmt: skip
_FIX = {
    "endpoint": "remove endpoint",
    "query": "remove query (only metricSourceType prometheus runs a query)",
    "protocolType": "remove protocolType",
    "port": "remove port",
    "path": "remove path",
    "tlsConfig": "remove tlsConfig (the API server connection uses the daemon's credentials)",
    "authorization": "remove authorization (the daemon's own credentials are used)",
    "bearerTokenFile": "remove bearerTokenFile (the daemon's own credentials are used)",
}


def normalize_type(value: Any) -> str | None:
    """The source type (`domain` → `external`), or None when it is not one."""
    if value == "domain":
        return "external"
    return value if isinstance(value, str) and value in SOURCE_TYPES else None


def variant(source_type: str, data: Mapping[str, Any]) -> str:
    """The rule set: the type, with `external` split by whether it has an `endpoint`."""
    if source_type == "external":
        return "external-url" if data.get("endpoint") not in (None, "") else "external-api"
    return source_type


def check_type_fields(doc: Document, path: Path, data: Mapping[str, Any], kind: str) -> None:
    """Record a problem for each field the rule set `kind` (`variant()`) does not use."""
    for key in _FORBIDDEN.get(kind, ()):
        if key in data:
            fix = _FIX[key]
            if kind == "prometheus" and key in ("protocolType", "port", "path"):
                fix = "put the scheme, host and port in endpoint: https://prometheus:9090"
            doc.add((*path, key), f"is not used: {_HOW[kind]}; {fix}", at_key=True)
    if kind == "resource" and "targetMetric" in data:
        metric = data["targetMetric"]
        if metric not in ("cpu", "memory"):
            doc.add(
                (*path, "targetMetric"),
                f"metricSourceType resource takes targetMetric cpu or memory, got "
                f"{describe(metric)}; for another metric use metricSourceType custom or pod",
            )


def read_endpoint(doc: Document, path: Path, value: Any) -> tuple[str, int | None] | None:
    """`external`'s `endpoint`: `host[:port]` → (host, port or None)."""
    text = read_string(doc, path, value)
    if text is None:
        return None
    text = text.strip()
    if "://" in text or "/" in text or " " in text or not text:
        doc.add(
            path,
            f"must be host[:port] (no scheme, no path), got {text!r}; the scheme is "
            "protocolType and the path is path",
        )
        return None
    host, port = text, None
    if text.startswith("["):  # [IPv6]:port
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if rest.startswith(":"):
            port = _port(doc, path, rest[1:])
            if port is None:
                return None
    elif text.count(":") == 1:
        host, raw_port = text.split(":")
        port = _port(doc, path, raw_port)
        if port is None:
            return None
    return host, port


def _port(doc: Document, path: Path, text: str) -> int | None:
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    doc.add(path, f"the port after ':' must be a number from 1 to 65535, got {text!r}")
    return None


def read_prometheus_endpoint(doc: Document, path: Path, value: Any) -> str | None:
    """`prometheus`'s `endpoint`: a base URL with an http/https scheme, without a query."""
    text = read_string(doc, path, value)
    if text is None:
        return None
    text = text.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        doc.add(
            path,
            f"must be the base URL of a Prometheus-compatible API with its scheme, such as "
            f"https://prometheus.monitoring.svc:9090, got {text!r}",
        )
        return None
    if parts.query or parts.fragment or parts.path.endswith("/api/v1/query"):
        doc.add(
            path,
            f"must be the base URL only (the daemon adds /api/v1/query and the query), got "
            f"{text!r}",
        )
        return None
    return text


def read_query(doc: Document, path: Path, value: Any) -> str | None:
    text = read_string(doc, path, value)
    if text is None:
        return None
    if not text.strip():
        doc.add(path, "must be a PromQL query that yields one number, such as sum(rate(x[1m]))")
        return None
    return text.strip()

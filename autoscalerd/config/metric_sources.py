"""`spec.metricsSources[]`: where each metric is scraped, what it is, and the value to aim for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from autoscalerd.config.model import Authorization, MetricSource, TLSConfig
from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import (
    check_keys,
    describe,
    read_float,
    read_int,
    read_mapping,
    read_string,
)
from autoscalerd.config.signals import parse_target_metric
from autoscalerd.config.source_types import (
    check_type_fields,
    normalize_type,
    read_endpoint,
    read_prometheus_endpoint,
    read_query,
    variant,
)
from autoscalerd.config.tls_auth import read_authorization, read_tls

__all__ = [
    "DEFAULT_METRICS_PATH",
    "SOURCE_FIELDS",
    "SOURCE_REJECTED",
    "read_metric_sources",
]

SOURCE_FIELDS = (
    "metricSourceType",
    "protocolType",
    "port",
    "path",
    "targetMetric",
    "targetValue",
    "endpoint",
    "query",
    "tlsConfig",
    "authorization",
    "bearerTokenFile",
)
SOURCE_REJECTED: dict[str, str] = {}
DEFAULT_METRICS_PATH = "/metrics"


def read_metric_sources(
    doc: Document, path: Path, spec: Mapping[str, Any]
) -> list[MetricSource] | None:
    """The valid sources of `spec.metricsSources` (`path`); None when the list itself is bad."""
    if "metricsSources" not in spec:
        doc.add(
            path[:-1], "metricsSources is required (at least one metric to scale on)", at_key=True
        )
        return None
    raw = spec["metricsSources"]
    if not isinstance(raw, list) or not raw:
        doc.add(path, f"must be a list with at least one metric source, got {describe(raw)}")
        return None
    out: list[MetricSource] = []
    for i, item in enumerate(raw):
        source = _read_source(doc, (*path, i), item)
        if source is not None:
            out.append(source)
    return out


def _read_source(doc: Document, path: Path, value: Any) -> MetricSource | None:
    data = read_mapping(doc, path, value)
    if data is None:
        return None
    problems_before = len(doc.problems)
    check_keys(doc, path, data, SOURCE_FIELDS, SOURCE_REJECTED)
    source_type = _check_source_type(doc, path, data)
    kind = variant(source_type or "pod", data)
    check_type_fields(doc, path, data, kind)
    # -- issue 12: where the value comes from, per type (config/source_types.py) --
    protocol: str | None = "http"
    port: int | None = 0
    endpoint = query = ""
    if kind in ("pod", "external-url"):
        protocol = _read_protocol(doc, path, data)
    if kind == "pod":
        port = None
        if "port" not in data:
            doc.add(path, "port is required (the pod port serving the metrics)", at_key=True)
        else:
            port = read_int(doc, (*path, "port"), data["port"], lo=1, hi=65535, allow_string=True)
    elif kind == "external-url":
        host_port = read_endpoint(doc, (*path, "endpoint"), data["endpoint"])
        port = None
        if "port" in data:
            port = read_int(doc, (*path, "port"), data["port"], lo=1, hi=65535, allow_string=True)
        if "path" not in data:
            doc.add(path, "path is required with endpoint (such as /metrics)", at_key=True)
        if host_port is not None:
            endpoint = host_port[0]
            port = host_port[1] or port or (443 if protocol == "https" else 80)
    elif kind == "prometheus":
        if "endpoint" not in data:
            doc.add(path, "endpoint is required: the Prometheus base URL", at_key=True)
        else:
            endpoint = read_prometheus_endpoint(doc, (*path, "endpoint"), data["endpoint"]) or ""
        if "query" not in data:
            doc.add(path, "query is required: a PromQL query that yields one number", at_key=True)
        else:
            query = read_query(doc, (*path, "query"), data["query"]) or ""
        protocol = "https" if endpoint.startswith("https://") else "http"

    metrics_path = DEFAULT_METRICS_PATH
    if "path" in data and kind in ("pod", "external-url"):
        text = read_string(doc, (*path, "path"), data["path"])
        if text is not None:
            text = text.strip()
            if "://" in text or "?" in text or "#" in text or " " in text:
                doc.add((*path, "path"), f"must be a URL path such as /metrics, got {text!r}")
            metrics_path = "/" + text.lstrip("/")

    selector = None
    signal = None
    target_metric = None
    if "targetMetric" not in data:
        doc.add(path, "targetMetric is required (a metric name or a series selector)", at_key=True)
    else:
        target_metric = read_string(doc, (*path, "targetMetric"), data["targetMetric"])
        if target_metric is not None:
            try:
                selector, signal = parse_target_metric(target_metric)
            except ValueError as exc:
                doc.add((*path, "targetMetric"), str(exc))
            if signal is not None:
                signal = replace(signal, where=doc.where((*path, "targetMetric")))
                if kind != "pod":
                    doc.add(
                        (*path, "targetMetric"),
                        f"{signal.kind.value}() is computed from each pod's own scrapes, so it "
                        f"needs metricSourceType pod, not {data.get('metricSourceType')}; "
                        + (
                            "put the rate or quantile in the PromQL query instead"
                            if kind == "prometheus"
                            else "use a plain metric name here"
                        ),
                    )
            if selector is not None and kind in ("resource", "custom") and selector.matchers:
                doc.add(
                    (*path, "targetMetric"),
                    f"metricSourceType {kind} takes a bare metric name, got {target_metric!r}; "
                    "the pods are chosen by the scale target's selector",
                )
            if selector is not None and kind == "external-api":
                for m in selector.matchers:
                    if m.op.value not in ("=", "!="):
                        doc.add(
                            (*path, "targetMetric"),
                            f"the external metrics API takes = and != matchers only (a label "
                            f"selector), got {m.name}{m.op.value}; use = or !=",
                        )

    target_value = None
    if "targetValue" not in data:
        doc.add(path, "targetValue is required (the value per pod to aim for)", at_key=True)
    else:
        target_value = read_float(
            doc, (*path, "targetValue"), data["targetValue"], lo=0.0, lo_open=True
        )

    tls = TLSConfig()
    if "tlsConfig" in data and data["tlsConfig"] is not None:
        parsed = read_tls(doc, (*path, "tlsConfig"), data["tlsConfig"])
        if parsed is not None:
            tls = parsed
        if protocol == "http" and kind in ("pod", "external-url", "prometheus"):
            fix = "an https:// endpoint" if kind == "prometheus" else "protocolType: https"
            doc.add(
                (*path, "tlsConfig"),
                f"tlsConfig applies to https sources only; set {fix} or remove tlsConfig",
                at_key=True,
            )
    authorization = _read_source_authorization(doc, path, data)

    if len(doc.problems) != problems_before:
        return None
    assert protocol and port is not None and target_metric and selector
    assert target_value is not None
    return MetricSource(
        protocol=protocol,
        port=port,
        path=metrics_path,
        type=source_type or "pod",
        endpoint=endpoint,
        query=query,
        target_metric=target_metric,
        selector=selector,
        target_value=target_value,
        tls=tls,
        authorization=authorization,
        where=doc.where(path),
        signal=signal,
    )


def _check_source_type(doc: Document, path: Path, data: Mapping[str, Any]) -> str | None:
    """The source's type (`domain` read as `external`), or None (a problem is recorded)."""
    if "metricSourceType" not in data:
        doc.add(
            path,
            "metricSourceType is required: pod, resource, custom, external, domain or "
            "prometheus (pod scrapes each pod)",
            at_key=True,
        )
        return None
    source_type = normalize_type(data["metricSourceType"])
    if source_type is None:
        doc.add(
            (*path, "metricSourceType"),
            "must be pod, resource, custom, external, domain or prometheus, got "
            f"{describe(data['metricSourceType'])}",
        )
    return source_type


def _read_protocol(doc: Document, path: Path, data: Mapping[str, Any]) -> str | None:
    """`http` or `https`; a capitalised one is named with its fix, and still returned."""
    if "protocolType" not in data:
        doc.add(path, "protocolType is required: http or https", at_key=True)
        return None
    raw = data["protocolType"]
    if not (isinstance(raw, str) and raw.lower() in ("http", "https")):
        doc.add((*path, "protocolType"), f"must be http or https, got {describe(raw)}")
        return None
    protocol = raw.lower()
    if raw != protocol:
        doc.add((*path, "protocolType"), f"must be lower case; did you mean {protocol!r}?")
    return protocol


def _read_source_authorization(
    doc: Document, path: Path, data: Mapping[str, Any]
) -> Authorization | None:
    """`authorization`, or its alias `bearerTokenFile` (not both)."""
    if "authorization" in data and "bearerTokenFile" in data:
        doc.add(
            (*path, "bearerTokenFile"),
            "set authorization or bearerTokenFile, not both",
            at_key=True,
        )
        return None
    if "authorization" in data:
        return read_authorization(doc, (*path, "authorization"), data["authorization"])
    if "bearerTokenFile" in data:
        token_file = read_string(doc, (*path, "bearerTokenFile"), data["bearerTokenFile"])
        if token_file is not None:
            return Authorization(credentials_file=token_file)
    return None

"""The `PodAutoscaler` document (AIbrix schema): metadata, bounds, target, sources, fallback.

`read_pod_autoscaler` reads every part and reports every problem; it returns a `Policy` only
when the document has none. Metric sources, annotations and per-strategy parameters have
their own modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoscalerd.config.annotations import ANNOTATIONS_PATH, read_annotations
from autoscalerd.config.metric_sources import read_metric_sources
from autoscalerd.config.model import Fallback, Policy, ScaleTargetRef, Strategy
from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import (
    check_keys,
    describe,
    read_int,
    read_mapping,
    read_string,
)
from autoscalerd.config.schedules import read_schedules
from autoscalerd.config.strategy_params import read_strategy_params

__all__ = [
    "METADATA_FIELDS",
    "SPEC_FIELDS",
    "SPEC_REJECTED",
    "TARGET_REF_FIELDS",
    "read_pod_autoscaler",
]

METADATA_FIELDS = (
    "name",
    "namespace",
    "annotations",
    "labels",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "selfLink",
)
SPEC_FIELDS = (
    "scaleTargetRef",
    "minReplicas",
    "maxReplicas",
    "metricsSources",
    "scalingStrategy",
    "observeWindowSeconds",
    "panicWindowSeconds",
    "behavior",
    "fallback",
    "schedules",
)
SPEC_REJECTED = {
    "subTargetSelector": (
        "subTargetSelector (StormService roles) is an AIbrix field this daemon does not act "
        "on yet; remove it and point scaleTargetRef at the workload to scale"
    ),
    "targetMetric": (
        "spec.targetMetric moved into spec.metricsSources[].targetMetric in AIbrix v0.2; "
        "move it there"
    ),
    "targetValue": (
        "spec.targetValue moved into spec.metricsSources[].targetValue in AIbrix v0.2; "
        "move it there"
    ),
}
TARGET_REF_FIELDS = (
    "apiVersion",
    "kind",
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "fieldPath",
)
_APPS_V1_KINDS = ("Deployment", "StatefulSet", "ReplicaSet")
_MAX_REPLICAS_LIMIT = 100000
_SPEC: Path = ("spec",)


def read_pod_autoscaler(doc: Document, data: Mapping[str, Any]) -> Policy | None:
    """The policy a `PodAutoscaler` document describes, or None after recording problems."""
    check_keys(doc, (), data, ("apiVersion", "kind", "metadata", "spec", "status"))
    problems_before = len(doc.problems)

    meta = None
    if "metadata" in data:
        meta = read_mapping(doc, ("metadata",), data["metadata"])
    else:
        doc.add(
            ("kind",),
            "metadata is missing; add metadata.name (and metadata.namespace)",
            at_key=True,
        )
    name = namespace = None
    annotations: Mapping[str, Any] = {}
    if meta is not None:
        name, namespace, annotations = _read_metadata(doc, meta)

    spec = None
    if "spec" not in data:
        doc.add(("kind",), "spec is missing", at_key=True)
    else:
        spec = read_mapping(doc, _SPEC, data["spec"])
    if spec is None:
        if meta is not None:
            read_annotations(doc, annotations, None)
        return None
    check_keys(doc, _SPEC, spec, SPEC_FIELDS, SPEC_REJECTED)

    strategy = _read_strategy(doc, spec)
    target = _read_target_ref(doc, (*_SPEC, "scaleTargetRef"), spec, namespace)
    min_replicas, max_replicas = _read_bounds(doc, spec)
    sources = read_metric_sources(doc, (*_SPEC, "metricsSources"), spec)
    annotation_values = read_annotations(doc, annotations, strategy)
    kpa, apa, hpa = read_strategy_params(
        doc, _SPEC, spec, annotation_values, strategy, min_replicas
    )
    fallback = None
    if "fallback" in spec:
        fallback = _read_fallback(
            doc, (*_SPEC, "fallback"), spec["fallback"], min_replicas, max_replicas
        )
    schedules = read_schedules(
        doc, (*_SPEC, "schedules"), spec.get("schedules"), min_replicas, max_replicas
    )

    if len(doc.problems) != problems_before:
        return None
    assert name and namespace and target and strategy and sources is not None
    assert schedules is not None
    assert min_replicas is not None and max_replicas is not None
    return Policy(
        namespace=namespace,
        name=name,
        target=target,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        strategy=strategy,
        sources=tuple(sources),
        kpa=kpa,
        apa=apa,
        hpa=hpa,
        fallback=fallback,
        where=doc.where(("metadata", "name")),
        schedules=schedules,
    )


def _read_metadata(
    doc: Document, meta: Mapping[str, Any]
) -> tuple[str | None, str | None, Mapping[str, Any]]:
    """Name, namespace (default `default`) and annotations."""
    check_keys(doc, ("metadata",), meta, METADATA_FIELDS)
    name = None
    if "name" in meta:
        name = read_string(doc, ("metadata", "name"), meta["name"])
    else:
        doc.add(("metadata",), "name is required", at_key=True)
    namespace: str | None = "default"
    if "namespace" in meta:
        namespace = read_string(doc, ("metadata", "namespace"), meta["namespace"])
    annotations: Mapping[str, Any] = {}
    if "annotations" in meta and meta["annotations"] is not None:
        annotations = read_mapping(doc, ANNOTATIONS_PATH, meta["annotations"]) or {}
    return name, namespace, annotations


def _read_strategy(doc: Document, spec: Mapping[str, Any]) -> Strategy | None:
    if "scalingStrategy" not in spec:
        doc.add(_SPEC, "scalingStrategy is required: KPA, APA or HPA", at_key=True)
        return None
    raw = spec["scalingStrategy"]
    if isinstance(raw, str) and raw in Strategy.__members__:
        return Strategy(raw)
    path = (*_SPEC, "scalingStrategy")
    if isinstance(raw, str) and raw.upper() in Strategy.__members__:
        doc.add(path, f"must be KPA, APA or HPA; did you mean {raw.upper()!r}?")
    else:
        doc.add(path, f"must be KPA, APA or HPA, got {describe(raw)}")
    return None


def _read_bounds(doc: Document, spec: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """`minReplicas` (default 1) and `maxReplicas` (required), min not above max."""
    min_replicas: int | None = 1
    if "minReplicas" in spec and spec["minReplicas"] is not None:
        min_replicas = read_int(
            doc, (*_SPEC, "minReplicas"), spec["minReplicas"], lo=0, hi=_MAX_REPLICAS_LIMIT
        )
    max_replicas: int | None = None
    if "maxReplicas" not in spec:
        doc.add(
            _SPEC, "maxReplicas is required (the most replicas the autoscaler may set)", at_key=True
        )
    else:
        max_replicas = read_int(
            doc, (*_SPEC, "maxReplicas"), spec["maxReplicas"], lo=1, hi=_MAX_REPLICAS_LIMIT
        )
    if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
        doc.add(
            (*_SPEC, "minReplicas"),
            f"minReplicas ({min_replicas}) is above maxReplicas ({max_replicas}); "
            "raise maxReplicas or lower minReplicas",
        )
    return min_replicas, max_replicas


def _read_target_ref(
    doc: Document, path: Path, spec: Mapping[str, Any], namespace: str | None
) -> ScaleTargetRef | None:
    if "scaleTargetRef" not in spec:
        doc.add(
            path[:-1],
            "scaleTargetRef is required (apiVersion, kind and name of the workload)",
            at_key=True,
        )
        return None
    ref = read_mapping(doc, path, spec["scaleTargetRef"])
    if ref is None:
        return None
    check_keys(doc, path, ref, TARGET_REF_FIELDS)
    values: dict[str, str | None] = {}
    for key in ("kind", "name"):
        if key not in ref:
            doc.add(path, f"{key} is required", at_key=True)
            values[key] = None
        else:
            values[key] = read_string(doc, (*path, key), ref[key])
    api_version = "apps/v1"
    if "apiVersion" in ref:
        given = read_string(doc, (*path, "apiVersion"), ref["apiVersion"])
        if given is None:
            return None
        api_version = given
    elif values["kind"] not in _APPS_V1_KINDS:
        doc.add(path, "apiVersion is required for kinds outside apps/v1", at_key=True)
        return None
    if "namespace" in ref and namespace is not None and ref["namespace"] != namespace:
        doc.add(
            (*path, "namespace"),
            f"the target must be in the policy's namespace {namespace!r}; "
            "move the PodAutoscaler to the target's namespace",
        )
        return None
    if values["kind"] is None or values["name"] is None:
        return None
    return ScaleTargetRef(api_version=api_version, kind=values["kind"], name=values["name"])


def _read_fallback(
    doc: Document, path: Path, value: Any, min_replicas: int | None, max_replicas: int | None
) -> Fallback | None:
    data = read_mapping(doc, path, value)
    if data is None:
        return None
    check_keys(doc, path, data, ("failureThreshold", "replicas"))
    threshold = replicas = None
    if "failureThreshold" not in data:
        doc.add(
            path,
            "failureThreshold is required (ticks without data before falling back)",
            at_key=True,
        )
    else:
        threshold = read_int(doc, (*path, "failureThreshold"), data["failureThreshold"], lo=1)
    if "replicas" not in data:
        doc.add(
            path,
            "replicas is required (the replica count to hold while metrics are missing)",
            at_key=True,
        )
    else:
        replicas = read_int(doc, (*path, "replicas"), data["replicas"], lo=0)
        if replicas is not None and max_replicas is not None and replicas > max_replicas:
            doc.add((*path, "replicas"), f"is above maxReplicas ({max_replicas})")
            replicas = None
        elif replicas is not None and min_replicas is not None and replicas < min_replicas:
            doc.add((*path, "replicas"), f"is below minReplicas ({min_replicas})")
            replicas = None
    if threshold is None or replicas is None:
        return None
    return Fallback(failure_threshold=threshold, replicas=replicas)

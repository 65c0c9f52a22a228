"""Cluster mode, pure part: a `Policy` from a PodAutoscaler *API object*, and the DaemonConfig
`podAutoscalers` block (DESIGN §8).

An object read from the API has no file and no lines, so its problems are located by their
field path only: `policy_from_object` returns the same problems `validate` finds for the
same document in a file (through `read_pod_autoscaler`, unchanged), and `spec_message`
renders them as `validate` does, minus `FILE:LINE: ` — the message of the `ValidSpec`
condition. `valid_spec_reason` maps them to AIbrix's reasons for that condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoscalerd.config.model import PodAutoscalerSettings, Policy
from autoscalerd.config.pod_autoscaler import METADATA_FIELDS, read_pod_autoscaler
from autoscalerd.config.problems import Document, Path, Problem, RawDocument
from autoscalerd.config.readers import check_keys, describe, read_mapping, read_string

__all__ = [
    "CLAIMS",
    "MANAGED_ANNOTATION",
    "SETTINGS_FIELDS",
    "claimed",
    "object_key",
    "policy_from_object",
    "read_pod_autoscaler_settings",
    "spec_message",
    "valid_spec_reason",
]

MANAGED_ANNOTATION = "autoscalerd.io/managed"
"""`"true"` on a PodAutoscaler: this daemon acts on it (with `claim: annotated`)."""
CLAIMS = ("annotated", "all")
SETTINGS_FIELDS = ("namespaces", "labelSelector", "claim")
_KEPT_METADATA = ("name", "namespace", "annotations", "labels")
"""What of an object's metadata is validated: the rest is the server's (uid, managedFields,
deletionTimestamp…) and says nothing about the policy."""
_MAX_MESSAGE = 2000


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an API object."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def claimed(obj: Mapping[str, Any], claim: str) -> bool:
    """Whether this daemon acts on the object under the `claim` rule."""
    if claim == "all":
        return True
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(MANAGED_ANNOTATION) == "true")


def policy_from_object(obj: Mapping[str, Any]) -> tuple[Policy | None, list[Problem]]:
    """The policy an API object describes, or None and every problem (field paths, line 0)."""
    namespace, name = object_key(obj)
    meta = obj.get("metadata") or {}
    data = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta and k in METADATA_FIELDS},
    }
    if "spec" in obj:
        data["spec"] = obj["spec"]
    raw = RawDocument(file=f"PodAutoscaler {namespace}/{name}", start_line=0, data=data)
    problems: list[Problem] = []
    policy = read_pod_autoscaler(Document(raw, problems), data)
    return (policy if not problems else None), problems


def spec_message(problems: Sequence[Problem]) -> str:
    """What `validate` prints for these problems without `FILE:LINE: `, joined by `; `."""
    parts = [f"{p.field}: {p.message}" if p.field else p.message for p in problems]
    text = "; ".join(parts)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


_REASONS = (
    ("spec.scalingStrategy", "InvalidScalingStrategy"),
    ("spec.minReplicas", "InvalidBounds"),
    ("spec.maxReplicas", "InvalidBounds"),
    ("spec.scaleTargetRef", "MissingScaleTargetRef"),
    ("spec.metricsSources", "MetricsConfigError"),
)


def valid_spec_reason(problems: Sequence[Problem]) -> str:
    """AIbrix's `ValidSpec` reason for the first problem (`InvalidSpec` for any other)."""
    if not problems:
        return "AsExpected"
    field = problems[0].field
    for prefix, reason in _REASONS:
        if field == prefix or field.startswith((prefix + ".", prefix + "[")):
            return reason
    if problems[0].message.startswith(("maxReplicas is required", "scaleTargetRef is required")):
        return "InvalidBounds" if "maxReplicas" in problems[0].message else "MissingScaleTargetRef"
    return "InvalidSpec"


def read_pod_autoscaler_settings(
    doc: Document, path: Path, value: Any
) -> PodAutoscalerSettings | None:
    """The DaemonConfig `podAutoscalers: {namespaces, labelSelector, claim}` block."""
    data = read_mapping(doc, path, value)
    if data is None:
        return None
    before = len(doc.problems)
    check_keys(doc, path, data, SETTINGS_FIELDS)
    namespaces: list[str] = []
    if data.get("namespaces") is not None:
        raw = data["namespaces"]
        if not isinstance(raw, list):
            doc.add((*path, "namespaces"), f"must be a list of namespaces, got {describe(raw)}")
        else:
            for i, item in enumerate(raw):
                ns = read_string(doc, (*path, "namespaces", i), item)
                if ns is not None and ns not in namespaces:
                    namespaces.append(ns)
    selector = ""
    if data.get("labelSelector") is not None:
        text = read_string(doc, (*path, "labelSelector"), data["labelSelector"], allow_empty=True)
        selector = (text or "").strip()  # checked by the API server (a 400 names the fault)
    claim = "annotated"
    if "claim" in data:
        raw_claim = data["claim"]
        if raw_claim not in CLAIMS:
            doc.add(
                (*path, "claim"),
                f'must be annotated (act on objects annotated {MANAGED_ANNOTATION}: "true") '
                f"or all, got {describe(raw_claim)}",
            )
        else:
            claim = raw_claim
    if len(doc.problems) != before:
        return None
    return PodAutoscalerSettings(namespaces=tuple(namespaces), label_selector=selector, claim=claim)

"""Each strategy's parameters, from the annotations and the spec fields that set them.

`read_strategy_params` checks the spec-level windows (`observeWindowSeconds`,
`panicWindowSeconds`) and the scale-to-zero annotation against the policy, then builds the
parameters of the policy's strategy: `_kpa_params`, `_apa_params` or `_hpa_params`. The
other two strategies keep their defaults (the policy carries all three).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from autoscalerd.config.annotations import ANNOTATIONS_PATH, AnnotationValues
from autoscalerd.config.behavior import read_behavior
from autoscalerd.config.model import (
    ApaParams,
    HpaBehavior,
    HpaParams,
    KpaParams,
    Strategy,
)
from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import format_seconds, read_int

__all__ = ["read_strategy_params"]

_KPA_FROM_ANNOTATIONS = {
    "kpa.stable_window_seconds": "stable_window_seconds",
    "kpa.panic_window_seconds": "panic_window_seconds",
    "kpa.panic_threshold": "panic_threshold",
    "kpa.scale_down_delay_seconds": "scale_down_delay_seconds",
    "kpa.activation_scale": "activation_scale",
    "kpa.target_burst_capacity": "target_burst_capacity",
    "kpa.scale_to_zero_grace_period_seconds": "scale_to_zero_grace_period_seconds",
    "max_scale_up_rate": "max_scale_up_rate",
    "max_scale_down_rate": "max_scale_down_rate",
}
"""Annotation parameter -> `KpaParams` field. `scale_down_cooldown` (AIbrix v0.5's name of
the scale-down delay) is mapped separately: it conflicts with `kpa.scale_down_delay_seconds`."""

_APA_FROM_ANNOTATIONS = {
    "up_tolerance": "up_fluctuation_tolerance",
    "down_tolerance": "down_fluctuation_tolerance",
    "apa.window_seconds": "window_seconds",
    "max_scale_up_rate": "max_scale_up_rate",
    "max_scale_down_rate": "max_scale_down_rate",
    "scale_up_cooldown": "scale_up_cooldown_seconds",
    "scale_down_cooldown": "scale_down_cooldown_seconds",
}
"""Annotation parameter -> `ApaParams` field."""

_HPA_FROM_ANNOTATIONS = (
    ("up_tolerance", "scale_up", "tolerance"),
    ("down_tolerance", "scale_down", "tolerance"),
    ("scale_up_cooldown", "scale_up", "stabilization_window_seconds"),
    ("scale_down_cooldown", "scale_down", "stabilization_window_seconds"),
)
"""Annotation parameter -> (`HpaBehavior` direction, `HpaRules` field); an annotation
overrides the same setting in `spec.behavior`."""


@dataclass(frozen=True, slots=True)
class _SpecWindows:
    """AIbrix v0.7's spec-level windows, in seconds, when set and applicable."""

    observe: int | None
    """`observeWindowSeconds`: the KPA stable window, the APA window."""
    panic: int | None
    """`panicWindowSeconds`: the KPA panic window."""


def read_strategy_params(
    doc: Document,
    spec_path: Path,
    spec: Mapping[str, Any],
    annotations: AnnotationValues,
    strategy: Strategy | None,
    min_replicas: int | None,
) -> tuple[KpaParams, ApaParams, HpaParams]:
    """The parameters of all three strategies; only `strategy`'s differ from the defaults."""
    windows = _read_spec_windows(doc, spec_path, spec, strategy)
    _check_scale_to_zero(doc, annotations, min_replicas)
    kpa, apa, hpa = KpaParams(), ApaParams(), HpaParams()
    if strategy is Strategy.KPA:
        kpa = _kpa_params(doc, spec_path, annotations, windows)
    elif strategy is Strategy.APA:
        apa = _apa_params(doc, spec_path, annotations, windows)
    elif strategy is Strategy.HPA:
        hpa = _hpa_params(doc, spec_path, spec, annotations)
    if "behavior" in spec and strategy is not None and strategy is not Strategy.HPA:
        doc.add(
            (*spec_path, "behavior"),
            f"applies to scalingStrategy HPA; this policy uses {strategy.value}",
            at_key=True,
        )
    return kpa, apa, hpa


def _read_spec_windows(
    doc: Document, spec_path: Path, spec: Mapping[str, Any], strategy: Strategy | None
) -> _SpecWindows:
    observe = panic = None
    if "observeWindowSeconds" in spec:
        observe = read_int(
            doc, (*spec_path, "observeWindowSeconds"), spec["observeWindowSeconds"], lo=1, hi=3600
        )
    if "panicWindowSeconds" in spec:
        panic = read_int(
            doc, (*spec_path, "panicWindowSeconds"), spec["panicWindowSeconds"], lo=1, hi=3600
        )
        if strategy is not None and strategy is not Strategy.KPA:
            doc.add(
                (*spec_path, "panicWindowSeconds"),
                f"applies to KPA only; this policy uses {strategy.value}",
                at_key=True,
            )
            panic = None
    if observe is not None and strategy is Strategy.HPA:
        doc.add(
            (*spec_path, "observeWindowSeconds"),
            "does not apply to HPA; use spec.behavior stabilization windows",
            at_key=True,
        )
        observe = None
    return _SpecWindows(observe=observe, panic=panic)


def _check_scale_to_zero(
    doc: Document, annotations: AnnotationValues, min_replicas: int | None
) -> None:
    """`autoscaling.aibrix.ai/scale-to-zero` must agree with `minReplicas: 0`."""
    scale_to_zero = annotations.get("scale_to_zero")
    if scale_to_zero is None or min_replicas is None:
        return
    path = (*ANNOTATIONS_PATH, "autoscaling.aibrix.ai/scale-to-zero")
    if scale_to_zero and min_replicas != 0:
        doc.add(path, "set spec.minReplicas: 0 to allow scale to zero")
    elif not scale_to_zero and min_replicas == 0:
        doc.add(
            path, "contradicts spec.minReplicas: 0; set minReplicas: 1 or remove the annotation"
        )


def _kpa_params(
    doc: Document, spec_path: Path, annotations: AnnotationValues, windows: _SpecWindows
) -> KpaParams:
    changes = _fields_from(annotations, _KPA_FROM_ANNOTATIONS)
    if "scale_down_cooldown" in annotations:
        if "scale_down_delay_seconds" in changes:
            doc.add(
                (*ANNOTATIONS_PATH, annotations.annotation("scale_down_cooldown")),
                "sets the same parameter as 'kpa.autoscaling.aibrix.ai/scale-down-delay'; keep only one",
            )
        changes["scale_down_delay_seconds"] = annotations.get("scale_down_cooldown")
    _take_spec_window(
        doc, spec_path, "observeWindowSeconds", windows.observe, changes, "stable_window_seconds"
    )
    _take_spec_window(
        doc, spec_path, "panicWindowSeconds", windows.panic, changes, "panic_window_seconds"
    )
    kpa = replace(KpaParams(), **changes)
    if kpa.panic_window_seconds > kpa.stable_window_seconds:
        blamed = "kpa.autoscaling.aibrix.ai/panic-window"
        if "panic_window_seconds" not in changes:
            blamed = "kpa.autoscaling.aibrix.ai/stable-window"
        doc.add(
            (*ANNOTATIONS_PATH, blamed),
            f"the panic window ({format_seconds(kpa.panic_window_seconds)}) must not be longer "
            f"than the stable window ({format_seconds(kpa.stable_window_seconds)})",
        )
    return kpa


def _apa_params(
    doc: Document, spec_path: Path, annotations: AnnotationValues, windows: _SpecWindows
) -> ApaParams:
    changes = _fields_from(annotations, _APA_FROM_ANNOTATIONS)
    _take_spec_window(
        doc, spec_path, "observeWindowSeconds", windows.observe, changes, "window_seconds"
    )
    return replace(ApaParams(), **changes)


def _hpa_params(
    doc: Document, spec_path: Path, spec: Mapping[str, Any], annotations: AnnotationValues
) -> HpaParams:
    behavior = HpaBehavior()
    if "behavior" in spec:
        parsed = read_behavior(doc, (*spec_path, "behavior"), spec["behavior"])
        if parsed is not None:
            behavior = parsed
    for param, direction, field_name in _HPA_FROM_ANNOTATIONS:
        if param in annotations:
            rules = replace(getattr(behavior, direction), **{field_name: annotations.get(param)})
            behavior = replace(behavior, **{direction: rules})
    return HpaParams(behavior=behavior)


def _fields_from(annotations: AnnotationValues, fields: Mapping[str, str]) -> dict[str, Any]:
    """Model field -> value for the annotation parameters in `fields` that are set."""
    return {
        field_name: annotations.get(param)
        for param, field_name in fields.items()
        if param in annotations
    }


def _take_spec_window(
    doc: Document,
    spec_path: Path,
    key: str,
    seconds: int | None,
    changes: dict[str, Any],
    field_name: str,
) -> None:
    """Put a spec-level window into `changes`, with a problem if an annotation set it too."""
    if seconds is None:
        return
    if field_name in changes:
        doc.add(
            (*spec_path, key), "is also set by an annotation; keep only one of them", at_key=True
        )
    changes[field_name] = float(seconds)

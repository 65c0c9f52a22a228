"""AIbrix's annotations: which exist, which strategy each applies to, and reading their values.

`ANNOTATIONS` is the table of every annotation under the AIbrix prefixes (both generations'
names; aliases set the same parameter). `read_annotations` checks the ones a policy carries
and returns the values found, keyed by parameter; `autoscalerd.config.strategy_params` turns
them into each strategy's parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from autoscalerd.config.model import Strategy
from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import (
    describe,
    did_you_mean,
    read_bool,
    read_duration,
    read_float,
    read_int,
)

__all__ = [
    "ANNOTATIONS",
    "ANNOTATIONS_PATH",
    "ANNOTATION_PREFIXES",
    "AnnotationSpec",
    "AnnotationValues",
    "read_annotations",
]

ANNOTATIONS_PATH: Path = ("metadata", "annotations")
ANNOTATION_PREFIXES = (
    "autoscaling.aibrix.ai/",
    "kpa.autoscaling.aibrix.ai/",
    "apa.autoscaling.aibrix.ai/",
)


@dataclass(frozen=True, slots=True)
class AnnotationSpec:
    """What one annotation sets and which values it takes."""

    param: str
    """Parameter it sets, as `kpa.stable_window_seconds`; aliases share one."""
    kind: str
    """duration | float | int | bool"""
    strategies: frozenset[Strategy]
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False


_KPA = frozenset({Strategy.KPA})
_APA = frozenset({Strategy.APA})
_HPA = frozenset({Strategy.HPA})
_KPA_APA = frozenset({Strategy.KPA, Strategy.APA})
_ALL = frozenset(Strategy)

ANNOTATIONS: dict[str, AnnotationSpec] = {
    # KPA (AIbrix v0.2–v0.4 names)
    "kpa.autoscaling.aibrix.ai/stable-window": AnnotationSpec(
        "kpa.stable_window_seconds", "duration", _KPA, lo=6.0, hi=3600.0
    ),
    "kpa.autoscaling.aibrix.ai/panic-window": AnnotationSpec(
        "kpa.panic_window_seconds", "duration", _KPA, lo=1.0, hi=3600.0
    ),
    "kpa.autoscaling.aibrix.ai/panic-threshold": AnnotationSpec(
        "kpa.panic_threshold", "float", _KPA, lo=1.0, hi=1000.0, lo_open=True
    ),
    "autoscaling.aibrix.ai/panic-threshold": AnnotationSpec(
        "kpa.panic_threshold", "float", _KPA, lo=1.0, hi=1000.0, lo_open=True
    ),
    "kpa.autoscaling.aibrix.ai/scale-down-delay": AnnotationSpec(
        "kpa.scale_down_delay_seconds", "duration", _KPA, lo=0.0, hi=3600.0
    ),
    "kpa.autoscaling.aibrix.ai/activation-scale": AnnotationSpec(
        "kpa.activation_scale", "int", _KPA, lo=1
    ),
    "kpa.autoscaling.aibrix.ai/target-burst-capacity": AnnotationSpec(
        "kpa.target_burst_capacity", "float", _KPA, lo=-1.0
    ),
    "autoscaling.aibrix.ai/scale-to-zero-grace-period": AnnotationSpec(
        "kpa.scale_to_zero_grace_period_seconds", "duration", _KPA, lo=0.0, hi=3600.0
    ),
    "autoscaling.aibrix.ai/scale-to-zero": AnnotationSpec("scale_to_zero", "bool", _ALL),
    # KPA and APA
    "autoscaling.aibrix.ai/max-scale-up-rate": AnnotationSpec(
        "max_scale_up_rate", "float", _KPA_APA, lo=1.0, lo_open=True
    ),
    "autoscaling.aibrix.ai/max-scale-down-rate": AnnotationSpec(
        "max_scale_down_rate", "float", _KPA_APA, lo=1.0, lo_open=True
    ),
    # APA (AIbrix v0.2–v0.4 names and the newer aliases)
    "apa.autoscaling.aibrix.ai/up-fluctuation-tolerance": AnnotationSpec(
        "up_tolerance", "float", _APA | _HPA, lo=0.0
    ),
    "autoscaling.aibrix.ai/up-fluctuation-tolerance": AnnotationSpec(
        "up_tolerance", "float", _APA | _HPA, lo=0.0
    ),
    "autoscaling.aibrix.ai/scale-up-tolerance": AnnotationSpec(
        "up_tolerance", "float", _APA | _HPA, lo=0.0
    ),
    "apa.autoscaling.aibrix.ai/down-fluctuation-tolerance": AnnotationSpec(
        "down_tolerance", "float", _APA | _HPA, lo=0.0, hi=0.99
    ),
    "autoscaling.aibrix.ai/down-fluctuation-tolerance": AnnotationSpec(
        "down_tolerance", "float", _APA | _HPA, lo=0.0, hi=0.99
    ),
    "autoscaling.aibrix.ai/scale-down-tolerance": AnnotationSpec(
        "down_tolerance", "float", _APA | _HPA, lo=0.0, hi=0.99
    ),
    "apa.autoscaling.aibrix.ai/window": AnnotationSpec(
        "apa.window_seconds", "duration", _APA, lo=1.0, hi=3600.0
    ),
    # Stabilization windows (AIbrix v0.5+ names)
    "autoscaling.aibrix.ai/scale-up-cooldown-window": AnnotationSpec(
        "scale_up_cooldown", "duration", _APA | _HPA, lo=0.0, hi=3600.0
    ),
    "autoscaling.aibrix.ai/scale-down-cooldown-window": AnnotationSpec(
        "scale_down_cooldown", "duration", _ALL, lo=0.0, hi=3600.0
    ),
}

_NO_TOLERANCE_FOR_KPA = "KPA has no tolerance band (Knative semantics); use APA or HPA for one"
_WRONG_STRATEGY_NOTES = {
    "autoscaling.aibrix.ai/max-scale-up-rate": "for HPA, set spec.behavior.scaleUp.policies",
    "autoscaling.aibrix.ai/max-scale-down-rate": "for HPA, set spec.behavior.scaleDown.policies",
    "autoscaling.aibrix.ai/scale-up-cooldown-window": (
        "KPA reacts to bursts through its panic window and has no scale-up stabilization"
    ),
    "autoscaling.aibrix.ai/up-fluctuation-tolerance": _NO_TOLERANCE_FOR_KPA,
    "autoscaling.aibrix.ai/scale-up-tolerance": _NO_TOLERANCE_FOR_KPA,
    "autoscaling.aibrix.ai/scale-down-tolerance": _NO_TOLERANCE_FOR_KPA,
    "autoscaling.aibrix.ai/down-fluctuation-tolerance": _NO_TOLERANCE_FOR_KPA,
}
"""The fix to suggest when an annotation is set on a strategy it does not apply to (the
`apa.` names share the note of their `autoscaling.` alias)."""


class AnnotationValues:
    """The parameters a policy's annotations set: value, and the annotation that set it."""

    __slots__ = ("_found",)

    def __init__(self) -> None:
        self._found: dict[str, tuple[Any, str]] = {}

    def __contains__(self, param: str) -> bool:
        return param in self._found

    def __iter__(self) -> Iterator[str]:
        return iter(self._found)

    def get(self, param: str) -> Any:
        """The value of `param`, or None when no annotation sets it."""
        return self._found[param][0] if param in self._found else None

    def annotation(self, param: str) -> str:
        """The name of the annotation that set `param` (which must be set)."""
        return self._found[param][1]

    def set(self, param: str, value: Any, annotation: str) -> None:
        self._found[param] = (value, annotation)


def read_annotations(
    doc: Document, annotations: Mapping[str, Any], strategy: Strategy | None
) -> AnnotationValues:
    """Check the AIbrix annotations present and return the parameters they set.

    Annotations outside the AIbrix prefixes are left alone. With `strategy` None (the
    strategy is unknown) every known annotation is read but none is checked against it.
    """
    found = AnnotationValues()
    for name, raw in annotations.items():
        if not isinstance(name, str) or not name.startswith(ANNOTATION_PREFIXES):
            continue
        path = (*ANNOTATIONS_PATH, name)
        spec = ANNOTATIONS.get(name)
        if spec is None:
            same_prefix = [k for k in ANNOTATIONS if k.split("/")[0] == name.split("/")[0]]
            doc.add(
                path,
                f"unknown annotation {name!r}{did_you_mean(name, same_prefix or ANNOTATIONS)}",
                at_key=True,
            )
            continue
        if strategy is not None and strategy not in spec.strategies:
            applies = "/".join(sorted(s.value for s in spec.strategies))
            note = _WRONG_STRATEGY_NOTES.get(name.replace("apa.autoscaling", "autoscaling"), "")
            doc.add(
                path,
                f"applies to scalingStrategy {applies}, but this policy uses {strategy.value}"
                + (f"; {note}" if note else ""),
                at_key=True,
            )
            continue
        value = _read_value(doc, path, raw, spec)
        if value is None:
            continue
        if spec.param in found:
            doc.add(
                path,
                f"sets the same parameter as {found.annotation(spec.param)!r}; "
                "keep only one of them",
                at_key=True,
            )
            continue
        found.set(spec.param, value, name)
    return found


def _read_value(doc: Document, path: Path, raw: Any, spec: AnnotationSpec) -> Any:
    """The annotation's value as its kind says, or None after recording a problem."""
    if not isinstance(raw, (str, int, float)) or (isinstance(raw, bool) and spec.kind != "bool"):
        doc.add(path, f"annotation values are strings, got {describe(raw)}")
        return None
    text = raw if isinstance(raw, str) else str(raw)
    if spec.kind == "duration":
        return read_duration(doc, path, text, lo=spec.lo or 0.0, hi=spec.hi, lo_open=spec.lo_open)
    if spec.kind == "float":
        return read_float(doc, path, text, lo=spec.lo, hi=spec.hi, lo_open=spec.lo_open)
    if spec.kind == "int":
        return read_int(
            doc,
            path,
            text,
            lo=None if spec.lo is None else int(spec.lo),
            hi=None if spec.hi is None else int(spec.hi),
            allow_string=True,
        )
    return read_bool(doc, path, raw)

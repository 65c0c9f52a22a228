"""Turn plain YAML data into the validated model, collecting every problem with its line.

Pure: the input is already-loaded data plus a map from key paths to line numbers (built by
`autoscalerd.config.load`), so this module is tested with tables and no files.

Every problem is reported as `FILE:LINE: field.path: message`, where LINE is the line of the
offending key or value (not the document start), and the message says how to fix it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from autoscalerd.config.durations import parse_byte_size, parse_duration
from autoscalerd.config.model import (
    ApaParams,
    Authorization,
    Config,
    DaemonConfig,
    Fallback,
    HpaBehavior,
    HpaParams,
    KpaParams,
    LeaderElection,
    MetricSource,
    Policy,
    RatePolicy,
    ScaleTargetRef,
    SourceRef,
    Strategy,
    TLSConfig,
)
from autoscalerd.config.selector import parse_selector

__all__ = [
    "ANNOTATIONS",
    "ConfigErrors",
    "Path",
    "Problem",
    "RawDocument",
    "parse_documents",
]

Path = tuple[str | int, ...]

POD_AUTOSCALER_API_VERSION = "autoscaling.aibrix.ai/v1alpha1"
DAEMON_CONFIG_API_VERSION = "autoscalerd.io/v1alpha1"
KNOWN_KINDS = {
    "PodAutoscaler": POD_AUTOSCALER_API_VERSION,
    "DaemonConfig": DAEMON_CONFIG_API_VERSION,
}
ANNOTATION_PREFIXES = (
    "autoscaling.aibrix.ai/",
    "kpa.autoscaling.aibrix.ai/",
    "apa.autoscaling.aibrix.ai/",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One thing wrong with a policy file, located at a line."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        if self.field:
            return f"{self.file}:{self.line}: {self.field}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class ConfigErrors(Exception):
    """The configuration is invalid; `problems` lists every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, kw_only=True, slots=True)
class RawDocument:
    """One YAML document as loaded: plain data plus where each key and value stands."""

    file: str
    start_line: int
    data: Any
    key_lines: Mapping[Path, int] = field(default_factory=dict)
    """Line of the key of the value at a path (1-based)."""
    value_lines: Mapping[Path, int] = field(default_factory=dict)
    """Line where the value at a path starts (1-based)."""


class _Doc:
    """Problem collection and line lookup for one document."""

    def __init__(self, raw: RawDocument, problems: list[Problem]) -> None:
        self.raw = raw
        self.problems = problems

    def line(self, path: Path, *, at_key: bool = False) -> int:
        lines = self.raw.key_lines if at_key else self.raw.value_lines
        probe = path
        while probe:
            if probe in lines:
                return lines[probe]
            if not at_key and probe in self.raw.key_lines:
                return self.raw.key_lines[probe]
            probe = probe[:-1]
        return self.raw.start_line

    def add(self, path: Path, message: str, *, at_key: bool = False) -> None:
        self.problems.append(
            Problem(
                file=self.raw.file,
                line=self.line(path, at_key=at_key),
                field=dotted(path),
                message=message,
            )
        )

    def where(self, path: Path) -> SourceRef:
        at_key = bool(path) and not isinstance(path[-1], int)
        return SourceRef(file=self.raw.file, line=self.line(path, at_key=at_key))


def dotted(path: Path) -> str:
    """Render a key path as `spec.metricsSources[0].port` (annotation keys in brackets)."""
    out = ""
    for part in path:
        if isinstance(part, int) or "/" in part or ("." in part and out.endswith("annotations")):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


# ---------------------------------------------------------------------------------------------
# Small typed readers. Each returns None after recording a problem.


def _hint(key: str, known: Iterable[str]) -> str:
    known = list(known)
    norm = key.replace("_", "").replace("-", "").lower()
    for k in known:
        if k.replace("_", "").replace("-", "").lower() == norm:
            return f"; did you mean {k!r}?"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known fields: {', '.join(sorted(known))}"


def _check_keys(
    doc: _Doc,
    path: Path,
    data: Mapping[str, Any],
    allowed: Iterable[str],
    rejected: Mapping[str, str] | None = None,
) -> None:
    allowed = set(allowed)
    rejected = rejected or {}
    for key in data:
        if key in allowed:
            continue
        if not isinstance(key, str):
            doc.add((*path, str(key)), f"keys must be strings, got {key!r}", at_key=True)
        elif key in rejected:
            doc.add((*path, key), rejected[key], at_key=True)
        else:
            doc.add((*path, key), f"unknown field {key!r}{_hint(key, allowed)}", at_key=True)


def _mapping(
    doc: _Doc, path: Path, value: Any, what: str = "a mapping"
) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    doc.add(path, f"must be {what}, got {_describe(value)}")
    return None


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{value!r}"


def _string(doc: _Doc, path: Path, value: Any, *, allow_empty: bool = False) -> str | None:
    if isinstance(value, str) and (allow_empty or value.strip()):
        return value
    if isinstance(value, str):
        doc.add(path, "must not be empty")
    else:
        doc.add(path, f"must be a string, got {_describe(value)}")
    return None


def _bool(doc: _Doc, path: Path, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    doc.add(path, f"must be true or false, got {_describe(value)}")
    return None


def _int(
    doc: _Doc,
    path: Path,
    value: Any,
    *,
    lo: int | None = None,
    hi: int | None = None,
    allow_string: bool = False,
) -> int | None:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif allow_string and isinstance(value, str) and value.strip().lstrip("+").isdigit():
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None:
        doc.add(path, f"must be a whole number, got {_describe(value)}")
        return None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        doc.add(path, f"must be {_range(lo, hi)}, got {number}")
        return None
    return number


def _range(lo: float | None, hi: float | None, *, lo_open: bool = False) -> str:
    lo_word = "more than" if lo_open else "at least"
    if lo is not None and hi is not None:
        return (
            f"between {_num(lo)} and {_num(hi)}"
            if not lo_open
            else f"more than {_num(lo)} and at most {_num(hi)}"
        )
    if lo is not None:
        return f"{lo_word} {_num(lo)}"
    return f"at most {_num(hi)}" if hi is not None else "a number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _float(
    doc: _Doc,
    path: Path,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float | None:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        doc.add(path, f"must be a number, got {_describe(value)}")
        return None
    too_low = lo is not None and (number <= lo if lo_open else number < lo)
    if too_low or (hi is not None and number > hi):
        doc.add(path, f"must be {_range(lo, hi, lo_open=lo_open)}, got {_num(number)}")
        return None
    return number


def _duration(
    doc: _Doc,
    path: Path,
    value: Any,
    *,
    lo: float = 0.0,
    hi: float | None = None,
    lo_open: bool = False,
) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        seconds = 0.0
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            doc.add(path, str(exc))
            return None
    else:
        doc.add(path, f"must be a duration such as 30s, 5m or 1h30m, got {_describe(value)}")
        return None
    too_low = seconds <= lo if lo_open else seconds < lo
    if too_low or (hi is not None and seconds > hi):
        doc.add(path, f"must be {_range_duration(lo, hi, lo_open)}, got {value}")
        return None
    return seconds


def _range_duration(lo: float, hi: float | None, lo_open: bool) -> str:
    low = f"more than {_fmt_seconds(lo)}" if lo_open else f"at least {_fmt_seconds(lo)}"
    if hi is None:
        return low
    return f"{low} and at most {_fmt_seconds(hi)}"


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds.is_integer():
        return f"{int(seconds)}s"
    return f"{seconds * 1000:g}ms"


# ---------------------------------------------------------------------------------------------
# Annotations


@dataclass(frozen=True, slots=True)
class _Annotation:
    param: str
    """Model field it sets, as `kpa.stable_window_seconds`, or a special key."""
    kind: str
    """duration | float | int | bool"""
    strategies: frozenset[Strategy]
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    note: str = ""


_KPA = frozenset({Strategy.KPA})
_APA = frozenset({Strategy.APA})
_HPA = frozenset({Strategy.HPA})
_KPA_APA = frozenset({Strategy.KPA, Strategy.APA})
_ALL = frozenset(Strategy)

ANNOTATIONS: dict[str, _Annotation] = {
    # KPA (AIbrix v0.2–v0.4 names)
    "kpa.autoscaling.aibrix.ai/stable-window": _Annotation(
        "kpa.stable_window_seconds", "duration", _KPA, lo=6.0, hi=3600.0
    ),
    "kpa.autoscaling.aibrix.ai/panic-window": _Annotation(
        "kpa.panic_window_seconds", "duration", _KPA, lo=1.0, hi=3600.0
    ),
    "kpa.autoscaling.aibrix.ai/panic-threshold": _Annotation(
        "kpa.panic_threshold", "float", _KPA, lo=1.0, hi=1000.0, lo_open=True
    ),
    "autoscaling.aibrix.ai/panic-threshold": _Annotation(
        "kpa.panic_threshold", "float", _KPA, lo=1.0, hi=1000.0, lo_open=True
    ),
    "kpa.autoscaling.aibrix.ai/scale-down-delay": _Annotation(
        "kpa.scale_down_delay_seconds", "duration", _KPA, lo=0.0, hi=3600.0
    ),
    "kpa.autoscaling.aibrix.ai/activation-scale": _Annotation(
        "kpa.activation_scale", "int", _KPA, lo=1
    ),
    "kpa.autoscaling.aibrix.ai/target-burst-capacity": _Annotation(
        "kpa.target_burst_capacity", "float", _KPA, lo=-1.0
    ),
    "autoscaling.aibrix.ai/scale-to-zero-grace-period": _Annotation(
        "kpa.scale_to_zero_grace_period_seconds", "duration", _KPA, lo=0.0, hi=3600.0
    ),
    "autoscaling.aibrix.ai/scale-to-zero": _Annotation("scale_to_zero", "bool", _ALL),
    # KPA and APA
    "autoscaling.aibrix.ai/max-scale-up-rate": _Annotation(
        "max_scale_up_rate", "float", _KPA_APA, lo=1.0, lo_open=True
    ),
    "autoscaling.aibrix.ai/max-scale-down-rate": _Annotation(
        "max_scale_down_rate", "float", _KPA_APA, lo=1.0, lo_open=True
    ),
    # APA (AIbrix v0.2–v0.4 names and the newer aliases)
    "apa.autoscaling.aibrix.ai/up-fluctuation-tolerance": _Annotation(
        "up_tolerance", "float", _APA | _HPA, lo=0.0
    ),
    "autoscaling.aibrix.ai/up-fluctuation-tolerance": _Annotation(
        "up_tolerance", "float", _APA | _HPA, lo=0.0
    ),
    "autoscaling.aibrix.ai/scale-up-tolerance": _Annotation(
        "up_tolerance", "float", _APA | _HPA, lo=0.0
    ),
    "apa.autoscaling.aibrix.ai/down-fluctuation-tolerance": _Annotation(
        "down_tolerance", "float", _APA | _HPA, lo=0.0, hi=0.99
    ),
    "autoscaling.aibrix.ai/down-fluctuation-tolerance": _Annotation(
        "down_tolerance", "float", _APA | _HPA, lo=0.0, hi=0.99
    ),
    "autoscaling.aibrix.ai/scale-down-tolerance": _Annotation(
        "down_tolerance", "float", _APA | _HPA, lo=0.0, hi=0.99
    ),
    "apa.autoscaling.aibrix.ai/window": _Annotation(
        "apa.window_seconds", "duration", _APA, lo=1.0, hi=3600.0
    ),
    # Stabilization windows (AIbrix v0.5+ names)
    "autoscaling.aibrix.ai/scale-up-cooldown-window": _Annotation(
        "scale_up_cooldown", "duration", _APA | _HPA, lo=0.0, hi=3600.0
    ),
    "autoscaling.aibrix.ai/scale-down-cooldown-window": _Annotation(
        "scale_down_cooldown", "duration", _ALL, lo=0.0, hi=3600.0
    ),
}

_STRATEGY_NOTES = {
    "autoscaling.aibrix.ai/max-scale-up-rate": "for HPA, set spec.behavior.scaleUp.policies",
    "autoscaling.aibrix.ai/max-scale-down-rate": "for HPA, set spec.behavior.scaleDown.policies",
    "autoscaling.aibrix.ai/scale-up-cooldown-window": (
        "KPA reacts to bursts through its panic window and has no scale-up stabilization"
    ),
    "autoscaling.aibrix.ai/up-fluctuation-tolerance": (
        "KPA has no tolerance band (Knative semantics); use APA or HPA for one"
    ),
    "autoscaling.aibrix.ai/scale-up-tolerance": (
        "KPA has no tolerance band (Knative semantics); use APA or HPA for one"
    ),
    "autoscaling.aibrix.ai/scale-down-tolerance": (
        "KPA has no tolerance band (Knative semantics); use APA or HPA for one"
    ),
    "autoscaling.aibrix.ai/down-fluctuation-tolerance": (
        "KPA has no tolerance band (Knative semantics); use APA or HPA for one"
    ),
}


def _parse_annotations(
    doc: _Doc, path: Path, annotations: Mapping[str, Any], strategy: Strategy | None
) -> dict[str, tuple[Any, str]]:
    """Return param -> (value, annotation name) for the AIbrix annotations present."""
    found: dict[str, tuple[Any, str]] = {}
    for name, raw in annotations.items():
        if not isinstance(name, str) or not name.startswith(ANNOTATION_PREFIXES):
            continue
        apath = (*path, name)
        spec = ANNOTATIONS.get(name)
        if spec is None:
            known = [k for k in ANNOTATIONS if k.split("/")[0] == name.split("/")[0]]
            doc.add(
                apath,
                f"unknown annotation {name!r}{_hint(name, known or ANNOTATIONS)}",
                at_key=True,
            )
            continue
        if strategy is not None and strategy not in spec.strategies:
            applies = "/".join(sorted(s.value for s in spec.strategies))
            note = _STRATEGY_NOTES.get(name.replace("apa.autoscaling", "autoscaling"), "")
            doc.add(
                apath,
                f"applies to scalingStrategy {applies}, but this policy uses {strategy.value}"
                + (f"; {note}" if note else ""),
                at_key=True,
            )
            continue
        value: Any
        if not isinstance(raw, (str, int, float)) or (
            isinstance(raw, bool) and spec.kind != "bool"
        ):
            doc.add(apath, f"annotation values are strings, got {_describe(raw)}")
            continue
        text = raw if isinstance(raw, str) else str(raw)
        if spec.kind == "duration":
            value = _duration(doc, apath, text, lo=spec.lo or 0.0, hi=spec.hi, lo_open=spec.lo_open)
        elif spec.kind == "float":
            value = _float(doc, apath, text, lo=spec.lo, hi=spec.hi, lo_open=spec.lo_open)
        elif spec.kind == "int":
            value = _int(
                doc,
                apath,
                text,
                lo=None if spec.lo is None else int(spec.lo),
                hi=None if spec.hi is None else int(spec.hi),
                allow_string=True,
            )
        else:
            value = _bool(doc, apath, raw)
        if value is None:
            continue
        if spec.param in found:
            other = found[spec.param][1]
            doc.add(
                apath, f"sets the same parameter as {other!r}; keep only one of them", at_key=True
            )
            continue
        found[spec.param] = (value, name)
    return found


# ---------------------------------------------------------------------------------------------
# TLS and authorization


TLS_FIELDS = (
    "insecureSkipVerify",
    "caFile",
    "serverName",
    "certFile",
    "keyFile",
    "minVersion",
    "strictX509",
)
TLS_REJECTED = {
    "ca": "inline CA data is not supported; put the bundle in a file and set caFile",
    "cert": "inline certificates are not supported; set certFile",
    "keySecret": "Secret references are not supported; mount the Secret and set keyFile",
    "maxVersion": "maxVersion is not supported; TLS 1.3 is always allowed",
}
_TLS_VERSIONS = ("TLS12", "TLS13")


def _parse_tls(doc: _Doc, path: Path, value: Any) -> TLSConfig | None:
    data = _mapping(doc, path, value)
    if data is None:
        return None
    _check_keys(doc, path, data, TLS_FIELDS, TLS_REJECTED)
    out: dict[str, Any] = {}
    if "insecureSkipVerify" in data:
        out["insecure_skip_verify"] = _bool(
            doc, (*path, "insecureSkipVerify"), data["insecureSkipVerify"]
        )
    if "strictX509" in data:
        out["strict_x509"] = _bool(doc, (*path, "strictX509"), data["strictX509"])
    for key, attr in (
        ("caFile", "ca_file"),
        ("serverName", "server_name"),
        ("certFile", "cert_file"),
        ("keyFile", "key_file"),
    ):
        if key in data:
            out[attr] = _string(doc, (*path, key), data[key])
    if "minVersion" in data:
        mv = data["minVersion"]
        if mv in _TLS_VERSIONS:
            out["min_version"] = mv
        elif mv in ("TLS10", "TLS11"):
            doc.add((*path, "minVersion"), f"{mv} is not allowed; the minimum is TLS12")
        else:
            doc.add((*path, "minVersion"), f"must be TLS12 or TLS13, got {_describe(mv)}")
    if ("certFile" in data) != ("keyFile" in data):
        missing = "keyFile" if "certFile" in data else "certFile"
        present = "certFile" if missing == "keyFile" else "keyFile"
        doc.add(
            (*path, present),
            f"a client certificate needs both certFile and keyFile; add {missing}",
            at_key=True,
        )
    if out.get("insecure_skip_verify") and any(k in data for k in ("caFile", "serverName")):
        doc.add(
            (*path, "insecureSkipVerify"),
            "insecureSkipVerify: true turns off the verification that caFile/serverName configure; "
            "remove one or the other",
            at_key=True,
        )
    return TLSConfig(**{k: v for k, v in out.items() if v is not None})


def _parse_authorization(doc: _Doc, path: Path, value: Any) -> Authorization | None:
    data = _mapping(doc, path, value)
    if data is None:
        return None
    _check_keys(
        doc,
        path,
        data,
        ("type", "credentialsFile"),
        {
            "credentials": "inline credentials are not supported (they would sit in the policy "
            "file); put the token in a file and set credentialsFile",
        },
    )
    auth_type = "Bearer"
    if "type" in data:
        t = _string(doc, (*path, "type"), data["type"])
        if t is not None and t.lower() != "bearer":
            doc.add((*path, "type"), f"only Bearer is supported, got {t!r}")
            return None
    if "credentialsFile" not in data:
        if "credentials" not in data:
            doc.add(
                path, "credentialsFile is required (a file holding the bearer token)", at_key=True
            )
        return None
    credentials = _string(doc, (*path, "credentialsFile"), data["credentialsFile"])
    if credentials is None:
        return None
    return Authorization(type=auth_type, credentials_file=credentials)


# ---------------------------------------------------------------------------------------------
# PodAutoscaler

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
)
SPEC_REJECTED = {
    "subTargetSelector": (
        "subTargetSelector (StormService roles) is an AIbrix field this daemon does not act "
        "on yet; remove it and point scaleTargetRef at the workload to scale"
    ),
    "schedules": (
        "schedules are an AIbrix field this daemon does not act on yet; remove them "
        "(minReplicas/maxReplicas apply at all times)"
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
SOURCE_FIELDS = (
    "metricSourceType",
    "protocolType",
    "port",
    "path",
    "targetMetric",
    "targetValue",
    "tlsConfig",
    "authorization",
    "bearerTokenFile",
)
SOURCE_REJECTED = {
    "endpoint": (
        "endpoint belongs to metricSourceType external/domain, which this daemon does not "
        "act on yet; scrape the pods with metricSourceType: pod"
    ),
}
SOURCE_TYPES_NOT_SUPPORTED = {
    "resource": "metricSourceType resource (metrics.k8s.io cpu/memory) is not supported yet",
    "custom": "metricSourceType custom (custom.metrics.k8s.io) is not supported yet",
    "external": "metricSourceType external is not supported yet",
    "domain": "metricSourceType domain is not supported yet",
}
DEFAULT_METRICS_PATH = "/metrics"


def _parse_pod_autoscaler(doc: _Doc, data: Mapping[str, Any]) -> Policy | None:
    _check_keys(doc, (), data, ("apiVersion", "kind", "metadata", "spec", "status"))
    n_before = len(doc.problems)

    meta = _mapping(doc, ("metadata",), data.get("metadata")) if "metadata" in data else None
    if "metadata" not in data:
        doc.add(
            ("kind",),
            "metadata is missing; add metadata.name (and metadata.namespace)",
            at_key=True,
        )
    name = namespace = None
    annotations: Mapping[str, Any] = {}
    if meta is not None:
        _check_keys(doc, ("metadata",), meta, METADATA_FIELDS)
        if "name" in meta:
            name = _string(doc, ("metadata", "name"), meta["name"])
        else:
            doc.add(("metadata",), "name is required", at_key=True)
        namespace = "default"
        if "namespace" in meta:
            namespace = _string(doc, ("metadata", "namespace"), meta["namespace"])
        if "annotations" in meta and meta["annotations"] is not None:
            ann = _mapping(doc, ("metadata", "annotations"), meta["annotations"])
            annotations = ann or {}

    spec = None
    if "spec" not in data:
        doc.add(("kind",), "spec is missing", at_key=True)
    else:
        spec = _mapping(doc, ("spec",), data["spec"])
    if spec is None:
        if meta is not None:
            _parse_annotations(doc, ("metadata", "annotations"), annotations, None)
        return None
    sp: Path = ("spec",)
    _check_keys(doc, sp, spec, SPEC_FIELDS, SPEC_REJECTED)

    strategy: Strategy | None = None
    if "scalingStrategy" not in spec:
        doc.add(sp, "scalingStrategy is required: KPA, APA or HPA", at_key=True)
    else:
        raw = spec["scalingStrategy"]
        if isinstance(raw, str) and raw in Strategy.__members__:
            strategy = Strategy(raw)
        elif isinstance(raw, str) and raw.upper() in Strategy.__members__:
            doc.add(
                (*sp, "scalingStrategy"), f"must be KPA, APA or HPA; did you mean {raw.upper()!r}?"
            )
        else:
            doc.add((*sp, "scalingStrategy"), f"must be KPA, APA or HPA, got {_describe(raw)}")

    target = _parse_target_ref(doc, (*sp, "scaleTargetRef"), spec, namespace)

    min_replicas: int | None = 1
    if "minReplicas" in spec and spec["minReplicas"] is not None:
        min_replicas = _int(doc, (*sp, "minReplicas"), spec["minReplicas"], lo=0, hi=100000)
    max_replicas: int | None = None
    if "maxReplicas" not in spec:
        doc.add(
            sp, "maxReplicas is required (the most replicas the autoscaler may set)", at_key=True
        )
    else:
        max_replicas = _int(doc, (*sp, "maxReplicas"), spec["maxReplicas"], lo=1, hi=100000)
    if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
        doc.add(
            (*sp, "minReplicas"),
            f"minReplicas ({min_replicas}) is above maxReplicas ({max_replicas}); "
            "raise maxReplicas or lower minReplicas",
        )

    sources = _parse_sources(doc, (*sp, "metricsSources"), spec)

    params = _parse_annotations(doc, ("metadata", "annotations"), annotations, strategy)
    kpa, apa, hpa = _strategy_params(doc, sp, spec, params, strategy, min_replicas)

    fallback = None
    if "fallback" in spec:
        fallback = _parse_fallback(
            doc, (*sp, "fallback"), spec["fallback"], min_replicas, max_replicas
        )

    if len(doc.problems) != n_before:
        return None
    assert name and namespace and target and strategy and sources is not None
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
    )


def _parse_target_ref(
    doc: _Doc, path: Path, spec: Mapping[str, Any], namespace: str | None
) -> ScaleTargetRef | None:
    if "scaleTargetRef" not in spec:
        doc.add(
            path[:-1],
            "scaleTargetRef is required (apiVersion, kind and name of the workload)",
            at_key=True,
        )
        return None
    ref = _mapping(doc, path, spec["scaleTargetRef"])
    if ref is None:
        return None
    _check_keys(doc, path, ref, TARGET_REF_FIELDS)
    values: dict[str, str | None] = {}
    for key in ("kind", "name"):
        if key not in ref:
            doc.add(path, f"{key} is required", at_key=True)
            values[key] = None
        else:
            values[key] = _string(doc, (*path, key), ref[key])
    api_version = "apps/v1"
    if "apiVersion" in ref:
        av = _string(doc, (*path, "apiVersion"), ref["apiVersion"])
        if av is None:
            return None
        api_version = av
    elif values["kind"] not in ("Deployment", "StatefulSet", "ReplicaSet"):
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


def _parse_sources(doc: _Doc, path: Path, spec: Mapping[str, Any]) -> list[MetricSource] | None:
    if "metricsSources" not in spec:
        doc.add(
            path[:-1], "metricsSources is required (at least one metric to scale on)", at_key=True
        )
        return None
    raw = spec["metricsSources"]
    if not isinstance(raw, list) or not raw:
        doc.add(path, f"must be a list with at least one metric source, got {_describe(raw)}")
        return None
    out: list[MetricSource] = []
    for i, item in enumerate(raw):
        src = _parse_source(doc, (*path, i), item)
        if src is not None:
            out.append(src)
    return out


def _parse_source(doc: _Doc, path: Path, value: Any) -> MetricSource | None:
    data = _mapping(doc, path, value)
    if data is None:
        return None
    n_before = len(doc.problems)
    _check_keys(doc, path, data, SOURCE_FIELDS, SOURCE_REJECTED)
    stype = data.get("metricSourceType", "pod")
    if "metricSourceType" not in data:
        doc.add(
            path,
            "metricSourceType is required; this daemon scrapes pods: metricSourceType: pod",
            at_key=True,
        )
    elif stype in SOURCE_TYPES_NOT_SUPPORTED:
        doc.add(
            (*path, "metricSourceType"),
            SOURCE_TYPES_NOT_SUPPORTED[stype] + "; use metricSourceType: pod",
        )
    elif stype != "pod":
        doc.add((*path, "metricSourceType"), f"must be pod, got {_describe(stype)}")

    protocol = None
    if "protocolType" not in data:
        doc.add(path, "protocolType is required: http or https", at_key=True)
    else:
        p = data["protocolType"]
        if isinstance(p, str) and p.lower() in ("http", "https"):
            protocol = p.lower()
            if p != protocol:
                doc.add((*path, "protocolType"), f"must be lower case; did you mean {protocol!r}?")
        else:
            doc.add((*path, "protocolType"), f"must be http or https, got {_describe(p)}")

    port = None
    if "port" not in data:
        doc.add(path, "port is required (the pod port serving the metrics)", at_key=True)
    else:
        port = _int(doc, (*path, "port"), data["port"], lo=1, hi=65535, allow_string=True)

    metrics_path = DEFAULT_METRICS_PATH
    if "path" in data:
        p = _string(doc, (*path, "path"), data["path"])
        if p is not None:
            p = p.strip()
            if "://" in p or "?" in p or "#" in p or " " in p:
                doc.add((*path, "path"), f"must be a URL path such as /metrics, got {p!r}")
            metrics_path = "/" + p.lstrip("/")

    selector = None
    target_metric = None
    if "targetMetric" not in data:
        doc.add(path, "targetMetric is required (a metric name or a series selector)", at_key=True)
    else:
        target_metric = _string(doc, (*path, "targetMetric"), data["targetMetric"])
        if target_metric is not None:
            try:
                selector = parse_selector(target_metric)
            except ValueError as exc:
                doc.add((*path, "targetMetric"), str(exc))

    target_value = None
    if "targetValue" not in data:
        doc.add(path, "targetValue is required (the value per pod to aim for)", at_key=True)
    else:
        target_value = _float(
            doc, (*path, "targetValue"), data["targetValue"], lo=0.0, lo_open=True
        )

    tls = TLSConfig()
    if "tlsConfig" in data and data["tlsConfig"] is not None:
        parsed = _parse_tls(doc, (*path, "tlsConfig"), data["tlsConfig"])
        if parsed is not None:
            tls = parsed
        if protocol == "http":
            doc.add(
                (*path, "tlsConfig"),
                "tlsConfig applies to https sources only; set protocolType: https or remove tlsConfig",
                at_key=True,
            )

    authorization = None
    if "authorization" in data and "bearerTokenFile" in data:
        doc.add(
            (*path, "bearerTokenFile"),
            "set authorization or bearerTokenFile, not both",
            at_key=True,
        )
    elif "authorization" in data:
        authorization = _parse_authorization(doc, (*path, "authorization"), data["authorization"])
    elif "bearerTokenFile" in data:
        token_file = _string(doc, (*path, "bearerTokenFile"), data["bearerTokenFile"])
        if token_file is not None:
            authorization = Authorization(credentials_file=token_file)

    if len(doc.problems) != n_before:
        return None
    assert protocol and port and target_metric and selector and target_value is not None
    return MetricSource(
        protocol=protocol,
        port=port,
        path=metrics_path,
        target_metric=target_metric,
        selector=selector,
        target_value=target_value,
        tls=tls,
        authorization=authorization,
        where=doc.where(path),
    )


def _strategy_params(
    doc: _Doc,
    sp: Path,
    spec: Mapping[str, Any],
    params: dict[str, tuple[Any, str]],
    strategy: Strategy | None,
    min_replicas: int | None,
) -> tuple[KpaParams, ApaParams, HpaParams]:
    kpa, apa, hpa = KpaParams(), ApaParams(), HpaParams()
    ann = ("metadata", "annotations")

    def take(param: str) -> Any:
        return params[param][0] if param in params else None

    # Spec-level windows (AIbrix v0.7+): the stable ("observe") and panic windows.
    observe = panic = None
    if "observeWindowSeconds" in spec:
        observe = _int(
            doc, (*sp, "observeWindowSeconds"), spec["observeWindowSeconds"], lo=1, hi=3600
        )
    if "panicWindowSeconds" in spec:
        panic = _int(doc, (*sp, "panicWindowSeconds"), spec["panicWindowSeconds"], lo=1, hi=3600)
        if strategy is not None and strategy is not Strategy.KPA:
            doc.add(
                (*sp, "panicWindowSeconds"),
                f"applies to KPA only; this policy uses {strategy.value}",
                at_key=True,
            )
            panic = None
    if observe is not None and strategy is Strategy.HPA:
        doc.add(
            (*sp, "observeWindowSeconds"),
            "does not apply to HPA; use spec.behavior stabilization windows",
            at_key=True,
        )
        observe = None

    stz = take("scale_to_zero")
    if stz is not None and min_replicas is not None:
        if stz and min_replicas != 0:
            doc.add(
                (*ann, "autoscaling.aibrix.ai/scale-to-zero"),
                "set spec.minReplicas: 0 to allow scale to zero",
            )
        elif not stz and min_replicas == 0:
            doc.add(
                (*ann, "autoscaling.aibrix.ai/scale-to-zero"),
                "contradicts spec.minReplicas: 0; set minReplicas: 1 or remove the annotation",
            )

    if strategy is Strategy.KPA:
        changes: dict[str, Any] = {}
        for param in params:
            if param.startswith("kpa."):
                changes[param[4:]] = take(param)
        if "max_scale_up_rate" in params:
            changes["max_scale_up_rate"] = take("max_scale_up_rate")
        if "max_scale_down_rate" in params:
            changes["max_scale_down_rate"] = take("max_scale_down_rate")
        if "scale_down_cooldown" in params:
            if "scale_down_delay_seconds" in changes:
                doc.add(
                    (*ann, params["scale_down_cooldown"][1]),
                    "sets the same parameter as 'kpa.autoscaling.aibrix.ai/scale-down-delay'; keep only one",
                )
            changes["scale_down_delay_seconds"] = take("scale_down_cooldown")
        if "activation_scale" in changes:
            changes["activation_scale"] = int(changes["activation_scale"])
        for value, key, field_name in (
            (observe, "observeWindowSeconds", "stable_window_seconds"),
            (panic, "panicWindowSeconds", "panic_window_seconds"),
        ):
            if value is None:
                continue
            if field_name in changes:
                doc.add(
                    (*sp, key), "is also set by an annotation; keep only one of them", at_key=True
                )
            changes[field_name] = float(value)
        kpa = replace(kpa, **changes)
        if kpa.panic_window_seconds > kpa.stable_window_seconds:
            where = (*ann, "kpa.autoscaling.aibrix.ai/panic-window")
            if "panic_window_seconds" not in changes:
                where = (*ann, "kpa.autoscaling.aibrix.ai/stable-window")
            doc.add(
                where,
                f"the panic window ({_fmt_seconds(kpa.panic_window_seconds)}) must not be longer "
                f"than the stable window ({_fmt_seconds(kpa.stable_window_seconds)})",
            )
    elif strategy is Strategy.APA:
        achanges: dict[str, Any] = {}
        mapping = {
            "up_tolerance": "up_fluctuation_tolerance",
            "down_tolerance": "down_fluctuation_tolerance",
            "apa.window_seconds": "window_seconds",
            "max_scale_up_rate": "max_scale_up_rate",
            "max_scale_down_rate": "max_scale_down_rate",
            "scale_up_cooldown": "scale_up_cooldown_seconds",
            "scale_down_cooldown": "scale_down_cooldown_seconds",
        }
        for param, attr in mapping.items():
            if param in params:
                achanges[attr] = take(param)
        if observe is not None:
            if "window_seconds" in achanges:
                doc.add(
                    (*sp, "observeWindowSeconds"),
                    "is also set by an annotation; keep only one of them",
                    at_key=True,
                )
            achanges["window_seconds"] = float(observe)
        apa = replace(apa, **achanges)
    elif strategy is Strategy.HPA:
        behavior = HpaBehavior()
        if "behavior" in spec:
            parsed = _parse_behavior(doc, (*sp, "behavior"), spec["behavior"])
            if parsed is not None:
                behavior = parsed
        up, down = behavior.scale_up, behavior.scale_down
        for param, direction, attr in (
            ("up_tolerance", "up", "tolerance"),
            ("down_tolerance", "down", "tolerance"),
            ("scale_up_cooldown", "up", "stabilization_window_seconds"),
            ("scale_down_cooldown", "down", "stabilization_window_seconds"),
        ):
            if param in params:
                if direction == "up":
                    up = replace(up, **{attr: take(param)})
                else:
                    down = replace(down, **{attr: take(param)})
        hpa = HpaParams(behavior=HpaBehavior(scale_up=up, scale_down=down))
    if "behavior" in spec and strategy is not None and strategy is not Strategy.HPA:
        doc.add(
            (*sp, "behavior"),
            f"applies to scalingStrategy HPA; this policy uses {strategy.value}",
            at_key=True,
        )
    return kpa, apa, hpa


BEHAVIOR_RULE_FIELDS = ("stabilizationWindowSeconds", "selectPolicy", "policies", "tolerance")


def _parse_behavior(doc: _Doc, path: Path, value: Any) -> HpaBehavior | None:
    data = _mapping(doc, path, value)
    if data is None:
        return None
    _check_keys(doc, path, data, ("scaleUp", "scaleDown"))
    defaults = HpaBehavior()
    rules = {}
    for key, default in (("scaleUp", defaults.scale_up), ("scaleDown", defaults.scale_down)):
        if key not in data:
            rules[key] = default
            continue
        rpath = (*path, key)
        rdata = _mapping(doc, rpath, data[key])
        if rdata is None:
            rules[key] = default
            continue
        _check_keys(doc, rpath, rdata, BEHAVIOR_RULE_FIELDS)
        rule = default
        if "stabilizationWindowSeconds" in rdata:
            w = _int(
                doc,
                (*rpath, "stabilizationWindowSeconds"),
                rdata["stabilizationWindowSeconds"],
                lo=0,
                hi=3600,
            )
            if w is not None:
                rule = replace(rule, stabilization_window_seconds=float(w))
        if "selectPolicy" in rdata:
            sel = rdata["selectPolicy"]
            if sel in ("Max", "Min", "Disabled"):
                rule = replace(rule, select_policy=sel)
            else:
                doc.add(
                    (*rpath, "selectPolicy"), f"must be Max, Min or Disabled, got {_describe(sel)}"
                )
        if "tolerance" in rdata:
            tol = _float(doc, (*rpath, "tolerance"), rdata["tolerance"], lo=0.0)
            if tol is not None:
                rule = replace(rule, tolerance=tol)
        if "policies" in rdata:
            policies = _parse_rate_policies(doc, (*rpath, "policies"), rdata["policies"])
            if policies is not None:
                rule = replace(rule, policies=policies)
        rules[key] = rule
    return HpaBehavior(scale_up=rules["scaleUp"], scale_down=rules["scaleDown"])


def _parse_rate_policies(doc: _Doc, path: Path, value: Any) -> tuple[RatePolicy, ...] | None:
    if not isinstance(value, list) or not value:
        doc.add(path, f"must be a list with at least one policy, got {_describe(value)}")
        return None
    out = []
    for i, item in enumerate(value):
        ipath = (*path, i)
        data = _mapping(doc, ipath, item)
        if data is None:
            continue
        _check_keys(doc, ipath, data, ("type", "value", "periodSeconds"))
        ptype = data.get("type")
        if ptype not in ("Pods", "Percent"):
            doc.add(
                (*ipath, "type") if "type" in data else ipath,
                f"type must be Pods or Percent, got {_describe(ptype)}",
            )
        v = _int(doc, (*ipath, "value"), data.get("value"), lo=1) if "value" in data else None
        if "value" not in data:
            doc.add(ipath, "value is required", at_key=True)
        period = None
        if "periodSeconds" not in data:
            doc.add(ipath, "periodSeconds is required", at_key=True)
        else:
            period = _int(doc, (*ipath, "periodSeconds"), data["periodSeconds"], lo=1, hi=1800)
        if ptype in ("Pods", "Percent") and v is not None and period is not None:
            out.append(RatePolicy(type=ptype, value=v, period_seconds=float(period)))
    return tuple(out)


def _parse_fallback(
    doc: _Doc, path: Path, value: Any, min_replicas: int | None, max_replicas: int | None
) -> Fallback | None:
    data = _mapping(doc, path, value)
    if data is None:
        return None
    _check_keys(doc, path, data, ("failureThreshold", "replicas"))
    threshold = replicas = None
    if "failureThreshold" not in data:
        doc.add(
            path,
            "failureThreshold is required (ticks without data before falling back)",
            at_key=True,
        )
    else:
        threshold = _int(doc, (*path, "failureThreshold"), data["failureThreshold"], lo=1)
    if "replicas" not in data:
        doc.add(
            path,
            "replicas is required (the replica count to hold while metrics are missing)",
            at_key=True,
        )
    else:
        replicas = _int(doc, (*path, "replicas"), data["replicas"], lo=0)
        if replicas is not None and max_replicas is not None and replicas > max_replicas:
            doc.add((*path, "replicas"), f"is above maxReplicas ({max_replicas})")
            replicas = None
        elif replicas is not None and min_replicas is not None and replicas < min_replicas:
            doc.add((*path, "replicas"), f"is below minReplicas ({min_replicas})")
            replicas = None
    if threshold is None or replicas is None:
        return None
    return Fallback(failure_threshold=threshold, replicas=replicas)


# ---------------------------------------------------------------------------------------------
# DaemonConfig

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
    "apiTimeout",
    "leaderElection",
)
LEADER_FIELDS = ("leaseDuration", "renewDeadline", "retryPeriod", "leaseName", "leaseNamespace")


def _parse_daemon_config(doc: _Doc, data: Mapping[str, Any]) -> DaemonConfig | None:
    n_before = len(doc.problems)
    _check_keys(doc, (), data, DAEMON_FIELDS)
    out: dict[str, Any] = {}
    interval = 1.0
    if "scrapeInterval" in data:
        parsed = _duration(doc, ("scrapeInterval",), data["scrapeInterval"], lo=0.1, hi=3600.0)
        if parsed is not None:
            interval = parsed
    out["scrape_interval_seconds"] = interval
    timeout = 0.8 * interval
    if "scrapeTimeout" in data:
        parsed = _duration(doc, ("scrapeTimeout",), data["scrapeTimeout"], lo=0.0, lo_open=True)
        if parsed is not None:
            if parsed >= interval:
                doc.add(
                    ("scrapeTimeout",),
                    f"must be below scrapeInterval ({_fmt_seconds(interval)}), got {data['scrapeTimeout']}",
                )
            timeout = parsed
    out["scrape_timeout_seconds"] = timeout
    if "tlsConfig" in data and data["tlsConfig"] is not None:
        out["tls"] = _parse_tls(doc, ("tlsConfig",), data["tlsConfig"])
    if "authorization" in data and data["authorization"] is not None:
        out["authorization"] = _parse_authorization(doc, ("authorization",), data["authorization"])
    if "maxConcurrentScrapes" in data:
        out["max_concurrent_scrapes"] = _int(
            doc, ("maxConcurrentScrapes",), data["maxConcurrentScrapes"], lo=1, hi=100000
        )
    if "bodySizeLimit" in data:
        try:
            size = parse_byte_size(data["bodySizeLimit"])
            if size < 1024:
                doc.add(("bodySizeLimit",), f"must be at least 1KiB, got {data['bodySizeLimit']}")
            else:
                out["body_size_limit_bytes"] = size
        except (ValueError, TypeError) as exc:
            doc.add(("bodySizeLimit",), str(exc))
    if "apiTimeout" in data:
        out["api_timeout_seconds"] = _duration(
            doc, ("apiTimeout",), data["apiTimeout"], lo=0.0, lo_open=True, hi=300.0
        )
    if "leaderElection" in data:
        out["leader_election"] = _parse_leader(doc, ("leaderElection",), data["leaderElection"])
    if len(doc.problems) != n_before:
        return None
    return DaemonConfig(
        **{k: v for k, v in out.items() if v is not None}, where=doc.where(("kind",))
    )


def _parse_leader(doc: _Doc, path: Path, value: Any) -> LeaderElection | None:
    data = _mapping(doc, path, value)
    if data is None:
        return None
    _check_keys(doc, path, data, LEADER_FIELDS)
    le = LeaderElection()
    changes: dict[str, Any] = {}
    for key, attr in (
        ("leaseDuration", "lease_duration_seconds"),
        ("renewDeadline", "renew_deadline_seconds"),
        ("retryPeriod", "retry_period_seconds"),
    ):
        if key in data:
            changes[attr] = _duration(doc, (*path, key), data[key], lo=0.0, lo_open=True, hi=3600.0)
    for key, attr in (("leaseName", "lease_name"), ("leaseNamespace", "lease_namespace")):
        if key in data:
            changes[attr] = _string(doc, (*path, key), data[key])
    if any(v is None for v in changes.values()):
        return None
    le = replace(le, **changes)
    if not le.lease_duration_seconds > le.renew_deadline_seconds > 1.2 * le.retry_period_seconds:
        doc.add(
            path,
            "needs leaseDuration > renewDeadline > 1.2 × retryPeriod (got "
            f"{_fmt_seconds(le.lease_duration_seconds)}, {_fmt_seconds(le.renew_deadline_seconds)}, "
            f"{_fmt_seconds(le.retry_period_seconds)})",
            at_key=True,
        )
        return None
    return le


# ---------------------------------------------------------------------------------------------
# Documents


def parse_documents(
    docs: Sequence[RawDocument], *, files: Sequence[str] = ()
) -> tuple[Config, list[Problem]]:
    """Validate every document; return the configuration and the problems found (all of them).

    The configuration is only meaningful when the problem list is empty.
    """
    problems: list[Problem] = []
    policies: list[Policy] = []
    daemon: DaemonConfig | None = None
    daemon_where: SourceRef | None = None
    seen_names: dict[str, SourceRef] = {}
    seen_targets: dict[tuple[str, str, str, str], tuple[str, SourceRef]] = {}

    for raw in docs:
        doc = _Doc(raw, problems)
        if raw.data is None:
            continue
        data = _mapping(doc, (), raw.data, "a mapping with apiVersion and kind")
        if data is None:
            continue
        kind = data.get("kind")
        if "kind" not in data:
            doc.add((), "kind is missing; expected PodAutoscaler or DaemonConfig")
            continue
        if kind not in KNOWN_KINDS:
            doc.add(
                ("kind",),
                f"unknown kind {_describe(kind)}; expected PodAutoscaler or DaemonConfig{_kind_hint(kind)}",
            )
            continue
        expected_api = KNOWN_KINDS[kind]
        if data.get("apiVersion") != expected_api:
            if "apiVersion" not in data:
                doc.add(
                    ("kind",), f"apiVersion is missing; add apiVersion: {expected_api}", at_key=True
                )
            else:
                doc.add(
                    ("apiVersion",),
                    f"must be {expected_api} for kind {kind}, got {_describe(data.get('apiVersion'))}",
                )
            continue
        if kind == "DaemonConfig":
            if daemon_where is not None:
                doc.add(
                    ("kind",), f"only one DaemonConfig is allowed; the first is at {daemon_where}"
                )
                continue
            daemon_where = doc.where(("kind",))
            daemon = _parse_daemon_config(doc, data)
            continue
        policy = _parse_pod_autoscaler(doc, data)
        if policy is None:
            continue
        assert policy.where is not None
        if policy.key in seen_names:
            doc.add(
                ("metadata", "name"),
                f"{policy.key} is defined twice; the first is at {seen_names[policy.key]}",
            )
            continue
        seen_names[policy.key] = policy.where
        tkey = (policy.namespace, policy.target.group, policy.target.kind, policy.target.name)
        if tkey in seen_targets:
            other, where = seen_targets[tkey]
            doc.add(
                ("spec", "scaleTargetRef", "name"),
                f"{policy.target.kind} {policy.namespace}/{policy.target.name} is already scaled by "
                f"{other} ({where}); two autoscalers on one target would fight",
            )
            continue
        seen_targets[tkey] = (policy.key, policy.where)
        policies.append(policy)

    config = Config(daemon=daemon or DaemonConfig(), policies=tuple(policies), files=tuple(files))
    return config, problems


def _kind_hint(kind: Any) -> str:
    if isinstance(kind, str):
        close = difflib.get_close_matches(kind, list(KNOWN_KINDS), n=1, cutoff=0.6)
        if close:
            return f"; did you mean {close[0]!r}?"
    return ""

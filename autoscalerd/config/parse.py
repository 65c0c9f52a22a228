"""Turn plain YAML data into the validated model, collecting every problem with its line.

Pure: the input is already-loaded data plus a map from key paths to line numbers (built by
`autoscalerd.config.load`), so this is tested with tables and no files.

Every problem is reported as `FILE:LINE: field.path: message`, where LINE is the line of the
offending key or value (not the document start), and the message says how to fix it.

This module dispatches each document by kind and checks what spans documents (one
DaemonConfig, unique names, one autoscaler per target). The parts live in their own modules:
`problems` (lines and problems), `readers` (typed field readers), `pod_autoscaler`,
`metric_sources`, `tls_auth`, `annotations`, `strategy_params`, `behavior`, `daemon_config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autoscalerd.config.annotations import ANNOTATIONS
from autoscalerd.config.daemon_config import read_daemon_config
from autoscalerd.config.model import Config, DaemonConfig, Policy, SourceRef
from autoscalerd.config.pod_autoscaler import read_pod_autoscaler
from autoscalerd.config.problems import (
    ConfigErrors,
    Document,
    Path,
    Problem,
    RawDocument,
    dotted,
)
from autoscalerd.config.readers import describe, read_mapping, suggest
from autoscalerd.config.signals import check_windows

__all__ = [
    "ANNOTATIONS",
    "ConfigErrors",
    "Path",
    "Problem",
    "RawDocument",
    "dotted",
    "parse_documents",
]

POD_AUTOSCALER_API_VERSION = "autoscaling.aibrix.ai/v1alpha1"
DAEMON_CONFIG_API_VERSION = "autoscalerd.io/v1alpha1"
KNOWN_KINDS = {
    "PodAutoscaler": POD_AUTOSCALER_API_VERSION,
    "DaemonConfig": DAEMON_CONFIG_API_VERSION,
}


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
        doc = Document(raw, problems)
        if raw.data is None:
            continue
        kind = _read_kind(doc, raw.data)
        if kind is None:
            continue
        if kind == "DaemonConfig":
            if daemon_where is not None:
                doc.add(
                    ("kind",), f"only one DaemonConfig is allowed; the first is at {daemon_where}"
                )
                continue
            daemon_where = doc.where(("kind",))
            daemon = read_daemon_config(doc, raw.data)
            continue
        policy = read_pod_autoscaler(doc, raw.data)
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
        target_key = (
            policy.namespace,
            policy.target.group,
            policy.target.kind,
            policy.target.name,
        )
        if target_key in seen_targets:
            other, where = seen_targets[target_key]
            doc.add(
                ("spec", "scaleTargetRef", "name"),
                f"{policy.target.kind} {policy.namespace}/{policy.target.name} is already scaled by "
                f"{other} ({where}); two autoscalers on one target would fight",
            )
            continue
        seen_targets[target_key] = (policy.key, policy.where)
        policies.append(policy)

    config = Config(daemon=daemon or DaemonConfig(), policies=tuple(policies), files=tuple(files))
    problems.extend(check_windows(config.policies, config.daemon))  # issue 13: needs DaemonConfig
    return config, problems


def _read_kind(doc: Document, value: Any) -> str | None:
    """The document's kind when it is known and its apiVersion matches, else None."""
    data = read_mapping(doc, (), value, "a mapping with apiVersion and kind")
    if data is None:
        return None
    if "kind" not in data:
        doc.add((), "kind is missing; expected PodAutoscaler or DaemonConfig")
        return None
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in KNOWN_KINDS:
        doc.add(
            ("kind",),
            f"unknown kind {describe(kind)}; expected PodAutoscaler or DaemonConfig{_kind_hint(kind)}",
        )
        return None
    expected_api = KNOWN_KINDS[kind]
    if data.get("apiVersion") != expected_api:
        if "apiVersion" not in data:
            doc.add(
                ("kind",), f"apiVersion is missing; add apiVersion: {expected_api}", at_key=True
            )
        else:
            doc.add(
                ("apiVersion",),
                f"must be {expected_api} for kind {kind}, got {describe(data.get('apiVersion'))}",
            )
        return None
    return kind


def _kind_hint(kind: Any) -> str:
    guess = suggest(kind, KNOWN_KINDS) if isinstance(kind, str) else None
    return f"; did you mean {guess!r}?" if guess else ""

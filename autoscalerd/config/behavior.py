"""`spec.behavior` (HPA only): Kubernetes `autoscaling/v2` scale-up and scale-down rules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from autoscalerd.config.model import HpaBehavior, HpaRules, RatePolicy
from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import (
    check_keys,
    describe,
    read_float,
    read_int,
    read_mapping,
)

__all__ = ["BEHAVIOR_RULE_FIELDS", "read_behavior"]

BEHAVIOR_RULE_FIELDS = ("stabilizationWindowSeconds", "selectPolicy", "policies", "tolerance")
_SELECT_POLICIES = ("Max", "Min", "Disabled")
_RATE_POLICY_TYPES = ("Pods", "Percent")


def read_behavior(doc: Document, path: Path, value: Any) -> HpaBehavior | None:
    """Both directions' rules; a direction left out keeps Kubernetes' defaults."""
    data = read_mapping(doc, path, value)
    if data is None:
        return None
    check_keys(doc, path, data, ("scaleUp", "scaleDown"))
    defaults = HpaBehavior()
    rules = {}
    for key, default in (("scaleUp", defaults.scale_up), ("scaleDown", defaults.scale_down)):
        rules[key] = default
        if key in data:
            rules[key] = _read_rules(doc, (*path, key), data[key], default)
    return HpaBehavior(scale_up=rules["scaleUp"], scale_down=rules["scaleDown"])


def _read_rules(doc: Document, path: Path, value: Any, default: HpaRules) -> HpaRules:
    """One direction's rules over its defaults; a bad field keeps its default."""
    data = read_mapping(doc, path, value)
    if data is None:
        return default
    check_keys(doc, path, data, BEHAVIOR_RULE_FIELDS)
    rules = default
    if "stabilizationWindowSeconds" in data:
        window = read_int(
            doc,
            (*path, "stabilizationWindowSeconds"),
            data["stabilizationWindowSeconds"],
            lo=0,
            hi=3600,
        )
        if window is not None:
            rules = replace(rules, stabilization_window_seconds=float(window))
    if "selectPolicy" in data:
        select = data["selectPolicy"]
        if select in _SELECT_POLICIES:
            rules = replace(rules, select_policy=select)
        else:
            doc.add(
                (*path, "selectPolicy"), f"must be Max, Min or Disabled, got {describe(select)}"
            )
    if "tolerance" in data:
        tolerance = read_float(doc, (*path, "tolerance"), data["tolerance"], lo=0.0)
        if tolerance is not None:
            rules = replace(rules, tolerance=tolerance)
    if "policies" in data:
        policies = _read_rate_policies(doc, (*path, "policies"), data["policies"])
        if policies is not None:
            rules = replace(rules, policies=policies)
    return rules


def _read_rate_policies(doc: Document, path: Path, value: Any) -> tuple[RatePolicy, ...] | None:
    if not isinstance(value, list) or not value:
        doc.add(path, f"must be a list with at least one policy, got {describe(value)}")
        return None
    out = []
    for i, item in enumerate(value):
        item_path = (*path, i)
        data = read_mapping(doc, item_path, item)
        if data is None:
            continue
        check_keys(doc, item_path, data, ("type", "value", "periodSeconds"))
        policy_type = data.get("type")
        if policy_type not in _RATE_POLICY_TYPES:
            doc.add(
                (*item_path, "type") if "type" in data else item_path,
                f"type must be Pods or Percent, got {describe(policy_type)}",
            )
        amount = None
        if "value" in data:
            amount = read_int(doc, (*item_path, "value"), data["value"], lo=1)
        else:
            doc.add(item_path, "value is required", at_key=True)
        period = None
        if "periodSeconds" not in data:
            doc.add(item_path, "periodSeconds is required", at_key=True)
        else:
            period = read_int(
                doc, (*item_path, "periodSeconds"), data["periodSeconds"], lo=1, hi=1800
            )
        if policy_type in _RATE_POLICY_TYPES and amount is not None and period is not None:
            out.append(RatePolicy(type=policy_type, value=amount, period_seconds=float(period)))
    return tuple(out)

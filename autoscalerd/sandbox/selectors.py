"""Kubernetes label and field selectors: parse the query-string syntax and match labels.

Supports the equality-based (``a=b``, ``a==b``, ``a!=b``) and set-based
(``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``) forms the real API accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """The selector string does not parse (the API answers 400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present  # "!"


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``labelSelector``; an empty or missing selector matches everything."""
    if not text or not text.strip():
        return []
    reqs: list[Requirement] = []
    for part in _split_top_level(text):
        if not part.strip():
            raise SelectorError(f"unable to parse requirement: empty term in {text!r}")
        m = _SET_RE.match(part)
        if m:
            values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(3), values))
            continue
        m = _EQ_RE.match(part)
        if m:
            op = "=" if m.group(3) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, (m.group(4),)))
            continue
        m = _EXISTS_RE.match(part)
        if m:
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
            continue
        raise SelectorError(f"unable to parse requirement: {part.strip()!r}")
    return reqs


def matches(reqs: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def selector_to_string(selector: Mapping[str, Any] | None) -> str:
    """Render a ``LabelSelector`` object (matchLabels/matchExpressions) as the API does."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    """Parse ``fieldSelector`` into (path, op, value) with op ``=`` or ``!=``."""
    if not text or not text.strip():
        return []
    out: list[tuple[str, str, str]] = []
    for part in text.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid field selector: {part!r}")
        out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return out


def field_matches(fields: list[tuple[str, str, str]], obj: Mapping[str, Any]) -> bool:
    for path, op, value in fields:
        cur: Any = obj
        for key in path.split("."):
            cur = cur.get(key) if isinstance(cur, Mapping) else None
        actual = "" if cur is None else str(cur)
        if (actual == value) != (op == "="):
            return False
    return True

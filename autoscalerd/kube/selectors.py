"""Kubernetes label selectors: parse the string form and match label sets (pure, no I/O).

The string form is what `/scale` publishes in `status.selector` and what the API accepts as
`labelSelector` (k8s.io/apimachinery `labels.Parse`):

- `a=b`, `a==b` (equal), `a!=b` (not equal, or no label `a`);
- `a in (x,y)`, `a notin (x,y)` (`notin` also matches pods without label `a`);
- `a` (label present), `!a` (label absent);
- `a>3`, `a<3` (integer comparison; not produced by `/scale`, accepted for completeness);
- requirements separated by `,` are ANDed; whitespace between tokens is ignored.

Keys are qualified names (`[prefix/]name`, the prefix a DNS subdomain) and values label
values (at most 63 characters, alphanumeric at both ends, `-_.` inside, or empty), validated
as the API server does. A malformed selector raises `SelectorError` (a `ValueError`) whose
message names the selector and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from autoscalerd.errors import AutoscalerdError

__all__ = ["Operator", "Requirement", "Selector", "SelectorError", "parse_selector"]


class SelectorError(ValueError, AutoscalerdError):
    """The label selector does not parse or holds an invalid key or value."""


class Operator(Enum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        value = labels.get(self.key)
        if op is Operator.EQUALS or op is Operator.IN:
            return value is not None and value in self.values
        if op is Operator.NOT_EQUALS or op is Operator.NOT_IN:
            return value is None or value not in self.values
        if op is Operator.EXISTS:
            return value is not None
        if op is Operator.DOES_NOT_EXIST:
            return value is None
        if value is None:
            return False
        try:
            have = int(value)
        except ValueError:
            return False
        (want,) = (int(v) for v in self.values)
        return have > want if op is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if op in (Operator.IN, Operator.NOT_IN):
            joined = ",".join(sorted(self.values)) if self.values != {""} else ","
            return f"{self.key} {op.value} ({joined})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{next(iter(self.values))}"


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector: the AND of its requirements (none: matches every label set)."""

    requirements: tuple[Requirement, ...]

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_Fail = Callable[[str], SelectorError]

# -- lexer -------------------------------------------------------------------------------------

_SPECIAL = frozenset("!=(),<>")
_SYMBOLS = ("!=", "==", "!", "=", "(", ")", ",", ">", "<")  # longest first
_IDENT = "identifier"
_END = "end of string"

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, literal) pairs; kind is a symbol, `identifier` or `end of string`."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL:
            sym = next(s for s in _SYMBOLS if text.startswith(s, i))
            out.append((sym, sym))
            i += len(sym)
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
            j += 1
        out.append((_IDENT, text[i:j]))
        i = j
    out.append((_END, ""))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.pos = 0

    def fail(self, problem: str) -> SelectorError:
        return SelectorError(f"invalid label selector {self.text!r}: {problem}")

    def peek(self) -> tuple[str, str]:
        return self.toks[self.pos]

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.pos]
        if tok[0] != _END:
            self.pos += 1
        return tok

    def found(self, tok: tuple[str, str]) -> str:
        return f"found {tok[1]!r}" if tok[0] != _END else "found end of string"

    def parse(self) -> Selector:
        reqs: list[Requirement] = []
        if self.peek()[0] == _END:
            return Selector(())
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok[0] == _END:
                return Selector(tuple(reqs))
            if tok[0] != ",":
                raise self.fail(f"{self.found(tok)}, expected ',' or end of string")

    def key(self) -> str:
        tok = self.take()
        if tok[0] != _IDENT or tok[1] in ("in", "notin"):
            raise self.fail(f"{self.found(tok)}, expected a label key")
        _check_key(tok[1], self.fail)
        return tok[1]

    def requirement(self) -> Requirement:
        if self.peek()[0] == "!":
            self.take()
            return Requirement(self.key(), Operator.DOES_NOT_EXIST)
        key = self.key()
        kind, lit = self.peek()
        if kind in (_END, ","):
            return Requirement(key, Operator.EXISTS)
        self.take()
        if kind == _IDENT and lit in ("in", "notin"):
            values = self.value_set(key, lit)
            op = Operator.IN if lit == "in" else Operator.NOT_IN
            return Requirement(key, op, values)
        if kind in ("=", "=="):
            return Requirement(key, Operator.EQUALS, frozenset((self.exact_value(),)))
        if kind == "!=":
            return Requirement(key, Operator.NOT_EQUALS, frozenset((self.exact_value(),)))
        if kind in (">", "<"):
            value = self.exact_value()
            if not _INTEGER.match(value):
                raise self.fail(f"{key}{kind}{value}: the value of '{kind}' must be an integer")
            op = Operator.GREATER_THAN if kind == ">" else Operator.LESS_THAN
            return Requirement(key, op, frozenset((value,)))
        raise self.fail(
            f"{self.found((kind, lit))} after {key!r}, expected in, notin, =, ==, !=, >, <, "
            "',' or end of string"
        )

    def exact_value(self) -> str:
        kind, lit = self.peek()
        if kind in (_END, ","):
            return ""  # `a=` selects an empty value, as in Kubernetes
        if kind != _IDENT:
            raise self.fail(f"{self.found((kind, lit))}, expected a label value")
        self.take()
        _check_value(lit, self.fail)
        return lit

    def value_set(self, key: str, op: str) -> frozenset[str]:
        tok = self.take()
        if tok[0] != "(":
            raise self.fail(f"{self.found(tok)} after '{key} {op}', expected '('")
        items: list[str] = []
        current: str | None = None
        while True:
            kind, lit = self.take()
            if kind == _IDENT:
                if current is not None:
                    raise self.fail(f"found {lit!r} in '{key} {op} (...)', expected ',' or ')'")
                _check_value(lit, self.fail)
                current = lit
            elif kind == ",":
                items.append(current or "")
                current = None
            elif kind == ")":
                if items or current is not None:
                    items.append(current or "")  # `(x,)` also selects the empty value
                break
            else:
                raise self.fail(
                    f"{self.found((kind, lit))} in '{key} {op} (...)', expected a value, ',' or ')'"
                )
        if not items:
            raise self.fail(f"'{key} {op} ()': the set of values must not be empty")
        return frozenset(items)


def _check_key(key: str, fail: _Fail) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise fail(f"label key {key!r}: the prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _NAME.match(name):
        raise fail(
            f"label key {key!r}: the name must be 1-63 characters, alphanumeric at both ends "
            "with '-', '_' or '.' inside"
        )


def _check_value(value: str, fail: _Fail) -> None:
    if len(value) > 63 or (value and not _NAME.match(value)):
        raise fail(
            f"label value {value!r}: must be at most 63 characters, alphanumeric at both ends "
            "with '-', '_' or '.' inside (or empty)"
        )


def parse_selector(text: str) -> Selector:
    """Parse a label selector string; an empty (or all-blank) one matches everything.

    Raises `SelectorError` (a `ValueError`) when it is malformed.
    """
    return _Parser(text).parse()

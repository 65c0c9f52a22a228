"""Label selector parsing and matching (Kubernetes `labels.Parse` semantics), table-driven."""

from __future__ import annotations

import pytest

from autoscalerd.kube.selectors import Operator, Requirement, SelectorError, parse_selector

WEB = {"app": "web", "tier": "frontend", "pod-template-hash": "5d8f9"}
OTHER = {"app": "other", "tier": "backend"}
BARE: dict[str, str] = {}
EMPTY_VALUE = {"app": "", "tier": "frontend"}
NUMBERED = {"app": "web", "shard": "7"}

# selector, then which of (WEB, OTHER, BARE, EMPTY_VALUE, NUMBERED) it matches
MATCHES: list[tuple[str, tuple[bool, bool, bool, bool, bool]]] = [
    ("app=web", (True, False, False, False, True)),
    ("app==web", (True, False, False, False, True)),
    ("app = web", (True, False, False, False, True)),
    ("app!=web", (False, True, True, True, False)),  # != also matches a missing label
    ("app in (web,other)", (True, True, False, False, True)),
    ("app in ( web , other )", (True, True, False, False, True)),
    ("app notin (web)", (False, True, True, True, False)),  # notin too
    ("app", (True, True, False, True, True)),
    ("!app", (False, False, True, False, False)),
    ("! app", (False, False, True, False, False)),
    ("app=", (False, False, False, True, False)),  # the empty value
    ("app in (web,)", (True, False, False, True, True)),  # (x,) also selects ""
    ("app=web,tier=frontend", (True, False, False, False, False)),
    ("app=web,tier", (True, False, False, False, False)),
    ("app=web,!tier", (False, False, False, False, True)),
    ("tier in (frontend,backend),app!=other", (True, False, False, True, False)),
    ("shard>5", (False, False, False, False, True)),
    ("shard<5", (False, False, False, False, False)),
    ("app>5", (False, False, False, False, False)),  # non-integer label value: no match
    ("example.com/team=x", (False, False, False, False, False)),
    ("pod-template-hash=5d8f9", (True, False, False, False, False)),
    ("app=in", (False, False, False, False, False)),  # keywords are values after '='
    ("", (True, True, True, True, True)),  # empty: everything (acquire refuses it)
]


@pytest.mark.parametrize(("text", "expected"), MATCHES, ids=[t or "<empty>" for t, _ in MATCHES])
def test_matches(text: str, expected: tuple[bool, ...]) -> None:
    selector = parse_selector(text)
    got = tuple(selector.matches(labels) for labels in (WEB, OTHER, BARE, EMPTY_VALUE, NUMBERED))
    assert got == expected


PARSED: list[tuple[str, tuple[Requirement, ...]]] = [
    ("a=b", (Requirement("a", Operator.EQUALS, frozenset({"b"})),)),
    ("a==b", (Requirement("a", Operator.EQUALS, frozenset({"b"})),)),
    ("a!=b", (Requirement("a", Operator.NOT_EQUALS, frozenset({"b"})),)),
    ("a in (x,y)", (Requirement("a", Operator.IN, frozenset({"x", "y"})),)),
    ("a notin (x,y)", (Requirement("a", Operator.NOT_IN, frozenset({"x", "y"})),)),
    ("a", (Requirement("a", Operator.EXISTS),)),
    ("!a", (Requirement("a", Operator.DOES_NOT_EXIST),)),
    (
        "app.kubernetes.io/name=web,  !canary",
        (
            Requirement("app.kubernetes.io/name", Operator.EQUALS, frozenset({"web"})),
            Requirement("canary", Operator.DOES_NOT_EXIST),
        ),
    ),
    ("a in (x,x)", (Requirement("a", Operator.IN, frozenset({"x"})),)),
    ("a>3", (Requirement("a", Operator.GREATER_THAN, frozenset({"3"})),)),
    ("a in (,)", (Requirement("a", Operator.IN, frozenset({""})),)),
]


@pytest.mark.parametrize(("text", "requirements"), PARSED, ids=[t for t, _ in PARSED])
def test_parses(text: str, requirements: tuple[Requirement, ...]) -> None:
    selector = parse_selector(text)
    assert selector.requirements == requirements
    assert parse_selector(str(selector)) == selector  # the string form round-trips


MALFORMED: list[tuple[str, str]] = [
    ("a in ()", "must not be empty"),
    ("a notin ( )", "must not be empty"),
    ("a in (x", "expected a value, ',' or ')'"),
    ("a in x", "expected '('"),
    ("a in (x y)", "expected ',' or ')'"),
    ("a in (x=y)", "expected a value"),
    ("a b", "expected in, notin"),
    (",a", "expected a label key"),
    ("a,", "expected a label key"),
    ("a,,b", "expected a label key"),
    ("a=b=c", "expected ',' or end of string"),
    ("a=b c", "expected ',' or end of string"),
    ("a=(b)", "expected a label value"),
    ("=b", "expected a label key"),
    ("!", "expected a label key"),
    ("!a=b", "expected ',' or end of string"),
    ("in=x", "expected a label key"),
    ("notin", "expected a label key"),
    ("-a=b", "label key '-a'"),
    ("a-=b", "label key 'a-'"),
    ("a=-b", "label value '-b'"),
    ("a=b_", "label value 'b_'"),
    ("a=b/c", "label value 'b/c'"),
    ("k" * 64, "1-63 characters"),
    ("a=" + "v" * 64, "at most 63 characters"),
    ("Example.com/a=b", "prefix must be a DNS subdomain"),
    ("/a=b", "prefix must be a DNS subdomain"),
    ("x/=b", "label key 'x/'"),
    ("a>x", "must be an integer"),
    ("a<", "must be an integer"),
    ("a>-3", "label value '-3'"),  # as in Kubernetes: Gt/Lt values are label values too
    ("a===b", "expected a label value"),
]


@pytest.mark.parametrize(("text", "problem"), MALFORMED, ids=[t[:20] for t, _ in MALFORMED])
def test_rejects_malformed(text: str, problem: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"invalid label selector {text!r}: ")
    assert problem in message


def test_blank_is_empty() -> None:
    for text in ("", "   "):
        selector = parse_selector(text)
        assert selector.empty and selector.matches({}) and str(selector) == ""

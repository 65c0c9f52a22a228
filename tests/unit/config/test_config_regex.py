"""Label-matcher regular expressions run on RE2: what they match, what they refuse and why, and
how `autoscalerd validate` reports a pattern RE2 cannot run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from autoscalerd.cli import main
from autoscalerd.config.model import LabelMatcher, MatchOp
from autoscalerd.config.selector import compile_regex, parse_selector
from autoscalerd.scrape.parser import SelectStatus, select_value


def matcher(pattern: str, op: MatchOp = MatchOp.RE) -> LabelMatcher:
    (m,) = parse_selector(f'x{{a{op.value}"{pattern}"}}').matchers
    return m


def test_matchers_compile_with_re2_not_python_re() -> None:
    regex = matcher("5..").regex
    assert type(regex).__module__ == "re2", type(regex)
    assert type(compile_regex("a|b")).__module__ == "re2"


@pytest.mark.parametrize(
    ("pattern", "value", "hit"),
    [
        pytest.param("5..", "503", True, id="dot"),
        pytest.param("5..", "1503", False, id="anchored-start"),
        pytest.param("5..", "5031", False, id="anchored-end"),
        pytest.param("a|b", "a", True, id="alternation-left"),
        pytest.param("a|b", "ab", False, id="alternation-anchored-as-a-whole"),
        pytest.param(".*", "", True, id="empty-value"),
        pytest.param("", "", True, id="empty-pattern-matches-absent-label"),
        pytest.param("", "x", False, id="empty-pattern-rejects-value"),
        pytest.param("(?i)llama", "LLaMA", True, id="case-flag"),
        pytest.param("ll.ma", "llåma", True, id="non-ascii-value-one-character"),
        pytest.param(r"\\d+", "42", True, id="digits"),
        pytest.param(r"\\d+", "٤٢", False, id="digits-are-ascii-as-in-go"),
        pytest.param("[a-z]+-[0-9]", "pod-7", True, id="classes"),
    ],
)
def test_re2_semantics(pattern: str, value: str, hit: bool) -> None:
    assert matcher(pattern).matches(value) is hit
    assert matcher(pattern, MatchOp.NRE).matches(value) is not hit


def test_nested_quantifier_on_a_hostile_value_answers_correctly() -> None:
    """`(a+)+$` against 40 a's and a `!` backtracks 2^40 times in Python's `re`; RE2 answers in
    linear time. Asserted on the answer (the test would hit its timeout on a backtracking engine)."""
    hostile = "a" * 40 + "!"
    page = f'x{{v="{hostile}"}} 1\nx{{v="{"a" * 40}"}} 2\n'
    only_as = parse_selector('x{v=~"(a+)+$"}')
    assert select_value(page, only_as).value == 2.0
    assert select_value(page, parse_selector('x{v!~"(a+)+$"}')).value == 1.0
    assert select_value(page, parse_selector('x{v=~"(a|aa)+"}')).value == 2.0
    assert not matcher("(a+)+$").matches(hostile * 20)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        pytest.param(
            r"(5)\1",
            r"invalid escape sequence: \1; RE2 (the linear-time engine Prometheus also uses) "
            "cannot run it: it has no backreferences; list the values with |",
            id="backreference",
        ),
        pytest.param(
            "(?=5)..",
            "invalid perl operator: (?=; RE2 (the linear-time engine Prometheus also uses) "
            "cannot run it: it has no lookahead; match the whole value",
            id="lookahead",
        ),
        pytest.param(
            "(?!5)..", "it has no negative lookahead; add a !~ matcher", id="negative-lookahead"
        ),
        pytest.param("(?<=a)b", "it has no lookbehind; match the whole value", id="lookbehind"),
        pytest.param(
            "(?<!a)b", "it has no negative lookbehind; add a !~ matcher", id="negative-lookbehind"
        ),
        pytest.param("(?>ab)", "it has no atomic groups; drop the (?>...) group", id="atomic"),
        pytest.param(
            "a++", "bad repetition operator: ++; RE2 (the linear-time", id="possessive-plus"
        ),
        pytest.param("a{2}+", "it has no possessive quantifiers", id="possessive-count"),
        pytest.param(
            "a{1001}",
            "invalid repetition size: {1001}; RE2 (the linear-time engine Prometheus also uses) "
            "cannot run it: it has no repeat counts above 1000 (nested counts multiply); use + "
            "or * instead",
            id="count-too-large",
        ),
        pytest.param("((a{100}){100})", "repeat counts above 1000", id="nested-counts"),
        pytest.param(
            "(5", "missing ): (5 (patterns use RE2 syntax, as in Prometheus)", id="syntax-error"
        ),
        pytest.param(
            "a**", "bad repetition operator: ** (patterns use RE2 syntax", id="double-repeat"
        ),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_regex(pattern)
    assert reason in str(info.value)
    selector = f'x{{a=~"{pattern}"}}'
    with pytest.raises(ValueError) as info:
        parse_selector(selector)
    assert str(info.value).startswith(f"{selector!r}: bad regular expression {pattern!r} for a: ")
    assert reason in str(info.value)


POLICY = """\
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata:
  name: web
  namespace: default
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  scalingStrategy: KPA
  metricsSources:
    - metricSourceType: pod
      protocolType: http
      port: "8000"
      path: /metrics
      targetMetric: 'requests{code=~"(5)\\\\1"}'
      targetValue: "10"
"""


def test_validate_reports_file_line_field_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent(POLICY))
    assert main(["validate", "-c", str(f)]) != 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"{f}:16: spec.metricsSources[0].targetMetric: "
        r"""'requests{code=~"(5)\\\\1"}': bad regular expression '(5)\\1' for code: """
        r"invalid escape sequence: \1; RE2 (the linear-time engine Prometheus also uses) "
        "cannot run it: it has no backreferences; "
        "list the values with |"
    ]


def test_memo_is_bounded_and_never_changes_an_answer() -> None:
    m = matcher("v[0-9]*7")
    for i in range(2000):
        value = f"v{i}"
        assert m.matches(value) is value.endswith("7"), value
        assert len(m._memo) <= 256
    long_value = "v" + "1" * 500 + "7"
    assert m.matches(long_value)
    assert long_value not in m._memo, "long values are matched each time, not kept"
    again = matcher("v[0-9]*7")
    assert again == m, "the memo is not part of a matcher's identity"
    assert all(again.matches(f"v{i}") is f"v{i}".endswith("7") for i in range(300))


def test_many_hostile_values_on_one_page() -> None:
    """Many distinct hostile values on one page: every line answered, the page still selects."""
    lines = "".join(f'x{{v="{"a" * (30 + i)}!"}} 1\n' for i in range(300))
    result = select_value(lines + 'x{v="aaa"} 5\n', parse_selector('x{v=~"(a+)+$"}'))
    assert (result.status, result.value) == (SelectStatus.OK, 5.0)

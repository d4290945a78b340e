"""The line reader for plain block YAML gives exactly what PyYAML's SafeLoader gives, or leaves the text to it.

Property: for any text, `blockyaml.load` is None, or PyYAML (pure and libyaml) reads the text without error into the
same documents: the same types (1, 1.0 and True differ), values and key order. The texts come from random trees
written out in the many ways block YAML allows, with scalars that resolve to every type or are not plain at all, and
then mutated character by character into near misses."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envoy_control_plane.sources import blockyaml

PROPERTY = settings(
    max_examples=400, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])

# Texts a plain scalar (or key) may be: every implicit type, quoting, and what is not plain at all.
TRICKY = [
    "a", "web", "pod-1", "svc-0001", "cluster-name.envoy.uw.io", "10.0.0.1", "0.0.0.0", "::", "::1", "fe80::1",
    "1", "-1", "+1", "0", "012", "0999", "0x1F", "-0x1F", "0o17", "0b101", "1_000", "1:20", "190:20:30",
    "3.5", "-3.5", "1e3", "1.0e+3", "6.8523015e+5", ".inf", "-.Inf", ".nan", ".NaN", "1.", ".5",
    "true", "True", "TRUE", "false", "yes", "No", "on", "OFF", "y", "n", "~", "null", "Null", "NULL", "",
    "2026-01-02", "2026-13-01", "2026-01-02T03:04:05Z", "2026-01-02 03:04:05.1 +02:00", "2001-12-14t21:59:43.10-05:00",
    "'q'", "'it''s'", "''", "' spaced '", '"dq"', '""', '"d\\"q"', '"a\\nb"', "'unterminated", '"unterminated',
    "'a' b", "'a'#c", "'a' #c", "'a':", "a:b", "a: b", "a:", "a #b", "a#b", "a # b: c", "a  b", "it's",
    "-", "- x", "-x", "--", "---", "--- x", "...", "?", "? x", "?x", ":x", ": x", "&a x", "*a", "!t x", "!!str 1",
    "[1, 2]", "[]", "{a: 1}", "{}", "|", ">", "|-", "%x", "@x", "`x", "<<", "=", ",", "a,b", "x]", "c:\\path",
    "#", "# c", "a" * 1100,
]
PLAIN = [t for t in TRICKY[:TRICKY.index("'q'")] if t]  # the texts that stay plain scalars: most of what is drawn
SCALARS = st.one_of(
    st.sampled_from(PLAIN), st.sampled_from(PLAIN), st.sampled_from(TRICKY),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=3),
                            st.dictionaries(SCALARS, inner, min_size=1, max_size=3)),
    max_leaves=8,
)


@st.composite
def texts(draw: st.DrawFn) -> str:
    """Trees written as block YAML, with varying indentation, compact sequences, comments, blanks and markers."""
    docs = draw(st.lists(TREES, min_size=1, max_size=3))
    out = []
    for n, doc in enumerate(docs):
        if n or draw(st.booleans()):
            out.append(draw(st.sampled_from(["---", "--- ", "--- # doc", "---  #x", "---x", "--- a", "..."])))
        out += _render(draw, doc, 0)
    lines = []
    for line in out:
        lines.append(line + draw(st.sampled_from(["", "", "", " ", "  # c", " #", "#c"])))
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(["", "  ", "# comment", "   # indented comment", "\t", "  -"])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n", "\n---\n", "\n# end"]))


def _render(draw: st.DrawFn, value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, child in value.items():
            lines += _entry(draw, f"{pad}{key}:", child, indent, compact_ok=True)
        return lines
    if isinstance(value, list):
        lines = []
        for child in value:
            if not isinstance(child, (dict, list)) or draw(st.booleans()):
                lines += _entry(draw, f"{pad}-", child, indent, compact_ok=False)
            else:  # the item's first line after the dash: `- key: value`, `- - x`
                gap = draw(st.integers(1, 3))
                inner = _render(draw, child, indent + 1 + gap)
                lines += [f"{pad}-{' ' * gap}{inner[0].lstrip(' ')}", *inner[1:]] if inner else [f"{pad}-"]
        return lines
    return [f"{pad}{value}"]


def _entry(draw: st.DrawFn, head: str, child: Any, indent: int, compact_ok: bool) -> list[str]:
    if not isinstance(child, (dict, list)):
        return [f"{head}{draw(st.sampled_from([' ', ' ', '  ', '']))}{child}"]
    if compact_ok and isinstance(child, list) and draw(st.booleans()):
        return [head, *_render(draw, child, indent)]  # a sequence at its key's indentation
    return [head, *_render(draw, child, indent + draw(st.sampled_from([1, 2, 2, 4])))]


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    """A written text with a few characters inserted, deleted or replaced."""
    text = draw(texts())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        new = draw(st.sampled_from(list(" -:#'\"\n?&*!|>[]{},.%@`~") + ["  ", "\n  ", "---\n", ": ", "- "]))
        cut = draw(st.integers(0, 2))
        text = text[:at] + new + text[at + cut:]
    return text


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types, the same key order, and NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return math.isnan(a) and math.isnan(b) or a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def check(text: str) -> bool:
    """The property for one text; True when the line reader took it."""
    fast = blockyaml.load(text)
    if fast is None:
        return False
    for loader in LOADERS:
        slow = list(yaml.load_all(text, Loader=loader))  # must not raise: the line reader took the text
        assert same(fast, slow), (text, fast, slow, loader)
    return True


@PROPERTY
@given(texts())
def test_written_trees_read_as_pyyaml_reads_them(text: str) -> None:
    check(text)


@PROPERTY
@given(near_misses())
def test_near_misses_read_as_pyyaml_reads_them_or_go_to_it(text: str) -> None:
    check(text)


MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-1   # a comment
  namespace: default
  annotations:
    cluster-name.envoy.uw.io: web
    "quoted": 'it''s'
  labels: {}
status:
  podIP: 10.0.0.1
  conditions:
  - type: Ready
    status: 'True'
  -   type: Initialized
      status: "False"
---
# the next document
apiVersion: egresslistener.envoy.uw.systems/v1alpha1
kind: EgressListener
metadata: {name: out, namespace: default}
"""

TAKEN = [
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    cluster-name.envoy.uw.io: svc\n",
    "a: 1\nb: -0x1F\nc: 1_000\nd: 0o17\ne: 3.5\nf: .inf\ng: true\nh: no\ni: ~\nj: null\nk: ''\nl: '1'\nm:\n",
    "when: 2026-01-02T03:04:05Z\nday: 2026-01-02\n1: int key\ntrue: bool key\n~: null key\n'q': \"dq\"\n",
    "- a\n-\n- - x\n  - y\n-   k: v\n    j: w\n- k:\n  - 1\n  l: 2\n",
    "key:\n- a\n- b\nc: 1\n", "a:\n  b\n", " a: 1\n b: 2\n", "x\n", "---\n", "a: 1\n---\n# only a comment\n",
    "", "# only a comment\n", "a: b #c\nd: e#f\n", "a   : 1\n", "dup: 1\ndup: 2\n", "a: " + "x" * 2000 + "\n",
]
LEFT_TO_PYYAML = [
    "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: [1, 2]\n", "a: {b: 1}\n", "a: |\n  text\n", "a: >\n  text\n",
    "a: b\n  c\n", "a: 'b\n  c'\n", '"a\\tb": 1\n', "? a\n: b\n", "%YAML 1.1\n---\na: 1\n", "a: 1\n...\n",
    "--- a\n", "<<: {x: 1}\n", "a:\tb\n", "a: 1\r\nb: 2\r\n", "a: é\n", "a: 2026-13-01\n", "a: b: c\n",
    "a:\n    b: 1\n  c: 2\n", "- a\nb: 1\n", "a: 1\n  b: 2\n", "k" * 1100 + ": v\n", "=: 1\n", "a: 'b' c\n",
]


@pytest.mark.parametrize("text", TAKEN)
def test_the_common_shapes_are_taken(text: str) -> None:
    assert check(text)


def test_a_manifest_is_taken_up_to_its_first_flow_collection() -> None:
    assert not check(MANIFEST)  # `labels: {}`
    assert check(MANIFEST.replace("  labels: {}\n", "").replace("metadata: {name: out, namespace: default}",
                                                                  "metadata:\n  name: out\n  namespace: default"))


@pytest.mark.parametrize("text", LEFT_TO_PYYAML)
def test_everything_else_is_left_to_pyyaml(text: str) -> None:
    assert blockyaml.load(text) is None


def test_nesting_deeper_than_python_recurses_gets_pyyamls_error():
    from pathlib import Path

    from envoy_control_plane.sources.manifests import parse_text

    deep = "".join(" " * i + "a:\n" for i in range(3000))
    assert blockyaml.load(deep) is None
    assert "exceeded maximum nesting depth" in parse_text(Path("deep.yaml"), deep).errors[0]

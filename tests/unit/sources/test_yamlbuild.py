"""The fast document builder gives exactly what PyYAML's SafeConstructor gives, and defers to it for the unusual."""

from __future__ import annotations

import datetime

import pytest
import yaml

from envoy_control_plane.sources.yamlbuild import Loader, build

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

TEXTS = [
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    cluster-name.envoy.uw.io: svc\n",
    "a: 1\nb: -0x1F\nc: 1_000\nd: 0o17\ne: 3.5\nf: .inf\ng: true\nh: no\ni: ~\nj: null\nk: ''\nl: '1'\n",
    "when: 2026-01-02T03:04:05Z\nday: 2026-01-02\nraw: !!binary aGVsbG8=\n",
    "list: [1, two, {three: 3}, [4, [5]]]\nempty: {}\nnone: []\n1: int key\ntrue: bool key\n~: null key\n",
    "? [a, b]\n: unhashable key\n",  # the constructor refuses it; so must we
    "base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n",
    "<<: {x: 1}\ny: 2\n",  # a merge key without an anchor
    "s: !!set {a, b}\no: !!omap [{a: 1}, {b: 2}]\n",
    "t: !custom value\n",
    "dup: 1\ndup: 2\n",
    "--- 1\n--- text\n--- [a]\n---\n",
]


def _documents(text: str, fast: bool) -> list[object]:
    loader = LOADER(text)
    try:
        out = []
        while loader.check_node():
            node = loader.get_node()
            out.append(build(loader, node) if fast else loader.construct_document(node))
        return out
    finally:
        loader.dispose()


def _outcome(text: str, fast: bool) -> object:
    try:
        return _documents(text, fast)
    except yaml.YAMLError as e:
        return (type(e), str(e))


@pytest.mark.parametrize("text", TEXTS)
def test_same_as_safe_constructor(text: str) -> None:
    assert _outcome(text, fast=True) == _outcome(text, fast=False)


def test_values_keep_their_types() -> None:
    (doc,) = _documents(TEXTS[2], fast=True)
    assert doc["when"] == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert doc["day"] == datetime.date(2026, 1, 2) and doc["raw"] == b"hello"


@pytest.mark.parametrize("text", TEXTS)
def test_remembered_tags_resolve_the_same(text: str) -> None:
    def load(loader: type) -> object:
        try:
            return list(yaml.load_all(text, Loader=loader))
        except yaml.YAMLError as e:
            return (type(e), str(e))

    assert load(Loader) == load(LOADER)
    assert load(Loader) == load(LOADER)  # now from the remembered tags

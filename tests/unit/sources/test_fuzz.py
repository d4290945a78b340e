"""Fuzz: thousands of random and mutated documents (types swapped, values nested or removed, encodings changed,
files cut short) through `validate`, the manifest source and the Kubernetes reflector. The properties: nothing raises,
every document that does not arrive is reported naming its file (and its object, when it has a usable name), and
every good document still arrives. Seeded and bounded (hypothesis, derandomized): a few seconds in the suite."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envoy_control_plane.model import API_VERSIONS, ObjectError, UnnamedError, identify, parse_object
from envoy_control_plane.sources.kubernetes.client import ListResult, WatchEvent
from envoy_control_plane.sources.kubernetes.reflector import RESOURCES, Reflector, WatchSettings
from envoy_control_plane.sources.manifests import ManifestSource, validate
from envoy_control_plane.state import World
from tests.unit.objects import egress_doc, ingress_doc, pod_doc

FUZZ = settings(
    max_examples=100, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DOCS_PER_EXAMPLE = 10

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20),
    st.sampled_from(["", "8_0", "80", "0.0.0.0", "::", "224.0.0.1", "True", "web", "2026-13-01", "-", "a" * 300]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def good_docs(prefix: str, count: int) -> list[dict]:
    """Valid objects of every kind, on distinct ports, named `<prefix>-<i>`."""
    docs: list[dict] = []
    for i in range(count):
        name, port = f"{prefix}-{i}", 20000 + (hash(prefix) % 1000) * 10 + i
        docs.append([
            pod_doc(name, "web", f"10.1.{i // 250}.{i % 250 + 1}"),
            ingress_doc(name, "n", port, port + 5000, "web"),
            egress_doc(name, "n", port, 8080, "web"),
        ][i % 3])
    return docs


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            paths += _paths(child, (*prefix, i))
    return paths


@st.composite
def mutated(draw: st.DrawFn, doc: dict) -> dict:
    """`doc` with one to three random changes: a value swapped for one of another type, nested, removed, or a key
    added."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)[1:]))
        *parents, last = path
        target: Any = doc
        for key in parents:
            target = target[key]
        operation = draw(st.sampled_from(["swap", "nest", "remove", "add"]))
        if operation == "swap":
            target[last] = draw(VALUES)
        elif operation == "nest":
            target[last] = draw(st.sampled_from([[target[last]], {"x": target[last]}]))
        elif operation == "remove":
            del target[last]
        elif isinstance(target[last], dict):
            target[last][draw(st.text(max_size=8))] = draw(VALUES)
    return doc


ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-16", "utf-32", "utf-8-sig", "latin-1", "cut", "nul"]


def encode(text: str, encoding: str, cut: int) -> bytes:
    if encoding == "cut":
        data = text.encode()
        return data[: cut % max(len(data), 1)]
    if encoding == "nul":
        data = text.encode()
        at = cut % max(len(data), 1)
        return data[:at] + b"\x00" + data[at:]
    return text.encode(encoding, errors="replace")


def expected(doc: Any) -> tuple[str | None, bool]:
    """What a document should give, by the model alone: (its object's name if it has a usable one, whether it is
    valid); (None, True) for an empty document or a kind that is ignored."""
    if doc is None:
        return None, True
    try:
        obj = parse_object(doc)
    except UnnamedError:
        return None, False
    except ObjectError as e:
        return e.ref, False
    return (str(obj.ref) if obj else None), True


@given(data=st.data())
@FUZZ
def test_manifests_and_validate_report_every_bad_document_and_keep_every_good_one(data: st.DataObject) -> None:
    good = good_docs("good", 6)
    base = good_docs("fuzz", DOCS_PER_EXAMPLE)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "good.yaml").write_text(yaml.safe_dump_all(good))
        cases: list[tuple[Path, Any, str]] = []
        for i, doc in enumerate(base):
            fuzzed = data.draw(st.one_of(st.just(doc), mutated(doc), VALUES))
            encoding = data.draw(st.sampled_from(ENCODINGS))
            path = directory / f"fuzz-{i}.yaml"
            path.write_bytes(encode(yaml.safe_dump(fuzzed), encoding, data.draw(st.integers(0, 10_000))))
            cases.append((path, fuzzed, encoding))

        world = World()
        source = ManifestSource([directory], world)
        source.load()
        count, problems = validate([directory])

    assert sorted(source.status.problems) == sorted(problems)
    arrived = {str(ref) for (_, ref) in world.objects()}
    assert {str(parse_object(doc).ref) for doc in good} <= arrived
    assert count == len(arrived)
    for path, doc, encoding in cases:
        name, valid = expected(doc)
        reported = [p for p in problems if p.startswith(f"{path}:")]
        if encoding in ("cut", "nul", "latin-1"):  # what the bytes say now is unknown: arrived, ignored or reported
            continue
        if valid:
            assert name is None or name in arrived, (path, doc, problems)
            assert not reported, reported
        else:
            assert reported, (path, doc)
            assert name is None or any(name in p for p in reported), (name, reported)


class _Stream:
    def __init__(self, events: list[WatchEvent], done: asyncio.Event) -> None:
        self._events, self._done = events, done

    async def __aiter__(self) -> AsyncIterator[WatchEvent]:
        for event in self._events:
            yield event
        self._done.set()
        await asyncio.Event().wait()  # the server keeps the watch open

    async def close(self) -> None:
        pass


class _Client:
    """What the reflector asks of an API server: one list, then one watch that delivers `events`."""

    def __init__(self, items: list[Any], events: list[WatchEvent]) -> None:
        self.items, self.events, self.done = items, events, asyncio.Event()

    async def list(self, *args: Any, **kwargs: Any) -> ListResult:
        return ListResult(self.items, "1")

    async def watch(self, *args: Any, **kwargs: Any) -> _Stream:
        return _Stream(self.events, self.done)


@given(data=st.data())
@FUZZ
def test_the_reflector_reports_every_bad_object_and_keeps_every_good_one(data: st.DataObject) -> None:
    asyncio.run(_reflect(data))


async def _reflect(data: st.DataObject) -> None:
    world = World()
    for resource in RESOURCES:
        kind = resource.kind
        defaults = {"kind": kind, "apiVersion": API_VERSIONS[kind]}
        good = [d for d in good_docs("good", 6) if d["kind"] == kind]
        base = [d for d in good_docs("fuzz", DOCS_PER_EXAMPLE) if d["kind"] == kind]
        listed = [data.draw(st.one_of(st.just(d), mutated(d), VALUES)) for d in base]
        watched = [data.draw(st.one_of(st.just(d), mutated(d))) for d in base]
        client = _Client(good + listed, [WatchEvent("MODIFIED", d) for d in watched])
        reflector = Reflector(client, resource, world, "east", None, WatchSettings(), lambda: None)  # type: ignore[arg-type]
        task = asyncio.create_task(reflector.run())
        try:
            await asyncio.wait_for(client.done.wait(), 10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert (reflector.relists, reflector.watches, reflector.last_error) == (1, 1, None)
        arrived = {str(ref) for (_, ref) in world.objects()}
        assert {str(parse_object(d).ref) for d in good} <= arrived
        problems = {str(ref): p.message for ref, p in reflector.problems.items()}
        for doc in watched:  # the watch's version of each object is the last word
            full = {**defaults, **doc} if isinstance(doc, dict) else doc
            name, valid = expected(full)
            if valid and name is not None:
                assert name in arrived and name not in problems, (name, problems)
            elif not valid:
                try:
                    ref = str(identify(kind, full))
                except UnnamedError:
                    ref = f"{kind} /(unnamed)"
                assert ref in problems, (ref, doc, problems)

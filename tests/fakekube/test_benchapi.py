"""What the benchmark asks of the fake (benchapi.py): batches applied in one go, the time each watch event was sent,
and lists that read the store once however many pages they take."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from .server import FakeKube

pytestmark = pytest.mark.timeout(20)


def pod(name: str, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "status": {"phase": "Running", "podIP": ip}}


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(record_sent=True) as kube:
        yield kube


async def test_batch_events_are_recorded_when_written_to_the_watch(kube: FakeKube) -> None:
    kube.upsert(pod("a", "10.0.0.1"))
    async with aiohttp.ClientSession() as http:
        listed = await (await http.get(f"{kube.url}/api/v1/pods")).json()
        version = listed["metadata"]["resourceVersion"]
        async with http.get(f"{kube.url}/api/v1/pods?watch=true&resourceVersion={version}") as watch:
            ops = [{"op": "delete", "kind": "Pod", "namespace": "default", "name": "a"},
                   {"op": "upsert", "object": pod("a", "10.0.0.2")}]
            before = time.monotonic()
            reply = await (await http.post(f"{kube.url}/fakekube/batch", data=json.dumps({"ops": ops}))).json()
            lines = [json.loads(await watch.content.readline()) for _ in range(2)]
        assert [(e["type"], e["object"]["status"].get("podIP")) for e in lines] == [
            ("DELETED", "10.0.0.1"), ("ADDED", "10.0.0.2")
        ]
        assert (reply["first_revision"], reply["last_revision"]) == (int(version) + 1, int(version) + 2)
        assert before <= reply["t_start"] <= reply["t_end"]
        sent = await (await http.get(f"{kube.url}/fakekube/sent")).json()
        assert [(e["type"], e["name"], e["revision"]) for e in sent["events"]] == [
            ("DELETED", "a", int(version) + 1), ("ADDED", "a", int(version) + 2)
        ]
        assert reply["t_end"] <= sent["events"][0]["t"] <= sent["events"][1]["t"] <= time.monotonic()
        later = await (await http.get(f"{kube.url}/fakekube/sent?after={sent['next']}")).json()
        assert later == {"next": 2, "events": []}
        stats = await (await http.get(f"{kube.url}/fakekube/stats")).json()
        assert stats["revision"] == int(version) + 2 and stats["by_method"]["POST"] == 1


async def test_a_paged_list_reads_the_store_once(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        kube.upsert(pod(f"p{i}", f"10.0.0.{i + 1}"))
    reads = []
    real_list = kube.store.list
    monkeypatch.setattr(kube.store, "list", lambda *a: reads.append(a) or real_list(*a))
    names, token = [], ""
    async with aiohttp.ClientSession() as http:
        while True:
            page = await (await http.get(f"{kube.url}/api/v1/pods?limit=2&continue={token}")).json()
            names += [item["metadata"]["name"] for item in page["items"]]
            token = page["metadata"].get("continue", "")
            if not token:
                break
    assert names == ["p0", "p1", "p2", "p3", "p4"] and len(reads) == 1


async def test_sent_events_are_not_recorded_unless_asked() -> None:
    async with FakeKube() as kube, aiohttp.ClientSession() as http:
        response = await http.get(f"{kube.url}/fakekube/sent")
        assert response.status == 404

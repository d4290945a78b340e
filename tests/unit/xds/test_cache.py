from envoy_control_plane.xds.cache import HISTORY, Snapshot, SnapshotCache
from envoy_control_plane.xds.resource import Resource
from envoy_control_plane.xds.types import CLUSTER, LISTENER
from google.protobuf.wrappers_pb2 import StringValue


def res(type_url: str, name: str, content: str) -> Resource:
    return Resource.of(type_url, name, StringValue(value=content))


def test_versions_come_from_content_not_order_or_time():
    a = Snapshot.build({CLUSTER: [res(CLUSTER, "x", "1"), res(CLUSTER, "y", "2")]})
    b = Snapshot.build({CLUSTER: [res(CLUSTER, "y", "2"), res(CLUSTER, "x", "1")]})
    c = Snapshot.build({CLUSTER: [res(CLUSTER, "y", "2"), res(CLUSTER, "x", "changed")]})
    assert a.version(CLUSTER) == b.version(CLUSTER) != c.version(CLUSTER)


def test_set_tells_watchers_only_of_real_changes():
    cache = SnapshotCache()
    seen: list[Snapshot] = []
    cancel = cache.watch("n", seen.append)
    first = Snapshot.build({CLUSTER: [res(CLUSTER, "x", "1")], LISTENER: []})
    assert cache.set("n", first) == [CLUSTER]
    assert cache.set("n", Snapshot.build({CLUSTER: [res(CLUSTER, "x", "1")], LISTENER: []})) == []
    assert cache.set("other", Snapshot.build({LISTENER: [res(LISTENER, "l", "1")]})) == [LISTENER]
    assert seen == [first]
    cancel()
    cache.set("n", Snapshot.build({}))
    assert seen == [first]


def test_recall_finds_what_a_node_had_a_few_snapshots_ago():
    cache = SnapshotCache()
    old = Snapshot.build({LISTENER: [res(LISTENER, "l", "1")]})
    cache.set("n", old)
    for i in range(2, 2 + HISTORY):
        cache.set("n", Snapshot.build({LISTENER: [res(LISTENER, "l", str(i))]}))
    assert cache.recall("n", LISTENER, old.version(LISTENER)) == old.of_type(LISTENER)
    assert cache.recall_resource("n", LISTENER, "l", old.of_type(LISTENER)["l"].version) is not None
    cache.set("n", Snapshot.build({LISTENER: [res(LISTENER, "l", "latest")]}))
    assert cache.recall("n", LISTENER, old.version(LISTENER)) is None  # forgotten: only the last few are kept
    assert cache.recall("other", LISTENER, old.version(LISTENER)) is None


def test_set_complete_wakes_every_watcher_once():
    cache = SnapshotCache(complete=False)
    seen: list[Snapshot] = []
    cache.watch("n", seen.append)
    assert not cache.complete
    cache.set_complete()
    cache.set_complete()
    assert cache.complete and seen == [cache.get("n")]


def test_a_snapshot_built_on_the_previous_one_has_the_versions_of_one_built_afresh():
    x1, x2, y = res(CLUSTER, "x", "1"), res(CLUSTER, "x", "2"), res(CLUSTER, "y", "1")
    listener = res(LISTENER, "l", "1")
    previous = Snapshot.build({CLUSTER: [x1, y], LISTENER: [listener]})
    for by_type in (
        {CLUSTER: [x1, y], LISTENER: [listener]},  # nothing changed: versions reused
        {CLUSTER: [x2, y], LISTENER: [listener]},  # a resource changed
        {CLUSTER: [res(CLUSTER, "x", "1"), y], LISTENER: [listener]},  # equal content, another object
        {CLUSTER: [x1], LISTENER: [listener]},  # one gone
        {CLUSTER: [x1, y, res(CLUSTER, "z", "1")], LISTENER: []},  # one more; the listener gone
        {CLUSTER: [y, x1]},  # a type gone
    ):
        assert Snapshot.build(by_type, previous=previous).versions == Snapshot.build(by_type).versions

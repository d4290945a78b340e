from envoy_control_plane.state import World
from tests.unit.objects import egress, ingress, pod


def world_with_listeners() -> World:
    world = World()
    world.upsert("a", egress("out", "node-1", 9090, 8080, "web"))
    world.upsert("a", ingress("in", "node-2", 8080, 8081, allow="web"))
    world.upsert("a", egress("other", "node-3", 9090, 8080, "db"))
    world.take_dirty()
    return world


def test_pods_merge_across_sources_and_one_ip_counts_once():
    world = World()
    world.upsert("aws", pod("a", "web", "10.0.0.1"))
    world.upsert("gcp", pod("b", "web", "10.1.0.1"))
    world.upsert("gcp", pod("c", "web", "10.0.0.1"))
    assert world.endpoints("web") == ("10.0.0.1", "10.1.0.1")
    world.delete("aws", pod("a", "web", "10.0.0.1").ref)
    assert world.endpoints("web") == ("10.0.0.1", "10.1.0.1")  # still held by gcp's pod c
    world.delete("gcp", pod("c", "web", "10.0.0.1").ref)
    assert world.endpoints("web") == ("10.1.0.1",)


def test_pod_change_dirties_only_nodes_using_its_cluster():
    world = world_with_listeners()
    world.upsert("a", pod("p", "web", "10.0.0.1"))
    nodes, clusters = world.take_dirty()
    assert nodes == {"node-1", "node-2"}  # egress target and RBAC allow cluster
    assert clusters == {"web"}


def test_terminating_or_unready_pod_leaves_the_pool_at_once():
    world = world_with_listeners()
    world.upsert("a", pod("p", "web", "10.0.0.1"))
    world.take_dirty()
    world.upsert("a", pod("p", "web", "10.0.0.1", terminating=True))
    assert world.endpoints("web") == ()
    assert world.take_dirty()[0] == {"node-1", "node-2"}
    world.upsert("a", pod("p", "web", "10.0.0.1", ready=False))
    assert world.endpoints("web") == ()
    assert world.take_dirty() == (set(), set())  # still not an endpoint: nothing changed
    world.upsert("a", pod("p", "web", "10.0.0.1"))
    assert world.endpoints("web") == ("10.0.0.1",)


def test_pod_change_that_keeps_endpoints_dirties_nothing():
    world = world_with_listeners()
    world.upsert("a", pod("p", None, "10.0.0.1"))
    assert world.take_dirty() == (set(), set())


def test_listener_move_dirties_old_and_new_node():
    world = world_with_listeners()
    world.upsert("a", egress("out", "node-9", 9090, 8080, "web"))
    assert world.take_dirty()[0] == {"node-1", "node-9"}
    assert world.listeners("node-1").accepted == ()
    world.upsert("a", pod("p", "web", "10.0.0.1"))
    assert world.take_dirty()[0] == {"node-9", "node-2"}


def test_port_conflict_keeps_the_older_listener():
    world = World()
    older = egress("first", "n", 9090, 8080, "web", creationTimestamp="2026-01-01T00:00:00Z")
    newer = ingress("second", "n", 9090, 8081, creationTimestamp="2026-02-01T00:00:00Z")
    world.upsert("a", newer)
    world.upsert("b", older)
    result = world.listeners("n")
    assert result.accepted == (older,)
    assert len(result.rejected) == 1
    assert "IngressListener default/second" in result.rejected[0].message
    assert "port 9090" in result.rejected[0].message and "EgressListener default/first" in result.rejected[0].message


def test_same_name_in_two_sources_is_a_conflict_on_one_node():
    world = World()
    world.upsert("aws", egress("out", "n", 9090, 8080, "web"))
    world.upsert("gcp", egress("out", "n", 9091, 8080, "web"))
    result = world.listeners("n")
    assert [listener.spec.listenport for listener in result.accepted] == [9090]
    assert "Envoy name egress_out" in result.rejected[0].message


def test_replace_deletes_what_vanished_of_the_given_kinds():
    world = World()
    world.upsert("k", pod("a", "web", "10.0.0.1"))
    world.upsert("k", pod("b", "web", "10.0.0.2"))
    world.upsert("k", egress("out", "n", 9090, 8080, "web"))
    world.replace("k", [pod("b", "web", "10.0.0.2")], kinds=["Pod"])
    assert world.endpoints("web") == ("10.0.0.2",)
    assert world.nodes() == ["n"]  # listeners untouched by a pod relist


def test_a_replace_marks_what_each_change_touches_even_when_a_listener_moves_in_the_same_batch():
    world = world_with_listeners()
    world.replace("a", [
        pod("p", "web", "10.0.0.1"),
        pod("q", "db", "10.0.0.2"),
        egress("out", "node-1", 9090, 8080, "web"),
        ingress("in", "node-2", 8080, 8081, allow="web"),
        egress("other", "node-4", 9090, 8080, "db"),  # moved from node-3, in the batch that brings db's pod
    ])
    nodes, clusters = world.take_dirty()
    assert clusters == {"web", "db"}
    assert nodes == {"node-1", "node-2", "node-3", "node-4"}
    assert world.endpoints("web") == ("10.0.0.1",) and world.endpoints("db") == ("10.0.0.2",)
    world.replace("a", [pod("p", "web", "10.0.0.1"), egress("out", "node-1", 9090, 8080, "web")], kinds=["Pod"])
    assert world.take_dirty() == ({"node-4"}, {"db"})  # q went; the listeners (not of the kinds given) stay


def test_a_large_replace_is_one_log_line_and_counts_every_event(caplog):
    from envoy_control_plane.metrics import Metrics
    from envoy_control_plane.state import LOG_EACH

    metrics = Metrics()
    world = World(metrics)
    pods = [pod(f"p{i}", "web", f"10.0.{i // 200}.{i % 200 + 1}") for i in range(LOG_EACH + 5)]
    changes = []
    world.on_change = lambda: changes.append(1)
    with caplog.at_level("INFO", logger="envoy_control_plane.state"):
        world.replace("a", pods)
        world.replace("a", [*pods[1:], egress("out", "node-1", 9090, 8080, "web")])
    assert [r.getMessage() for r in caplog.records] == [
        f"source a: {LOG_EACH + 5} objects changed: {LOG_EACH + 5} Pod added",
        "Pod default/p0 deleted (source a)",
        "EgressListener default/out added (source a)",
    ]
    assert metrics.source_events.labels("a", "Pod")._value.get() == LOG_EACH + 6
    assert world.revision == LOG_EACH + 7 and len(changes) == 2

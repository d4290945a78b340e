from envoy_control_plane.state import World
from envoy_control_plane.translate.node import Addresses, node_resources
from envoy_control_plane.xds.types import CLUSTER, ENDPOINT, LISTENER, SECRET
from tests.unit.objects import egress, ingress, pod


def test_node_gets_its_listeners_clusters_and_shared_endpoints():
    world = World()
    world.upsert("s", pod("a", "web", "10.0.0.1"))
    world.upsert("s", egress("one", "n", 9090, 80, "web"))
    world.upsert("s", egress("two", "n", 9091, 80, "web"))
    world.upsert("s", ingress("in", "n", 8080, 8081, allow="web"))
    world.upsert("s", egress("elsewhere", "m", 9090, 80, "web"))
    resources = node_resources(world, "n", Addresses())
    assert sorted(r.name for r in resources[LISTENER]) == ["egress_one", "egress_two", "ingress_in"]
    assert sorted(r.name for r in resources[CLUSTER]) == ["egress_one_cluster", "egress_two_cluster", "ingress_in_cluster"]
    assert [r.name for r in resources[ENDPOINT]] == ["web:80"]  # one assignment shared by both egress clusters
    other = node_resources(world, "m", Addresses())
    assert other[ENDPOINT][0] is resources[ENDPOINT][0]  # and by other nodes: encoded once


def test_unknown_node_gets_nothing():
    assert node_resources(World(), "ghost", Addresses()) == {CLUSTER: [], ENDPOINT: [], LISTENER: [], SECRET: []}

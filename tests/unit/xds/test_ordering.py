"""Make-before-break between types (xds/ordering.py), the rules both protocols follow."""

from envoy_control_plane.xds.ordering import HOLDERS, may_send, push_order
from envoy_control_plane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET


def test_types_go_out_secrets_clusters_endpoints_listeners_routes_then_others():
    assert push_order({"type.googleapis.com/x.Other", ROUTE, LISTENER}) == [
        SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE, "type.googleapis.com/x.Other"
    ]  # fmt: skip


def test_a_type_waits_for_every_earlier_unanswered_type_but_eds_may_follow_cds():
    assert all(may_send(t, []) for t in (SECRET, CLUSTER, ENDPOINT, LISTENER))
    assert may_send(ENDPOINT, [CLUSTER])  # Envoy ACKs CDS only once its EDS clusters warmed, on an EDS response
    assert not may_send(LISTENER, [CLUSTER])
    assert not may_send(LISTENER, [CLUSTER, ENDPOINT])
    assert not may_send(CLUSTER, [SECRET])
    assert not may_send(ENDPOINT, [SECRET, CLUSTER])
    assert not may_send(ROUTE, [LISTENER])


def test_removals_wait_for_what_holds_them():
    assert HOLDERS[CLUSTER] == (LISTENER,) and HOLDERS[ENDPOINT] == (CLUSTER,)
    assert set(HOLDERS[SECRET]) == {LISTENER, CLUSTER} and LISTENER not in HOLDERS

"""Incremental (delta) ADS: the rules of XDS_PROTOCOL.md, one test each.

Most tests drive a DeltaStream's state machine directly (`receive` a request, or `pending` after a snapshot change,
each returning what may be sent now), so "nothing is sent" is a plain assertion rather than a timeout. The last ones
go through a grpc.aio server on 127.0.0.1 with a hand-written client.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DeltaDiscoveryResponse
from google.rpc.status_pb2 import Status

from envoy_control_plane.metrics import PREFIX, Metrics
from envoy_control_plane.xds.cache import Snapshot, SnapshotCache
from envoy_control_plane.xds.delta import DeltaStream
from envoy_control_plane.xds.resource import Resource
from envoy_control_plane.xds.server import start_xds_server
from envoy_control_plane.xds.stream import ProtocolError
from envoy_control_plane.xds.streams import StreamRegistry
from envoy_control_plane.xds.types import CLUSTER, ENDPOINT, LISTENER

NODE = "node-1"


# ---- resources -------------------------------------------------------------------------------------------------


def eds_cluster(name: str, timeout: int = 1, service: str | None = None) -> Resource:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    msg.connect_timeout.seconds = timeout
    msg.eds_cluster_config.service_name = service or f"{name}-eds"
    return Resource.of(CLUSTER, name, msg, refs=[msg.eds_cluster_config.service_name])


def static_cluster(name: str, port: int = 10001) -> Resource:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    msg.load_assignment.cluster_name = name
    msg.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = port
    return Resource.of(CLUSTER, name, msg)


def cla(name: str, *ports: int) -> Resource:
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for port in ports or (80,):
        msg.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = port
    return Resource.of(ENDPOINT, name, msg)


def listener(name: str, cluster_name: str, port: int = 9000) -> Resource:
    msg = listener_pb2.Listener(name=name, stat_prefix=cluster_name)  # the body names the cluster, as a tcp_proxy does
    msg.address.socket_address.port_value = port
    return Resource.of(LISTENER, name, msg, refs=[cluster_name])


def snapshot(*resources: Resource) -> Snapshot:
    by_type: dict[str, list[Resource]] = {CLUSTER: [], ENDPOINT: [], LISTENER: []}
    for r in resources:
        by_type[r.type_url].append(r)
    return Snapshot.build(by_type)


# ---- the client ------------------------------------------------------------------------------------------------


class Client:
    """Plays Envoy against a DeltaStream, synchronously: every call returns the responses the stream may send now."""

    def __init__(
        self, cache: SnapshotCache, metrics: Metrics, registry: StreamRegistry | None = None, **options: float
    ) -> None:
        self.cache = cache
        self.info = (registry or StreamRegistry()).open("delta", "test")
        self.stream = DeltaStream(cache, metrics, self.info, **options)
        self.first = True

    def send(
        self,
        type_url: str,
        subscribe: tuple[str, ...] | list[str] = (),
        unsubscribe: tuple[str, ...] | list[str] = (),
        nonce: str = "",
        initial: dict[str, str] | None = None,
        error: str | None = None,
    ) -> list[DeltaDiscoveryResponse]:
        request = DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        if self.first:
            request.node.id = NODE
            self.first = False
        if error:
            request.error_detail.CopyFrom(Status(code=3, message=error))
        return decoded(self.stream.receive(request))

    def ack(self, response: DeltaDiscoveryResponse, **kw) -> list[DeltaDiscoveryResponse]:
        return self.send(response.type_url, nonce=response.nonce, **kw)

    def nack(self, response: DeltaDiscoveryResponse, message: str) -> list[DeltaDiscoveryResponse]:
        return self.send(response.type_url, nonce=response.nonce, error=message)

    def update(self, snap: Snapshot) -> list[DeltaDiscoveryResponse]:
        self.cache.set(NODE, snap)
        return decoded(self.stream.pending())

    def status(self, type_url: str):
        return self.info.types[type_url]


def decoded(responses: list[bytes]) -> list[DeltaDiscoveryResponse]:
    """The stream's responses are wire bytes (xds/wire.py): what a client would read."""
    return [DeltaDiscoveryResponse.FromString(raw) for raw in responses]


def one(responses: list[DeltaDiscoveryResponse], type_url: str | None = None) -> DeltaDiscoveryResponse:
    assert len(responses) == 1, responses
    if type_url is not None:
        assert responses[0].type_url == type_url, responses[0].type_url
    return responses[0]


def sent(response: DeltaDiscoveryResponse) -> dict[str, str]:
    """name -> version of the resources in a response."""
    return {r.name: r.version for r in response.resources}


def versions(*resources: Resource) -> dict[str, str]:
    return {r.name: r.version for r in resources}


@pytest.fixture
def cache() -> SnapshotCache:
    return SnapshotCache()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(cache, metrics) -> Client:
    return Client(cache, metrics)


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"{PREFIX}_{name}", labels) or 0.0


# ---- wildcard and named subscriptions --------------------------------------------------------------------------


def test_initial_wildcard_sends_every_cluster_with_its_content_hash_and_shared_bytes(client, cache):
    a, b = eds_cluster("a"), static_cluster("b")
    cache.set(NODE, snapshot(a, b))
    response = one(client.send(CLUSTER), CLUSTER)
    assert sent(response) == versions(a, b)
    assert {r.name: r.resource.value for r in response.resources} == {"a": a.body, "b": b.body}
    assert all(r.resource.type_url == CLUSTER for r in response.resources)
    assert list(response.removed_resources) == []
    assert response.nonce
    status = client.status(CLUSTER)
    assert status.wildcard and status.acked_version == ""  # committed on ACK, not on send
    assert client.ack(response) == []
    assert status.acked_version == cache.get(NODE).version(CLUSTER) == response.system_version_info


def test_explicit_star_is_a_wildcard_too(client, cache):
    cache.set(NODE, snapshot(eds_cluster("a")))
    assert sent(one(client.send(CLUSTER, ["*"]))) == versions(eds_cluster("a"))
    assert client.status(CLUSTER).wildcard


def test_initial_wildcard_is_answered_even_when_there_is_nothing(client):
    """Envoy finishes initialising a type on its first response: an empty delta response is valid and does that."""
    response = one(client.send(CLUSTER), CLUSTER)
    assert list(response.resources) == [] and list(response.removed_resources) == []
    assert client.ack(response) == []
    response = one(client.send(LISTENER, ["*"]), LISTENER)
    assert list(response.resources) == []


def test_named_eds_subscription_sends_only_the_names_asked_for(client, cache):
    x, y, z = cla("x", 1), cla("y", 2), cla("z", 3)
    cache.set(NODE, snapshot(x, y, z))
    response = one(client.send(ENDPOINT, ["x", "y"]), ENDPOINT)
    assert sent(response) == versions(x, y)
    assert client.status(ENDPOINT).names == {"x", "y"} and not client.status(ENDPOINT).wildcard
    assert client.ack(response) == []
    # A later subscription adds only the new name.
    assert sent(one(client.send(ENDPOINT, ["z"]))) == versions(z)


def test_an_empty_first_eds_request_is_not_a_wildcard(client, cache):
    cache.set(NODE, snapshot(cla("x")))
    assert client.send(ENDPOINT) == []
    assert not client.status(ENDPOINT).wildcard


def test_unknown_subscribed_names_are_answered_in_removed_resources(client, cache):
    x = cla("x")
    cache.set(NODE, snapshot(x))
    response = one(client.send(ENDPOINT, ["x", "nope"]))
    assert sent(response) == versions(x)
    assert list(response.removed_resources) == ["nope"]
    client.ack(response)
    # ... and answered again when it comes into existence.
    nope = cla("nope", 9)
    assert sent(one(client.update(snapshot(x, nope)))) == versions(nope)


def test_resubscribing_a_name_the_client_has_sends_it_again(client, cache):
    """The protocol: the client may have dropped it before it could unsubscribe."""
    x = cla("x")
    cache.set(NODE, snapshot(x))
    client.ack(one(client.send(ENDPOINT, ["x"])))
    assert sent(one(client.send(ENDPOINT, ["x"]))) == versions(x)


def test_unsubscribe_needs_no_answer_and_stops_updates(client, cache):
    x, y = cla("x"), cla("y")
    cache.set(NODE, snapshot(x, y))
    client.ack(one(client.send(ENDPOINT, ["x", "y"])))
    assert client.send(ENDPOINT, unsubscribe=["y"]) == []
    assert client.update(snapshot(x, cla("y", 99))) == []
    assert client.status(ENDPOINT).names == {"x"}


def test_unsubscribing_a_name_also_covered_by_the_wildcard_is_answered(client, cache):
    a = eds_cluster("a")
    cache.set(NODE, snapshot(a))
    client.ack(one(client.send(CLUSTER)))
    # Explicit subscriptions beside the wildcard: one that exists, one that does not.
    client.ack(one(client.send(CLUSTER, ["a", "ghost"])))
    response = one(client.send(CLUSTER, unsubscribe=["a", "ghost"]))
    assert sent(response) == versions(a)  # still covered by the wildcard: keep it
    assert list(response.removed_resources) == ["ghost"]  # not covered: drop it


def test_unsubscribing_star_leaves_the_wildcard(client, cache):
    a = eds_cluster("a")
    cache.set(NODE, snapshot(a))
    client.ack(one(client.send(CLUSTER, ["*", "a"])))
    assert client.send(CLUSTER, unsubscribe=["*"]) == []
    status = client.status(CLUSTER)
    assert not status.wildcard and status.names == {"a"}
    # Only the explicit name is followed now.
    b, a2 = eds_cluster("b"), eds_cluster("a", timeout=2)
    assert sent(one(client.update(snapshot(a2, b)))) == versions(a2)


def test_a_stale_nonce_still_changes_the_subscription(client, cache):
    x, y = cla("x"), cla("y")
    cache.set(NODE, snapshot(x, y))
    first = one(client.send(ENDPOINT, ["x"]))
    client.ack(first)
    second = one(client.update(snapshot(cla("x", 2), y)))
    # A request carrying the old nonce while `second` is in flight: not an ACK, but its subscription counts.
    assert client.send(ENDPOINT, ["y"], nonce=first.nonce) == []  # one response per type in flight
    assert client.status(ENDPOINT).names == {"x", "y"}
    assert sent(one(client.ack(second))) == versions(y)


def test_a_stale_nonce_acks_nothing(client, cache):
    x = cla("x")
    cache.set(NODE, snapshot(x))
    response = one(client.send(ENDPOINT, ["x"]))
    assert client.send(ENDPOINT, nonce="not-" + response.nonce) == []
    assert client.status(ENDPOINT).acked_version == ""
    assert client.ack(response) == []
    assert client.status(ENDPOINT).acked_version == response.system_version_info


# ---- ACK, NACK and updates -------------------------------------------------------------------------------------


def test_only_changed_resources_are_sent_and_only_after_the_ack(client, cache):
    x, y = cla("x", 1), cla("y", 2)
    cache.set(NODE, snapshot(x, y))
    response = one(client.send(ENDPOINT, ["x", "y"]))
    x2 = cla("x", 11)
    assert client.update(snapshot(x2, y)) == []  # the first response is not ACKed yet
    update = one(client.ack(response))
    assert sent(update) == versions(x2) and list(update.removed_resources) == []


def test_the_acked_version_is_of_what_the_client_has_after_the_ack(client, cache):
    """As the response announced it; or, when the client unsubscribed a name while it was in flight, without it."""
    x, y = cla("x", 1), cla("y", 2)
    cache.set(NODE, snapshot(x, y))
    response = one(client.send(ENDPOINT, ["x", "y"]))
    assert client.ack(response) == []
    assert client.status(ENDPOINT).acked_version == response.system_version_info == _version_of(x, y)
    update = one(client.update(snapshot(cla("x", 11), cla("y", 22))))
    assert client.send(ENDPOINT, unsubscribe=["y"]) == []  # while `update` is in flight
    assert client.ack(update) == []
    assert client.status(ENDPOINT).acked_version == _version_of(cla("x", 11)) != update.system_version_info


def _version_of(*resources: Resource) -> str:
    return Snapshot.build({ENDPOINT: list(resources)}).version(ENDPOINT)


def test_a_nack_is_logged_counted_recorded_and_not_resent(client, cache, metrics, caplog):
    x = cla("x", 1)
    cache.set(NODE, snapshot(x))
    client.ack(one(client.send(ENDPOINT, ["x"])))
    acked = client.status(ENDPOINT).acked_version
    bad = cla("x", 666)
    response = one(client.update(snapshot(bad)))
    with caplog.at_level(logging.WARNING, logger="envoy_control_plane"):
        assert client.nack(response, "port 666 is cursed") == []
    status = client.status(ENDPOINT)
    assert status.nacks == 1 and status.last_nack == "port 666 is cursed"
    assert status.acked_version == acked  # the client keeps what it had
    assert counter(metrics, "xds_nacks_total", type="EDS") == 1
    (record,) = [r for r in caplog.records if "rejected" in r.getMessage()]
    message = record.getMessage()
    assert NODE in message and "EDS" in message and f"nonce {response.nonce}" in message and "cursed" in message
    # Nothing is resent: not on a spurious wake-up, not when another type changes, not on an unrelated request.
    assert client.stream.pending() == []
    assert client.update(snapshot(bad, eds_cluster("other"))) == []
    unknown = one(client.send(ENDPOINT, ["y"]))  # y is unknown: answered, and x is not in the answer
    assert sent(unknown) == {} and list(unknown.removed_resources) == ["y"]
    client.ack(unknown)
    assert client.stream.pending() == []
    # A new version is sent.
    good = cla("x", 2)
    assert sent(one(client.update(snapshot(good, eds_cluster("other"))))) == versions(good)


def test_a_nack_rejects_only_the_resources_envoy_names(client, cache, caplog):
    """Envoy applies the listeners of a delta push it can, and names the ones it rejects; a later change back to
    what the client had before must be sent (it used to leave a stale RBAC allow-list in force)."""
    app, taken = listener("app", "c", port=1), listener("taken", "c", port=2)
    cache.set(NODE, snapshot(app, taken))
    client.ack(one(client.send(LISTENER)))
    app2, taken2 = listener("app", "c2", port=1), listener("taken", "c", port=3)
    push = one(client.update(snapshot(app2, taken2)))
    assert sent(push) == versions(app2, taken2)
    message = "Error adding/updating listener(s) taken: cannot bind '0.0.0.0:3': Address already in use\n"
    with caplog.at_level(logging.WARNING, logger="envoy_control_plane"):
        assert client.nack(push, message) == []
    assert "rejected [taken], the rest applied" in caplog.text
    assert client.status(LISTENER).rejected_resources == versions(taken2)
    back = one(client.update(snapshot(app, taken2)))  # app changes back; taken is still the rejected version
    assert sent(back) == versions(app)


def test_a_nack_that_names_nothing_resends_each_resource_on_its_next_change(client, cache):
    """Which resources Envoy applied is unknown: none is sent again as it is (no NACK loop), each is sent on its next
    change, even back to the version the client had before the push."""
    app, other = listener("app", "c", port=1), listener("other", "c", port=2)
    cache.set(NODE, snapshot(app, other))
    client.ack(one(client.send(LISTENER)))
    app2, other2 = listener("app", "c2", port=1), listener("other", "c2", port=2)
    assert client.nack(one(client.update(snapshot(app2, other2))), "something went wrong") == []
    assert client.update(snapshot(app2, other2)) == []
    back = one(client.update(snapshot(app, other2)))
    assert sent(back) == versions(app)
    client.ack(back)
    assert sent(one(client.update(snapshot(app, other)))) == versions(other)


def test_after_a_nack_that_names_nothing_unrelated_clusters_are_still_removed(client, cache):
    """What the client may have of an unknown listener is one of two versions we know: only their clusters wait."""
    a, b, c = static_cluster("a"), static_cluster("b"), static_cluster("c")
    l1 = listener("l", "a")
    cache.set(NODE, snapshot(a, b, c, l1))
    client.ack(one(client.send(CLUSTER)))
    client.ack(one(client.send(LISTENER)))
    l2 = listener("l", "b")
    assert client.nack(one(client.update(snapshot(a, b, c, l2)), LISTENER), "something went wrong") == []
    removal = one(client.update(snapshot(b, l2)), CLUSTER)  # "a" may still be used by l's old version; "c" is not
    assert list(removal.removed_resources) == ["c"]


def test_an_unanswered_response_blocks_other_types_only_until_the_ack_timeout(cache, metrics, caplog):
    client = Client(cache, metrics, ack_timeout=0)  # every response is given up on at the next look
    a, x, l1 = eds_cluster("a", service="x"), cla("x"), listener("l", "a")
    cache.set(NODE, snapshot(a, x, l1))
    cds = one(client.send(CLUSTER))  # never answered
    with caplog.at_level(logging.WARNING, logger="envoy_control_plane"):
        eds = one(client.send(ENDPOINT, ["x"]))
        lds = one(client.send(LISTENER))
    assert (eds.type_url, lds.type_url) == (ENDPOINT, LISTENER)
    assert f"no answer to CDS nonce {cds.nonce}" in caplog.text
    # The unanswered clusters count as unknown to the client: a change sends them again, and only a change.
    assert client.stream.pending() == []
    a2 = eds_cluster("a", timeout=2, service="x")
    cds2, eds2 = client.update(snapshot(a2, x, l1))  # and the EDS that follows a CDS push
    assert sent(cds2) == versions(a2) and eds2.type_url == ENDPOINT


def test_a_rejected_removal_is_not_resent(client, cache):
    a, b = static_cluster("a"), static_cluster("b")
    cache.set(NODE, snapshot(a, b))
    client.ack(one(client.send(CLUSTER)))
    response = one(client.update(snapshot(a)))
    assert list(response.removed_resources) == ["b"]
    assert client.nack(response, "no") == []
    c = eds_cluster("c")
    update = one(client.update(snapshot(a, c)))
    assert sent(update) == versions(c) and list(update.removed_resources) == []


def test_acks_are_counted(client, cache, metrics):
    cache.set(NODE, snapshot(eds_cluster("a")))
    client.ack(one(client.send(CLUSTER)))
    assert counter(metrics, "xds_acks_total", type="CDS") == 1
    assert counter(metrics, "xds_responses_total", type="CDS") == 1
    assert counter(metrics, "xds_requests_total", type="CDS") == 2
    assert counter(metrics, "xds_response_bytes_total", type="CDS") == len(eds_cluster("a").body)


def test_a_removed_resource_goes_into_removed_resources(client, cache):
    a, b = static_cluster("a"), static_cluster("b")
    cache.set(NODE, snapshot(a, b))
    client.ack(one(client.send(CLUSTER)))
    response = one(client.update(snapshot(a)))
    assert list(response.resources) == [] and list(response.removed_resources) == ["b"]
    client.ack(response)
    assert client.status(CLUSTER).acked_version == cache.get(NODE).version(CLUSTER)


# ---- reconnects ------------------------------------------------------------------------------------------------


def test_reconnect_with_every_version_current_sends_nothing(cache, metrics):
    a, x, listen = eds_cluster("a", service="x"), cla("x"), listener("l", "a")
    cache.set(NODE, snapshot(a, x, listen))
    client = Client(cache, metrics)
    assert client.send(CLUSTER, initial=versions(a)) == []
    assert client.send(ENDPOINT, ["x"], initial=versions(x)) == []
    assert client.send(LISTENER, ["*"], initial=versions(listen)) == []
    snap = cache.get(NODE)
    for type_url in (CLUSTER, ENDPOINT, LISTENER):
        assert client.status(type_url).acked_version == snap.version(type_url)
    # It is followed from there on.
    x2 = cla("x", 2)
    assert sent(one(client.update(snapshot(a, x2, listen)))) == versions(x2)


def test_reconnect_with_one_stale_version_sends_only_that_one(client, cache):
    a, b, c = static_cluster("a"), static_cluster("b"), static_cluster("c")
    cache.set(NODE, snapshot(a, b, c))
    initial = versions(a, b, c) | {"b": "an-older-version", "gone": "whatever"}
    response = one(client.send(CLUSTER, initial=initial))
    assert sent(response) == versions(b) and list(response.removed_resources) == []
    # "gone" is removed once the client has said which listeners it runs (none that could use it).
    assert client.ack(response) == []
    removal = one(client.send(LISTENER, initial={}), CLUSTER)
    assert sent(removal) == {} and list(removal.removed_resources) == ["gone"]


def test_reconnect_named_subscription_sends_the_names_the_client_lacks(client, cache):
    x, y = cla("x"), cla("y")
    cache.set(NODE, snapshot(x, y))
    client.ack(one(client.send(CLUSTER)))  # no cluster uses "gone" (Envoy asks for clusters first)
    initial = {"x": x.version, "gone": "v", "not-asked-for": "v"}
    response = one(client.send(ENDPOINT, ["x", "y", "gone"], initial=initial))
    assert sent(response) == versions(y)
    assert list(response.removed_resources) == ["gone"]


def test_initial_resource_versions_after_the_first_request_are_ignored(client, cache):
    x = cla("x")
    cache.set(NODE, snapshot(x))
    client.ack(one(client.send(ENDPOINT, ["x"])))
    assert client.send(ENDPOINT, initial={"x": "bogus"}) == []


# ---- ordering: make-before-break -------------------------------------------------------------------------------


def test_startup_order_and_one_response_per_type_in_flight(client, cache):
    a, x, listen = eds_cluster("a", service="x"), cla("x"), listener("l", "a")
    cache.set(NODE, snapshot(a, x, listen))
    cds = one(client.send(CLUSTER), CLUSTER)
    # Envoy subscribes EDS before it ACKs CDS. Endpoints follow the clusters at once (stream order keeps them after
    # the clusters, and Envoy may hold its CDS ACK until the clusters are warm, which takes this EDS response).
    eds = one(client.send(ENDPOINT, ["x"]), ENDPOINT)
    assert sent(eds) == versions(x)
    # Listeners wait for both ACKs.
    assert client.send(LISTENER) == []
    assert client.ack(cds) == []
    lds = one(client.ack(eds), LISTENER)
    assert sent(lds) == versions(listen)
    assert client.ack(lds) == []


def test_a_cds_change_to_an_eds_cluster_resends_its_endpoints_even_if_unchanged(client, cache):
    """Envoy keeps an updated EDS cluster warming until an EDS response arrives, and holds its CDS ACK meanwhile:
    the assignment goes right behind the clusters, and listeners wait until both are ACKed."""
    a, b = eds_cluster("a", service="x"), eds_cluster("b", service="y")
    x, y, l_a = cla("x"), cla("y"), listener("l", "a")
    cache.set(NODE, snapshot(a, b, x, y, l_a))
    client.ack(one(client.send(CLUSTER)))
    client.ack(one(client.send(ENDPOINT, ["x", "y"])))
    client.ack(one(client.send(LISTENER)))
    a2, l_a2 = eds_cluster("a", timeout=5, service="x"), listener("l", "a", port=9001)
    cds, eds = client.update(snapshot(a2, b, x, y, l_a2))
    assert cds.type_url == CLUSTER and sent(cds) == versions(a2)
    assert eds.type_url == ENDPOINT and sent(eds) == versions(x)  # the same version, sent again
    assert client.ack(eds) == []  # the cluster is warm; Envoy now releases its CDS ACK
    assert sent(one(client.ack(cds), LISTENER)) == versions(l_a2)


def test_endpoint_changes_send_just_that_assignment(client, cache):
    clusters = [eds_cluster(f"c{i}", service=f"e{i}") for i in range(5)]
    claims = [cla(f"e{i}", i + 1) for i in range(5)]
    cache.set(NODE, snapshot(*clusters, *claims))
    client.ack(one(client.send(CLUSTER)))
    client.ack(one(client.send(ENDPOINT, [f"e{i}" for i in range(5)])))
    claims[3] = cla("e3", 4, 5)
    response = one(client.update(snapshot(*clusters, *claims)), ENDPOINT)
    assert sent(response) == versions(claims[3])


def test_a_cluster_is_removed_only_after_the_listener_stops_using_it(client, cache):
    a, b = static_cluster("a"), static_cluster("b")
    l_a = listener("l", "a")
    cache.set(NODE, snapshot(a, l_a))
    client.ack(one(client.send(CLUSTER)))
    client.ack(one(client.send(LISTENER)))
    # The listener moves from cluster a to cluster b.
    l_b = listener("l", "b")
    cds = one(client.update(snapshot(b, l_b)), CLUSTER)
    assert sent(cds) == versions(b) and list(cds.removed_resources) == []  # a is still in use
    lds = one(client.ack(cds), LISTENER)
    assert sent(lds) == versions(l_b)
    removal = one(client.ack(lds), CLUSTER)
    assert list(removal.resources) == [] and list(removal.removed_resources) == ["a"]


def test_a_removed_listener_goes_before_its_cluster(client, cache):
    a, l_a = static_cluster("a"), listener("l", "a")
    cache.set(NODE, snapshot(a, l_a))
    client.ack(one(client.send(CLUSTER)))
    client.ack(one(client.send(LISTENER)))
    lds = one(client.update(snapshot()), LISTENER)
    assert list(lds.removed_resources) == ["l"]
    cds = one(client.ack(lds), CLUSTER)
    assert list(cds.removed_resources) == ["a"]


def test_endpoints_stay_while_a_cluster_the_client_has_uses_them(client, cache):
    a, x, l_a = eds_cluster("a", service="x"), cla("x"), listener("l", "a")
    cache.set(NODE, snapshot(a, x, l_a))
    client.ack(one(client.send(CLUSTER)))
    client.ack(one(client.send(ENDPOINT, ["x"])))
    client.ack(one(client.send(LISTENER)))
    lds = one(client.update(snapshot()), LISTENER)  # everything goes
    cds = one(client.ack(lds), CLUSTER)
    assert list(cds.removed_resources) == ["a"]
    # Envoy drops the cluster and unsubscribes its endpoints: nothing more to say.
    assert client.send(ENDPOINT, unsubscribe=["x"]) == []
    assert client.ack(cds) == []


def test_on_reconnect_a_cluster_goes_after_the_listener_that_used_it(client, cache):
    """Envoy re-sends CDS before LDS on a reconnect: the cluster removal waits until the listener is gone."""
    old, keep = eds_cluster("old"), eds_cluster("keep")
    l_old, l_keep = listener("l-old", "old"), listener("l-keep", "keep", port=9001)
    cache.set(NODE, snapshot(old, keep, l_old, l_keep))  # what the client got from us (or another replica)
    cache.set(NODE, snapshot(keep, l_keep))  # while it was away, l-old and its cluster went
    assert client.send(CLUSTER, initial=versions(old, keep)) == []  # not yet: l-old may use it
    lds = one(client.send(LISTENER, initial=versions(l_old, l_keep)), LISTENER)
    assert sent(lds) == {} and list(lds.removed_resources) == ["l-old"]
    cds = one(client.ack(lds), CLUSTER)
    assert sent(cds) == {} and list(cds.removed_resources) == ["old"]


def test_on_reconnect_removals_wait_for_the_world_to_be_complete(metrics):
    """Issue 7 item 8: a restart while a source is unreachable must not delete what a reconnecting Envoy runs."""
    cache = SnapshotCache(complete=False)  # a source has not loaded yet
    a, b, b2, c = static_cluster("a"), static_cluster("b"), static_cluster("b", port=2), static_cluster("c")
    l_a, l_b = listener("l-a", "a"), listener("l-b", "b", port=9001)
    cache.set(NODE, snapshot(b2, c, l_b))  # l-a and a come from the source that has not loaded
    client = Client(cache, metrics)
    cds = one(client.send(CLUSTER, initial=versions(a, b)), CLUSTER)
    assert sent(cds) == versions(b2, c) and list(cds.removed_resources) == []  # additions and updates only
    assert client.ack(cds) == []
    assert client.send(LISTENER, initial=versions(l_a, l_b)) == []  # l-a stays
    fresh = Client(cache, metrics)  # a first-time client is answered as usual
    assert sent(one(fresh.send(LISTENER))) == versions(l_b)

    cache.set_complete()  # the source loaded, and l-a really is gone: it goes first, then its cluster
    lds = one(decoded(client.stream.pending()), LISTENER)
    assert list(lds.removed_resources) == ["l-a"]
    cds = one(client.ack(lds), CLUSTER)
    assert list(cds.removed_resources) == ["a"]


def test_removals_wait_for_a_reconnecting_clients_unknown_listener(client, cache):
    """A listener declared at a version we cannot see into might route to any cluster: removals wait for it."""
    a, b, l_b = static_cluster("a"), static_cluster("b"), listener("l", "b")
    cache.set(NODE, snapshot(b, l_b))
    lds = one(client.send(LISTENER, initial={"l": "an-older-version"}), LISTENER)
    assert sent(lds) == versions(l_b)
    # The client also has cluster a, which we no longer have; its old listener may still use it.
    assert client.send(CLUSTER, initial=versions(a, b)) == []
    cds = one(client.ack(lds), CLUSTER)
    assert list(cds.removed_resources) == ["a"] and list(cds.resources) == []


# ---- through gRPC ----------------------------------------------------------------------------------------------


@pytest.fixture
async def server(cache, metrics):
    registry = StreamRegistry()
    grpc_server, port = await start_xds_server("127.0.0.1", 0, cache, metrics, registry)
    try:
        yield port, registry
    finally:
        await grpc_server.stop(grace=None)


class GrpcClient:
    """A hand-written delta ADS client over a real channel."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.requests: asyncio.Queue[DeltaDiscoveryRequest | None] = asyncio.Queue()
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).DeltaAggregatedResources(self._gen())

    async def _gen(self):
        while (request := await self.requests.get()) is not None:
            yield request

    def send(self, **fields) -> None:
        self.requests.put_nowait(DeltaDiscoveryRequest(**fields))

    async def recv(self) -> DeltaDiscoveryResponse:
        return await asyncio.wait_for(self.call.read(), 5)

    async def close(self) -> None:
        self.requests.put_nowait(None)
        self.call.cancel()
        await self.channel.close()


async def wait_for(predicate, what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_grpc_stream_initial_ack_update_and_registry(server, cache, metrics):
    port, registry = server
    a, x = eds_cluster("a", service="x"), cla("x")
    cache.set(NODE, snapshot(a, x))
    client = GrpcClient(port)
    try:
        client.send(node={"id": NODE}, type_url=CLUSTER)
        cds = await client.recv()
        assert cds.type_url == CLUSTER and sent(cds) == versions(a)
        client.send(type_url=ENDPOINT, resource_names_subscribe=["x"])
        client.send(type_url=CLUSTER, response_nonce=cds.nonce)
        eds = await client.recv()
        assert eds.type_url == ENDPOINT and sent(eds) == versions(x)
        client.send(type_url=ENDPOINT, response_nonce=eds.nonce)
        # A burst of snapshot changes while the stream is idle: the latest one is what gets sent.
        cache.set(NODE, snapshot(a, cla("x", 2)))
        x3 = cla("x", 3)
        cache.set(NODE, snapshot(a, x3))
        update = await client.recv()
        assert update.type_url == ENDPOINT and sent(update) == versions(x3)
        client.send(type_url=ENDPOINT, response_nonce=update.nonce)

        await wait_for(lambda: registry.by_node().get(NODE), "the stream in the registry")
        (info,) = registry.by_node()[NODE]
        body = info.to_json()
        assert body["mode"] == "delta" and set(body["types"]) == {"CDS", "EDS"}
        await wait_for(lambda: info.types[ENDPOINT].acked_version == cache.get(NODE).version(ENDPOINT), "the ACK")
        assert counter(metrics, "xds_connected_streams", mode="delta") == 1
        assert counter(metrics, "xds_streams_total", mode="delta") == 1
    finally:
        await client.close()
    await wait_for(lambda: counter(metrics, "xds_connected_streams", mode="delta") == 0, "the stream to close")
    assert registry.by_node() == {}
    assert cache._watchers == {}  # the stream's watch ended with it


async def test_grpc_first_request_without_node_is_refused(server):
    port, _ = server
    client = GrpcClient(port)
    try:
        client.send(type_url=CLUSTER)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.recv()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "node.id" in e.value.details()
    finally:
        await client.close()


def test_protocol_errors(cache, metrics):
    stream = DeltaStream(cache, metrics, StreamRegistry().open("delta", "test"))
    with pytest.raises(ProtocolError):
        stream.receive(DeltaDiscoveryRequest(type_url=CLUSTER))
    stream.receive(DeltaDiscoveryRequest(node={"id": NODE}, type_url=CLUSTER))
    with pytest.raises(ProtocolError):
        stream.receive(DeltaDiscoveryRequest())

"""SDS resources, TLS contexts, SAN principals and the HTTP layer: input -> expected Envoy proto (as JSON)."""

import dataclasses

import pytest

from demo.certs import CA, tls_secret
from envoy_control_plane.model import parse_object
from envoy_control_plane.state import World
from envoy_control_plane.translate.clusters import egress_cluster, ingress_cluster
from envoy_control_plane.translate.listeners import ingress_listener
from envoy_control_plane.translate.node import Addresses, build_node
from envoy_control_plane.translate.secrets import ServedSecrets, Use, sds_name, secret_resource
from envoy_control_plane.translate.tls import TlsNames
from envoy_control_plane.xds.types import CLUSTER, LISTENER, SECRET
from tests.unit.objects import egress, ingress
from tests.unit.translate.decode import as_dict

CA_ = CA("mesh")
LEAF = CA_.issue("server", ["spiffe://mesh/server"])
NAMES = TlsNames("s/default/tls", "s/default/tls/ca.crt")
TLS = {"secret": "tls"}
SDS = {"ads": {}, "resourceApiVersion": "V3"}


def sds(name: str) -> dict:
    return {"name": name, "sdsConfig": SDS}


def test_a_secret_becomes_a_certificate_and_a_validation_context():
    secret = parse_object(tls_secret("tls", LEAF, CA_))
    key = ("s", secret.ref)
    assert sds_name(key, Use.CERTIFICATE) == "s/default/tls" and sds_name(key, Use.CA) == "s/default/tls/ca.crt"
    cert = as_dict(secret_resource("s/default/tls", Use.CERTIFICATE, secret))
    assert cert["name"] == "s/default/tls"
    assert set(cert["tlsCertificate"]) == {"certificateChain", "privateKey"}
    ca = as_dict(secret_resource("s/default/tls/ca.crt", Use.CA, secret))
    assert list(ca) == ["name", "validationContext"] and list(ca["validationContext"]) == ["trustedCa"]


def mtls_principal(san: str, san_type: str) -> dict:
    return {
        "custom": {
            "name": "envoy.rbac.principals.mtls_authenticated",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.rbac.principals.mtls_authenticated.v3.Config",
                "sanMatcher": {"sanType": san_type, "matcher": {"exact": san}},
            },
        }
    }


def ip(address: str) -> dict:
    return {"directRemoteIp": {"addressPrefix": address, "prefixLen": 32}}


@pytest.mark.parametrize(
    ("rbac", "allowed", "principals"),
    [
        # SANs only: a URI SAN (it has a scheme) and a DNS SAN, either admitted
        ({"sans": ["spiffe://mesh/client", "client.mesh"]}, None,
         [mtls_principal("spiffe://mesh/client", "URI"), mtls_principal("client.mesh", "DNS")]),
        # cluster and SANs: both must hold
        ({"cluster": "clients", "sans": ["spiffe://mesh/client"]}, ("10.0.0.1",),
         [{"andIds": {"ids": [{"orIds": {"ids": [ip("10.0.0.1")]}},
                               {"orIds": {"ids": [mtls_principal("spiffe://mesh/client", "URI")]}}]}}]),
        # a named cluster without pods admits nobody, whatever the SANs
        ({"cluster": "clients", "sans": ["spiffe://mesh/client"]}, (), None),
    ],
)  # fmt: skip
def test_ingress_tls_requires_a_client_certificate_and_admits_by_san(rbac, allowed, principals):
    listener = ingress("web", "n", 8443, 8081, spec_extra={"rbac": rbac, "tls": TLS})
    resource = ingress_listener(listener, "0.0.0.0", allowed, NAMES)
    assert resource.refs == {"ingress_web_cluster", *NAMES.names()}
    [chain] = as_dict(resource)["filterChains"]
    assert chain["transportSocket"] == {
        "name": "envoy.transport_sockets.tls",
        "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "commonTlsContext": {
                "tlsCertificateSdsSecretConfigs": [sds("s/default/tls")],
                "validationContextSdsSecretConfig": sds("s/default/tls/ca.crt"),
            },
            "requireClientCertificate": True,
            "disableStatelessSessionResumption": True,
            "disableStatefulSessionResumption": True,
        },
    }
    rbac_filter, tcp = chain["filters"]
    assert tcp["name"] == "envoy.filters.network.tcp_proxy"
    rules = rbac_filter["typedConfig"]["rules"]
    if principals is None:
        assert rules == {}  # ALLOW without policies: nobody
    else:
        assert rules["policies"]["allow_cluster"]["principals"] == principals
    if allowed is not None:  # the source match stays
        assert "sourcePrefixRanges" in chain["filterChainMatch"]


def test_http_ingress_routes_to_its_cluster_through_the_http_rbac_filter():
    listener = ingress("web", "n", 8443, 8081, spec_extra={"rbac": {"sans": ["a.mesh"]}, "tls": TLS, "layer": "http"})
    [chain] = as_dict(ingress_listener(listener, "0.0.0.0", None, NAMES))["filterChains"]
    assert chain["transportSocket"]["typedConfig"]["commonTlsContext"]["alpnProtocols"] == ["h2", "http/1.1"]
    [manager] = chain["filters"]
    config = manager["typedConfig"]
    assert (manager["name"], config["statPrefix"], config.get("codecType", "AUTO")) == (  # AUTO is the default (0)
        "envoy.filters.network.http_connection_manager", "http", "AUTO"
    )
    [host] = config["routeConfig"]["virtualHosts"]
    assert host["domains"] == ["*"]
    assert host["routes"] == [{"match": {"prefix": "/"}, "route": {"cluster": "ingress_web_cluster", "timeout": "0s"}}]
    rbac, router = config["httpFilters"]
    assert rbac["name"] == "envoy.filters.http.rbac"
    assert rbac["typedConfig"]["rules"]["policies"]["allow_cluster"]["principals"] == [mtls_principal("a.mesh", "DNS")]
    assert router["name"] == "envoy.filters.http.router"
    cluster = as_dict(ingress_cluster(listener))
    assert cluster["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "useDownstreamProtocolConfig"
    ] == {"httpProtocolOptions": {}, "http2ProtocolOptions": {}}


def test_egress_tls_is_on_the_cluster_with_sni():
    listener = egress("out", "n", 9090, 8443, "servers", spec_extra={"tls": {**TLS, "sni": "server.mesh"}})
    resource = egress_cluster(listener, NAMES)
    assert resource.refs == {"servers:8443", *NAMES.names()}
    assert as_dict(resource)["transportSocket"] == {
        "name": "envoy.transport_sockets.tls",
        "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "commonTlsContext": {
                "tlsCertificateSdsSecretConfigs": [sds("s/default/tls")],
                "validationContextSdsSecretConfig": sds("s/default/tls/ca.crt"),
            },
            "sni": "server.mesh",
        },
    }


def world_with(*objects) -> World:
    world = World()
    for obj in objects:
        world.upsert("s", obj)
    return world


SECURE_IN = ingress("in", "a", 8443, 8081, spec_extra={"tls": TLS})
GOOD = parse_object(tls_secret("tls", LEAF, CA_))


def test_a_node_gets_only_the_secrets_its_listeners_name():
    other = dataclasses.replace(GOOD, ref=dataclasses.replace(GOOD.ref, name="other"))
    elsewhere = ingress("in-b", "b", 8443, 8081, spec_extra={"tls": {"secret": "other"}})
    world = world_with(GOOD, other, SECURE_IN, elsewhere)
    build = build_node(world, "a", Addresses(), ServedSecrets(), serve_secrets=True)
    assert [r.name for r in build.resources[SECRET]] == ["s/default/tls", "s/default/tls/ca.crt"]
    assert [r.name for r in build.resources[LISTENER]] == ["ingress_in"] and build.problems == []


def test_without_the_gate_tls_listeners_are_held_back():
    build = build_node(world_with(GOOD, SECURE_IN), "a", Addresses(), ServedSecrets(), serve_secrets=False)
    assert build.resources[SECRET] == [] and build.resources[LISTENER] == [] and build.resources[CLUSTER] == []
    [problem] = build.problems
    assert (problem.held_back, problem.reason) == (True, "SecretsNotServed")
    assert "xds.insecure_secrets" in problem.message


def test_a_missing_or_broken_secret_holds_back_until_a_good_version_was_served():
    secrets = ServedSecrets()
    world = world_with(SECURE_IN)
    build = build_node(world, "a", Addresses(), secrets, serve_secrets=True)
    assert build.resources[LISTENER] == []
    assert [(p.reason, p.held_back) for p in build.problems] == [("SecretNotFound", True), ("SecretNotFound", True)]
    assert "IngressListener default/in (source s, Envoy listener ingress_in) held back: spec.tls.secret: Secret " \
           "default/tls (source s) not found" == build.problems[0].message
    no_ca = dataclasses.replace(GOOD, ca=b"")
    world.upsert("s", no_ca)
    build = build_node(world, "a", Addresses(), secrets, serve_secrets=True)
    assert [(p.reason, p.message.rsplit(": ", 1)[1]) for p in build.problems] == [("SecretInvalid", "has no data.ca.crt")]
    world.upsert("s", GOOD)
    served = build_node(world, "a", Addresses(), secrets, serve_secrets=True)
    assert served.problems == [] and len(served.resources[LISTENER]) == 1
    world.upsert("s", no_ca)  # broken after it was served: the last good version stays in force
    kept = build_node(world, "a", Addresses(), secrets, serve_secrets=True)
    assert kept.resources[SECRET] == served.resources[SECRET] and len(kept.resources[LISTENER]) == 1
    assert [(p.held_back, p.message.endswith("its last good version stays in force")) for p in kept.problems] == [(False, True)]
    world.delete("s", GOOD.ref)  # and deleted
    assert build_node(world, "a", Addresses(), secrets, serve_secrets=True).resources[SECRET] == served.resources[SECRET]
    world.delete("s", SECURE_IN.ref)  # nobody names it any more: forgotten
    secrets.forget_unused(world)
    world.upsert("s", SECURE_IN)
    assert build_node(world, "a", Addresses(), secrets, serve_secrets=True).resources[LISTENER] == []


def test_a_secret_change_dirties_only_the_nodes_that_name_it():
    world = world_with(GOOD, SECURE_IN, ingress("plain", "b", 8080, 8081))
    world.take_dirty()
    world.upsert("s", dataclasses.replace(GOOD, cert=CA_.issue("new", []).cert))
    assert world.take_dirty()[0] == {"a"}
    world.upsert("other-source", GOOD)  # the same name in another source is another Secret
    assert world.take_dirty()[0] == set()


def test_a_node_asking_for_another_nodes_secret_gets_nothing_over_sotw_or_delta():
    from envoy.service.discovery.v3.discovery_pb2 import (
        DeltaDiscoveryRequest,
        DeltaDiscoveryResponse,
        DiscoveryRequest,
        DiscoveryResponse,
    )

    from envoy_control_plane.metrics import Metrics
    from envoy_control_plane.xds.cache import Snapshot, SnapshotCache
    from envoy_control_plane.xds.delta import DeltaStream
    from envoy_control_plane.xds.sotw import SotwStream
    from envoy_control_plane.xds.streams import StreamRegistry

    other = dataclasses.replace(GOOD, ref=dataclasses.replace(GOOD.ref, name="other"))
    world = world_with(GOOD, other, SECURE_IN, ingress("in-b", "b", 8443, 8081, spec_extra={"tls": {"secret": "other"}}))
    cache, secrets, metrics = SnapshotCache(), ServedSecrets(), Metrics()
    for node in ("a", "b"):
        cache.set(node, Snapshot.build(build_node(world, node, Addresses(), secrets, serve_secrets=True).resources))
    wanted = ["s/default/other", "s/default/other/ca.crt", "s/default/tls"]
    sotw = SotwStream(cache, metrics, StreamRegistry().open("sotw", "test"))
    request = DiscoveryRequest(type_url=SECRET, resource_names=wanted)
    request.node.id = "a"
    [raw] = sotw.receive(request)
    response = DiscoveryResponse.FromString(raw)
    assert [r.value for r in response.resources] == [cache.get("a").of_type(SECRET)["s/default/tls"].body]
    delta = DeltaStream(cache, metrics, StreamRegistry().open("delta", "test"))
    delta_request = DeltaDiscoveryRequest(type_url=SECRET, resource_names_subscribe=wanted)
    delta_request.node.id = "a"
    [raw] = delta.receive(delta_request)
    delta_response = DeltaDiscoveryResponse.FromString(raw)
    assert [r.name for r in delta_response.resources] == ["s/default/tls"]
    assert sorted(delta_response.removed_resources) == ["s/default/other", "s/default/other/ca.crt"]

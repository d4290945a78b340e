"""LDS: one listener per IngressListener and EgressListener.

`layer: tcp` (the default) is a TCP proxy; `layer: http` an HTTP connection manager (HTTP/1.1 and HTTP/2, detected)
with one route to the listener's cluster. An IngressListener admits peers by source IP (the pods of its allowed
cluster: a filter chain match and an RBAC filter) and/or by peer certificate SAN (RBAC principals); on an HTTP
listener the RBAC filter is the HTTP one, with the same rules. `tls` puts a TLS context on the filter chain that
requires a client certificate (see tls.py).
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.rbac.principals.mtls_authenticated.v3 import mtls_authenticated_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf.duration_pb2 import Duration

from ..model import EgressListener, IngressListener
from ..state import listener_name
from ..xds.resource import Resource
from ..xds.types import LISTENER
from .clusters import cluster_name_for
from .common import host_cidr, listener_key, memo_latest, pack, socket_address
from .tls import TlsNames, downstream_tls

RBAC_STAT_PREFIX = "rbac_ingress"
TCP_STAT_PREFIX = "tcp"
HTTP_STAT_PREFIX = "http"
RBAC_POLICY = "allow_cluster"
NO_SOURCE = ("0.0.0.0", "::")
MTLS_PRINCIPAL = "envoy.rbac.principals.mtls_authenticated"


@memo_latest(key=listener_key)
def ingress_listener(
    listener: IngressListener, address: str, allowed_ips: tuple[str, ...] | None, tls: TlsNames | None = None
) -> Resource:
    """`allowed_ips` None: no allowed cluster, any source IP is admitted. Empty: the cluster has no pods, nobody is.
    `tls` names the SDS secrets of the listener's `tls` (None: plaintext)."""
    spec = listener.spec
    cluster = cluster_name_for(listener)
    chain: dict[str, object] = {}
    rules: rbac_pb2.RBAC | None = None
    network_rbac: listener_components_pb2.Filter | None = None
    if allowed_ips is not None:
        chain["filter_chain_match"], rules, network_rbac = _admission(spec.allow_cluster or "", allowed_ips)
    if spec.allow_sans is not None:
        rules = _rules(allowed_ips, spec.allow_sans)
        network_rbac = _network_rbac(rules)
    if spec.layer == "http":
        chain["filters"] = [_http_manager(listener_name(listener), cluster, rules)]
    else:
        chain["filters"] = [*([network_rbac] if network_rbac else []), _tcp_proxy(cluster)]
    if tls is not None:
        chain["transport_socket"] = downstream_tls(tls.certificate, tls.ca, http=spec.layer == "http")
    refs = [cluster, *(tls.names() if tls else ())]
    return _listener(listener_name(listener), address, spec.listenport, chain, refs)


@memo_latest(key=lambda allow_cluster, _ips: allow_cluster)
def _admission(
    allow_cluster: str, allowed_ips: tuple[str, ...]
) -> tuple[listener_components_pb2.FilterChainMatch, rbac_pb2.RBAC, listener_components_pb2.Filter]:
    """The source match and the RBAC rules (and network filter) depend only on the allowed IPs: built once per
    allowed cluster's pod set and shared by every listener that admits it (protobuf copies them into each
    listener). Building them per listener was most of a rollout's rebuild."""
    rules = _rules(allowed_ips, None)
    return _sources(allowed_ips), rules, _network_rbac(rules)


@memo_latest(key=listener_key)
def egress_listener(listener: EgressListener, address: str) -> Resource:
    """The TLS of an egress is on its cluster (the upstream side), so the listener itself is plaintext on loopback."""
    cluster = cluster_name_for(listener)
    if listener.spec.layer == "http":
        filters = [_http_manager(listener_name(listener), cluster, None)]
    else:
        filters = [_tcp_proxy(cluster)]
    return _listener(listener_name(listener), address, listener.spec.listenport, {"filters": filters}, [cluster])


def _listener(name: str, address: str, port: int, chain: dict[str, object], refs: list[str]) -> Resource:
    """A listener with one filter chain of these fields, built in place (a chain built apart would be copied in)."""
    message = listener_pb2.Listener(name=name, address=socket_address(address, port))
    message.filter_chains.add(**chain)
    return Resource.of(LISTENER, name, message, refs=refs)


def _set_host(cidr: address_pb2.CidrRange, ip: str) -> None:
    """An IP as a single-host range. The ranges of an allowed cluster's pods are many, so they are filled in place
    (`add()`): building each as a message of its own that its parent then copies took three times as long."""
    address, prefix = host_cidr(ip)
    cidr.address_prefix = address
    cidr.prefix_len.value = prefix


def _sources(allowed_ips: tuple[str, ...]) -> listener_components_pb2.FilterChainMatch:
    """Match the allowed sources at accept time too.

    The RBAC network filter decides on a connection's first byte, so a server-first protocol (one that greets the
    client, like SMTP or MySQL) would talk to a refused client before RBAC closes it. A filter chain that only matches
    the allowed sources closes other connections at once. With no allowed pod, the chain matches only the unspecified
    addresses, which no peer ever has.
    """
    match = listener_components_pb2.FilterChainMatch()
    for ip in allowed_ips or NO_SOURCE:
        _set_host(match.source_prefix_ranges.add(), ip)
    return match


@memo_latest(key=lambda cluster: cluster)
def _tcp_proxy(cluster: str) -> listener_components_pb2.Filter:
    """The same for every rebuild of a listener (only its admitted IPs change in a rollout): built once."""
    return listener_components_pb2.Filter(
        name="envoy.filters.network.tcp_proxy",
        typed_config=pack(tcp_proxy_pb2.TcpProxy(stat_prefix=TCP_STAT_PREFIX, cluster=cluster)),
    )


def _rules(allowed_ips: tuple[str, ...] | None, sans: tuple[str, ...] | None) -> rbac_pb2.RBAC:
    """ALLOW with one policy: source IP among `allowed_ips` (None: any) and peer certificate SAN among `sans` (None:
    any). An allowed cluster without pods gives no policy, and ALLOW without policies denies all."""
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    if (allowed_ips is not None and not allowed_ips) or not (allowed_ips or sans):
        return rules
    policy = rules.policies[RBAC_POLICY]
    policy.permissions.add(any=True)
    if allowed_ips and sans:
        both = policy.principals.add().and_ids.ids
        by_ip = both.add().or_ids.ids
        both.add().or_ids.ids.extend(_san_principal(san) for san in sans)
    elif allowed_ips:
        by_ip = policy.principals
    else:
        policy.principals.extend(_san_principal(san) for san in sans or ())
        return rules
    for ip in allowed_ips:
        _set_host(by_ip.add().direct_remote_ip, ip)
    return rules


def _san_principal(san: str) -> rbac_pb2.Principal:
    """A validated peer certificate with this SAN, exactly: a URI SAN when it has a scheme (a DNS name never has a
    colon), else a DNS SAN. Unlike `authenticated`, this never falls back to the certificate's subject."""
    san_type = common_pb2.SubjectAltNameMatcher.URI if ":" in san else common_pb2.SubjectAltNameMatcher.DNS
    config = mtls_authenticated_pb2.Config(
        san_matcher=common_pb2.SubjectAltNameMatcher(san_type=san_type, matcher=string_pb2.StringMatcher(exact=san))
    )
    return rbac_pb2.Principal(custom=extension_pb2.TypedExtensionConfig(name=MTLS_PRINCIPAL, typed_config=pack(config)))


def _network_rbac(rules: rbac_pb2.RBAC) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(
        name="envoy.filters.network.rbac",
        typed_config=pack(rbac_filter_pb2.RBAC(stat_prefix=RBAC_STAT_PREFIX, rules=rules)),
    )


def _http_manager(name: str, cluster: str, rules: rbac_pb2.RBAC | None) -> listener_components_pb2.Filter:
    """HTTP/1.1 and HTTP/2 (codec AUTO), one route to `cluster` without a timeout (a stream may be long, as over the
    TCP proxy), the HTTP RBAC filter when `rules` are given."""
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=cluster, timeout=Duration(seconds=0)),
    )
    http_filters = []
    if rules is not None:
        http_filters.append(
            hcm_pb2.HttpFilter(name="envoy.filters.http.rbac", typed_config=pack(http_rbac_pb2.RBAC(rules=rules)))
        )
    http_filters.append(hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())))
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=HTTP_STAT_PREFIX,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_pb2.RouteConfiguration(
            name=name,
            virtual_hosts=[route_components_pb2.VirtualHost(name=name, domains=["*"], routes=[route])],
        ),
        http_filters=http_filters,
    )
    return listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager", typed_config=pack(manager))

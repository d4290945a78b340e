"""LDS: a TCP proxy per listener; IngressListeners also get a network RBAC filter admitting their allowed pods."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.wrappers_pb2 import UInt32Value

from ..model import EgressListener, IngressListener
from ..state import listener_name
from ..xds.resource import Resource
from ..xds.types import LISTENER
from .clusters import cluster_name_for
from .common import host_cidr, listener_key, memo_latest, pack, socket_address

RBAC_STAT_PREFIX = "rbac_ingress"
TCP_STAT_PREFIX = "tcp"
RBAC_POLICY = "allow_cluster"
NO_SOURCE = ("0.0.0.0", "::")


@memo_latest(key=listener_key)
def ingress_listener(listener: IngressListener, address: str, allowed_ips: tuple[str, ...] | None) -> Resource:
    """`allowed_ips` None: no rbacallowcluster, everyone is admitted. Empty: the cluster has no pods, nobody is."""
    cluster = cluster_name_for(listener)
    if allowed_ips is None:
        chain = listener_components_pb2.FilterChain(filters=[_tcp_proxy(cluster)])
    else:
        match, rbac = _admission(listener.spec.rbacallowcluster or "", allowed_ips)
        chain = listener_components_pb2.FilterChain(filter_chain_match=match, filters=[rbac, _tcp_proxy(cluster)])
    return _listener(listener_name(listener), address, listener.spec.listenport, chain, cluster)


@memo_latest(key=lambda allow_cluster, _ips: allow_cluster)
def _admission(
    allow_cluster: str, allowed_ips: tuple[str, ...]
) -> tuple[listener_components_pb2.FilterChainMatch, listener_components_pb2.Filter]:
    """The source match and the RBAC filter depend only on the allowed IPs: built once per rbacallowcluster's pod set
    and shared by every listener that admits it (protobuf copies them into each listener). Building them per listener
    was most of a rollout's rebuild."""
    return _sources(allowed_ips), _rbac_filter(allowed_ips)


@memo_latest(key=listener_key)
def egress_listener(listener: EgressListener, address: str) -> Resource:
    cluster = cluster_name_for(listener)
    chain = listener_components_pb2.FilterChain(filters=[_tcp_proxy(cluster)])
    return _listener(listener_name(listener), address, listener.spec.listenport, chain, cluster)


def _listener(name: str, address: str, port: int, chain: listener_components_pb2.FilterChain, cluster: str) -> Resource:
    message = listener_pb2.Listener(name=name, address=socket_address(address, port), filter_chains=[chain])
    return Resource.of(LISTENER, name, message, refs=[cluster])


def _cidrs(ips: tuple[str, ...]) -> list[address_pb2.CidrRange]:
    return [
        address_pb2.CidrRange(address_prefix=ip, prefix_len=UInt32Value(value=prefix)) for ip, prefix in map(host_cidr, ips)
    ]


def _sources(allowed_ips: tuple[str, ...]) -> listener_components_pb2.FilterChainMatch:
    """Match the allowed sources at accept time too.

    The RBAC network filter decides on a connection's first byte, so a server-first protocol (one that greets the
    client, like SMTP or MySQL) would talk to a refused client before RBAC closes it. A filter chain that only matches
    the allowed sources closes other connections at once. With no allowed pod, the chain matches only the unspecified
    addresses, which no peer ever has.
    """
    return listener_components_pb2.FilterChainMatch(source_prefix_ranges=_cidrs(allowed_ips or NO_SOURCE))


def _tcp_proxy(cluster: str) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(
        name="envoy.filters.network.tcp_proxy",
        typed_config=pack(tcp_proxy_pb2.TcpProxy(stat_prefix=TCP_STAT_PREFIX, cluster=cluster)),
    )


def _rbac_filter(allowed_ips: tuple[str, ...]) -> listener_components_pb2.Filter:
    """ALLOW with the pods' IPs as principals. With no IPs there is no policy, and ALLOW without policies denies all."""
    policies = {}
    if allowed_ips:
        principals = [rbac_pb2.Principal(direct_remote_ip=cidr) for cidr in _cidrs(allowed_ips)]
        policies[RBAC_POLICY] = rbac_pb2.Policy(permissions=[rbac_pb2.Permission(any=True)], principals=principals)
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies=policies)
    return listener_components_pb2.Filter(
        name="envoy.filters.network.rbac",
        typed_config=pack(rbac_filter_pb2.RBAC(stat_prefix=RBAC_STAT_PREFIX, rules=rules)),
    )

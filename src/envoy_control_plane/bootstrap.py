"""An Envoy bootstrap that points a node at this control plane over ADS."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class XdsClientTls:
    """mTLS to the control plane: files as Envoy will see them (not read here: the bootstrap may be for another
    machine). `server_name` is what the control plane's certificate must name; None means the xDS host."""

    ca: str
    cert: str
    key: str
    server_name: str | None = None


def render(
    node_id: str,
    xds_host: str = "127.0.0.1",
    xds_port: int = 18000,
    admin_port: int = 9901,
    delta: bool = False,
    node_cluster: str = "envoy-control-plane",
    tls: XdsClientTls | None = None,
    replicas: Sequence[tuple[str, int]] = (),
) -> dict[str, Any]:
    """The bootstrap as a dict (dump it as YAML or JSON); `envoy -c` accepts it as is. `replicas` are more control
    planes (host, port) beside the first: Envoy keeps one ADS stream, and moves to another endpoint when it breaks."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": _socket("127.0.0.1", admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": "xds_cluster",
                            # Reconnect within seconds of a control plane restart (Envoy's default backs off to 30 s).
                            "retry_policy": {"retry_back_off": {"base_interval": "0.25s", "max_interval": "5s"}},
                        }
                    }
                ],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [_xds_cluster([(xds_host, xds_port), *replicas], tls)]},
    }


def _xds_cluster(endpoints: list[tuple[str, int]], tls: XdsClientTls | None) -> dict[str, Any]:
    discovery = "STATIC" if all(_is_ip(host) for host, _ in endpoints) else "STRICT_DNS"
    cluster = {
        "name": "xds_cluster",
        "type": discovery,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "5s"}}
                },
            }
        },
        "load_assignment": {
            "cluster_name": "xds_cluster",
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}} for host, port in endpoints]}
            ],
        },
    }
    if tls is not None:
        cluster["transport_socket"] = _mtls(tls, tls.server_name or endpoints[0][0])
    return cluster


def _mtls(tls: XdsClientTls, server_name: str) -> dict[str, Any]:
    """Present the node's certificate; trust only `ca`, and only a certificate naming `server_name` (a DNS SAN, or
    an IP SAN when it is an address), so another certificate from the same CA (a node's) cannot pose as the server."""
    ip = _is_ip(server_name)
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}],
            "validation_context": {
                "trusted_ca": {"filename": tls.ca},
                "match_typed_subject_alt_names": [
                    {"san_type": "IP_ADDRESS" if ip else "DNS", "matcher": {"exact": server_name}}
                ],
            },
            "alpn_protocols": ["h2"],
        },
    }
    if not ip:
        context["sni"] = server_name  # SNI carries names only
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}

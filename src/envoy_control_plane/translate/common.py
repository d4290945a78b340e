"""Small pieces every translation module uses."""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import address_pb2, config_source_pb2
from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message


def pack(message: Message) -> Any:
    """Like Any.Pack, but deterministic, so map fields (RBAC policies) hash the same every time."""
    return Any(
        type_url=f"type.googleapis.com/{message.DESCRIPTOR.full_name}",
        value=message.SerializeToString(deterministic=True),
    )


def socket_address(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


def host_cidr(ip: str) -> tuple[str, int]:
    """An IP as a single-host CIDR: /32 for IPv4, /128 for IPv6."""
    return ip, 32 if ipaddress.ip_address(ip).version == 4 else 128


def ads_config_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.ApiVersion.V3
    )

"""Transport sockets for mTLS: the TLS contexts listeners and clusters use, naming their certificates over SDS.

Contexts only name SDS secrets (see secrets.py), so a rotated certificate changes no listener and no cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf.wrappers_pb2 import BoolValue

from .common import ads_config_source, pack

TLS_SOCKET = "envoy.transport_sockets.tls"
ALPN_HTTP = ("h2", "http/1.1")  # an HTTP listener offers both, so gRPC clients (which insist on h2) negotiate it


def _common(certificate: str, ca: str, alpn: tuple[str, ...] = ()) -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[secret_pb2.SdsSecretConfig(name=certificate, sds_config=ads_config_source())],
        validation_context_sds_secret_config=secret_pb2.SdsSecretConfig(name=ca, sds_config=ads_config_source()),
        alpn_protocols=alpn,
    )


def downstream_tls(certificate: str, ca: str, http: bool) -> base_pb2.TransportSocket:
    """Present `certificate`; require a client certificate that chains to `ca`.

    Session resumption is off: a resumed session carries the peer's SANs but not that its certificate was validated,
    so RBAC's SAN principals (which require a validated certificate) would refuse every resumed connection of an
    allowed peer; and every connection then checks the client certificate against the current CA.
    """
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common(certificate, ca, ALPN_HTTP if http else ()),
        require_client_certificate=BoolValue(value=True),
        disable_stateless_session_resumption=True,
        disable_stateful_session_resumption=True,
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def upstream_tls(certificate: str, ca: str, sni: str | None) -> base_pb2.TransportSocket:
    """Present `certificate`; accept an upstream whose certificate chains to `ca`; send `sni` when given."""
    context = tls_pb2.UpstreamTlsContext(common_tls_context=_common(certificate, ca), sni=sni or "")
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


@dataclass(frozen=True)
class TlsNames:
    """The SDS secrets one listener's `tls` resolves to."""

    certificate: str
    ca: str

    def names(self) -> tuple[str, str]:
        return self.certificate, self.ca

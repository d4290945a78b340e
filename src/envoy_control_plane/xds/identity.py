"""Which node ids an xDS client may ask for, decided from the certificate it presented (xds.tls.client_ca set).

The rule: a certificate names the node ids in its DNS and URI subject alternative names, exactly as written (no
wildcards, case-sensitive); a certificate without any SAN names the node id in its subject's common name. A
certificate that has SANs of other kinds only (IP, email) names no node: its CN does not count once SANs exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from ..text import clip, quote

# Called with the node id a stream's first request asks for; raises NodeNotPermitted to end the stream.
NodeAuthorizer = Callable[[str], None]


class NodeNotPermitted(Exception):
    """The client's certificate does not name the node id it asked for; the stream ends with PERMISSION_DENIED."""


@dataclass(frozen=True)
class PeerCertificate:
    subject: str
    dns_names: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    common_name: str | None = None
    has_sans: bool = False

    @classmethod
    def from_pem(cls, pem: bytes) -> PeerCertificate:
        from cryptography import x509  # only with mTLS: see certs.py
        from cryptography.x509.oid import ExtensionOID, NameOID

        cert = x509.load_pem_x509_certificate(pem)
        try:
            sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        except x509.ExtensionNotFound:
            sans = None
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = cns[0].value if cns else None
        return cls(
            subject=cert.subject.rfc4514_string(),
            dns_names=tuple(sans.get_values_for_type(x509.DNSName)) if sans else (),
            uris=tuple(sans.get_values_for_type(x509.UniformResourceIdentifier)) if sans else (),
            common_name=cn if isinstance(cn, str) else None,
            has_sans=bool(sans and len(sans)),
        )

    def node_ids(self) -> frozenset[str]:
        """The node ids this certificate may ask for."""
        if self.has_sans:
            return frozenset(self.dns_names + self.uris)
        return frozenset({self.common_name}) if self.common_name else frozenset()

    def describe(self) -> str:
        """The certificate for a log line: subject and the SANs that count, bounded."""
        sans = [f"DNS:{n}" for n in self.dns_names] + [f"URI:{u}" for u in self.uris]
        return f"subject {clip(self.subject)}, SANs [{clip(', '.join(sans))}]"


def authorizer(auth_context: Mapping[str, Sequence[bytes]]) -> NodeAuthorizer:
    """The node check for one stream, from grpc's auth context of its connection (`context.auth_context()`).

    Fails closed: no certificate, or one that does not parse, names no node.
    """
    pems = auth_context.get("x509_pem_cert") or []
    try:
        cert = PeerCertificate.from_pem(pems[0]) if pems else None
    except ValueError:
        cert = None

    def check(node_id: str) -> None:
        if cert is None:
            raise NodeNotPermitted(f"no usable client certificate; node {quote(node_id)} refused")
        if node_id not in cert.node_ids():
            raise NodeNotPermitted(f"certificate ({cert.describe()}) does not name node {quote(node_id)}")

    return check


def stream_authorizer(context: grpc.aio.ServicerContext) -> NodeAuthorizer:
    return authorizer(context.auth_context())

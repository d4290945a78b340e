"""Throwaway certificates for the demo and the tests: a CA, and leaves with SPIFFE URI, DNS or IP SANs it signs.

EC P-256 keys, so making a few takes milliseconds. `kubectl`-style Secret documents come from `tls_secret`.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Leaf:
    cert: bytes  # PEM
    key: bytes  # PEM (unencrypted PKCS#8)
    serial: int


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class CA:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert = self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str | None, sans: list[str]) -> Leaf:
        """A leaf for client and server use; a SAN with "://" is a URI SAN, an IP address an IP SAN, any other a DNS
        SAN. No common name: an empty subject (the SANs alone name it)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = [_general_name(s) for s in sans]
        now = datetime.datetime.now(datetime.timezone.utc)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not common_name)
        cert = builder.sign(self.key, hashes.SHA256())
        return Leaf(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial)


def _general_name(san: str) -> x509.GeneralName:
    if "://" in san:
        return x509.UniformResourceIdentifier(san)
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def tls_secret(name: str, leaf: Leaf | None, ca: CA | bytes | None, namespace: str = "default") -> dict[str, Any]:
    """A Secret document as `kubectl get secret -o yaml` prints it: kubernetes.io/tls with a leaf (and ca.crt, as
    cert-manager writes it), or Opaque with only ca.crt."""
    data: dict[str, bytes] = {}
    if leaf is not None:
        data["tls.crt"], data["tls.key"] = leaf.cert, leaf.key
    if ca is not None:
        data["ca.crt"] = ca.cert if isinstance(ca, CA) else ca
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls" if leaf is not None else "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def client_context(ca: CA, leaf: Leaf | None) -> ssl.SSLContext:
    """A TLS client that trusts `ca` and presents `leaf` (or no certificate). No hostname check: the mesh's
    certificates name workloads by URI SANs."""
    context = ssl.create_default_context(cadata=ca.cert.decode())
    context.check_hostname = False
    if leaf is not None:
        with tempfile.TemporaryDirectory() as tmp:  # ssl loads a certificate chain from files only
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(leaf.cert)
            key.write_bytes(leaf.key)
            context.load_cert_chain(cert, key)
    return context

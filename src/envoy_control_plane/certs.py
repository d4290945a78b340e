"""PEM material from Secrets: checked with `cryptography`, described for logs, never shown.

A Secret's certificate, key and CA are checked once, when the Secret is read: a certificate that does not parse, a
key that does not parse or does not belong to the certificate, a CA bundle without a certificate. Messages say what
is wrong and never quote the data; the description of a certificate (subject, SANs, serial, expiry) is safe to log,
a key has no description at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .text import clip

if TYPE_CHECKING:
    from cryptography import x509

# `cryptography` is imported by the functions that use it: 26 ms and 10 MB that a control plane without TLS or
# Secrets never needs.

# Kubernetes bounds a whole Secret to 1 MiB; one key's PEM larger than that is not a certificate we will parse.
MAX_PEM_BYTES = 1 << 20


def certificates(pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; ValueError (a message without the data) when there is none or one is bad."""
    if len(pem) > MAX_PEM_BYTES:
        raise ValueError(f"larger than {MAX_PEM_BYTES} bytes")
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError("not a PEM certificate (or one of its certificates does not parse)") from None
    if not certs:
        raise ValueError("holds no certificate")
    return certs


def key_problem(key_pem: bytes, cert_pem: bytes) -> str | None:
    """Why this private key cannot serve this certificate, or None. The message never contains key material."""
    if len(key_pem) > MAX_PEM_BYTES:
        return f"larger than {MAX_PEM_BYTES} bytes"
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        return "is encrypted (Envoy needs an unencrypted key)"
    except (ValueError, UnsupportedAlgorithm):
        return "not a PEM private key"
    try:
        leaf = certificates(cert_pem)[0]
    except ValueError:
        return None  # the certificate's own problem is reported on the certificate
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        return "does not match the certificate in tls.crt"
    return None


def describe(cert_pem: bytes) -> str:
    """The first certificate of a bundle as a log line shows it: subject, SANs, serial, expiry."""
    try:
        cert = certificates(cert_pem)[0]
    except ValueError as e:
        return f"(no certificate: {e})"
    return (
        f"subject {clip(cert.subject.rfc4514_string(), 120)}, SANs [{', '.join(clip(s, 120) for s in sans(cert))}], "
        f"serial {cert.serial_number:x}, expires {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    )


def sans(cert: x509.Certificate) -> list[str]:
    """The URI and DNS subject alternative names of a certificate."""
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*names.get_values_for_type(x509.UniformResourceIdentifier), *names.get_values_for_type(x509.DNSName)]

"""TLS credentials of the xDS port that follow their files: a renewed certificate (cert-manager rewrites the mounted
Secret) is used from the next connection on, without a restart and without touching open streams."""

from __future__ import annotations

import logging
import os

import grpc

from ..config import TlsMaterial, XdsTlsConfig

log = logging.getLogger(__name__)

_Stamp = tuple[tuple[int, int, int] | None, ...]


class ReloadingCredentials:
    """gRPC asks `fetch` before each new TLS handshake; it stats the files (cheap) and re-reads them only when one
    changed. A change that does not load (a half-written file, a key that does not match) is logged once and the
    material in use stays; the next change is tried again."""

    def __init__(self, tls: XdsTlsConfig) -> None:
        self._tls = tls
        self._paths = [p for p in (tls.cert, tls.key, tls.client_ca) if p is not None]
        self._stamp = self._stat()
        try:
            material = tls.load()
        except ValueError as e:  # at start a problem is fatal: there is nothing good to keep using
            raise OSError(f"xds.tls: {e}") from None
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(material), self.fetch, require_client_authentication=tls.client_ca is not None
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed and load, else None (keep the current one)."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            material = self._tls.load()
        except ValueError as e:
            log.error("xds.tls: the changed files do not load, still using the previous ones: %s", e)
            return None
        log.info("xds.tls: certificate files changed, new connections use them")
        return self._configuration(material)

    def _stat(self) -> _Stamp:
        """Inode, mtime and size of each file (following symlinks, so a Kubernetes `..data` swap counts)."""
        stamps = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    @staticmethod
    def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.cert)], root_certificates=material.client_ca
        )

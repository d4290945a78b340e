"""Certificates and keys handed to a library that wants file names, without writing them to any filesystem.

`ssl.SSLContext.load_cert_chain` reads only files, and kubernetes_asyncio builds its context from file names. Under
a read-only root filesystem with no writable /tmp, a kubeconfig's embedded `certificate-authority-data` and
`client-key-data` must still load: each becomes an anonymous in-memory file (memfd), named `/proc/self/fd/N` while the
context is built, then closed. The key never touches a disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def memory_files(*contents: bytes | None) -> Iterator[list[str | None]]:
    """A path for each content (None for None), readable inside the `with` block only."""
    fds: list[int] = []
    try:
        paths: list[str | None] = []
        for i, data in enumerate(contents):
            if data is None:
                paths.append(None)
                continue
            fd = os.memfd_create(f"kube-tls-{i}", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, data)
            paths.append(f"/proc/self/fd/{fd}")
        yield paths
    finally:
        for fd in fds:
            os.close(fd)

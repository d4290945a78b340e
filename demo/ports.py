"""The demo's ports: one block of consecutive loopback ports, pinned with `--ports BASE` or found free at start.

The block is laid out in the order of Ports' fields: BASE is the control plane's xDS port, BASE+1 its admin port,
and so on. A free block is looked for below the kernel's ephemeral range, where outgoing connections (and tests
that bind port 0) do not pick their ports, so a block found free stays free while the demo starts.
"""

from __future__ import annotations

import contextlib
import random
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path

# The hosts the demo's backends listen on (the example pods' IPs); every other port is on 127.0.0.1.
BACKEND_HOSTS = ("127.0.0.2", "127.0.0.3")


@dataclass(frozen=True)
class Ports:
    """The demo's ports, BASE first; each field's metadata says what listens there."""

    xds: int = field(metadata={"what": "control plane xDS"})
    admin: int = field(metadata={"what": "control plane admin"})
    envoy_admin: int = field(metadata={"what": "Envoy demo-node admin"})
    server_admin: int = field(metadata={"what": "Envoy demo-server admin"})
    egress: int = field(metadata={"what": "egress listener (demo-node)"})
    ingress: int = field(metadata={"what": "ingress listener (demo-node)"})
    mtls_egress: int = field(metadata={"what": "mTLS egress listener (demo-node)"})
    mtls_ingress: int = field(metadata={"what": "mTLS ingress listener (demo-server)"})
    app: int = field(metadata={"what": "the app behind the ingress listeners"})
    backends: int = field(metadata={"what": "backend-a and backend-b (on 127.0.0.2 and 127.0.0.3)"})

    @classmethod
    def at(cls, base: int) -> Ports:
        return cls(*range(base, base + COUNT))

    @property
    def base(self) -> int:
        return self.xds

    def roles(self) -> list[tuple[int, tuple[str, ...], str]]:
        """(port, the hosts it is needed on, what listens there) in block order."""
        return [(getattr(self, f.name), _hosts(f.name), f.metadata["what"]) for f in fields(self)]


COUNT = len(fields(Ports))
MAX_BASE = 65536 - COUNT


def _hosts(role: str) -> tuple[str, ...]:
    return BACKEND_HOSTS if role == "backends" else ("127.0.0.1",)


def layout() -> list[tuple[str, str]]:
    """The block's layout ("BASE+i", what listens there), for --help."""
    return [(f"BASE+{i}" if i else "BASE", f.metadata["what"]) for i, f in enumerate(fields(Ports))]


def is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (with SO_REUSEADDR, as Envoy and gRPC do: TIME_WAIT is no
    conflict; a listening socket, even on 0.0.0.0, is)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def taken(ports: Ports) -> list[tuple[int, str]]:
    """The ports of the block that something listens on: (port, what the demo wanted there)."""
    busy = []
    for port, hosts, what in ports.roles():
        if not all(is_free(h, port) for h in hosts):
            busy.append((port, what))
    return busy


def find_free(attempts: int = 200) -> Ports:
    """A block free on loopback, at a random base below the ephemeral range (or anywhere above 1024 if that range
    starts too low)."""
    low = _ephemeral_low()
    first, last = (20000, low - COUNT) if low - COUNT > 20000 else (1024, MAX_BASE)
    for _ in range(attempts):
        ports = Ports.at(random.randint(first, last))
        if not taken(ports):
            return ports
    raise OSError(f"no block of {COUNT} free ports found on loopback after {attempts} tries")


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768

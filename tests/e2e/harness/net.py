"""Loopback networking for tests: free ports, backends that answer with their name, and a line client.

The protocol is client-first and one line each way: the client sends a line, the backend answers with its own name
and closes. A refused, reset or closed connection is `None` to the client, so tests can say `assert reply is None`.
A backend also answers an HTTP health check (`GET /healthz`) with its `health_status`, recording the Host header.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from dataclasses import dataclass, field


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bind port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Backend:
    name: str
    host: str
    port: int
    server: asyncio.Server
    hits: int = 0
    lines: list[str] = field(default_factory=list)
    health_status: int = 200
    health_hosts: list[str] = field(default_factory=list)

    async def close(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)


async def start_backend(name: str, host: str = "127.0.0.1", port: int = 0) -> Backend:
    """A TCP server on host:port that reads one line and answers `name`."""
    backend: Backend

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.startswith(b"GET /healthz "):
                await _answer_health_check(backend, reader, writer)
                return
            backend.hits += 1
            backend.lines.append(line.decode(errors="replace").strip())
            writer.write(name.encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    backend = Backend(name, host, bound, server)
    return backend


async def _answer_health_check(backend: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (header := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
        key, _, value = header.decode(errors="replace").partition(":")
        if key.lower() == "host":
            backend.health_hosts.append(value.strip())
    status = backend.health_status
    writer.write(f"HTTP/1.1 {status} Status\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
    await writer.drain()


@dataclass
class BackendGroup:
    """Backends on several loopback IPs sharing one port: the pods of one cluster, reached on the targetport."""

    port: int
    backends: dict[str, Backend]  # by name

    def __getitem__(self, name: str) -> Backend:
        return self.backends[name]

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()


async def start_backends(by_name: dict[str, str], attempts: int = 20) -> BackendGroup:
    """Start `{name: ip}` backends on one port that is free on every IP."""
    for _ in range(attempts):
        port = free_port(next(iter(by_name.values())))
        started: dict[str, Backend] = {}
        try:
            for name, ip in by_name.items():
                started[name] = await start_backend(name, ip, port)
        except OSError:
            for backend in started.values():
                await backend.close()
            continue
        return BackendGroup(port, started)
    raise RuntimeError(f"no port free on all of {sorted(by_name.values())}")


async def talk(
    port: int, host: str = "127.0.0.1", source: str | None = None, line: str = "hello", timeout: float = 3.0
) -> str | None:
    """Connect (from `source` if given), send a line, return the reply; None if refused, reset or closed unanswered.

    A connection that neither answers nor closes within `timeout` raises TimeoutError: a hang is a bug of its own,
    not a refusal.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(source, 0) if source else None
            )
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                reply = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return None
    except TimeoutError:
        where = f"{host}:{port} (from {source or 'any address'})"
        raise TimeoutError(f"{where} neither answered nor closed in {timeout}s") from None
    return reply.decode(errors="replace").strip() or None


async def talk_many(port: int, count: int = 20, **kwargs: object) -> Counter[str | None]:
    """`count` connections one after another; how many replies came from each backend (None: refused)."""
    replies: Counter[str | None] = Counter()
    for _ in range(count):
        replies[await talk(port, **kwargs)] += 1  # type: ignore[arg-type]
    return replies

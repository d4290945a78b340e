"""The demo's moving parts: processes, backends, and the traffic it shows."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import ssl
import sys
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

from envoy_control_plane import bootstrap

from . import mtls

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.yaml"
NODE = "demo-node"
XDS_PORT, CP_ADMIN_PORT, ENVOY_ADMIN_PORT = 18000, 18001, 9901
EGRESS = ("127.0.0.1", 9090)
INGRESS = ("127.0.0.1", 10000)
BACKENDS = {"backend-a": ("127.0.0.2", 8080), "backend-b": ("127.0.0.3", 8080), "app": ("127.0.0.1", 10001)}
ALLOWED_CLIENT, OTHER_CLIENT = "127.0.0.4", "127.0.0.9"


async def run(once: bool) -> int:
    processes: list[asyncio.subprocess.Process] = []
    servers: list[asyncio.Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="envoy-cp-demo-"))
    try:
        for name, (host, port) in BACKENDS.items():
            servers.append(await asyncio.start_server(_greeter(name), host, port))
        say(f"backends: {', '.join(f'{n} on {h}:{p}' for n, (h, p) in BACKENDS.items())}")
        certs = mtls.Certificates()
        mtls_manifests = mtls.write_manifests(workdir / "mtls", certs, BACKENDS["app"][1], NODE)
        say(f"certificates made for the mTLS hop (a CA, demo-node, demo-server): Secrets in {mtls_manifests}")

        manifests = CONFIG.parent / "manifests"
        processes.append(await _spawn(workdir / "control-plane.log", sys.executable, "-m", "envoy_control_plane",
                                      "run", "--config", str(CONFIG), "--manifests", str(manifests),
                                      "--manifests", str(mtls_manifests.parent)))
        await _wait_http(f"http://127.0.0.1:{CP_ADMIN_PORT}/readyz", "control plane")
        say(f"control plane: xDS on 127.0.0.1:{XDS_PORT}, admin on http://127.0.0.1:{CP_ADMIN_PORT} "
            f"(manifests from {manifests} and {mtls_manifests.parent})")

        envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
        for node, admin_port in ((NODE, ENVOY_ADMIN_PORT), (mtls.SERVER_NODE, mtls.SERVER_ADMIN_PORT)):
            boot = workdir / f"envoy-{node}.yaml"
            boot.write_text(yaml.safe_dump(bootstrap.render(node, "127.0.0.1", XDS_PORT, admin_port)))
            processes.append(await _spawn(workdir / f"envoy-{node}.log", envoy, "-c", str(boot),
                                          "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning"))
        for admin_port in (ENVOY_ADMIN_PORT, mtls.SERVER_ADMIN_PORT):
            await _wait_http(f"http://127.0.0.1:{admin_port}/ready", "Envoy", expect=b"LIVE")
        for address in (EGRESS, INGRESS, mtls.EGRESS, mtls.INGRESS):
            await _wait_listening(*address)
        say(f"Envoys: node {NODE} (admin on http://127.0.0.1:{ENVOY_ADMIN_PORT}), node {mtls.SERVER_NODE} "
            f"(admin on http://127.0.0.1:{mtls.SERVER_ADMIN_PORT})")

        await show_traffic()
        await mtls.show(certs, exchange, say, ENVOY_ADMIN_PORT)
        say(f"logs in {workdir}")
        if once:
            return 0
        say("try it by hand, then Ctrl-C to stop everything:")
        print(f"    nc {EGRESS[0]} {EGRESS[1]}                 # egress: answered by backend-a or backend-b")
        print(f"    nc -s {ALLOWED_CLIENT} {INGRESS[0]} {INGRESS[1]}     # ingress from a pod of 'clients': admitted")
        print(f"    nc -s {OTHER_CLIENT} {INGRESS[0]} {INGRESS[1]}     # ingress from elsewhere: refused")
        print(f"    nc {mtls.EGRESS[0]} {mtls.EGRESS[1]}                 # mTLS hop to {mtls.SERVER_NODE}: answered by app")
        print(f"    curl -s http://127.0.0.1:{mtls.SERVER_ADMIN_PORT}/certs   # the certificate {mtls.SERVER_NODE} presents")
        print(f"    curl -s http://127.0.0.1:{CP_ADMIN_PORT}/debug/snapshot/{NODE}")
        print(f"    curl -s http://127.0.0.1:{ENVOY_ADMIN_PORT}/config_dump")
        print(f"    edit {CONFIG.parent / 'manifests'}/*.yaml and watch Envoy follow")
        await _until_signal()
        return 0
    finally:
        for process in reversed(processes):
            await _stop(process)
        for server in servers:
            server.close()


async def show_traffic() -> None:
    answers = Counter([await exchange(EGRESS) for _ in range(10)])
    say(f"egress {EGRESS[0]}:{EGRESS[1]} -> pods of 'backends', 10 connections: "
        + ", ".join(f"{name} x{count}" for name, count in sorted(answers.items())))
    for source, expected in ((ALLOWED_CLIENT, "admitted"), (OTHER_CLIENT, "refused")):
        answer = await exchange(INGRESS, source)
        verdict = f"admitted, answered by {answer}" if answer else "refused by RBAC"
        say(f"ingress {INGRESS[0]}:{INGRESS[1]} from {source} ({'a pod of' if expected == 'admitted' else 'not in'}"
            f" 'clients'): {verdict}")


async def exchange(
    address: tuple[str, int], source: str | None = None, ssl_context: ssl.SSLContext | None = None
) -> str | None:
    """Connect (over TLS with `ssl_context`), say hello, return who answered; None when the connection is refused,
    the handshake fails (ssl.SSLError is an OSError) or it is closed unanswered."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*address, local_addr=(source, 0) if source else None, ssl=ssl_context), 2
        )
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b"hello\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 2)
        return line.decode().strip() or None
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


def _greeter(name: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(reader.readline(), 2)
            writer.write(f"{name}\n".encode())
            await writer.drain()
        writer.close()

    return handle


async def _spawn(log: Path, *argv: str) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=asyncio.subprocess.STDOUT,
                                                    start_new_session=True, cwd=ROOT)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _wait_http(url: str, what: str, expect: bytes = b"", timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=1).read())
            if expect in body:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"demo: {what} did not become ready at {url} within {timeout:.0f}s")


async def _wait_listening(host: str, port: int, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"demo: nothing listens on {host}:{port} after {timeout:.0f}s")


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


"""The demo's moving parts: backends, the control plane and two Envoys on the demo's ports, and the traffic it shows.

Any step that fails (a process exits or is not ready in time, a port is taken, the traffic is not what it should be)
raises Failed: run() prints the reason and the logs' tails, stops everything it started and returns 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import ssl
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from envoy_control_plane import bootstrap

from . import manifests, mtls
from .ports import BACKEND_HOSTS, COUNT, Ports, taken
from .processes import CONTROL_PLANE, Failed, Processes

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.yaml"
NODE = "demo-node"
ALLOWED_CLIENT, OTHER_CLIENT = "127.0.0.4", "127.0.0.9"


async def run(ports: Ports, pinned: bool, once: bool) -> int:
    """Run the demo on `ports` (`pinned`: the user chose them with --ports) until Ctrl-C or SIGTERM (at once with
    `once`); 0 when all went as shown, else 1. Stops what it started whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix="envoy-cp-demo-"))
    processes = Processes(cwd=ROOT)
    servers: list[asyncio.Server] = []
    _cancel_on_signals(asyncio.current_task())
    say(f"ports {ports.base}-{ports.base + COUNT - 1} on loopback ("
        + ("--ports" if pinned else "a free block found at start; --ports BASE pins them") + ")")
    try:
        await _demo(ports, once, workdir, processes, servers)
        return 0
    except asyncio.CancelledError:
        return 0
    except Failed as failure:
        processes.report(failure, workdir)
        await processes.stop_all()
        _close(servers)
        if pinned and (busy := taken(ports)):
            print("demo: in use by another process: " + ", ".join(f"{port} ({what})" for port, what in busy)
                  + "; pick another --ports BASE, or leave --ports out to use free ports", file=sys.stderr)
        return 1
    finally:
        await processes.stop_all()
        _close(servers)


def _cancel_on_signals(task: asyncio.Task | None) -> None:
    """Ctrl-C or SIGTERM, at any step, cancels the demo (which then stops everything); a second one is ignored, so
    it cannot interrupt the stopping."""
    loop = asyncio.get_running_loop()
    signalled = False

    def cancel() -> None:
        nonlocal signalled
        if task is not None and not signalled:
            signalled = True
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, cancel)


async def _demo(ports: Ports, once: bool, workdir: Path, processes: Processes, servers: list[asyncio.Server]) -> None:
    backends = {name: (host, ports.backends) for name, host in zip(("backend-a", "backend-b"), BACKEND_HOSTS)}
    for name, (host, port) in {**backends, "app": ("127.0.0.1", ports.app)}.items():
        try:
            servers.append(await asyncio.start_server(_greeter(name), host, port))
        except OSError as e:
            raise Failed(f"{name} cannot listen on {host}:{port}: {e.strerror}") from None
    say(f"backends: {', '.join(f'{n} on {h}:{p}' for n, (h, p) in backends.items())}, app on 127.0.0.1:{ports.app}")

    try:
        examples = manifests.render(workdir / "manifests", ports)
    except (manifests.MissingListener, OSError, yaml.YAMLError) as e:
        raise Failed(f"cannot copy {manifests.EXAMPLES} with the demo's ports: {e}") from None
    certs = mtls.Certificates()
    mtls_manifests = mtls.write_manifests(workdir / "mtls", certs, ports, NODE)
    say(f"certificates made for the mTLS hop (a CA, demo-node, demo-server): Secrets in {mtls_manifests}")

    plane = await processes.spawn(
        CONTROL_PLANE, workdir / "control-plane.log", sys.executable, "-m", "envoy_control_plane", "run",
        "--config", str(CONFIG), "--manifests", str(examples), "--manifests", str(mtls_manifests.parent),
        "--xds-port", str(ports.xds), "--admin-port", str(ports.admin),
    )  # fmt: skip
    await processes.wait_http(f"http://127.0.0.1:{ports.admin}/readyz", plane)
    say(f"control plane: xDS on 127.0.0.1:{ports.xds}, admin on http://127.0.0.1:{ports.admin} "
        f"(manifests: {examples}, a copy of {manifests.EXAMPLES} with the demo's ports, and {mtls_manifests.parent})")

    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
    # Each node: its admin port and the listeners ({port: name}) it must come to listen on.
    nodes = {
        NODE: (ports.envoy_admin, {ports.egress: "egress", ports.ingress: "ingress", ports.mtls_egress: "mTLS egress"}),
        mtls.SERVER_NODE: (ports.server_admin, {ports.mtls_ingress: "mTLS ingress"}),
    }
    envoys = {}
    for node, (admin_port, _) in nodes.items():
        boot = workdir / f"envoy-{node}.yaml"
        boot.write_text(yaml.safe_dump(bootstrap.render(node, "127.0.0.1", ports.xds, admin_port)))
        envoys[node] = await processes.spawn(f"Envoy {node}", workdir / f"envoy-{node}.log", envoy, "-c", str(boot),
                                             "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning")
    for node, (admin_port, listeners) in nodes.items():
        await processes.wait_http(f"http://127.0.0.1:{admin_port}/ready", envoys[node], expect=b"LIVE")
        await processes.wait_listeners(admin_port, listeners, envoys[node])
    say(f"Envoys: node {NODE} (admin on http://127.0.0.1:{ports.envoy_admin}), node {mtls.SERVER_NODE} "
        f"(admin on http://127.0.0.1:{ports.server_admin})")

    await show_traffic(ports)
    await mtls.show(certs, ports, exchange, say)
    say(f"logs in {workdir}")
    if once:
        return
    say("try it by hand, then Ctrl-C to stop everything:")
    for command, comment in (
        (f"nc 127.0.0.1 {ports.egress}", "egress: answered by backend-a or backend-b"),
        (f"nc -s {ALLOWED_CLIENT} 127.0.0.1 {ports.ingress}", "ingress from a pod of 'clients': admitted"),
        (f"nc -s {OTHER_CLIENT} 127.0.0.1 {ports.ingress}", "ingress from elsewhere: refused"),
        (f"nc 127.0.0.1 {ports.mtls_egress}", f"mTLS hop to {mtls.SERVER_NODE}: answered by app"),
        (f"curl -s http://127.0.0.1:{ports.server_admin}/certs", f"the certificate {mtls.SERVER_NODE} presents"),
        (f"curl -s http://127.0.0.1:{ports.admin}/debug/snapshot/{NODE}", f"what the control plane serves {NODE}"),
        (f"curl -s http://127.0.0.1:{ports.envoy_admin}/config_dump", f"what {NODE} runs"),
        (f"edit {examples}/*.yaml", "and watch Envoy follow"),
    ):
        print(f"    {command:<56} # {comment}")
    await processes.wait_while_alive()


async def show_traffic(ports: Ports) -> None:
    egress = ("127.0.0.1", ports.egress)
    answers = Counter([await exchange(egress) for _ in range(10)])
    say(f"egress {egress[0]}:{egress[1]} -> pods of 'backends', 10 connections: "
        + ", ".join(f"{name or 'no answer'} x{count}" for name, count in sorted(answers.items(), key=str)))
    if set(answers) != {"backend-a", "backend-b"}:
        raise Failed(f"egress {egress[0]}:{egress[1]}: expected answers from backend-a and backend-b only, "
                     f"got {dict(answers)}")
    ingress = ("127.0.0.1", ports.ingress)
    for source, allowed in ((ALLOWED_CLIENT, True), (OTHER_CLIENT, False)):
        answer = await exchange(ingress, source)
        verdict = f"admitted, answered by {answer}" if answer else "refused by RBAC"
        say(f"ingress {ingress[0]}:{ingress[1]} from {source} ({'a pod of' if allowed else 'not in'} 'clients'): "
            + verdict)
        if (answer == "app") != allowed:
            raise Failed(f"ingress {ingress[0]}:{ingress[1]} from {source}: expected "
                         f"{'an answer from app' if allowed else 'a refusal'}, got: {verdict}")


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


def _close(servers: list[asyncio.Server]) -> None:
    for server in servers:
        server.close()


def say(message: str) -> None:
    print(f"==> {message}", flush=True)

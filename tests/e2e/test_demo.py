"""`make demo` runs `python -m demo`: egress traffic over both backends, RBAC at work and an mTLS hop, on free ports
(or the block `--ports BASE` pins); a failure says why, shows the logs' tails, exits 1 and leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.ports import Ports, find_free

ROOT = Path(__file__).resolve().parents[2]
# The ports the demo used before it looked for free ones (and the examples' listener ports).
OLD_PORTS = [("127.0.0.1", p) for p in (18000, 18001, 9901, 9902, 9090, 10000, 9443, 10443, 10001)] + [
    ("127.0.0.2", 8080), ("127.0.0.3", 8080)
]  # fmt: skip


@contextlib.contextmanager
def holding(addresses: list[tuple[str, int]]) -> Iterator[None]:
    """Listen on each address that is free (one already taken is taken anyway) for the duration."""
    with contextlib.ExitStack() as stack:
        for address in addresses:
            s = stack.enter_context(socket.socket())
            with contextlib.suppress(OSError):
                s.bind(address)
                s.listen()
        yield


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the demo with its work directory (logs, configs, manifests) under tmp_path: every process it starts
    names that directory in its command line."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "demo", "--once", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=80)  # fmt: skip


def processes_naming(path: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(path) in argv:
                found.append(argv)
    return found


@pytest.mark.timeout(90)
def test_demo_shows_traffic_and_rbac_on_free_ports_while_the_old_ones_are_taken(tmp_path):
    with holding(OLD_PORTS):
        result = demo(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    base = int(re.search(r"==> ports (\d+)-\d+ on loopback \(a free block", out)[1])
    ports = Ports.at(base)
    assert f"control plane: xDS on 127.0.0.1:{ports.xds}, admin on http://127.0.0.1:{ports.admin}" in out
    assert f"node demo-node (admin on http://127.0.0.1:{ports.envoy_admin})" in out
    assert f"egress 127.0.0.1:{ports.egress} -> pods of 'backends'" in out
    assert "backend-a x" in out and "backend-b x" in out
    assert f"ingress 127.0.0.1:{ports.ingress} from 127.0.0.4 (a pod of 'clients'): admitted, answered by app" in out
    assert f"ingress 127.0.0.1:{ports.ingress} from 127.0.0.9 (not in 'clients'): refused by RBAC" in out
    # The mTLS hop between the two Envoys, the certificates they present, and refused clients.
    assert (f"mTLS egress 127.0.0.1:{ports.mtls_egress} (demo-node) -> ingress 127.0.0.1:{ports.mtls_ingress} "
            "(demo-server): answered by app") in out  # fmt: skip
    assert "demo-node serial" in out and "SANs [spiffe://demo.local/ns/default/sa/client]" in out
    assert "from a client with a SAN outside rbac.sans: refused" in out
    assert "from a client without a certificate: refused" in out
    assert not processes_naming(tmp_path)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "offset, reason, plane_says, culprit",
    [
        (0, "the control plane exited (status 2): envoy-control-plane: error: xDS port 127.0.0.1:{port} is already in "
            "use",
         "xDS port 127.0.0.1:{port} is already in use", None),
        (4, "the Envoy demo-node rejected listener 'egress_backends': cannot bind '127.0.0.1:{port}'",
         "node demo-node rejected LDS", "Envoy demo-node"),
    ],
    ids=["xds-port", "egress-listener-port"],
)  # fmt: skip
def test_demo_on_a_taken_port_fails_with_the_log_tails_and_stops_everything(tmp_path, offset, reason, plane_says,
                                                                           culprit):
    ports = find_free()
    taken = ports.base + offset
    with holding([("127.0.0.1", taken)]):
        result = demo(tmp_path, "--ports", str(ports.base))
        left = processes_naming(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr
    assert err.startswith("demo: FAILED: " + reason.format(port=taken)), err
    assert re.search(r"^--- control plane: last \d+ lines of .*control-plane\.log ---$", err, re.M)
    assert plane_says.format(port=taken) in err.split("--- control plane:")[1]
    if culprit:
        assert f"--- {culprit}: last " in err and "Address already in use" in err.split(f"--- {culprit}:")[1]
    assert f"demo: in use by another process: {taken} (" in err
    assert not left

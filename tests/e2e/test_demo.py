"""`make demo` runs `python -m demo`: check it shows egress traffic over both backends, RBAC at work and an mTLS hop."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_demo_shows_traffic_and_rbac():
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--once"], cwd=ROOT, capture_output=True, text=True, timeout=80
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "backend-a x" in out and "backend-b x" in out
    assert "from 127.0.0.4 (a pod of 'clients'): admitted, answered by app" in out
    assert "from 127.0.0.9 (not in 'clients'): refused by RBAC" in out
    # The mTLS hop between the two Envoys, the certificates they present, and refused clients.
    assert "mTLS egress 127.0.0.1:9443 (demo-node) -> ingress 127.0.0.1:10443 (demo-server): answered by app" in out
    assert "demo-node serial" in out and "SANs [spiffe://demo.local/ns/default/sa/client]" in out
    assert "from a client with a SAN outside rbac.sans: refused" in out
    assert "from a client without a certificate: refused" in out

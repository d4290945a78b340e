"""The real kubectl against the fake API server: plain `kubectl apply -f manifests/crds/` (validation on, as by
default), the examples, a custom resource the CRD schema rejects, and `-k`. Skipped where kubectl is not installed."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from .server import FakeKube

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


async def kubectl(kubeconfig: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode()


async def test_kubectl_applies_the_crds_and_the_examples_with_validation(tmp_path: Path) -> None:
    async with FakeKube() as kube:
        config = kube.write_kubeconfig(tmp_path / "kubeconfig")
        code, out = await kubectl(config, "apply", "-f", str(MANIFESTS / "crds"))
        assert code == 0, out
        assert "egresslisteners.egresslistener.envoy.uw.systems created" in out
        code, out = await kubectl(config, "apply", "-f", str(MANIFESTS / "crds"))  # again: a patch, unchanged
        assert code == 0 and out.count("unchanged") == 2 and "warning" not in out, out
        code, out = await kubectl(config, "apply", "-k", str(MANIFESTS / "crds"))
        assert code == 0 and out.count("unchanged") == 2, out
        code, out = await kubectl(config, "get", "crds", "-o", "name")
        assert code == 0 and out.split() == [
            "customresourcedefinition.apiextensions.k8s.io/egresslisteners.egresslistener.envoy.uw.systems",
            "customresourcedefinition.apiextensions.k8s.io/ingresslisteners.ingresslistener.envoy.uw.systems",
        ], out

        code, out = await kubectl(config, "apply", "-f", str(MANIFESTS / "examples"))
        assert code == 0 and out.count("created") == 3, out
        assert kube.get("EgressListener", "default", "test-egress")["spec"]["listenport"] == 9090

        bad = (MANIFESTS / "examples" / "egresslistener.yaml").read_text().replace("listenport: 9090", "listenport: 0")
        (tmp_path / "bad.yaml").write_text(bad)
        code, out = await kubectl(config, "apply", "-f", str(tmp_path / "bad.yaml"))
        assert code != 0 and "spec.listenport: Invalid value: 0" in out, out
        unknown = bad.replace("listenport: 0", "listenport: 9090\n  colour: blue")
        (tmp_path / "unknown.yaml").write_text(unknown)
        code, out = await kubectl(config, "apply", "-f", str(tmp_path / "unknown.yaml"))
        assert code != 0 and 'unknown field "spec.colour"' in out, out
        assert kube.get("EgressListener", "default", "test-egress")["spec"]["listenport"] == 9090

"""The real kubectl against the fake's status subresource and Events: `kubectl patch --subresource=status` changes
only the status, and `kubectl describe` shows the Events the status writer creates. Skipped without kubectl."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from envoy_control_plane.model import ObjectRef
from envoy_control_plane.status.events import event_body

from .server import FakeKube
from .test_kubectl import MANIFESTS, kubectl

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]


async def test_kubectl_patches_status_and_describes_events(tmp_path: Path) -> None:
    async with FakeKube() as kube:
        config = kube.write_kubeconfig(tmp_path / "kubeconfig")
        for folder in ("crds", "examples"):
            code, out = await kubectl(config, "apply", "-f", str(MANIFESTS / folder))
            assert code == 0, out
        status = {"endpoints": 3, "conditions": [{
            "type": "Accepted", "status": "False", "reason": "PortConflict", "message": "taken",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1,
        }]}
        patch = json.dumps({"status": status, "spec": {"listenport": 1}})
        code, out = await kubectl(config, "patch", "egresslistener", "test-egress", "--subresource=status",
                                  "--type=merge", "-p", patch)
        assert code == 0, out
        stored = kube.get("EgressListener", "default", "test-egress")
        assert stored["status"] == status and stored["spec"]["listenport"] == 9090
        assert stored["metadata"]["generation"] == 1

        ref = ObjectRef("EgressListener", "default", "test-egress")
        event = event_body(("aws", ref), stored["metadata"]["uid"], "PortConflict", "port 9090 is taken", "cp-1")
        kube.upsert(event)
        code, out = await kubectl(config, "describe", "egresslistener", "test-egress")
        assert code == 0, out
        assert "PortConflict" in out and "port 9090 is taken" in out and "envoy-control-plane" in out, out

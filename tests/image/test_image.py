"""The container image: `make image` builds it (buildah, a Debian base made by mmdebstrap: no registry is reached),
and the control plane runs inside it as the non-root user, on a read-only root filesystem, as the Deployment runs it.

Needs buildah and mmdebstrap (`make image-tools` installs them on Debian, as root). Without them the test is skipped
on a developer's machine, and fails in CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness.procs import spawn, stop, tail

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/k8s-envoy-control-plane:test"

pytestmark = pytest.mark.timeout(900)


def test_the_deployment_runs_the_image_make_image_builds() -> None:
    import tomllib

    import yaml

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    deployment = yaml.safe_load((ROOT / "manifests" / "deploy" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"k8s-envoy-control-plane:{version}"
    assert container["securityContext"]["runAsUser"] == 65532  # the Containerfile's USER
    assert f"k8s-envoy-control-plane:{version}" in (ROOT / "README.md").read_text()


def _tools_or_skip() -> None:
    missing = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must build the image, but {', '.join(missing)} is missing (make image-tools)")
        pytest.skip(f"{', '.join(missing)} not installed (make image-tools)")
    if os.geteuid() != 0:
        pytest.skip("building and mounting the image needs root here")


def _run(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A working container of the freshly built image, with examples/ copied to /examples."""
    _tools_or_skip()
    subprocess.run(
        [str(ROOT / "scripts" / "image.sh"), "--debian-base"],
        env={**os.environ, "IMAGE": IMAGE}, check=True, timeout=840,
    )
    name = _run("buildah", "from", "--quiet", IMAGE).strip()
    try:
        _run("buildah", "copy", "--quiet", name, str(ROOT / "examples"), "/examples")
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=60)


def _in_image(container: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["buildah", "run", "--isolation", "chroot", container, "--", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_version_and_user(container: str) -> None:
    version = _in_image(container, "envoy-control-plane", "--version")
    assert version.returncode == 0, version.stderr
    expected = _run(str(ROOT / ".venv" / "bin" / "envoy-control-plane"), "--version")
    assert version.stdout == expected  # the image runs the version of this tree
    assert _in_image(container, "id", "-u").stdout.strip() == "65532"


def test_validate_inside_the_image(container: str) -> None:
    good = _in_image(container, "envoy-control-plane", "validate", "/examples/manifests")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "0 problems" in good.stderr
    bad = _in_image(container, "envoy-control-plane", "validate", "/examples/config.yaml", "/no/such/file")
    assert bad.returncode == 1
    assert "/no/such/file" in bad.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _read_only_root(container: str) -> Iterator[Path]:
    """The container's root filesystem, bind-mounted read-only."""
    rootfs = Path(_run("buildah", "mount", container).strip())
    target = Path(_run("mktemp", "-d").strip())
    _run("mount", "--bind", str(rootfs), str(target))
    try:
        _run("mount", "-o", "remount,bind,ro", str(target))
        yield target
    finally:
        subprocess.run(["umount", str(target)], timeout=30)
        target.rmdir()
        subprocess.run(["buildah", "umount", container], capture_output=True, timeout=30)


def test_serves_on_a_read_only_root_as_non_root(container: str, tmp_path: Path) -> None:
    xds, admin = _free_port(), _free_port()
    log = tmp_path / "plane.log"
    with _read_only_root(container) as root:
        proc = spawn(
            ["chroot", "--userspec=65532:65532", str(root), "/opt/envoy-control-plane/bin/envoy-control-plane",
             "run", "--manifests", "/examples/manifests", "--xds-port", str(xds), "--admin-port", str(admin)],
            log,
        )
        try:
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as response:
                        status = response.status
                        break
                time.sleep(0.2)
            assert status == 200, tail(log)
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/debug/snapshot/demo-node", timeout=5) as response:
                assert b"ingress_" in response.read()
        finally:
            stop(proc)
        assert proc.returncode == 0, tail(log)  # SIGTERM: a clean stop

"""Fixtures that start what the end-to-end tests need, and stop all of it on teardown, whether the test passed or not.

All are factories, so a test decides what to start and when:
- `manifests`: the watched directory (ManifestDir), written before or after the control plane starts
- `start_plane(**config)`: the control plane in this process (ports chosen by the kernel; keyword arguments override
  config keys), returning an InProcessPlane
- `start_plane_process(**config)`: the control plane as `envoy-control-plane run` (fixed ports, can be killed and
  restarted; keyword arguments add config keys)
- `start_envoy(node_id, xds_port, delta=False, tls=None)`: a real Envoy (SotW or delta xDS; mTLS to the control plane
  with `tls`), returned once it is LIVE (has its initial config)
- `backends({name: ip})`: TCP servers on one port across loopback IPs, each answering its name
- (autouse) the control plane's log records in `caplog`, at E2E_LOG_LEVEL (default INFO); E2E_ENVOY_LOG sets
  Envoy's log level (default warning). Process logs are printed on teardown when a test failed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from envoy_control_plane.app import ControlPlane
from envoy_control_plane.bootstrap import XdsClientTls

from .kube_fixtures import fake_clusters, start_kube_plane  # noqa: F401  (fixtures for the Kubernetes tests)
from .harness import BackendGroup, Envoy, InProcessPlane, ManifestDir, PlaneProcess, loopback_config, start_backends


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item, so fixtures can print process logs when a test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"report_{w}", None), "failed", False) for w in ("setup", "call"))


@pytest.fixture
def manifests(tmp_path: Path) -> ManifestDir:
    return ManifestDir(tmp_path / "manifests")


@pytest.fixture
async def start_plane(manifests: ManifestDir) -> AsyncIterator[Callable[..., Awaitable[InProcessPlane]]]:
    planes: list[ControlPlane] = []

    async def start(**overrides: object) -> InProcessPlane:
        control_plane = ControlPlane(loopback_config(manifests=[str(manifests.path)], **overrides))
        planes.append(control_plane)
        await control_plane.start()  # edits from here on are seen: the watcher reloads once it is in place
        return InProcessPlane(control_plane)

    try:
        yield start
    finally:
        for control_plane in reversed(planes):
            with contextlib.suppress(Exception):
                await control_plane.stop()


@pytest.fixture
async def start_plane_process(
    tmp_path: Path, manifests: ManifestDir, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[PlaneProcess]]]:
    processes: list[PlaneProcess] = []

    async def start(name: str = "plane", **config: Any) -> PlaneProcess:
        process = PlaneProcess(tmp_path, manifests.path, name, **config)
        processes.append(process)
        return await process.start()

    try:
        yield start
    finally:
        for process in processes:
            process.stop()
            if _failed(request):
                print(f"---- control plane log ({process.log_path})\n{process.log_tail()}")


@pytest.fixture
async def start_envoy(
    tmp_path: Path, request: pytest.FixtureRequest, start_plane: object, start_plane_process: object
) -> AsyncIterator[Callable[..., Awaitable[Envoy]]]:
    """Depends on both control plane factories only so that Envoys stop before any control plane does (teardown
    runs in reverse setup order): a control plane stopping under connected Envoys waits out its gRPC grace period."""
    envoys: list[Envoy] = []

    async def start(
        node_id: str,
        xds_port: int,
        live: bool = True,
        delta: bool = False,
        tls: XdsClientTls | None = None,
        replica_ports: Sequence[int] = (),
    ) -> Envoy:
        envoy = Envoy(node_id, tmp_path, xds_port, delta=delta, tls=tls, replica_ports=replica_ports)
        envoys.append(envoy)
        await envoy.start()
        if live:
            await envoy.wait_live()
        return envoy

    try:
        yield start
    finally:
        for envoy in envoys:
            envoy.stop()
            if _failed(request):
                print(f"---- envoy {envoy.node_id} log ({envoy.log_path})\n{envoy.log_tail()}")


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[dict[str, str]], Awaitable[BackendGroup]]]:
    groups: list[BackendGroup] = []

    async def start(by_name: dict[str, str]) -> BackendGroup:
        group = await start_backends(by_name)
        groups.append(group)
        return group

    try:
        yield start
    finally:
        for group in groups:
            await group.close()


@pytest.fixture(autouse=True)
def _plane_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the control plane's logs (shown for failed tests; `caplog` lets tests check error lines).

    INFO by default; E2E_LOG_LEVEL=DEBUG shows every ACK, NACK and stale nonce.
    """
    caplog.set_level(os.environ.get("E2E_LOG_LEVEL", "INFO").upper(), logger="envoy_control_plane")

"""Kubernetes credentials against the fake API server: exec plugins whose tokens expire, revoked tokens, token files,
TLS material kept in memory (no writable temp directory), and kubeconfigs that do not load."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from envoy_control_plane.config import ClusterConfig
from envoy_control_plane.sources.kubernetes import KubernetesSource, WatchSettings
from envoy_control_plane.state import World
from tests.fakekube import FakeKube
from tests.fakekube.oidc_issuer import FakeIssuer

from tests.integration.kube_helpers import eventually, pod

pytestmark = pytest.mark.timeout(30)

FAST = WatchSettings(watch_timeout=30, list_timeout=5, backoff_initial=0.01, backoff_max=0.1, absent_retry=0.05)
PLUGIN = Path(__file__).resolve().parents[1] / "fakekube" / "credential_plugin.py"




def exec_user(lifetime: float, runs: Path, kind: str = "token") -> dict:
    """A kubeconfig user whose token (or client certificate) comes from the test credential plugin, living
    `lifetime` seconds."""
    return {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
        "args": ["-I", str(PLUGIN), kind, str(lifetime), str(runs)], "provideClusterInfo": True, "interactiveMode": "Never",
    }}




@contextlib.asynccontextmanager
async def running(
    kubeconfig: Path, settings: WatchSettings = FAST
) -> AsyncIterator[tuple[KubernetesSource, World]]:
    world = World()
    source = KubernetesSource(ClusterConfig(name="east", kubeconfig=kubeconfig), world, settings, rng=random.Random(3))
    task = asyncio.create_task(source.run())
    try:
        yield source, world
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def relists(source: KubernetesSource) -> dict[str, int]:
    return {kind: r["relists"] for kind, r in source.status.detail["kinds"].items()}  # type: ignore[union-attr]


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.05) as kube:
        yield kube


async def test_expiring_exec_tokens_are_renewed_and_watches_resume(kube: FakeKube, tmp_path: Path) -> None:
    kube.auth.require()  # only the token the plugin got last, until it expires
    runs = tmp_path / "runs"
    kubeconfig = kube.write_kubeconfig(tmp_path / "kc", user=exec_user(1, runs))
    async with running(kubeconfig) as (source, world):
        await eventually(lambda: source.status.synced and source.status.up, "the first list")
        for i in range(3):  # several token lifetimes: each new watch needs a token renewed by the plugin
            issued = kube.auth.issued
            await eventually(lambda: kube.auth.issued > issued or not kube.auth.accepts_any(), "the token expires")
            kube.drop_watches()
            kube.upsert(pod(f"p{i}", f"10.0.0.{i + 1}"))
            await eventually(lambda: f"10.0.0.{i + 1}" in world.endpoints("backend"), f"pod p{i} after renewal")
        assert len(runs.read_text().split()) >= 3
        assert relists(source) == {"Pod": 1, "IngressListener": 1, "EgressListener": 1, "Secret": 1}  # resumed, never relisted
        await eventually(lambda: source.status.up and source.status.last_error is None, "healthy again")


async def test_expiring_exec_client_certificates_are_renewed_and_the_client_reconnects(tmp_path: Path) -> None:
    async with FakeKube(bookmark_interval=0.05, tls=True) as kube:
        kube.auth.require()  # no token: only the client certificate the plugin got last, until it expires
        runs = tmp_path / "runs"
        kubeconfig = kube.write_kubeconfig(tmp_path / "kc", user=exec_user(1, runs, kind="cert"))
        async with running(kubeconfig) as (source, world):
            await eventually(lambda: source.status.synced and source.status.up, "the first list")
            for i in range(2):
                issued = kube.auth.issued
                await eventually(lambda: kube.auth.issued > issued or not kube.auth.accepts_any_certificate(),
                                 "the certificate expires")
                kube.upsert(pod(f"p{i}", f"10.0.0.{i + 1}"))
                kube.drop_watches()
                await eventually(lambda: f"10.0.0.{i + 1}" in world.endpoints("backend"), f"pod p{i} after renewal")
            assert len(runs.read_text().split()) >= 3
            assert relists(source) == {"Pod": 1, "IngressListener": 1, "EgressListener": 1, "Secret": 1}


async def test_an_expiring_oidc_id_token_is_refreshed(kube: FakeKube, tmp_path: Path) -> None:
    kube.auth.require()
    async with FakeIssuer(kube.auth, lifetime=1) as issuer:
        config = {"idp-issuer-url": issuer.url, "client-id": "kubernetes", "id-token": issuer.id_token(),
                  "refresh-token": issuer.refresh_token}
        kubeconfig = kube.write_kubeconfig(tmp_path / "kc", user={"auth-provider": {"name": "oidc", "config": config}})
        async with running(kubeconfig) as (source, world):
            await eventually(lambda: source.status.synced and source.status.up, "the first list")
            for i in range(2):
                refreshes = issuer.refreshes
                await eventually(lambda: issuer.refreshes > refreshes or not kube.auth.accepts_any(),
                                 "the ID token expires")
                kube.upsert(pod(f"p{i}", f"10.0.0.{i + 1}"))
                kube.drop_watches()
                await eventually(lambda: f"10.0.0.{i + 1}" in world.endpoints("backend"), f"pod p{i} after refresh")
            assert issuer.refreshes >= 2  # each with the refresh token the one before returned
            assert relists(source) == {"Pod": 1, "IngressListener": 1, "EgressListener": 1, "Secret": 1}


async def test_a_401_reruns_the_plugin_and_the_request_succeeds(kube: FakeKube, tmp_path: Path) -> None:
    kube.auth.require()
    runs = tmp_path / "runs"
    kubeconfig = kube.write_kubeconfig(tmp_path / "kc", user=exec_user(3600, runs))  # valid for an hour
    async with running(kubeconfig) as (source, world):
        await eventually(lambda: source.status.synced, "the first list")
        kube.auth.revoke_all()  # revoked long before its expirationTimestamp
        kube.drop_watches()
        kube.upsert(pod("a", "10.0.0.1"))
        await eventually(lambda: world.endpoints("backend") == ("10.0.0.1",), "the change after the 401")
        assert kube.auth.refused >= 1 and len(runs.read_text().split()) >= 2
        assert relists(source)["Pod"] == 1


async def test_a_token_file_is_read_again_after_a_401(kube: FakeKube, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    kube.auth.require("first")
    async with running(kube.write_kubeconfig(tmp_path / "kc", user={"tokenFile": "token"})) as (source, world):
        await eventually(lambda: source.status.synced, "the first list")
        kube.auth.revoke_all()
        kube.auth.require("second")
        token.write_text("second\n")  # kubelet rotated the projected token
        kube.drop_watches()
        kube.upsert(pod("a", "10.0.0.1"))
        await eventually(lambda: world.endpoints("backend") == ("10.0.0.1",), "the change with the new token")


async def test_forbidden_is_reported_and_retried(kube: FakeKube, tmp_path: Path) -> None:
    kube.auth.require("fake-token")
    kube.auth.forbid("fake-token")
    async with running(kube.write_kubeconfig(tmp_path / "kc")) as (source, _):
        await eventually(lambda: source.status.last_error is not None, "the 403 is reported")
        assert "403 Forbidden" in source.status.last_error and not source.status.up
        refused = kube.auth.refused
        await eventually(lambda: kube.auth.refused >= refused + 3, "retried (with backoff)")
        kube.auth.allow("fake-token")
        await eventually(lambda: source.status.synced and source.status.up, "retried once allowed")


async def test_embedded_tls_material_loads_without_a_writable_temp_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeKube(bookmark_interval=0.05, tls=True) as kube:
        assert kube.tls is not None
        kube.auth.require()  # no token is accepted: only the client certificate authenticates
        kube.upsert(pod("a", "10.0.0.1"))
        user = {"client-certificate-data": base64.b64encode(kube.tls.client.cert).decode(),
                "client-key-data": base64.b64encode(kube.tls.client.key).decode()}
        kubeconfig = kube.write_kubeconfig(tmp_path / "kc", user=user)
        assert "certificate-authority-data" in kubeconfig.read_text()
        # The shipped Deployment: read-only root filesystem, so no temp file can be made anywhere.
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("")
        monkeypatch.setenv("TMPDIR", str(blocked / "tmp"))
        monkeypatch.setattr(tempfile, "tempdir", str(blocked / "tmp"))
        with pytest.raises(OSError):
            tempfile.mkstemp()
        async with running(kubeconfig) as (source, world):
            await eventually(lambda: source.status.synced or source.status.last_error is not None, "an answer")
            assert source.status.last_error is None and source.status.up
            assert world.endpoints("backend") == ("10.0.0.1",)
            assert source.status.detail["server"] == kube.url and kube.url.startswith("https://")


async def test_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    async with FakeKube(tls=True) as kube, FakeKube(tls=True) as other:
        assert other.tls is not None
        kubeconfig = kube.write_kubeconfig(tmp_path / "kc")
        doc = yaml.safe_load(kubeconfig.read_text())
        doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(other.tls.ca.pem).decode()
        kubeconfig.write_text(yaml.safe_dump(doc))
        async with running(kubeconfig) as (source, _):
            await eventually(lambda: source.status.last_error is not None, "the TLS failure is reported")
            assert "CERTIFICATE_VERIFY_FAILED" in source.status.last_error and not source.status.synced


BAD_KUBECONFIGS = {
    "not YAML": ("clusters: [unclosed\n", "not valid YAML"),
    "a list": ("- a\n- b\n", "the document: must be a mapping, not list"),
    "no current-context": ("clusters: []\n", "current-context: required"),
    "clusters of the wrong type": ("current-context: c\ncontexts: [{name: c, context: {cluster: x}}]\nclusters: 5\n",
                                   "clusters: must be a list, not int"),
    "server of the wrong type": (
        "current-context: c\ncontexts: [{name: c, context: {cluster: x}}]\n"
        "clusters: [{name: x, cluster: {server: 5}}]\n",
        "clusters[x].cluster.server: must be a string, not int",
    ),
    "an auth provider kubectl dropped": (
        "current-context: c\ncontexts: [{name: c, context: {cluster: x, user: u}}]\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {auth-provider: {name: gcp}}}]\n",
        "users[u].user.auth-provider.name: 'gcp' is not supported",
    ),
    "an interactive plugin": (
        "current-context: c\ncontexts: [{name: c, context: {cluster: x, user: u}}]\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {exec: {command: login, apiVersion: client.authentication.k8s.io/v1, "
        "interactiveMode: Always}}}]\n",
        "users[u].user.exec.interactiveMode: Always: a control plane has no terminal",
    ),
    "bad base64": (
        "current-context: c\ncontexts: [{name: c, context: {cluster: x}}]\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:1', certificate-authority-data: '%%%'}}]\n",
        "certificate-authority-data: not valid base64",
    ),
}


@pytest.mark.parametrize("case", BAD_KUBECONFIGS)
async def test_a_kubeconfig_that_does_not_load_is_logged_once_shown_and_retried(
    case: str, kube: FakeKube, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text, problem = BAD_KUBECONFIGS[case]
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(text)
    caplog.set_level(logging.INFO)
    async with running(kubeconfig) as (source, _):
        await eventually(lambda: source.status.last_error is not None, "the problem is reported")
        assert problem in source.status.last_error and str(kubeconfig) in source.status.last_error
        await asyncio.sleep(0.3)  # several retries (backoff <= 0.1 s)
        logged = [r for r in caplog.records if r.levelno >= logging.ERROR and problem in r.getMessage()]
        assert len(logged) == 1 and logged[0].getMessage().startswith("east: "), logged
        kube.write_kubeconfig(kubeconfig)  # the Secret is fixed
        await eventually(lambda: source.status.synced and source.status.up, "retried until it loads")
        assert source.status.last_error is None

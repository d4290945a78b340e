"""Credentials without an API server: the service account, token file renewal, exec plugin answers and failures."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from envoy_control_plane.sources.kubernetes.credentials import (
    Credentials,
    CredentialsError,
    parse_exec_credential,
    run_exec,
)
from envoy_control_plane.sources.kubernetes import oidc
from envoy_control_plane.sources.kubernetes.kubeconfig import (
    ClusterAccess,
    ExecConfig,
    KubeconfigError,
    OidcConfig,
    in_cluster,
)
from tests.fakekube.oidc_issuer import jwt

pytestmark = pytest.mark.timeout(20)

V1 = "client.authentication.k8s.io/v1"


def service_account(directory: Path, token: str = "one") -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return directory


def test_in_cluster_reads_the_service_account(tmp_path: Path) -> None:
    directory = service_account(tmp_path / "sa")
    access = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, directory)
    assert (access.server, access.token_file, access.ca) == (
        "https://[fd00::1]:443", directory / "token", b"-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(KubeconfigError, match="not running in a pod"):
        in_cluster({}, directory)
    (directory / "token").unlink()
    with pytest.raises(KubeconfigError, match="service account token: cannot read"):
        in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, directory)


async def test_a_token_file_is_read_again_each_minute_and_after_a_401(tmp_path: Path) -> None:
    now = [1000.0]
    directory = service_account(tmp_path / "sa")
    credentials = Credentials(ClusterAccess("https://k", "test", token_file=directory / "token"), clock=lambda: now[0])
    assert await credentials.header() == "Bearer one"
    (directory / "token").write_text("two\n")  # kubelet rotated it
    assert await credentials.header() == "Bearer one"  # cached for a minute
    now[0] += 61
    assert await credentials.header() == "Bearer two"
    (directory / "token").write_text("three")
    credentials.invalidate(credentials.generation - 1)  # a 401 for an older token: already renewed since
    assert await credentials.header() == "Bearer two"
    credentials.invalidate(credentials.generation)
    assert await credentials.header() == "Bearer three" and credentials.refreshes == 2


def plugin(tmp_path: Path, body: str) -> ExecConfig:
    script = tmp_path / "plugin.py"
    script.write_text(body)
    return ExecConfig(sys.executable, ("-I", str(script), str(tmp_path / "runs")), (("GREETING", "hi"),), V1)


async def test_concurrent_requests_run_an_expired_plugin_once(tmp_path: Path) -> None:
    spec = plugin(tmp_path, """
import json, os, sys
with open(sys.argv[1], "a") as runs: runs.write("x")
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["spec"]["interactive"] is False and os.environ["GREETING"] == "hi"
n = len(open(sys.argv[1]).read())
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": f"t{n}", "expirationTimestamp": "2000-01-01T00:00:00Z" if n == 1 else
                             "2100-01-01T00:00:00Z"}}))
""")
    credentials = Credentials(ClusterAccess("https://k", "test", exec=spec))
    first = await credentials.header()
    assert first == "Bearer t1"
    headers = await asyncio.gather(*(credentials.header() for _ in range(5)))  # t1 expired: renewed once
    assert set(headers) == {"Bearer t2"} and (tmp_path / "runs").read_text() == "xx"


async def test_a_plugin_that_fails_or_hangs_is_a_credentials_error(tmp_path: Path) -> None:
    access = ClusterAccess("https://k", "test")
    failing = plugin(tmp_path, "import sys\nsys.stderr.write('no SSO session\\n')\nsys.exit(3)\n")
    with pytest.raises(CredentialsError, match="exited with 3: no SSO session"):
        await run_exec(failing, access)
    hanging = plugin(tmp_path, "import time\ntime.sleep(30)\n")
    with pytest.raises(CredentialsError, match="no answer in 0.3s"):
        await run_exec(hanging, access, timeout=0.3)
    missing = ExecConfig(str(tmp_path / "nowhere"), (), (), V1, install_hint="install it with: brew install it")
    with pytest.raises(CredentialsError, match=r"cannot run: No such file or directory \(install it with: brew"):
        await run_exec(missing, access)


@pytest.mark.parametrize(("answer", "problem"), [
    ("not json", "answer is not JSON"),
    (json.dumps({"apiVersion": V1, "kind": "Other"}), "not an ExecCredential"),
    (json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential", "status": {}}),
     "answered apiVersion"),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": {}}), "neither a token"),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential",
                 "status": {"token": "t", "expirationTimestamp": "tomorrow"}}), "is not RFC 3339"),
])
def test_exec_answers_are_checked(answer: str, problem: str) -> None:
    with pytest.raises(CredentialsError, match=problem):
        parse_exec_credential(answer.encode(), ExecConfig("p", (), (), V1), "exec plugin 'p'")


def test_an_exec_answer_with_its_expiry() -> None:
    answer = {"apiVersion": V1, "kind": "ExecCredential",
              "status": {"token": "t", "expirationTimestamp": "2030-01-02T03:04:05Z"}}
    result = parse_exec_credential(json.dumps(answer).encode(), ExecConfig("p", (), (), V1), "p")
    assert (result.token, result.expires) == ("t", 1893553445.0)


def test_oidc_id_token_expiry_is_read_from_the_jwt() -> None:
    assert oidc.expiry(jwt({"exp": 1893553445})) == 1893553445.0
    assert oidc.expiry(jwt({"sub": "x"})) is None
    with pytest.raises(oidc.OidcError, match="not a JWT"):
        oidc.expiry("opaque")
    with pytest.raises(oidc.OidcError, match="not base64url JSON"):
        oidc.expiry("a.%%%.c")


async def test_an_expired_oidc_id_token_without_a_refresh_token_is_a_credentials_error() -> None:
    config = OidcConfig(issuer=None, client_id=None, id_token=jwt({"exp": 1000}))
    credentials = Credentials(ClusterAccess("https://k", "test", oidc=config), clock=lambda: 999.0)
    assert await credentials.header() == f"Bearer {config.id_token}"  # still valid at 999
    credentials = Credentials(ClusterAccess("https://k", "test", oidc=config), clock=lambda: 1000.0)
    with pytest.raises(CredentialsError, match="expired, and there is no refresh-token"):
        await credentials.header()

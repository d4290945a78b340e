"""The command line: `bootstrap` output that Envoy accepts, `run` refusing a bad config in one line, `validate`."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from .harness.envoy import ENVOY_FLAGS, envoy_binary
from .harness.manifests import ManifestDir, egress, ingress, pod
from .harness.net import free_port
from .harness.plane import plane_command
from .harness.wait import wait_until

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([plane_command(), *args], capture_output=True, text=True, timeout=30, cwd=cwd)


@pytest.mark.parametrize("extra", [[], ["--delta", "--format", "json", "--xds", "localhost:18000"]])
def test_bootstrap_output_is_accepted_by_envoy_validate(tmp_path: Path, extra: list[str]) -> None:
    result = cli("bootstrap", "--node-id", "x", *extra)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)  # JSON is YAML too
    assert doc["node"]["id"] == "x"
    path = tmp_path / "bootstrap.yaml"
    path.write_text(result.stdout)
    check = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), *ENVOY_FLAGS],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OK" in check.stdout + check.stderr


def test_bootstrap_with_xds_mtls_is_what_the_tls_tests_run_and_envoy_accepts_it(tmp_path: Path) -> None:
    from envoy_control_plane import bootstrap

    from demo.certs import CA

    ca = CA("test CA")
    leaf = ca.issue("node-a", [])
    cert, key, ca_path = tmp_path / "node.crt", tmp_path / "node.key", tmp_path / "ca.crt"
    cert.write_bytes(leaf.cert)
    key.write_bytes(leaf.key)
    ca_path.write_bytes(ca.cert)
    files = ["--xds-ca", str(ca_path), "--xds-cert", str(cert), "--xds-key", str(key)]
    result = cli("bootstrap", "--node-id", "node-a", "--xds", "xds.example:443", *files)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    tls = bootstrap.XdsClientTls(str(ca_path), str(cert), str(key))
    assert doc == bootstrap.render("node-a", "xds.example", 443, tls=tls)
    context = doc["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert context["sni"] == "xds.example"
    path = tmp_path / "bootstrap.yaml"
    path.write_text(result.stdout)
    check = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), *ENVOY_FLAGS], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--xds-ca", "ca.crt"], "--xds-ca, --xds-cert and --xds-key come together: --xds-cert, --xds-key missing"),
        (["--xds-cert", "a", "--xds-key", "b"], "--xds-ca, --xds-cert and --xds-key come together: --xds-ca missing"),
        (["--xds-sni", "xds.test"], "--xds-sni needs --xds-ca, --xds-cert and --xds-key"),
    ],
)
def test_bootstrap_refuses_incomplete_xds_tls_flags(flags: list[str], message: str) -> None:
    result = cli("bootstrap", "--node-id", "x", *flags)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"envoy-control-plane: error: {message}"]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        ({"bogus": 1, "manifests": ["m"]}, ["bogus", "unknown key"]),
        ({"xds": {"port": 70000}, "manifests": ["m"]}, ["xds.port", "65535"]),
        ({"admin": {"port": "http"}, "manifests": ["m"]}, ["admin.port"]),
        ({"manifests": ["no-such-dir"]}, ["manifests", "no-such-dir", "not found"]),
        ({"xds": {"tls": {"cert": "x.crt", "key": "x.key"}}, "manifests": ["m"]}, ["xds.tls.cert", "file not found"]),
    ],
    ids=["unknown-key", "port-out-of-range", "port-not-a-number", "missing-manifests", "missing-xds-cert"],
)
def test_run_refuses_a_bad_config_with_one_line(tmp_path: Path, config: dict, fragments: list[str]) -> None:
    (tmp_path / "m").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cli("run", "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("envoy-control-plane: error: ") and str(path) in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert result.stdout == ""


def test_run_names_a_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    result = cli("run", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"envoy-control-plane: error: {path}: cannot read: No such file or directory"]


def test_validate_prints_every_problem_with_object_and_field(tmp_path: Path) -> None:
    manifests = ManifestDir(tmp_path / "m")
    manifests.write(
        "listeners.yaml",
        ingress("bad-port", "n", 70000, 80),
        egress("no-cluster", "n", 9000, 80, None),
        egress("fine", "n", 9001, 80, "backends"),
    )
    manifests.write("pods.yaml", pod("good", "10.0.0.1", "backends"), pod("bad-ip", "300.1.2.3", "x"))
    manifests.write_text("broken.yaml", "kind: Pod\nmetadata: {name: a\n  - : [\n")
    result = cli("validate", str(manifests.path))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    expected = [
        ("broken.yaml", "not valid YAML"),
        ("listeners.yaml", "IngressListener default/bad-port: spec.listenport:"),
        ("listeners.yaml", "EgressListener default/no-cluster: spec.targetcluster:"),
        ("pods.yaml", "Pod default/bad-ip: status.podIP:"),
    ]
    assert len(lines) == len(expected), result.stdout
    for (filename, fragment), line in zip(expected, lines, strict=True):
        assert line.startswith(str(manifests.path / filename)) and fragment in line, line
    assert result.stderr.strip() == "2 objects, 4 problems"


def test_validate_accepts_the_examples() -> None:
    result = cli("validate", str(EXAMPLES / "manifests"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == "5 objects, 0 problems"


async def test_a_second_instance_on_the_same_xds_port_fails_with_one_line(manifests, start_plane_process) -> None:
    first = await start_plane_process()
    result = cli("run", "--manifests", str(manifests.path), "--xds-port", str(first.xds_port),
                 "--admin-port", str(free_port()))  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"envoy-control-plane: error: xDS port 127.0.0.1:{first.xds_port} is already in use (another instance?)"
    ]
    first.check_running()


async def test_an_admin_port_in_use_fails_with_one_line(manifests, start_plane_process) -> None:
    first = await start_plane_process()
    result = cli("run", "--manifests", str(manifests.path), "--xds-port", str(free_port()),
                 "--admin-port", str(first.admin_port))  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"envoy-control-plane: error: admin port 127.0.0.1:{first.admin_port}: "), line
    assert "in use" in line


def test_validate_survives_any_file_and_names_each_problem(tmp_path: Path) -> None:
    """Binary, UTF-16, alias bombs and badly typed objects: one line each, never a traceback."""
    m = tmp_path / "m"
    m.mkdir()
    (m / "binary.yaml").write_bytes(b"\x7fELF\x00\xff\xfe\x00")
    (m / "powershell.yaml").write_bytes(yaml.safe_dump(pod("a", "10.0.0.1", "web")).encode("utf-16"))
    lols = "\n".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9))
    (m / "bomb.yaml").write_text(f"kind: Pod\nx:\n  a0: &a0 [{', '.join(['lol'] * 9)}]\n{lols}\nstatus: {{podIP: *a8}}\n")
    bad_pod = pod("b", "10.0.0.2", "web")
    bad_pod["metadata"]["annotations"] = ["x"]
    (m / "typed.yaml").write_text(yaml.safe_dump_all([bad_pod, ingress("self", "n", 8080, 8080), ingress("gap", "n", 81, 82, "")]))
    result = cli("validate", str(m))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(m / n) for n in ("binary.yaml", "bomb.yaml", "typed.yaml",
                                                                          "typed.yaml", "typed.yaml")], lines
    assert "not text" in lines[0] and "document 1: aliases expand it" in lines[1]
    assert "Pod default/b: metadata.annotations: must be a mapping" in lines[2]
    assert "IngressListener default/self: spec.targetport: equals spec.listenport" in lines[3]
    assert "IngressListener default/gap: spec.rbacallowcluster: String should have at least 1 character" in lines[4]
    assert result.stderr.strip() == "1 objects, 5 problems"


async def test_sighup_is_logged_and_ignored(manifests, start_plane_process) -> None:
    manifests.write("pods.yaml", pod("a", "10.0.0.1", "web"))
    plane = await start_plane_process()
    assert plane.proc is not None
    plane.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: _logged(plane, "SIGHUP ignored"), what="the SIGHUP log line")
    plane.check_running()
    status, _ = await plane.admin.get("/readyz")
    assert status == 200


async def _logged(plane, text: str) -> bool:
    return text in plane.log_tail(200)

import json

import pytest

from envoy_control_plane.config import ConfigError, build_config, load_config


def test_original_config_json_list_loads(tmp_path):
    (tmp_path / "aws.yaml").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "gcp.yaml").write_text("apiVersion: v1\nkind: Config\n")
    path = tmp_path / "config.json"
    path.write_text(json.dumps([{"name": "aws", "kubeconfig": "aws.yaml"}, {"name": "gcp", "kubeconfig": "gcp.yaml"}]))
    config = load_config(path)
    assert [c.name for c in config.clusters] == ["aws", "gcp"]
    assert config.clusters[0].kubeconfig == tmp_path / "aws.yaml"
    assert (config.xds.port, config.admin.port) == (18000, 18001)


def test_full_config_with_relative_manifests(tmp_path):
    (tmp_path / "m").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text("xds: {port: 19000}\nmanifests: [m]\nclusters: [{name: local, namespace: prod}]\n")
    config = load_config(path)
    assert config.xds.port == 19000
    assert config.manifests == [tmp_path / "m"]
    assert config.clusters[0].kubeconfig is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("xds: {port: 70000}\n", "xds.port: Input should be less than or equal to 65535"),
        ("xds: {prot: 1}\n", "xds.prot: unknown key"),
        ("bogus: 1\n", "bogus: unknown key"),
        ("manifests: [nowhere]\n", "manifests: file or directory not found"),
        ("clusters: [{name: a, kubeconfig: missing.yaml}]\n", "clusters.0.kubeconfig: file not found"),
        ("clusters: [{name: a}, {name: a}]\n", "clusters: cluster name 'a' appears twice"),
        ("xds: [\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """xds.crt/xds.key (a matching pair), ca.crt, other.key (another key) and junk.pem, in one directory."""
    from demo.certs import CA

    directory = tmp_path_factory.mktemp("tls")
    ca = CA("test CA")
    (directory / "ca.crt").write_bytes(ca.cert)
    leaf = ca.issue("xds", ["xds.test"])
    (directory / "xds.crt").write_bytes(leaf.cert)
    (directory / "xds.key").write_bytes(leaf.key)
    (directory / "other.key").write_bytes(ca.issue("other", []).key)
    (directory / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return directory


def test_xds_tls_paths_are_relative_to_the_file_and_secrets_need_client_certificates(tls_files):
    path = tls_files / "c.yaml"
    path.write_text("xds: {tls: {cert: xds.crt, key: xds.key}}\n")
    config = load_config(path)
    assert (config.xds.tls.cert, config.xds.tls.key) == (tls_files / "xds.crt", tls_files / "xds.key")
    assert not config.may_serve_secrets
    path.write_text("xds: {tls: {cert: xds.crt, key: xds.key, client_ca: ca.crt}}\n")
    assert load_config(path).may_serve_secrets
    path.write_text("xds: {insecure_secrets: true}\n")
    assert load_config(path).may_serve_secrets
    path.write_text("{}\n")
    assert not load_config(path).may_serve_secrets


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ("{cert: xds.crt}", "xds.tls.key: Field required"),
        ("{cert: nowhere.crt, key: xds.key}", "xds.tls.cert: file not found"),
        ("{cert: junk.pem, key: xds.key}", "xds.tls.cert: " ),
        ("{cert: xds.key, key: xds.key}", "not a PEM certificate"),
        ("{cert: xds.crt, key: xds.crt}", "xds.tls.key: "),
        ("{cert: xds.crt, key: other.key}", "xds.tls: key"),
        ("{cert: xds.crt, key: xds.key, client_ca: junk.pem}", "xds.tls.client_ca: "),
        ("{cert: xds.crt, key: xds.key, ca: ca.crt}", "xds.tls.ca: unknown key"),
    ],
    ids=["no-key", "missing-cert", "bad-pem", "key-as-cert", "cert-as-key", "key-mismatch", "bad-ca", "unknown-key"],
)
def test_bad_xds_tls_is_one_line_naming_the_key(tls_files, tls, message):
    path = tls_files / "bad.yaml"
    path.write_text(f"xds: {{tls: {tls}}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert message in text and "\n" not in text, text
    assert "PRIVATE KEY" not in text and "BEGIN" not in text


@pytest.mark.parametrize(("status", "message"), [
    ({"lease": {"cluster": "gcp"}}, "status.lease.cluster 'gcp' is not a configured cluster"),
    ({"lease": {"duration_s": 5, "renew_deadline_s": 10}}, "needs retry_period_s < renew_deadline_s < duration_s"),
    ({"lease": {"namespace": "a/b"}}, "status.lease.namespace: String should match pattern"),
    ({"interval_s": 0}, "status.interval_s"),
    ({"event": {}}, "status.event: unknown key"),
])
def test_bad_status_keys_are_one_line_naming_the_key(status, message):
    with pytest.raises(ConfigError) as err:
        build_config({"clusters": [{"name": "aws"}], "status": status})
    assert message in str(err.value)


def test_status_defaults_write_with_a_lease_in_the_first_cluster():
    status = build_config({"clusters": [{"name": "aws"}]}).status
    assert status.write and status.lease.cluster is None and status.lease.name == "envoy-control-plane"
    assert (status.lease.duration_s, status.lease.renew_deadline_s, status.lease.retry_period_s) == (15, 10, 2)

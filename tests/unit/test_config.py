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


def test_the_originals_config_example_json_loads_as_it_is(tmp_path):
    """The original's config.example.json: `listenersource` true for the cluster whose listeners are watched."""
    for name in ("aws", "gcp"):
        (tmp_path / f"{name}-kubeconf").write_text("apiVersion: v1\nkind: Config\n")
    path = tmp_path / "config.json"
    path.write_text(
        '[\n  {\n    "name": "aws",\n    "kubeconfig": "aws-kubeconf",\n    "listenersource": true\n  },\n'
        '  {\n    "name": "gcp",\n    "kubeconfig": "gcp-kubeconf",\n    "listenersource": false\n  }\n]\n'
    )
    config = load_config(path)
    assert [(c.name, c.listenersource) for c in config.clusters] == [("aws", True), ("gcp", False)]
    assert config.cluster_name_annotation == "cluster-name.envoy.uw.io"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # Before the original had the key, every cluster's listeners were watched: such lists keep working.
        ([{"name": "a"}, {"name": "b"}], [True, True]),
        # Once it had it, a missing key was false (Go's zero value).
        ([{"name": "a", "listenersource": True}, {"name": "b"}], [True, False]),
        ([{"name": "a", "listenersource": False}, {"name": "b"}], [False, False]),
    ],
)
def test_listenersource_default_in_the_original_list(tmp_path, entries, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(entries))
    assert [c.listenersource for c in load_config(path).clusters] == expected


def test_listenersource_in_the_mapping_defaults_to_true_and_is_a_real_boolean(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("clusters: [{name: a}, {name: b, listenersource: false}]\n")
    assert [c.listenersource for c in load_config(path).clusters] == [True, False]
    path.write_text('clusters: [{name: a, listenersource: "false"}]\n')
    with pytest.raises(ConfigError, match=r"clusters\.0\.listenersource: Input should be a valid boolean"):
        load_config(path)


@pytest.mark.parametrize("key", ["cluster-name.envoy.uw.io", "mesh.example.com/envoy-cluster", "app", "a/B_c.d-e"])
def test_cluster_name_annotation_takes_annotation_keys(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text(f"cluster_name_annotation: {key}\nclusters: [{{name: a}}]\n")
    assert load_config(path).cluster_name_annotation == key


@pytest.mark.parametrize("key", ["", "has space", "UPPER.example.com/x", "a/b/c", "-x", "x" * 64, "example.com/"])
def test_cluster_name_annotation_refuses_what_is_no_annotation_key(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text(f"cluster_name_annotation: {json.dumps(key)}\n")
    with pytest.raises(ConfigError, match="cluster_name_annotation"):
        load_config(path)


def test_cluster_name_annotation_flag_overrides_the_file(tmp_path, capsys):
    from envoy_control_plane import cli

    path = tmp_path / "c.yaml"
    path.write_text("cluster_name_annotation: a.example.com/x\nclusters: [{name: a}]\n")
    args = cli._parser().parse_args(["run", "--config", str(path), "--cluster-name-annotation", "b.example.com/y"])
    assert cli.resolve_config(args).cluster_name_annotation == "b.example.com/y"
    args = cli._parser().parse_args(["run", "--config", str(path), "--cluster-name-annotation", "not a key"])
    with pytest.raises(ConfigError, match="command line: cluster_name_annotation: not an annotation key"):
        cli.resolve_config(args)


def test_validate_reads_pods_by_the_annotation_given(tmp_path, capsys):
    from envoy_control_plane import cli

    (tmp_path / "p.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {example.com/c: 7}}\n"
    )
    assert cli.main(["validate", str(tmp_path)]) == 0  # another annotation: not ours to check
    assert cli.main(["validate", "--cluster-name-annotation", "example.com/c", str(tmp_path)]) == 1
    assert "metadata.annotations.example.com/c: must be a string" in capsys.readouterr().out
    assert cli.main(["validate", "--cluster-name-annotation", "no key", str(tmp_path)]) == 2


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


def test_the_debounce_ceiling_defaults_to_ten_quiet_periods(tmp_path):
    from envoy_control_plane.app import ControlPlane

    path = tmp_path / "c.yaml"
    path.write_text("xds: {debounce_ms: 30}\n")
    assert ControlPlane(load_config(path)).controller.debounce_max == pytest.approx(0.3)
    path.write_text("xds: {debounce_ms: 30, debounce_max_ms: 1000}\n")
    assert ControlPlane(load_config(path)).controller.debounce_max == pytest.approx(1.0)


def test_a_debounce_ceiling_below_the_quiet_period_is_refused():
    with pytest.raises(ConfigError, match=r"xds: .*debounce_max_ms \(10\) is less than debounce_ms \(30\)"):
        build_config({"xds": {"debounce_ms": 30, "debounce_max_ms": 10}})
    assert build_config({"xds": {"debounce_ms": 30, "debounce_max_ms": 30}}).xds.debounce_max_ms == 30

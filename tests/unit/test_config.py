import json

import pytest

from envoy_control_plane.config import ConfigError, load_config


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

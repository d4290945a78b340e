import yaml

from envoy_control_plane.sources.manifests import ManifestSource, validate
from envoy_control_plane.state import World
from tests.unit.objects import egress_doc, ingress_doc, pod_doc


def write(path, *docs):
    path.write_text(yaml.safe_dump_all(docs))


def test_loads_directories_and_lists(tmp_path):
    write(tmp_path / "a.yaml", pod_doc("p1", "web", "10.0.0.1"), egress_doc("out", "n", 9090, 80, "web"))
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "b.yml", {"apiVersion": "v1", "kind": "List", "items": [pod_doc("p2", "web", "10.0.0.2")]})
    world = World()
    source = ManifestSource([tmp_path], world)
    source.load()
    assert world.endpoints("web") == ("10.0.0.1", "10.0.0.2")
    assert world.nodes() == ["n"]
    assert source.status.synced and source.status.problems == []


def test_invalid_object_keeps_its_last_good_version_and_others_work(tmp_path):
    path = tmp_path / "l.yaml"
    write(path, ingress_doc("in", "n", 8080, 8081), egress_doc("out", "n", 9090, 80, "web"))
    world = World()
    source = ManifestSource([path], world)
    source.load()
    write(path, ingress_doc("in", "n", 70000, 8081), egress_doc("out", "n", 9091, 80, "web"))
    source.load()
    ports = sorted(listener.spec.listenport for listener in world.listeners("n").accepted)
    assert ports == [8080, 9091]
    assert len(source.status.problems) == 1
    assert "IngressListener default/in: spec.listenport" in source.status.problems[0]
    assert str(path) in source.status.problems[0]


def test_unparseable_file_keeps_what_it_gave(tmp_path):
    path = tmp_path / "p.yaml"
    write(path, pod_doc("p1", "web", "10.0.0.1"))
    world = World()
    source = ManifestSource([path], world)
    source.load()
    path.write_text("kind: Pod\n  bad: [indent\n")
    source.load()
    assert world.endpoints("web") == ("10.0.0.1",)
    assert "not valid YAML" in source.status.problems[0]


def test_removed_object_is_deleted(tmp_path):
    path = tmp_path / "p.yaml"
    write(path, pod_doc("p1", "web", "10.0.0.1"), pod_doc("p2", "web", "10.0.0.2"))
    world = World()
    source = ManifestSource([path], world)
    source.load()
    write(path, pod_doc("p2", "web", "10.0.0.2"))
    source.load()
    assert world.endpoints("web") == ("10.0.0.2",)


def test_validate_reports_every_problem(tmp_path):
    write(tmp_path / "a.yaml", ingress_doc("in", "n", 0, 8081), egress_doc("out", "n", 9090, 80, "web"))
    write(tmp_path / "b.yaml", egress_doc("out", "n", 9090, 80, "web"))
    found = validate([tmp_path, tmp_path / "missing"])
    count, problems = found.count, found.problems
    assert count == 1
    assert any("missing: no such file" in p for p in problems)
    assert any("IngressListener default/in: spec.listenport" in p for p in problems)
    assert any("EgressListener default/out: also defined in" in p for p in problems)


def test_only_changed_files_are_parsed_again(tmp_path, monkeypatch):
    from envoy_control_plane.sources import manifests

    write(tmp_path / "a.yaml", pod_doc("p1", "web", "10.0.0.1"))
    write(tmp_path / "b.yaml", pod_doc("p2", "web", "10.0.0.2"))
    parsed: list[str] = []
    real = manifests.parse_text
    monkeypatch.setattr(manifests, "parse_text", lambda path, text, **kw: parsed.append(path.name) or real(path, text, **kw))
    world = World()
    source = ManifestSource([tmp_path], world)
    source.load()
    write(tmp_path / "b.yaml", pod_doc("p2", "web", "10.0.0.3"))
    source.load()
    assert parsed == ["a.yaml", "b.yaml", "b.yaml"]
    assert world.endpoints("web") == ("10.0.0.1", "10.0.0.3")


def test_validate_reports_the_secrets_listeners_cannot_use(tmp_path):
    import dataclasses

    from demo.certs import CA, tls_secret
    ca = CA("ca")
    leaf = ca.issue("a", ["spiffe://a/b"])
    mismatched = dataclasses.replace(leaf, key=ca.issue("b", []).key)
    docs = [
        tls_secret("bad", mismatched, ca),
        tls_secret("noca", leaf, None),
        ingress_doc("in", "n", 1, 2, spec_extra={"tls": {"secret": "bad"}}),
        egress_doc("out", "n", 3, 4, "c", spec_extra={"tls": {"secret": "noca"}}),
        egress_doc("elsewhere", "n", 5, 4, "c", spec_extra={"tls": {"secret": "in-the-cluster"}}),
    ]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all(docs))
    found = validate([tmp_path])
    count, problems = found.count, found.problems
    assert count == 5
    assert [p.split(": ", 1)[1] for p in problems] == [
        "IngressListener default/in: spec.tls.secret: Secret default/bad: data.tls.key: does not match the certificate"
        " in tls.crt",
        "EgressListener default/out: spec.tls.validation: Secret default/noca: has no data.ca.crt",
    ]
    assert all(leaf.key.decode().splitlines()[1] not in p for p in problems)

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envoy_control_plane.model import ObjectError, parse_object
from tests.unit.objects import egress_doc, ingress_doc, pod, pod_doc


@pytest.mark.parametrize(
    ("kwargs", "endpoint"),
    [
        ({}, True),
        ({"ready": False}, False),
        ({"terminating": True}, False),
    ],
)
def test_pod_is_endpoint_only_when_it_can_take_traffic(kwargs, endpoint):
    assert pod("p", "web", "10.0.0.1", **kwargs).is_endpoint is endpoint


def test_pod_without_ip_or_annotation_is_no_endpoint():
    assert not pod("p", "web", None).is_endpoint
    assert not pod("p", None, "10.0.0.1").is_endpoint


def test_pod_without_conditions_counts_as_ready():
    doc = pod_doc("p", "web", "10.0.0.1")
    del doc["status"]["conditions"]
    assert parse_object(doc).is_endpoint


def test_unknown_kinds_are_ignored():
    assert parse_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}) is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (ingress_doc("in", "n", 70000, 80), "IngressListener default/in: spec.listenport: Input should be less than"),
        (egress_doc("eg", "n", 80, 0, "c"), "EgressListener default/eg: spec.targetport: Input should be greater"),
        ({**egress_doc("eg", "n", 80, 81, "c"), "spec": {"nodename": "n", "listenport": 80, "targetport": 81}},
         "EgressListener default/eg: spec.targetcluster: Field required"),
        ({**ingress_doc("in", "n", 80, 81), "apiVersion": "v1"}, "IngressListener default/in: apiVersion: expected"),
        ({**ingress_doc("in", "n", 80, 81), "spec": {"nodename": "n", "listenport": 1, "targetport": 2, "x": 1}},
         "IngressListener default/in: spec.x: Extra inputs are not permitted"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {}}, "Pod (unnamed): metadata.name: is required"),
        (pod_doc("p", "web", "not-an-ip"), "Pod default/p: status.podIP: not an IP address"),
    ],
)
def test_bad_objects_name_the_object_and_field(doc, message):
    with pytest.raises(ObjectError) as err:
        parse_object(doc)
    assert str(err.value).startswith(message)


TLS = {"secret": "server-tls"}


@pytest.mark.parametrize(
    ("extra", "allow_cluster", "allow_sans"),
    [
        ({}, None, None),
        ({"rbacallowcluster": "clients"}, "clients", None),  # the original field means rbac.cluster
        ({"rbac": {"cluster": "clients"}}, "clients", None),
        ({"rbac": {"sans": ["spiffe://a/b", "b.example"]}, "tls": TLS}, None, ("spiffe://a/b", "b.example")),
        ({"rbacallowcluster": "clients", "rbac": {"sans": ["spiffe://a/b"]}, "tls": TLS}, "clients", ("spiffe://a/b",)),
    ],
)
def test_ingress_rbac_shapes(extra, allow_cluster, allow_sans):
    spec = parse_object(ingress_doc("in", "n", 80, 81, spec_extra=extra)).spec
    assert (spec.allow_cluster, spec.allow_sans, spec.layer) == (allow_cluster, allow_sans, "tcp")


def test_tls_validation_defaults_to_the_secret():
    spec = parse_object(egress_doc("eg", "n", 80, 81, "c", spec_extra={"tls": {**TLS, "sni": "a.b"}, "layer": "http"})).spec
    assert (spec.tls.secret, spec.tls.ca_secret, spec.tls.sni, spec.layer) == ("server-tls", "server-tls", "a.b", "http")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rbac": {"sans": ["spiffe://a/b"]}}, "spec.rbac.sans: requires spec.tls"),
        ({"rbacallowcluster": "a", "rbac": {"cluster": "b"}}, "spec.rbac.cluster: give rbac.cluster or rbacallowcluster"),
        ({"rbac": {"sans": []}, "tls": TLS}, "spec.rbac.sans: "),
        ({"rbac": {"sans": ["has space"]}, "tls": TLS}, "spec.rbac.sans.0: String should match pattern"),
        ({"tls": {"secret": "Not_A_Name"}}, "spec.tls.secret: String should match pattern"),
        ({"tls": {}}, "spec.tls.secret: Field required"),
        ({"layer": "udp"}, "spec.layer: Input should be 'tcp' or 'http'"),
    ],
)
def test_bad_new_fields_name_the_field(extra, message):
    with pytest.raises(ObjectError) as err:
        parse_object(ingress_doc("in", "n", 80, 81, spec_extra=extra))
    assert message in str(err.value)


def test_secrets_keep_only_what_a_listener_can_use():
    from demo.certs import CA, tls_secret

    ca = CA("ca")
    leaf = ca.issue("leaf", ["spiffe://a/b"])
    good = parse_object(tls_secret("s", leaf, ca))
    assert (good.type, good.cert, good.key, good.ca, good.problems) == ("kubernetes.io/tls", leaf.cert, leaf.key, ca.cert, ())
    assert leaf.key.decode() not in repr(good)
    assert parse_object(tls_secret("ca-only", None, ca)).ca == ca.cert
    assert parse_object(tls_secret("nothing", None, None)) is None  # Opaque without ca.crt: never referenced
    token = {**tls_secret("t", leaf, ca), "type": "kubernetes.io/service-account-token"}
    assert parse_object(token) is None


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"tls.crt": "not base64!"}, "tls.crt", "data.tls.crt: not valid base64"),
        ({"tls.crt": "aGVsbG8="}, "tls.crt", "data.tls.crt: not a PEM certificate"),
        ({"tls.key": "aGVsbG8="}, "tls.key", "data.tls.key: not a PEM private key"),
        ({"ca.crt": "aGVsbG8="}, "ca.crt", "data.ca.crt: not a PEM certificate"),
        ("other-key", "tls.key", "data.tls.key: does not match the certificate in tls.crt"),
    ],
)
def test_secret_problems_are_kept_by_key_without_the_data(change, key, problem):
    import base64

    from demo.certs import CA, tls_secret

    ca = CA("ca")
    leaf = ca.issue("leaf", [])
    doc = tls_secret("s", leaf, ca)
    if change == "other-key":
        change = {"tls.key": base64.b64encode(ca.issue("other", []).key).decode()}
    doc["data"].update(change)
    secret = parse_object(doc)
    assert secret.problem(key).startswith(problem)
    assert all(leaf.key.decode().splitlines()[1] not in p for _, p in secret.problems)


@settings(max_examples=300, derandomize=True, database=None)
@given(st.lists(st.sampled_from(["0", "1", "9", "10", "010", "99", "100", "199", "200", "223", "224", "239", "240",
                                 "249", "250", "255", "256", "300", "", "1.2", " 1", "a"]), min_size=3, max_size=5))
def test_a_pod_ip_is_what_ipaddress_makes_of_it(octets):
    """The IPv4 fast path decides exactly as ipaddress does: canonical text, and no unspecified/multicast/broadcast."""
    value = ".".join(octets)
    try:
        ip = ipaddress.ip_address(value)
        want = "refused" if ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255" else str(ip)
    except ValueError:
        want = "refused"
    try:
        got = parse_object(pod_doc("p", "web", value)).ip
    except ObjectError:
        got = "refused"
    assert got == want

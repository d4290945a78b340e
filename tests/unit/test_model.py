import pytest

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

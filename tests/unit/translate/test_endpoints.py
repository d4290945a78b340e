from envoy_control_plane.translate.endpoints import load_assignment
from tests.unit.translate.decode import as_dict


def test_load_assignment_lists_the_pods_on_the_target_port():
    assert as_dict(load_assignment("postgres", 5432, ("10.0.0.1", "10.0.0.2"))) == {
        "clusterName": "postgres:5432",
        "endpoints": [
            {
                "lbEndpoints": [
                    {"endpoint": {"address": {"socketAddress": {"address": ip, "portValue": 5432}}}}
                    for ip in ("10.0.0.1", "10.0.0.2")
                ]
            }
        ],
    }


def test_empty_cluster_has_no_endpoints():
    assert as_dict(load_assignment("postgres", 5432, ())) == {"clusterName": "postgres:5432"}


def test_encoded_once_per_content():
    assert load_assignment("c", 1, ("10.0.0.1",)) is load_assignment("c", 1, ("10.0.0.1",))

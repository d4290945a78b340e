from envoy_control_plane.translate.clusters import egress_cluster, ingress_cluster
from tests.unit.objects import egress, ingress
from tests.unit.translate.decode import as_dict


def test_ingress_cluster_is_the_local_workload():
    assert as_dict(ingress_cluster(ingress("web", "n", 8080, 8081))) == {
        "name": "ingress_web_cluster",
        "type": "STATIC",
        "connectTimeout": "1s",
        "loadAssignment": {
            "clusterName": "ingress_web_cluster",
            "endpoints": [
                {"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 8081}}}}]}
            ],
        },
    }


def test_egress_cluster_gets_endpoints_over_ads():
    resource = egress_cluster(egress("db", "n", 9090, 5432, "postgres"))
    assert resource.refs == {"postgres:5432"}  # its load assignment is not removed before it
    assert as_dict(resource) == {
        "name": "egress_db_cluster",
        "type": "EDS",
        "connectTimeout": "1s",
        "edsClusterConfig": {"edsConfig": {"ads": {}, "resourceApiVersion": "V3"}, "serviceName": "postgres:5432"},
    }

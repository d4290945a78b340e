import pytest

from envoy_control_plane.translate.listeners import egress_listener, ingress_listener
from tests.unit.objects import egress, ingress
from tests.unit.translate.decode import as_dict

TCP = {
    "name": "envoy.filters.network.tcp_proxy",
    "typedConfig": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "statPrefix": "tcp",
        "cluster": "ingress_web_cluster",
    },
}


def rbac(policies: dict) -> dict:
    return {
        "name": "envoy.filters.network.rbac",
        "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "statPrefix": "rbac_ingress",
            "rules": {"policies": policies} if policies else {},
        },
    }


def test_egress_listener_proxies_to_its_eds_cluster():
    resource = egress_listener(egress("db", "n", 9090, 5432, "postgres"), "127.0.0.1")
    assert resource.name == "egress_db"
    assert resource.refs == {"egress_db_cluster"}
    assert as_dict(resource) == {
        "name": "egress_db",
        "address": {"socketAddress": {"address": "127.0.0.1", "portValue": 9090}},
        "filterChains": [{"filters": [{**TCP, "typedConfig": {**TCP["typedConfig"], "cluster": "egress_db_cluster"}}]}],
    }


@pytest.mark.parametrize(
    ("allowed", "chain"),
    [
        # no rbacallowcluster: everybody is admitted
        (None, {"filters": [TCP]}),
        # a cluster with pods: those IPs only, by RBAC and at accept time
        (
            ("10.0.0.1", "fd00::1"),
            {
                "filterChainMatch": {
                    "sourcePrefixRanges": [
                        {"addressPrefix": "10.0.0.1", "prefixLen": 32},
                        {"addressPrefix": "fd00::1", "prefixLen": 128},
                    ]
                },
                "filters": [
                    rbac(
                        {
                            "allow_cluster": {
                                "permissions": [{"any": True}],
                                "principals": [
                                    {"directRemoteIp": {"addressPrefix": "10.0.0.1", "prefixLen": 32}},
                                    {"directRemoteIp": {"addressPrefix": "fd00::1", "prefixLen": 128}},
                                ],
                            }
                        }
                    ),
                    TCP,
                ],
            },
        ),
        # a named cluster with no pods admits nobody (the original dropped the filter and admitted everybody)
        (
            (),
            {
                "filterChainMatch": {
                    "sourcePrefixRanges": [
                        {"addressPrefix": "0.0.0.0", "prefixLen": 32},
                        {"addressPrefix": "::", "prefixLen": 128},
                    ]
                },
                "filters": [rbac({}), TCP],
            },
        ),
    ],
)
def test_ingress_listener_admits_only_the_allowed_pods(allowed, chain):
    resource = ingress_listener(ingress("web", "n", 8080, 8081, allow="x"), "0.0.0.0", allowed)
    assert as_dict(resource) == {
        "name": "ingress_web",
        "address": {"socketAddress": {"address": "0.0.0.0", "portValue": 8080}},
        "filterChains": [chain],
    }


def test_same_input_same_version_and_bytes():
    one = ingress_listener(ingress("web", "n", 8080, 8081, allow="x"), "0.0.0.0", ("10.0.0.2", "10.0.0.1"))
    ingress_listener.cache_clear()
    two = ingress_listener(ingress("web", "n", 8080, 8081, allow="x"), "0.0.0.0", ("10.0.0.2", "10.0.0.1"))
    assert one is not two
    assert (one.version, one.body) == (two.version, two.body)

"""The node identity rule: DNS and URI SANs name nodes; the CN only when there is no SAN at all."""

import pytest

from envoy_control_plane.xds.identity import NodeNotPermitted, PeerCertificate, authorizer
from demo.certs import CA

ca = CA("test CA")


@pytest.mark.parametrize(
    ("leaf", "nodes"),
    [
        (ca.issue("cn-node", ["a", "b"]), {"a", "b"}),
        (ca.issue(None, ["spiffe://td/ns/x/sa/y"]), {"spiffe://td/ns/x/sa/y"}),
        (ca.issue("cn-node", ["a", "spiffe://td/a"]), {"a", "spiffe://td/a"}),
        (ca.issue("cn-node", []), {"cn-node"}),
        (ca.issue("cn-node", ["10.0.0.1"]), set()),  # SANs of another kind: the CN no longer counts
        (ca.issue(None, []), set()),
    ],
    ids=["dns-over-cn", "uri", "dns-and-uri", "cn-without-sans", "ip-san-hides-cn", "nothing"],
)
def test_certificate_names(leaf, nodes):
    assert PeerCertificate.from_pem(leaf.cert).node_ids() == nodes


def test_authorizer_allows_named_nodes_only_exactly():
    check = authorizer({"x509_pem_cert": [ca.issue("cn", ["node-a"]).cert]})
    check("node-a")
    for other in ("cn", "NODE-A", "node-a ", "node", ""):
        with pytest.raises(NodeNotPermitted, match="does not name node"):
            check(other)


def test_refusal_names_the_certificate_bounded_and_escaped():
    check = authorizer({"x509_pem_cert": [ca.issue("evil\ncn", ["node-a"]).cert]})
    with pytest.raises(NodeNotPermitted) as refused:
        check("x" * 10_000 + "\n")
    message = str(refused.value)
    assert "\n" not in message and len(message) < 800
    assert "DNS:node-a" in message and "evil" in message


@pytest.mark.parametrize("context", [{}, {"x509_pem_cert": []}, {"x509_pem_cert": [b"not a certificate"]}])
def test_no_usable_certificate_names_no_node(context):
    with pytest.raises(NodeNotPermitted, match="no usable client certificate"):
        authorizer(context)("node-a")

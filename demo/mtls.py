"""The demo's mTLS hop: certificates made at start, the Secrets and listeners that use them, and what it shows.

demo-node's mTLS egress listener -> mTLS -> demo-server's mTLS ingress listener (on 127.0.0.1, the pod IP of
demo-server) -> the app. Both Envoys get their certificates over SDS from Secrets written (as
`kubectl get secret -o yaml` prints them) next to the logs.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from envoy_control_plane.model import API_VERSIONS, CLUSTER_NAME_ANNOTATION

from .certs import CA, client_context, tls_secret
from .ports import Ports
from .processes import Failed

SERVER_NODE, SERVER_IP = "demo-server", "127.0.0.1"
CLIENT_SAN, SERVER_SAN = "spiffe://demo.local/ns/default/sa/client", "spiffe://demo.local/ns/default/sa/server"
STRANGER_SAN = "spiffe://demo.local/ns/default/sa/stranger"


class Certificates:
    def __init__(self) -> None:
        self.ca = CA("demo mesh CA")
        self.client = self.ca.issue("demo-node", [CLIENT_SAN])
        self.server = self.ca.issue("demo-server", [SERVER_SAN, "demo-server.default"])
        self.stranger = self.ca.issue("stranger", [STRANGER_SAN])  # the right CA, a SAN the ingress does not allow


def write_manifests(directory: Path, certs: Certificates, ports: Ports, node: str) -> Path:
    """The Secrets, the server's pod and the two listeners of the hop, in one file."""
    directory.mkdir(parents=True, exist_ok=True)
    docs: list[dict[str, Any]] = [
        tls_secret("demo-client-tls", certs.client, certs.ca),
        tls_secret("demo-server-tls", certs.server, certs.ca),
        {"apiVersion": API_VERSIONS["Pod"], "kind": "Pod",
         "metadata": {"name": "demo-server", "annotations": {CLUSTER_NAME_ANNOTATION: "secure-app"}},
         "status": {"podIP": SERVER_IP}},
        {"apiVersion": API_VERSIONS["IngressListener"], "kind": "IngressListener", "metadata": {"name": "secure-app"},
         "spec": {"nodename": SERVER_NODE, "listenport": ports.mtls_ingress, "targetport": ports.app,
                  "rbac": {"sans": [CLIENT_SAN]}, "tls": {"secret": "demo-server-tls"}}},
        {"apiVersion": API_VERSIONS["EgressListener"], "kind": "EgressListener", "metadata": {"name": "secure-app"},
         "spec": {"nodename": node, "listenport": ports.mtls_egress, "targetport": ports.mtls_ingress,
                  "targetcluster": "secure-app", "tls": {"secret": "demo-client-tls", "sni": "demo-server.default"}}},
    ]  # fmt: skip
    path = directory / "mtls.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


async def show(certs: Certificates, ports: Ports, exchange: Any, say: Any) -> None:
    """The hop's traffic, the certificates each Envoy presents, and clients the ingress refuses; Failed when the
    hop does not answer or a client it should refuse gets through."""
    egress, ingress = f"127.0.0.1:{ports.mtls_egress}", f"{SERVER_IP}:{ports.mtls_ingress}"
    answer = await exchange(("127.0.0.1", ports.mtls_egress))
    say(f"mTLS egress {egress} (demo-node) -> ingress {ingress} ({SERVER_NODE}): "
        + (f"answered by {answer}" if answer else "no answer"))
    if answer != "app":
        raise Failed(f"mTLS egress {egress} -> ingress {ingress}: expected an answer from app, got {answer or 'none'}")
    client_cert = await _presented(ports.envoy_admin)
    server_cert = await _presented(ports.server_admin)
    say(f"  certificates presented (each Envoy's /certs): demo-node {client_cert}; {SERVER_NODE} {server_cert}")
    for label, leaf in (("a client with a SAN outside rbac.sans", certs.stranger), ("a client without a certificate", None)):
        reply = await exchange((SERVER_IP, ports.mtls_ingress), ssl_context=client_context(certs.ca, leaf))
        say(f"  direct to {ingress} from {label}: " + (f"answered by {reply}" if reply else "refused"))
        if reply:
            raise Failed(f"mTLS ingress {ingress}: {label} was answered by {reply}, expected a refusal")


async def _presented(admin_port: int) -> str:
    """The certificate an Envoy presents (its /certs), as subject, SANs and serial."""
    url = f"http://127.0.0.1:{admin_port}/certs"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).read())
    for context in json.loads(body).get("certificates", []):
        for cert in context.get("cert_chain", []):
            sans = [v for san in cert.get("subject_alt_names", []) for v in san.values()]
            return f"serial {cert.get('serial_number')} SANs [{', '.join(sans)}]"
    return "no certificate"

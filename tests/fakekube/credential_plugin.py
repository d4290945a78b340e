"""A kubectl credential plugin (ExecCredential) for tests, as `aws eks get-token` is for EKS.

`python -I credential_plugin.py token|cert LIFETIME [RUNS_FILE]` (-I, or this directory's selectors.py shadows the
standard one): asks the fake API server named in KUBERNETES_EXEC_INFO (the kubeconfig's exec entry needs
`provideClusterInfo: true`) for a new token, or client certificate, that lives LIFETIME seconds (the server then
accepts only that one), prints it with its expirationTimestamp, and appends a line to RUNS_FILE if given.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import urllib.request


def main() -> None:
    kind, lifetime = sys.argv[1], sys.argv[2]
    info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
    cluster = info["spec"]["cluster"]
    context = None
    if cluster["server"].startswith("https"):
        context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    path = "token" if kind == "token" else "client-certificate"
    with urllib.request.urlopen(f"{cluster['server']}/fakekube/{path}?lifetime={lifetime}", context=context,
                                timeout=10) as response:
        issued = json.load(response)
    if len(sys.argv) > 3:
        with open(sys.argv[3], "a") as runs:
            runs.write(issued.get("token", issued.get("name", "")) + "\n")
    if kind == "token":
        status = {"token": issued["token"]}
    else:
        status = {"clientCertificateData": issued["cert"], "clientKeyData": issued["key"]}
    status["expirationTimestamp"] = issued["expirationTimestamp"]
    print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))


if __name__ == "__main__":
    main()

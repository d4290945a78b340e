"""A kubectl credential plugin (ExecCredential) for tests, as `aws eks get-token` is for EKS.

`python -I credential_plugin.py LIFETIME [RUNS_FILE]` (-I, or this directory's selectors.py shadows the
standard one): asks the fake API server named in KUBERNETES_EXEC_INFO (the
kubeconfig's exec entry needs `provideClusterInfo: true`) for a new token that lives LIFETIME seconds (the server
then accepts only that one), prints it with its expirationTimestamp, and appends a line to RUNS_FILE if given.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import urllib.request


def main() -> None:
    info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
    cluster = info["spec"]["cluster"]
    context = None
    if cluster["server"].startswith("https"):
        context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    url = f"{cluster['server']}/fakekube/token?lifetime={sys.argv[1]}"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        issued = json.load(response)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "a") as runs:
            runs.write(issued["token"] + "\n")
    status = {"token": issued["token"], "expirationTimestamp": issued["expirationTimestamp"]}
    print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))


if __name__ == "__main__":
    main()

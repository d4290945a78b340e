"""The resource types the fake serves, and the discovery documents kubectl reads to find them."""

from __future__ import annotations

from dataclasses import dataclass

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    short_names: tuple[str, ...] = ()
    field_selectors: tuple[str, ...] = ("metadata.name", "metadata.namespace")
    namespaced: bool = True
    # With a status subresource, writes to the object leave its status alone and writes to /status change only it
    # (subresources.py); the fake keeps pods without one, so tests may still set a pod's status with a PUT.
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_plural(self) -> str:
        """How the real server names the type in messages: `ingresslisteners.ingresslistener.envoy.uw.systems`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_resource(self) -> dict:
        return {
            "name": self.plural,
            "singularName": self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
            "shortNames": list(self.short_names),
        }


POD = ResourceType(
    "", "v1", "Pod", "pods", ("po",),
    ("metadata.name", "metadata.namespace", "status.phase", "spec.nodeName"),
)
INGRESS_LISTENER = ResourceType(
    "ingresslistener.envoy.uw.systems", "v1alpha1", "IngressListener", "ingresslisteners", status_subresource=True
)
EGRESS_LISTENER = ResourceType(
    "egresslistener.envoy.uw.systems", "v1alpha1", "EgressListener", "egresslisteners", status_subresource=True
)
SECRET = ResourceType("", "v1", "Secret", "secrets", (), ("metadata.name", "metadata.namespace", "type"))
CRD = ResourceType(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", ("crd", "crds"),
    ("metadata.name",), namespaced=False,
)
EVENT = ResourceType(
    "", "v1", "Event", "events", ("ev",),
    ("metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.namespace",
     "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
     "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
)
LEASE = ResourceType("coordination.k8s.io", "v1", "Lease", "leases")
RESOURCE_TYPES = (POD, INGRESS_LISTENER, EGRESS_LISTENER, SECRET, CRD, EVENT, LEASE)


def by_path(group: str, version: str, plural: str) -> ResourceType | None:
    for rtype in RESOURCE_TYPES:
        if (rtype.group, rtype.version, rtype.plural) == (group, version, plural):
            return rtype
    return None


def by_kind(kind: str) -> ResourceType:
    for rtype in RESOURCE_TYPES:
        if rtype.kind == kind:
            return rtype
    raise KeyError(f"the fake serves no kind {kind!r}")


def status_api_resource(rtype: ResourceType) -> list[dict]:
    """How discovery lists a status subresource (`ingresslisteners/status`), as the real server does."""
    if not rtype.status_subresource:
        return []
    return [{"name": f"{rtype.plural}/status", "singularName": "", "namespaced": True, "kind": rtype.kind,
             "verbs": ["get", "patch", "update"]}]


def version_info() -> dict:
    return {
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "gitCommit": "fake",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
        "compiler": "gc", "platform": "linux/amd64",
    }


def core_versions(server_address: str) -> dict:
    return {
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(group: str) -> dict | None:
    versions = sorted({rt.version for rt in RESOURCE_TYPES if rt.group == group})
    if not group or not versions:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def group_list() -> dict:
    groups = [_group(g) for g in sorted({rt.group for rt in RESOURCE_TYPES if rt.group})]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(name: str) -> dict | None:
    found = _group(name)
    return None if found is None else {"kind": "APIGroup", "apiVersion": "v1", **found}


def resource_list(group: str, version: str) -> dict | None:
    types = [rt for rt in RESOURCE_TYPES if (rt.group, rt.version) == (group, version)]
    if not types:
        return None
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": types[0].api_version,
        "resources": [r for rt in types for r in (rt.api_resource(), *status_api_resource(rt))],
    }

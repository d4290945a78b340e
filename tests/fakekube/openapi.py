"""OpenAPI v3 discovery (`/openapi/v3` and one document per group/version), enough for kubectl: it finds, for each
kind, the PATCH operation and its `fieldValidation` parameter, so `kubectl apply` (validation on, the default)
leaves validation to the server, which checks custom resources against their CRD (crds.py). A custom resource's
schema is published as its CRD gives it (`kubectl explain`)."""

from __future__ import annotations

import hashlib
import json

from .resources import RESOURCE_TYPES, ResourceType

QUERY_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation", "force")
# Every kind's top level, as kubectl reads it to compute an apply patch (the rest is left open).
_OPEN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {"type": "object", "properties": {
    "name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRINGS, "annotations": _STRINGS,
    "resourceVersion": {"type": "string"}, "uid": {"type": "string"}, "generation": {"type": "integer"},
    "creationTimestamp": {"type": "string"}, "deletionTimestamp": {"type": "string"},
    "finalizers": {"type": "array", "items": {"type": "string"}},
}}
OBJECT_FIELDS = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": _METADATA, "spec": _OPEN,
                 "status": _OPEN}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _gvs() -> list[tuple[str, str]]:
    return sorted({(rt.group, rt.version) for rt in RESOURCE_TYPES})


def root(schemas: dict[ResourceType, dict]) -> dict:
    paths = {}
    for group, version in _gvs():
        doc = document(group, version, schemas)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16].upper()
        paths[_gv_path(group, version)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(group, version)}?hash={digest}"}
    return {"paths": paths}


def _definition_name(rtype: ResourceType) -> str:
    reverse = ".".join(reversed(rtype.group.split("."))) if rtype.group else "io.k8s.api.core"
    return f"{reverse}.{rtype.version}.{rtype.kind}"


def document(group: str, version: str, schemas: dict[ResourceType, dict]) -> dict | None:
    types = [rt for rt in RESOURCE_TYPES if (rt.group, rt.version) == (group, version)]
    if not types:
        return None
    paths, components = {}, {}
    for rtype in types:
        gvk = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
        name = _definition_name(rtype)
        ref = {"$ref": f"#/components/schemas/{name}"}
        parameters = [{"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                      for p in QUERY_PARAMETERS]
        body = {"content": {"application/json": {"schema": ref}}}
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}

        def operation(verb: str, op_kind: str) -> dict:
            return {"operationId": f"{verb}{rtype.kind}", "x-kubernetes-action": op_kind,  # noqa: B023
                    "x-kubernetes-group-version-kind": gvk, "parameters": parameters, "responses": ok}  # noqa: B023

        base = f"/{_gv_path(group, version)}"
        collection = f"{base}/namespaces/{{namespace}}/{rtype.plural}" if rtype.namespaced else f"{base}/{rtype.plural}"
        paths[collection] = {"post": {**operation("create", "post"), "requestBody": body}}
        paths[f"{collection}/{{name}}"] = {
            "get": operation("read", "get"),
            "put": {**operation("replace", "put"), "requestBody": body},
            "patch": {**operation("patch", "patch"), "requestBody": {"content": {
                t: {"schema": {"type": "object"}} for t in (
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json", "application/apply-patch+yaml")}}},
            "delete": operation("delete", "delete"),
        }
        definition = dict(schemas.get(rtype) or {"type": "object"})
        definition["properties"] = {**OBJECT_FIELDS, **definition.get("properties", {})}
        definition["x-kubernetes-group-version-kind"] = [gvk]
        components[name] = definition
    return {
        "openapi": "3.0.0", "info": {"title": "Kubernetes (fake)", "version": "v1.32.0"},
        "paths": paths, "components": {"schemas": components},
    }

"""CustomResourceDefinitions in the fake: the apiextensions.k8s.io/v1 resource, the repository's CRDs installed at
start, and admission of custom resources written through the API (validated against their CRD's schema: 422
Invalid; unknown fields pruned, or 400 with `fieldValidation=Strict`). Objects put in by test cues are not checked,
as objects stored before a schema was tightened."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from . import schema
from .resources import CRD, ResourceType
from .status import ApiError
from .store import Store, now

REPO_CRDS = Path(__file__).resolve().parents[2] / "manifests" / "crds"


def install_repo_crds(store: Store) -> None:
    for path in sorted(REPO_CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == CRD.kind:
                store.create(CRD, "", established(doc))


def established(crd: dict) -> dict:
    """The CRD as the server reports it once accepted: its names accepted, Established."""
    crd = copy.deepcopy(crd)
    spec = crd.get("spec") or {}
    conditions = [
        {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": now()}
        for t, r, m in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                        ("Established", "InitialNamesAccepted", "the initial names have been accepted"))
    ]
    crd["status"] = {"acceptedNames": spec.get("names") or {}, "conditions": conditions,
                     "storedVersions": [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]}
    return crd


def schema_of(store: Store, rtype: ResourceType) -> dict | None:
    """The openAPIV3Schema the installed CRD gives `rtype`'s version, or None (no CRD, or no schema); the stored one,
    for reading only."""
    for crd in store.stored(CRD):
        spec = crd.get("spec") or {}
        if spec.get("group") != rtype.group or (spec.get("names") or {}).get("plural") != rtype.plural:
            continue
        for version in spec.get("versions") or []:
            if version.get("name") == rtype.version:
                return ((version.get("schema") or {}).get("openAPIV3Schema")) or None
    return None


def admit(store: Store, rtype: ResourceType, obj: dict, field_validation: str | None) -> dict:
    """The object to store, or ApiError: 422 for a schema violation, 400 for unknown fields under Strict."""
    name = (obj.get("metadata") or {}).get("name", "")
    if rtype == CRD:
        _check_crd(obj, name)
        return established(obj)
    found = schema_of(store, rtype) if rtype.group else None
    if found is None:
        return obj
    if field_validation == "Strict":
        unknown = schema.unknown_fields(obj, found)
        if unknown:
            listed = ", ".join(f'unknown field "{path}"' for path in unknown)
            raise ApiError(400, f"strict decoding error: {listed}", "BadRequest")
    causes = schema.validate(obj, found)
    if causes:
        raise invalid(rtype, name, causes)
    return schema.prune(obj, found)


def invalid(rtype: ResourceType, name: str, causes: list[schema.Cause]) -> ApiError:
    listed = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(str(c) for c in causes) + "]"
    details = {"name": name, "group": rtype.group, "kind": rtype.kind, "causes": [c.to_json() for c in causes]}
    return ApiError(422, f'{rtype.kind}.{rtype.group} "{name}" is invalid: {listed}', "Invalid", details)


def _check_crd(crd: dict, name: str) -> None:
    spec = crd.get("spec") if isinstance(crd.get("spec"), dict) else {}
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    causes = [schema.Cause(f"spec.{field}", "Required value", "FieldValueRequired")
              for field, value in (("group", spec.get("group")), ("names.plural", names.get("plural")),
                                   ("names.kind", names.get("kind")), ("versions", spec.get("versions")))
              if not value]
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(schema.Cause("spec.scope", f'Unsupported value: "{spec.get("scope")}": supported values: '
                                                 '"Cluster", "Namespaced"', "FieldValueNotSupported"))
    if not causes and name != f"{names['plural']}.{spec['group']}":
        causes.append(schema.Cause("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+'
                                                    "spec.group"))
    if causes:
        raise invalid(CRD, name, causes)

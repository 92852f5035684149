"""Object validation, as the real server's registry strategies do it (422 Invalid with causes).

``validate(rt, obj, old)`` checks metadata (names, labels, annotations, finalizers, owner
references) and then the per-kind rules for the kinds we serve. Custom resources are
validated against their CRD schema in :mod:`.schema`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kuryr_k8s.sandbox.kubeapi import errors, rbac_validation, schema
from kuryr_k8s.sandbox.kubeapi import validation_names as names
from kuryr_k8s.sandbox.kubeapi.errors import Cause
from kuryr_k8s.sandbox.kubeapi.resources import Registry, ResourceType, crd_version

Obj = dict[str, Any]
Validator = Callable[[Obj, Obj | None], list[Cause]]

MAX_ANNOTATIONS = 256 * 1024
_PROTOCOLS = ["SCTP", "TCP", "UDP"]


def _name_rule(rt: ResourceType) -> Callable[[str], str]:
    if rt.key in ("/namespaces", "/services"):
        # Services: DNS-1123 labels since RelaxedServiceNameValidation (GA in 1.34), so
        # "1abc" is accepted as on a real 1.36 server.
        return names.dns1123_label_error
    if rt.group == rbac_validation.GROUP:
        return lambda name: ""  # ValidateRBACName: a path segment ("system:discovery")
    return names.dns1123_subdomain_error


def validate(rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
    causes = validate_metadata(rt, obj.get("metadata") or {}, old)
    if rt.crd is not None:
        causes += _validate_custom(rt, obj)
    else:
        causes += VALIDATORS.get(rt.key, _nothing)(obj, old)
    return causes


def _nothing(obj: Obj, old: Obj | None) -> list[Cause]:
    return []


def validate_metadata(rt: ResourceType, meta: Obj, old: Obj | None) -> list[Cause]:
    causes: list[Cause] = []
    name = meta.get("name")
    if not name:
        causes.append(errors.required("metadata.name"))
    elif old is None:
        problem = _name_rule(rt)(name) or names.path_segment_error(name)
        if problem:
            causes.append(errors.invalid_value("metadata.name", name, problem))
    causes += _validate_labels(meta.get("labels"))
    causes += _validate_annotations(meta.get("annotations"))
    for i, fin in enumerate(meta.get("finalizers") or []):
        problem = names.label_key_error(fin) if isinstance(fin, str) else "must be a string"
        if problem:
            causes.append(errors.invalid_value(f"metadata.finalizers[{i}]", fin, problem))
    causes += _validate_owners(meta.get("ownerReferences"))
    return causes


def _validate_labels(labels: Any) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (labels or {}).items():
        problem = names.label_key_error(key)
        if problem:
            causes.append(errors.invalid_value("metadata.labels", key, problem))
        problem = names.label_value_error(value) if isinstance(value, str) else "must be a string"
        if problem:
            causes.append(errors.invalid_value("metadata.labels", value, problem))
    return causes


def _validate_annotations(annotations: Any) -> list[Cause]:
    causes: list[Cause] = []
    total = 0
    for key, value in (annotations or {}).items():
        problem = names.label_key_error(key)
        if problem:
            causes.append(errors.invalid_value("metadata.annotations", key, problem))
        total += len(key) + len(value if isinstance(value, str) else json.dumps(value))
    if total > MAX_ANNOTATIONS:
        causes.append(
            Cause(
                "FieldValueTooLong",
                "metadata.annotations",
                f"Too long: may not be more than {MAX_ANNOTATIONS} bytes",
            )
        )
    return causes


def _validate_owners(owners: Any) -> list[Cause]:
    causes: list[Cause] = []
    controllers = 0
    for i, ref in enumerate(owners or []):
        path = f"metadata.ownerReferences[{i}]"
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                causes.append(errors.required(f"{path}.{key}"))
        controllers += 1 if ref.get("controller") else 0
    if controllers > 1:
        causes.append(
            errors.invalid_value(
                "metadata.ownerReferences",
                owners,
                "Only one reference can have Controller set to true",
            )
        )
    return causes


# ---------------------------------------------------------------- pods


def _validate_container(c: Any, path: str, seen: set[str]) -> list[Cause]:
    if not isinstance(c, dict):
        return [errors.invalid_value(path, c, "must be an object")]
    causes: list[Cause] = []
    name = c.get("name")
    if not name:
        causes.append(errors.required(f"{path}.name"))
    elif names.dns1123_label_error(name):
        causes.append(errors.invalid_value(f"{path}.name", name, names.dns1123_label_error(name)))
    elif name in seen:
        causes.append(errors.duplicate(f"{path}.name", name))
    else:
        seen.add(name)
    if not c.get("image"):
        causes.append(errors.required(f"{path}.image"))
    for j, port in enumerate(c.get("ports") or []):
        causes += _validate_port(port, f"{path}.ports[{j}]", "containerPort")
    return causes


def _validate_port(port: Any, path: str, field: str) -> list[Cause]:
    if not isinstance(port, dict):
        return [errors.invalid_value(path, port, "must be an object")]
    causes: list[Cause] = []
    number = port.get(field)
    if number is None:
        causes.append(errors.required(f"{path}.{field}"))
    elif not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
        causes.append(
            errors.invalid_value(
                f"{path}.{field}", number, "must be between 1 and 65535, inclusive"
            )
        )
    proto = port.get("protocol", "TCP")
    if proto not in _PROTOCOLS:
        causes.append(errors.unsupported_value(f"{path}.protocol", proto, _PROTOCOLS))
    return causes


def _validate_pod(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [errors.required("spec.containers")]
    causes: list[Cause] = []
    containers = spec.get("containers")
    if not containers:
        causes.append(errors.required("spec.containers"))
    seen: set[str] = set()
    for field in ("containers", "initContainers"):
        items = spec.get(field) or []
        if not isinstance(items, list):
            causes.append(errors.invalid_value(f"spec.{field}", items, "must be a list"))
            continue
        for i, c in enumerate(items):
            causes += _validate_container(c, f"spec.{field}[{i}]", seen)
    policy = spec.get("restartPolicy", "Always")
    if policy not in ("Always", "OnFailure", "Never"):
        causes.append(
            errors.unsupported_value("spec.restartPolicy", policy, ["Always", "OnFailure", "Never"])
        )
    if old is not None:
        causes += _pod_update(spec, old.get("spec") or {})
    return causes


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _pod_update(new: Obj, old: Obj) -> list[Cause]:
    def comparable(spec: Obj) -> Obj:
        out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
        for field in ("containers", "initContainers"):
            out[field] = [
                {k: v for k, v in c.items() if k != "image"}
                for c in spec.get(field) or []
                if isinstance(c, dict)
            ]
        return out

    if comparable(new) != comparable(old):
        return [
            errors.forbidden_field(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)",
            )
        ]
    return []


# ---------------------------------------------------------------- services and friends


def _validate_service(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    kind = spec.get("type", "ClusterIP")
    allowed = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
    if kind not in allowed:
        causes.append(errors.unsupported_value("spec.type", kind, allowed))
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(errors.required("spec.ports"))
    for i, port in enumerate(ports):
        causes += _validate_port(port, f"spec.ports[{i}]", "port")
        if len(ports) > 1 and isinstance(port, dict) and not port.get("name"):
            causes.append(errors.required(f"spec.ports[{i}].name"))
    if old is not None:
        before = (old.get("spec") or {}).get("clusterIP")
        after = spec.get("clusterIP")
        if before and after and before != after:
            causes.append(
                errors.invalid_value("spec.clusterIPs[0]", after, "may not change once set")
            )
    return causes


def _validate_endpointslice(obj: Obj, old: Obj | None) -> list[Cause]:
    causes: list[Cause] = []
    family = obj.get("addressType")
    allowed = ["FQDN", "IPv4", "IPv6"]
    if not family:
        causes.append(errors.required("addressType"))
    elif family not in allowed:
        causes.append(errors.unsupported_value("addressType", family, allowed))
    elif old is not None and old.get("addressType") != family:
        causes.append(errors.invalid_value("addressType", family, "field is immutable"))
    for i, ep in enumerate(obj.get("endpoints") or []):
        if not isinstance(ep, dict) or not ep.get("addresses"):
            causes.append(errors.required(f"endpoints[{i}].addresses"))
    return causes


def _validate_netpol(obj: Obj, old: Obj | None) -> list[Cause]:
    causes: list[Cause] = []
    for i, kind in enumerate((obj.get("spec") or {}).get("policyTypes") or []):
        if kind not in ("Ingress", "Egress"):
            causes.append(
                errors.unsupported_value(f"spec.policyTypes[{i}]", kind, ["Egress", "Ingress"])
            )
    return causes


def _validate_lease(obj: Obj, old: Obj | None) -> list[Cause]:
    duration = (obj.get("spec") or {}).get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        return [
            errors.invalid_value("spec.leaseDurationSeconds", duration, "must be greater than 0")
        ]
    return []


# ---------------------------------------------------------------- CRDs and custom resources


def _validate_crd(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [errors.required("spec")]
    causes: list[Cause] = []
    group = spec.get("group") or ""
    if not group:
        causes.append(errors.required("spec.group"))
    elif names.dns1123_subdomain_error(group) or "." not in group:
        causes.append(
            errors.invalid_value("spec.group", group, "should be a domain with at least one dot")
        )
    names_spec: Obj = spec["names"] if isinstance(spec.get("names"), dict) else {}
    plural = names_spec.get("plural") or ""
    for key in ("plural", "kind"):
        if not names_spec.get(key):
            causes.append(errors.required(f"spec.names.{key}"))
    if plural and names.dns1035_label_error(plural):
        causes.append(
            errors.invalid_value("spec.names.plural", plural, names.dns1035_label_error(plural))
        )
    name = (obj.get("metadata") or {}).get("name")
    if plural and group and name != f"{plural}.{group}":
        causes.append(
            errors.invalid_value("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
        )
    scope = spec.get("scope")
    if scope not in ("Cluster", "Namespaced"):
        causes.append(errors.unsupported_value("spec.scope", scope, ["Cluster", "Namespaced"]))
    if old is not None and (old.get("spec") or {}).get("scope") != scope:
        causes.append(errors.invalid_value("spec.scope", scope, "field is immutable"))
    return causes + _validate_crd_versions(spec.get("versions"))


def _validate_crd_versions(versions: Any) -> list[Cause]:
    if not isinstance(versions, list) or not versions:
        return [errors.required("spec.versions")]
    causes: list[Cause] = []
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
    if len(storage) != 1:
        causes.append(
            errors.invalid_value(
                "spec.versions",
                versions and len(storage),
                "must have exactly one version marked as storage version",
            )
        )
    for i, v in enumerate(versions):
        path = f"spec.versions[{i}]"
        if not isinstance(v, dict) or not v.get("name"):
            causes.append(errors.required(f"{path}.name"))
            continue
        body = (v.get("schema") or {}).get("openAPIV3Schema")
        if body is None:
            causes.append(
                Cause(
                    "FieldValueRequired",
                    f"{path}.schema.openAPIV3Schema",
                    "Required value: schemas are required",
                )
            )
        else:
            causes += schema.check_structural(body, f"{path}.schema.openAPIV3Schema")
        for j, col in enumerate(v.get("additionalPrinterColumns") or []):
            for key in ("name", "type", "jsonPath"):
                if not isinstance(col, dict) or not col.get(key):
                    causes.append(errors.required(f"{path}.additionalPrinterColumns[{j}].{key}"))
    return causes


_PROTECTED = ("k8s.io", "kubernetes.io")
APPROVAL = "api-approved.kubernetes.io"


def crd_create_rules(obj: Obj, registry: Registry) -> list[Cause]:
    """CRDs may not shadow a built-in kind, nor use a protected group without approval."""
    spec = obj.get("spec") or {}
    group, plural = str(spec.get("group", "")), str((spec.get("names") or {}).get("plural", ""))
    existing = registry.get(f"{group}/{plural}")
    if existing is not None and existing.crd is None:
        return [
            errors.invalid_value("spec.names.plural", plural, "is already served by a built-in API")
        ]
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    protected = any(group == p or group.endswith("." + p) for p in _PROTECTED)
    if protected and APPROVAL not in annotations:
        return [
            errors.Cause(
                "FieldValueRequired",
                f"metadata.annotations[{APPROVAL}]",
                f"Required value: protected groups must have approval annotation "
                f'"{APPROVAL}", see https://github.com/kubernetes/enhancements/'
                "pull/1111",
            )
        ]
    return []


def custom_schema(rt: ResourceType, version: str | None = None) -> Obj | None:
    entry = crd_version(rt, version or rt.version)
    body = (entry.get("schema") or {}).get("openAPIV3Schema")
    return body if isinstance(body, dict) else None


def _validate_custom(rt: ResourceType, obj: Obj) -> list[Cause]:
    body = custom_schema(rt)
    if body is None:
        return []
    return schema.validate(obj, body)


VALIDATORS: dict[str, Validator] = {
    "/pods": _validate_pod,
    "/services": _validate_service,
    "discovery.k8s.io/endpointslices": _validate_endpointslice,
    "networking.k8s.io/networkpolicies": _validate_netpol,
    "coordination.k8s.io/leases": _validate_lease,
    "apiextensions.k8s.io/customresourcedefinitions": _validate_crd,
    **rbac_validation.VALIDATORS,
}

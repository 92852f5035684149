"""Defaulting and validation of ``rbac.authorization.k8s.io/v1`` objects, as
``pkg/apis/rbac/v1`` defaults and ``pkg/apis/rbac/validation`` checks them."""

from __future__ import annotations

from typing import Any

from kuryr_k8s.sandbox.kubeapi import errors
from kuryr_k8s.sandbox.kubeapi.errors import Cause

Obj = dict[str, Any]
GROUP = "rbac.authorization.k8s.io"


def _go_strings(values: list[Any]) -> str:
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def _rule_causes(rule: Any, path: str, namespaced: bool) -> list[Cause]:
    rule = rule if isinstance(rule, dict) else {}
    causes: list[Cause] = []
    if not rule.get("verbs"):
        causes.append(
            Cause(
                "FieldValueRequired",
                f"{path}.verbs",
                "Required value: verbs must contain at least one value",
            )
        )
    urls = rule.get("nonResourceURLs") or []
    if urls:
        shown = _go_strings(urls)
        if namespaced:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"{path}.nonResourceURLs",
                    f"Invalid value: {shown}: namespaced rules cannot apply to non-resource URLs",
                )
            )
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"{path}.nonResourceURLs",
                    f"Invalid value: {shown}: rules cannot apply to both regular resources and "
                    "non-resource URLs",
                )
            )
        return causes
    if not rule.get("apiGroups"):
        causes.append(
            Cause(
                "FieldValueRequired",
                f"{path}.apiGroups",
                "Required value: resource rules must supply at least one api group",
            )
        )
    if not rule.get("resources"):
        causes.append(
            Cause(
                "FieldValueRequired",
                f"{path}.resources",
                "Required value: resource rules must supply at least one resource",
            )
        )
    return causes


def _role(namespaced: bool) -> Any:
    def check(obj: Obj, old: Obj | None) -> list[Cause]:
        causes: list[Cause] = []
        for i, rule in enumerate(obj.get("rules") or []):
            causes += _rule_causes(rule, f"rules[{i}]", namespaced)
        return causes

    return check


def _subject_causes(subject: Any, path: str, namespaced: bool) -> list[Cause]:
    subject = subject if isinstance(subject, dict) else {}
    causes: list[Cause] = []
    kind, group = subject.get("kind", ""), subject.get("apiGroup", "")
    if not subject.get("name"):
        causes.append(errors.required(f"{path}.name"))
    if kind == "ServiceAccount":
        if group:
            causes.append(errors.unsupported_value(f"{path}.apiGroup", group, [""]))
        if not namespaced and not subject.get("namespace"):
            causes.append(errors.required(f"{path}.namespace"))
    elif kind in ("User", "Group"):
        if group != GROUP:
            causes.append(errors.unsupported_value(f"{path}.apiGroup", group, [GROUP]))
    else:
        causes.append(
            errors.unsupported_value(f"{path}.kind", kind, ["ServiceAccount", "User", "Group"])
        )
    return causes


def _role_ref_repr(ref: Obj) -> str:
    return (
        f'rbac.RoleRef{{APIGroup:"{ref.get("apiGroup", "")}", Kind:"{ref.get("kind", "")}", '
        f'Name:"{ref.get("name", "")}"}}'
    )


def _binding(namespaced: bool) -> Any:
    kinds = ["Role", "ClusterRole"] if namespaced else ["ClusterRole"]

    def check(obj: Obj, old: Obj | None) -> list[Cause]:
        ref = obj.get("roleRef") if isinstance(obj.get("roleRef"), dict) else {}
        assert isinstance(ref, dict)
        causes: list[Cause] = []
        if ref.get("apiGroup") != GROUP:
            causes.append(
                errors.unsupported_value("roleRef.apiGroup", ref.get("apiGroup", ""), [GROUP])
            )
        if ref.get("kind") not in kinds:
            causes.append(errors.unsupported_value("roleRef.kind", ref.get("kind", ""), kinds))
        if not ref.get("name"):
            causes.append(errors.required("roleRef.name"))
        for i, subject in enumerate(obj.get("subjects") or []):
            causes += _subject_causes(subject, f"subjects[{i}]", namespaced)
        if old is not None and (old.get("roleRef") or {}) != ref:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    "roleRef",
                    f"Invalid value: {_role_ref_repr(ref)}: cannot change roleRef",
                )
            )
        return causes

    return check


def default_binding(obj: Obj) -> None:
    """``SetDefaults_*RoleBinding`` and ``SetDefaults_Subject``."""
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = GROUP
    for subject in obj.get("subjects") or []:
        if (
            isinstance(subject, dict)
            and not subject.get("apiGroup")
            and subject.get("kind") in ("User", "Group")
        ):
            subject["apiGroup"] = GROUP


VALIDATORS = {
    f"{GROUP}/roles": _role(True),
    f"{GROUP}/clusterroles": _role(False),
    f"{GROUP}/rolebindings": _binding(True),
    f"{GROUP}/clusterrolebindings": _binding(False),
}
DEFAULTERS = {
    f"{GROUP}/rolebindings": default_binding,
    f"{GROUP}/clusterrolebindings": default_binding,
}

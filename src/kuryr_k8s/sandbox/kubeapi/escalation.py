"""RBAC's privilege-escalation check on writes of Roles, ClusterRoles and their bindings.

As the ``policybased`` storages of kube-apiserver: a user who is not in ``system:masters``
may create or replace a Role/ClusterRole only with rules they hold themselves (or with the
``escalate`` verb on it), and a RoleBinding/ClusterRoleBinding only to a role whose rules
they hold (or with the ``bind`` verb on that role). The comparison is
``component-helpers/auth/rbac/validation``: ``Covers`` over rules broken down into one
verb/group/resource/name each, the missing ones compacted and printed with
``CompactString``.
"""

from __future__ import annotations

import json
from typing import Any

from kuryr_k8s.sandbox.kubeapi import errors
from kuryr_k8s.sandbox.kubeapi.auth import RBAC_GROUP, Attributes, Authorizer, User

Obj = dict[str, Any]
ROLE_KINDS = {"roles": "Role", "clusterroles": "ClusterRole"}
BINDINGS = ("rolebindings", "clusterrolebindings")


def _list(rule: Obj, key: str) -> list[str]:
    return [str(v) for v in rule.get(key) or []]


def breakdown(rule: Obj) -> list[Obj]:
    """``BreakdownRule``: at most one verb, group, resource and name per rule."""
    out: list[Obj] = []
    names = _list(rule, "resourceNames")
    for group in _list(rule, "apiGroups"):
        for resource in _list(rule, "resources"):
            for verb in _list(rule, "verbs"):
                base = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                out += [{**base, "resourceNames": [n]} for n in names] if names else [base]
    for url in _list(rule, "nonResourceURLs"):
        out += [{"nonResourceURLs": [url], "verbs": [v]} for v in _list(rule, "verbs")]
    return out


def _resources_cover(owner: list[str], wanted: list[str]) -> bool:
    if "*" in owner:
        return True
    for path in wanted:
        if path in owner:
            continue
        if "/" not in path or "*/" + path.split("/", 1)[1] not in owner:
            return False
    return True


def _urls_cover(owner: list[str], wanted: list[str]) -> bool:
    return all(
        any(o == p or (o.endswith("*") and p.startswith(o.rstrip("*"))) for o in owner)
        for p in wanted
    )


def rule_covers(owner: Obj, sub: Obj) -> bool:
    """``ruleCovers``: ``owner`` grants everything the broken-down ``sub`` does."""
    verbs, groups = _list(owner, "verbs"), _list(owner, "apiGroups")
    owner_names, sub_names = _list(owner, "resourceNames"), _list(sub, "resourceNames")
    return (
        ("*" in verbs or set(_list(sub, "verbs")) <= set(verbs))
        and ("*" in groups or set(_list(sub, "apiGroups")) <= set(groups))
        and _resources_cover(_list(owner, "resources"), _list(sub, "resources"))
        and _urls_cover(_list(owner, "nonResourceURLs"), _list(sub, "nonResourceURLs"))
        and (not owner_names or (bool(sub_names) and set(sub_names) <= set(owner_names)))
    )


def uncovered(owner_rules: list[Obj], rules: list[Obj]) -> list[Obj]:
    """``Covers``: the broken-down parts of ``rules`` no owner rule covers."""
    subs = [sub for rule in rules for sub in breakdown(rule)]
    return [sub for sub in subs if not any(rule_covers(o, sub) for o in owner_rules)]


def compact(rules: list[Obj]) -> list[Obj]:
    """``CompactRules``: simple resource rules differing only in verbs are merged."""
    out: list[Obj] = []
    simple: dict[tuple[str, str, str], Obj] = {}
    for rule in rules:
        names = _list(rule, "resourceNames")
        if "nonResourceURLs" in rule or len(names) > 1:
            out.append(rule)
            continue
        key = (rule["apiGroups"][0], rule["resources"][0], names[0] if names else "")
        if key in simple:
            simple[key]["verbs"] = simple[key]["verbs"] + rule["verbs"]
        else:
            simple[key] = {**rule, "verbs": list(rule["verbs"])}
    return out + list(simple.values())


def _go_strings(values: list[str]) -> str:
    """Go's ``%q`` of a ``[]string``."""
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


def compact_string(rule: Obj) -> str:
    """``rbacv1helpers.CompactString``."""
    parts = [
        f"{label}:{_go_strings(_list(rule, key))}"
        for label, key in (
            ("APIGroups", "apiGroups"),
            ("Resources", "resources"),
            ("NonResourceURLs", "nonResourceURLs"),
            ("ResourceNames", "resourceNames"),
            ("Verbs", "verbs"),
        )
        if rule.get(key)
    ]
    return "{" + ", ".join(parts) + "}"


def _confirm_no_escalation(
    authorizer: Authorizer, user: User, namespace: str, rules: list[Obj]
) -> str:
    """``ConfirmNoEscalation``: the error text, or "" when ``user`` holds ``rules``."""
    owner, problems = authorizer.user_rules(user, namespace)
    missing = uncovered(owner, rules)
    if not missing:
        return ""
    lines = sorted({compact_string(r) for r in compact(missing)})
    message = (
        f'user "{user.name}" (groups={_go_strings(list(user.groups))}) is attempting to grant '
        "RBAC permissions not currently held:\n" + "\n".join(lines)
    )
    if problems:
        message += f"; resolution errors: [{' '.join(problems)}]"
    return message


def _allowed(
    authorizer: Authorizer, user: User, verb: str, plural: str, ns: str, name: str
) -> bool:
    attrs = Attributes(verb, True, group=RBAC_GROUP, resource=plural, namespace=ns, name=name)
    return authorizer.authorize(user, attrs).allowed


def check(authorizer: Authorizer, user: User, plural: str, namespace: str, obj: Any) -> None:
    """Raise 403 when ``user`` writing ``obj`` (a ``plural`` of rbac.authorization.k8s.io in
    ``namespace``) would grant more than they hold."""
    if user.privileged or not isinstance(obj, dict):
        return
    name = str((obj.get("metadata") or {}).get("name") or "")
    if plural in ROLE_KINDS:
        if _allowed(authorizer, user, "escalate", plural, namespace, name):
            return
        rules = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
    elif plural in BINDINGS:
        ref = obj.get("roleRef") if isinstance(obj.get("roleRef"), dict) else {}
        assert isinstance(ref, dict)
        role_plural = {"Role": "roles", "ClusterRole": "clusterroles"}.get(str(ref.get("kind")))
        if role_plural is None:
            return  # validation rejects it
        if _allowed(authorizer, user, "bind", role_plural, namespace, str(ref.get("name", ""))):
            return
        rules, problem = authorizer.role_rules({**ref, "kind": ROLE_KINDS[role_plural]}, namespace)
        if problem:
            raise errors.not_found(role_plural, RBAC_GROUP, str(ref.get("name", "")))
    else:
        return
    message = _confirm_no_escalation(authorizer, user, namespace, rules)
    if message:
        raise errors.forbidden(plural, RBAC_GROUP, name, message)

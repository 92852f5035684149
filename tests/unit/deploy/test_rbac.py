"""deploy/base/rbac.yaml grants exactly the API calls the code makes, no more, no less.

The calls are found in the source (AST): every ``<client>.<verb>(RESOURCE, ...)`` with a
resource constant of ``kuryr_k8s.k8s.resources`` (``subresource="status"`` counted as
``<plural>/status``), every ``Informer(client, RESOURCE)`` (list + watch) and every
finalizer edit ``add_finalizer/remove_finalizer/set_finalizers(client, RESOURCE, ...)``
(patch). The controller's closure is ``controller/`` plus the ``k8s`` helpers it builds
(leader election, events); the daemon's is ``cni/``. A new call without its rule, or a
rule no code needs any more, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from kuryr_k8s.k8s import resources

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "src" / "kuryr_k8s"
RBAC = ROOT / "deploy" / "base" / "rbac.yaml"

VERBS = {
    "get": "get",
    "create": "create",
    "replace": "update",
    "patch": "patch",
    "delete": "delete",
    "list": "list",
    "list_all": "list",
    "watch": "watch",
    "post_subresource": "create",
}
FINALIZER_HELPERS = {"add_finalizer", "remove_finalizer", "set_finalizers"}
RESOURCES = {
    name: value for name, value in vars(resources).items() if isinstance(value, resources.Resource)
}
NOT_GRANTED = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "create"): (
        "controller/crds.py ensure_crds creates a missing CRD; the manifests install them "
        "(crds.yaml), so the controller may not write new cluster-wide schema"
    ),
}
"""Calls the code can make that the manifests deliberately do not allow, and why."""

Use = tuple[str, str, str]
"""(API group, resource[/subresource], verb)"""


def _uses_in(path: Path) -> set[tuple[Use, str]]:
    tree = ast.parse(path.read_text())
    found: set[tuple[Use, str]] = set()
    where = str(path.relative_to(SRC))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        args = node.args
        if name == "Informer" and len(args) >= 2 and isinstance(args[1], ast.Name):
            res = RESOURCES.get(args[1].id)
            if res is not None:
                found |= {((res.group, res.plural, v), where) for v in ("list", "watch")}
            continue
        if name in FINALIZER_HELPERS and len(args) >= 2 and isinstance(args[1], ast.Name):
            res = RESOURCES.get(args[1].id)
            if res is not None:
                found.add(((res.group, res.plural, "patch"), where))
            continue
        if not isinstance(func, ast.Attribute) or name not in VERBS:
            continue
        if not isinstance(args[0], ast.Name) or args[0].id not in RESOURCES:
            continue
        res = RESOURCES[args[0].id]
        sub: str | None = None
        for kw in node.keywords:
            if kw.arg == "subresource" and isinstance(kw.value, ast.Constant):
                sub = str(kw.value.value)
        if name == "post_subresource" and len(args) >= 3 and isinstance(args[2], ast.Constant):
            sub = str(args[2].value)
        plural = f"{res.plural}/{sub}" if sub else res.plural
        found.add(((res.group, plural, VERBS[name]), where))
    return found


def code_uses(*dirs: str, files: tuple[str, ...] = ()) -> dict[Use, set[str]]:
    paths = [p for d in dirs for p in sorted((SRC / d).rglob("*.py"))]
    paths += [SRC / f for f in files]
    out: dict[Use, set[str]] = {}
    for path in paths:
        for use, where in _uses_in(path):
            out.setdefault(use, set()).add(where)
    return out


def granted(role: str) -> set[Use]:
    """What the ServiceAccount ``role`` may do: its ClusterRole and its Roles (by binding)."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = set()
    for d in docs:
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding") and any(
            s["kind"] == "ServiceAccount" and s["name"] == role for s in d["subjects"]
        ):
            roles.add((d["roleRef"]["kind"], d["roleRef"]["name"]))
    out: set[Use] = set()
    for d in docs:
        if (d["kind"], d["metadata"]["name"]) not in roles:
            continue
        for rule in d["rules"]:
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    out |= {(group, res, verb) for verb in rule["verbs"]}
    return out


def _report(missing: dict[Use, set[str]], extra: set[Use]) -> str:
    lines = [f"not granted: {u} used by {sorted(w)}" for u, w in sorted(missing.items())]
    lines += [f"granted but unused: {u}" for u in sorted(extra)]
    return "\n".join(lines)


def _compare(role: str, uses: dict[Use, set[str]]) -> None:
    have = granted(role)
    missing = {u: w for u, w in uses.items() if u not in have and u not in NOT_GRANTED}
    extra = have - set(uses)
    assert not missing and not extra, _report(missing, extra)


def test_controller_rbac_is_exactly_what_its_code_calls() -> None:
    uses = code_uses("controller", files=("k8s/leader.py", "k8s/events.py"))
    assert ("", "pods", "watch") in uses  # the scan sees the informers
    assert ("coordination.k8s.io", "leases", "update") in uses  # and the k8s helpers
    _compare("kuryr-controller", uses)


def test_daemon_rbac_is_exactly_what_its_code_calls() -> None:
    uses = code_uses("cni", files=("k8s/events.py",))  # re-plug Events (daemon/report.py)
    assert ("openstack.org", "kuryrports", "watch") in uses
    _compare("kuryr-daemon", uses)


def test_the_scan_finds_a_call_it_was_not_told_about(tmp_path: Path) -> None:
    """The detector itself: a made-up call on a resource is reported, with its file."""
    code = (
        "async def f(client):\n"
        "    await client.delete(NODES, 'n')\n"
        "    await client.patch(PODS, 'p', {}, 'ns', subresource='status')\n"
    )
    path = SRC / "controller" / "__scan_probe__.py"
    try:
        path.write_text(code)
        found = {use for use, _ in _uses_in(path)}
    finally:
        path.unlink()
    assert found == {("", "nodes", "delete"), ("", "pods/status", "patch")}


def test_crd_rule_names_exactly_the_crds_the_manifests_install() -> None:
    from kuryr_k8s.deploy.manifests import crds

    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    names = {
        n
        for d in docs
        if d["kind"] == "ClusterRole"
        for rule in d["rules"]
        if "customresourcedefinitions" in rule["resources"]
        for n in rule.get("resourceNames", [])
    }
    assert names == {c["metadata"]["name"] for c in crds()}


def test_lease_rule_names_the_lease_the_controller_uses() -> None:
    from kuryr_k8s.controller.settings import KubernetesSettings
    from kuryr_k8s.deploy import spec

    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == spec.NAMESPACE
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named and all(
        r["resourceNames"] == [KubernetesSettings().leader_lease_name] for r in named
    )
    assert (
        f"leader_lease_namespace = {spec.NAMESPACE}" in (ROOT / "deploy" / "kuryr.conf").read_text()
    )

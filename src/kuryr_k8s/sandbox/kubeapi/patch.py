"""The three PATCH flavours: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge.

Strategic merge is implemented for the fields Kubernetes marks with ``patchStrategy`` in the
built-in types we serve (containers by name, ports, env, volumes, conditions by type,
finalizers as a set, ownerReferences by uid, ...), plus the directives ``kubectl apply``
sends: ``$patch`` (replace/delete/merge), ``$setElementOrder/<list>``,
``$deleteFromPrimitiveList/<list>`` and ``$retainKeys``. Lists without a strategy are
replaced, as on a real server.
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]


class PatchError(ValueError):
    """The patch cannot be applied; ``unprocessable`` selects 422 over 400."""

    def __init__(self, message: str, *, unprocessable: bool = False) -> None:
        super().__init__(message)
        self.unprocessable = unprocessable


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- JSON patch (RFC 6902)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], part: str, *, for_add: bool) -> int:
    if for_add and part == "-":
        return len(container)
    if not part.isdigit() or (part != "0" and part.startswith("0")):
        raise PatchError(f"invalid array index {part!r}", unprocessable=True)
    idx = int(part)
    if idx > len(container) or (idx == len(container) and not for_add):
        raise PatchError(f"array index {idx} out of bounds", unprocessable=True)
    return idx


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for part in tokens[:-1]:
        if isinstance(node, dict):
            if part not in node:
                raise PatchError(f"path segment {part!r} not found", unprocessable=True)
            node = node[part]
        elif isinstance(node, list):
            node = node[_index(node, part, for_add=False)]
        else:
            raise PatchError(f"cannot descend into {part!r}", unprocessable=True)
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"missing value at {'/'.join(tokens)}", unprocessable=True)
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise PatchError(f"cannot read {last!r}", unprocessable=True)


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"cannot add at {last!r}", unprocessable=True)
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document", unprocessable=True)
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}", unprocessable=True)
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, for_add=False)]
    else:
        raise PatchError(f"cannot remove {last!r}", unprocessable=True)
    return doc


def _json_op(doc: Any, op: Obj) -> Any:
    name = op.get("op")
    if not isinstance(op.get("path"), str):
        raise PatchError(f"missing or invalid 'path' in JSON patch operation {op!r}")
    tokens = _pointer(op["path"])
    if name in ("add", "replace", "test") and "value" not in op:
        raise PatchError(f"missing 'value' in JSON patch operation {name}")
    if name == "add":
        return _add(doc, tokens, copy.deepcopy(op["value"]))
    if name == "remove":
        return _remove(doc, tokens)
    if name == "replace":
        _get(doc, tokens)
        return (
            _add(_remove(doc, tokens), tokens, copy.deepcopy(op["value"]))
            if tokens
            else (copy.deepcopy(op["value"]))
        )
    if name == "test":
        if _get(doc, tokens) != op["value"]:
            raise PatchError(f"testing value {op['path']} failed", unprocessable=True)
        return doc
    if name in ("move", "copy"):
        if not isinstance(op.get("from"), str):
            raise PatchError(f"missing 'from' in JSON patch operation {name}")
        source = _pointer(op["from"])
        value = copy.deepcopy(_get(doc, source))
        if name == "move":
            doc = _remove(doc, source)
        return _add(doc, tokens, value)
    raise PatchError(f"Unexpected kind: {name}")


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902; raises :class:`PatchError` (422 for failed ops, 400 for malformed ones)."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict):
            raise PatchError("json patch operation must be an object")
        doc = _json_op(doc, op)
    return doc


# ---------------------------------------------------------------- strategic merge patch

PRIMITIVE = ""
"""Merge key meaning "a list of scalars merged as a set" (``metadata.finalizers``)."""

# (parent field, list field) -> merge key, from the patchStrategy tags of k8s.io/api.
MERGE_KEYS: dict[tuple[str, str], str] = {
    ("metadata", "finalizers"): PRIMITIVE,
    ("metadata", "ownerReferences"): "uid",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "ephemeralContainers"): "name",
    ("spec", "volumes"): "name",
    ("spec", "imagePullSecrets"): "name",
    ("spec", "hostAliases"): "ip",
    ("spec", "ports"): "port",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("containers", "env"): "name",
    ("initContainers", "env"): "name",
    ("containers", "volumeMounts"): "mountPath",
    ("initContainers", "volumeMounts"): "mountPath",
    ("containers", "volumeDevices"): "devicePath",
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("status", "podIPs"): "ip",
    ("status", "hostIPs"): "ip",
    ("spec", "podCIDRs"): PRIMITIVE,
}

_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to a built-in object (a ``dict``)."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    return _smp_map(target if isinstance(target, dict) else {}, patch, "")


def _smp_map(target: Obj, patch: Obj, parent: str) -> Obj:
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return {}
    result = copy.deepcopy(target)
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER) :]] = value if isinstance(value, list) else []
        elif key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            drop = value if isinstance(value, list) else []
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in drop]
        elif value is None:
            result.pop(key, None)
        else:
            result[key] = _smp_value(result.get(key), value, parent, key)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _apply_order(result[field], order, MERGE_KEYS.get((parent, field)))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_value(current: Any, value: Any, parent: str, key: str) -> Any:
    if isinstance(value, dict):
        return _smp_map(current if isinstance(current, dict) else {}, value, key)
    if isinstance(value, list) and isinstance(current, list):
        merge_key = MERGE_KEYS.get((parent, key))
        if merge_key is None:
            return [_strip_directives(v) for v in value]
        if merge_key == PRIMITIVE:
            merged = current + [v for v in value if v not in current]
            return _normalise_order(merged, value, current, None)
        return _normalise_order(
            _merge_list(current, value, merge_key, key), value, current, merge_key
        )
    return _strip_directives(value)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return copy.deepcopy(value)


def _merge_list(current: list[Any], patch: list[Any], merge_key: str, field: str) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {merge_key}")
        pos = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if pos is not None:
                del result[pos]
        elif pos is None:
            result.append(_smp_map({}, item, field))
        else:
            result[pos] = _smp_map(result[pos], item, field)
    return result


def _normalise_order(
    merged: list[Any], patch: list[Any], original: list[Any], merge_key: str | None
) -> list[Any]:
    """The order of a merged list, as apimachinery's ``normalizeElementOrder``: the items
    named in the patch keep the patch's order, the others the live order, and the two are
    interleaved by their live positions (a new item goes before the live ones after it)."""

    def ident(item: Any) -> str:
        return repr(item.get(merge_key) if merge_key and isinstance(item, dict) else item)

    patch_ids = [ident(p) for p in patch]
    live = {ident(o): i for i, o in enumerate(original)}
    in_patch = sorted(
        (m for m in merged if ident(m) in patch_ids), key=lambda m: patch_ids.index(ident(m))
    )
    server_only = sorted(
        (m for m in merged if ident(m) not in patch_ids), key=lambda m: live.get(ident(m), 0)
    )
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(in_patch):
        if j >= len(in_patch):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            out.append(in_patch[j])
            j += 1
        else:
            left, right = live.get(ident(server_only[i])), live.get(ident(in_patch[j]))
            if left is not None and right is not None and left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(in_patch[j])
                j += 1
    return out


def _apply_order(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        if merge_key and isinstance(item, dict):
            return item.get(merge_key)
        return item

    wanted = [ident(o) if isinstance(o, dict) else o for o in order]
    rank = {repr(w): i for i, w in enumerate(wanted)}
    return sorted(items, key=lambda it: rank.get(repr(ident(it)), len(rank)))

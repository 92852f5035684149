"""Compare what the emulator answers with what a real kube-apiserver answered.

The real answers are recorded in ``data/real/`` (copied from ``../shared/k8s-real/``:
``scenarios-real-v1.36.2.jsonl``, normalised, and ``scenarios.py``, the script that made
them). A transcript is reduced to what a client reads from each exchange: the HTTP status,
the Status ``reason``, for watches the sequence of (event type, object name) and the
ERROR codes, and a few object fields controllers act on (``generation``, whether
``deletionTimestamp`` is set, ``deletionGracePeriodSeconds``, ``finalizers``, CRD
conditions). Exchanges are aligned per scenario by (method, path, query) with difflib,
as ``normalise_diff.py`` does.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

REAL = Path(__file__).parent / "data" / "real"
Obj = dict[str, Any]


def normalise_module() -> Any:
    spec = importlib.util.spec_from_file_location("normalise_diff", REAL / "normalise_diff.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def normalise(records: list[Obj]) -> list[Obj]:
    """The recorder's normalisation (placeholders for uids, RVs, timestamps, hex names)."""
    nd = normalise_module()
    norm = nd.Normaliser(nd.gen_names(records))
    return [norm.rec(r) for r in records]


def export(raw: Path) -> list[Obj]:
    """A raw proxy transcript as ``normalise_diff.py export`` makes it (redacted, truncated,
    normalised), without its unclosed files."""
    nd = normalise_module()
    records = sorted(load(raw), key=lambda r: int(r["seq"]))
    for rec in records:
        nd.redact(rec)
        rec["request_body"] = nd.truncate(rec.get("request_body"))
        rec["response_body"] = nd.truncate(rec.get("response_body"))
    return normalise(records)


def _object_facts(obj: Any) -> Obj:
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return {}
    meta = obj["metadata"]
    facts: Obj = {
        "generation": meta.get("generation"),
        "deleting": bool(meta.get("deletionTimestamp")),
        "grace": meta.get("deletionGracePeriodSeconds"),
        "finalizers": meta.get("finalizers") or [],
    }
    status = obj.get("status")
    if obj.get("kind") == "CustomResourceDefinition" and isinstance(status, dict):
        conds = status.get("conditions")
        facts["conditions"] = None if conds is None else sorted(c["type"] for c in conds)
    if obj.get("kind") == "Pod" and isinstance(status, dict):
        facts["podIPs"] = status.get("podIPs")
    return facts


def summary(rec: Obj) -> Obj:
    """What a client reads from one exchange."""
    body = rec.get("response_body")
    out: Obj = {"status": rec["status"]}
    if isinstance(body, dict) and body.get("kind") == "Status":
        out["reason"] = body.get("reason")
    if isinstance(body, list):  # a watch: the events, in order (bookmarks counted once)
        body = [
            e
            for k, e in enumerate(body)
            if not (
                k
                and isinstance(e, dict)
                and e.get("type") == "BOOKMARK"
                and body[k - 1].get("type") == "BOOKMARK"
                and not (e.get("object") or {}).get("metadata", {}).get("annotations")
            )
        ]
        out["events"] = [
            (
                e.get("type"),
                (e.get("object") or {}).get("metadata", {}).get("name")
                if e.get("type") != "ERROR"
                else (e.get("object") or {}).get("code"),
                _object_facts(e.get("object"))
                if e.get("type") not in ("BOOKMARK", "ERROR")
                else {},
            )
            for e in body
            if isinstance(e, dict)
        ]
    elif isinstance(body, dict) and body.get("kind") != "Status":
        out["object"] = _object_facts(body)
        if isinstance(body.get("items"), list):
            # Sorted: lists are in name order on both sides, but generated names differ.
            out["items"] = sorted(
                (str(i.get("metadata", {}).get("name")), _object_facts(i))
                for i in body["items"]
                if isinstance(i, dict)
            )
    return out


@dataclass(frozen=True)
class Difference:
    test: str
    request: str
    what: str
    real: Any
    emulator: Any

    def key(self) -> tuple[str, str, str]:
        return (self.test.split("::")[-1], self.request, self.what)

    def __str__(self) -> str:
        return (
            f"{self.test} {self.request} [{self.what}]: "
            f"real={self.real!r} emulator={self.emulator!r}"
        )


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _request(rec: Obj) -> str:
    # The recorder's normaliser misses uids glued to "%3D" in queries: decode, then replace.
    query = f"?{_UUID.sub('<uid>', unquote_plus(rec['query']))}" if rec.get("query") else ""
    return f"{rec['method']} {rec['path']}{query}"


def _collapse(records: list[Obj]) -> list[Obj]:
    """Consecutive identical GET polls count once (the last one: the settled answer)."""
    out: list[Obj] = []
    for rec in records:
        if out and rec["method"] == "GET" and _request(out[-1]) == _request(rec):
            out[-1] = rec
        else:
            out.append(rec)
    return out


def _is_watch(rec: Obj) -> bool:
    return "watch=" in (rec.get("query") or "") or "/watch/" in rec["path"]


def _differences(test: str, ra: Obj, rb: Obj) -> list[Difference]:
    sa, sb = summary(ra), summary(rb)
    return [
        Difference(test, _request(ra), field, sa.get(field), sb.get(field))
        for field in sorted(set(sa) | set(sb))
        if sa.get(field) != sb.get(field)
    ]


def compare(real: list[Obj], emulated: list[Obj]) -> list[Difference]:
    """Differences per scenario; exchanges missing on one side are differences too."""
    diffs: list[Difference] = []
    tests = list(dict.fromkeys(r["test"] for r in real + emulated))
    for test in tests:
        a = _collapse([r for r in real if r["test"] == test])
        b = _collapse([r for r in emulated if r["test"] == test])
        # Watches are written when they end, so their place in a transcript is timing:
        # pair them by request, in order, apart from the other exchanges.
        wa, wb = [r for r in a if _is_watch(r)], [r for r in b if _is_watch(r)]
        a, b = [r for r in a if not _is_watch(r)], [r for r in b if not _is_watch(r)]
        for request in dict.fromkeys(_request(r) for r in wa + wb):
            ra = [r for r in wa if _request(r) == request]
            rb = [r for r in wb if _request(r) == request]
            for x, y in zip(ra, rb, strict=False):
                diffs += _differences(test, x, y)
            for x in ra[len(rb) :]:
                diffs.append(Difference(test, request, "only-real", x["status"], None))
            for y in rb[len(ra) :]:
                diffs.append(Difference(test, request, "only-emulator", None, y["status"]))
        ka, kb = [_request(r) for r in a], [_request(r) for r in b]
        matcher = difflib.SequenceMatcher(a=ka, b=kb, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                for ra, rb in zip(a[i1:i2], b[j1:j2], strict=True):
                    diffs += _differences(test, ra, rb)
                continue
            for ra in a[i1:i2]:
                diffs.append(Difference(test, _request(ra), "only-real", ra["status"], None))
            for rb in b[j1:j2]:
                diffs.append(Difference(test, _request(rb), "only-emulator", None, rb["status"]))
    return diffs


def load(path: Path) -> list[Obj]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reduce_record(rec: Obj) -> Obj:
    """A normalised exchange cut down to what :func:`summary` reads (for storing big
    recordings in the repository): the same summary, a fraction of the size."""

    def meta(obj: Any) -> Any:
        if not isinstance(obj, dict):
            return obj
        out: Obj = {k: obj[k] for k in ("kind", "reason", "code") if k in obj}
        if isinstance(obj.get("metadata"), dict):
            m = obj["metadata"]
            keep = ("name", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
            out["metadata"] = {k: m[k] for k in (*keep, "finalizers") if k in m}
        status = obj.get("status")
        if isinstance(status, dict):
            out["status"] = {k: status[k] for k in ("conditions", "podIPs") if k in status}
        if isinstance(obj.get("items"), list):
            out["items"] = [meta(i) for i in obj["items"]]
        return out

    body = rec.get("response_body")
    if isinstance(body, list):
        body = [
            {"type": e.get("type"), "object": meta(e.get("object"))} if isinstance(e, dict) else e
            for e in body
        ]
    else:
        body = meta(body)
    keep = ("seq", "test", "phase", "method", "path", "query", "status")
    return {**{k: rec.get(k) for k in keep}, "response_body": body}


def main(argv: list[str]) -> int:
    """``python differential.py reduce NORMALISED.jsonl OUT.jsonl``"""
    if len(argv) != 4 or argv[1] != "reduce":
        print(main.__doc__)
        return 2
    records = load(Path(argv[2]))
    Path(argv[3]).write_text(
        "".join(json.dumps(reduce_record(r), separators=(",", ":")) + "\n" for r in records)
    )
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv))

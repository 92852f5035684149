"""Label and field selectors, parsed with the grammar of ``k8s.io/apimachinery``.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``,
``a>1``, ``a<1``, comma separated (all must hold). ``!=`` and ``notin`` also match objects
without the label, as on a real server. Field selectors: ``path=value``, ``path==value``,
``path!=value``; which paths a kind supports is decided by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kuryr_k8s.sandbox.kubeapi import validation_names as names


class SelectorError(ValueError):
    """The selector string does not parse (the server answers 400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # one of: =, !=, in, notin, exists, !exists, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        return present and _compare(value, self.op, self.values[0])


def _compare(value: str | None, op: str, bound: str) -> bool:
    try:
        number = int(value or "")
    except ValueError:
        return False
    return number > int(bound) if op == "gt" else number < int(bound)


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_TOKEN = re.compile(r"\s*(!=|==|=|>|<|!|\(|\)|,|[^\s!=<>(),]+)")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern accepts any non-space character
            raise SelectorError(f"unable to parse requirement: {text[pos:]!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise SelectorError("unable to parse requirement: unexpected end of selector")
        self.pos += 1
        return tok

    def parse(self) -> LabelSelector:
        reqs: list[Requirement] = []
        while self.peek() is not None:
            reqs.append(self.requirement())
            tok = self.peek()
            if tok is None:
                break
            if tok != ",":
                raise SelectorError(f"found '{tok}', expected: ',' or 'end of string'")
            self.take()
            if self.peek() is None:
                raise SelectorError("found '', expected: !, identifier, or 'end of string'")
        return LabelSelector(tuple(reqs))

    def requirement(self) -> Requirement:
        tok = self.take()
        if tok == "!":
            return Requirement(_check_key(self.take()), "!exists")
        key = _check_key(tok)
        op = self.peek()
        if op is None or op == ",":
            return Requirement(key, "exists")
        self.take()
        if op in ("=", "=="):
            return Requirement(key, "=", (self.value(),))
        if op == "!=":
            return Requirement(key, "!=", (self.value(),))
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set())
        if op in (">", "<"):
            bound = self.take()
            if not re.fullmatch(r"-?\d+", bound):
                raise SelectorError(f"for 'gt', 'lt' operators, exactly one integer value: {bound}")
            return Requirement(key, "gt" if op == ">" else "lt", (bound,))
        raise SelectorError(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")

    def value(self) -> str:
        tok = self.peek()
        if tok is None or tok == ",":
            return ""
        return _check_value(self.take())

    def value_set(self) -> tuple[str, ...]:
        if self.take() != "(":
            raise SelectorError("found '', expected: '('")
        values: list[str] = []
        while True:
            tok = self.take()
            if tok == ")":
                break
            if tok == ",":
                continue
            values.append(_check_value(tok))
        if not values:
            values.append("")
        return tuple(values)


def _check_key(key: str) -> str:
    if key in ("=", "==", "!=", "(", ")", ",", "!", ">", "<"):
        raise SelectorError(f"found '{key}', expected: !, identifier, or 'end of string'")
    problem = names.label_key_error(key)
    if problem:
        raise SelectorError(f'unable to parse requirement: invalid label key "{key}": {problem}')
    return key


def _check_value(value: str) -> str:
    if value in ("=", "==", "!=", "(", ")", "!", ">", "<"):
        raise SelectorError(f"found '{value}', expected: identifier")
    problem = names.label_value_error(value)
    if problem:
        raise SelectorError(
            f'unable to parse requirement: invalid label value: "{value}": {problem}'
        )
    return value


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``?labelSelector=``; raises :class:`SelectorError` on bad syntax."""
    if not text or not text.strip():
        return LabelSelector()
    return _LabelParser(text).parse()


def selector_from_dict(spec: Mapping[str, Any] | None) -> LabelSelector:
    """Turn a ``metav1.LabelSelector`` object (matchLabels/matchExpressions) into a selector."""
    if not spec:
        return LabelSelector()
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (spec.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in spec.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")), "exists")
        reqs.append(Requirement(str(expr.get("key")), op, tuple(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    value: str
    negate: bool


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Callable[[str], str]) -> bool:
        return all((fields(r.path) == r.value) != r.negate for r in self.requirements)

    def paths(self) -> set[str]:
        return {r.path for r in self.requirements}

    def exact(self, path: str) -> str | None:
        """The value a ``path=value`` term pins, for index lookups."""
        for r in self.requirements:
            if r.path == path and not r.negate:
                return r.value
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        raise SelectorError("invalid field selector: trailing escape character")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse ``?fieldSelector=``; raises :class:`SelectorError` on bad syntax."""
    if not text or not text.strip():
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for term in _split_unescaped(text, ","):
        m = re.fullmatch(r"((?:[^!=\\]|\\.)*?)(!=|==|=)(.*)", term, re.DOTALL)
        if m is None or not m.group(1).strip():
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        path = m.group(1).strip()
        reqs.append(FieldRequirement(path, _unescape(m.group(3)), m.group(2) == "!="))
    return FieldSelector(tuple(reqs))

"""Name, label and annotation rules of ``k8s.io/apimachinery/pkg/util/validation``.

Each function returns ``""`` when the value is fine, otherwise the message the real server
prints (so that error texts match what clients and humans are used to).
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

MAX_LABEL = 63
MAX_SUBDOMAIN = 253


def _check(value: str, limit: int, pattern: re.Pattern[str], message: str) -> str:
    if len(value) > limit:
        return f"must be no more than {limit} characters"
    return "" if pattern.fullmatch(value) else message


def dns1123_label_error(value: str) -> str:
    return _check(
        value,
        MAX_LABEL,
        _DNS1123_LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
        "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
        "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    )


def dns1035_label_error(value: str) -> str:
    return _check(
        value,
        MAX_LABEL,
        _DNS1035_LABEL,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
        "with an alphabetic character, and end with an alphanumeric character (e.g. "
        "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
    )


def dns1123_subdomain_error(value: str) -> str:
    return _check(
        value,
        MAX_SUBDOMAIN,
        _DNS1123_SUBDOMAIN,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
        "'-' or '.', and must start and end with an alphanumeric character (e.g. "
        "'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    )


def label_key_error(key: str) -> str:
    """Qualified name: optional DNS subdomain prefix, '/', then a 63-char name."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "prefix part must be non-empty"
    if prefix:
        problem = dns1123_subdomain_error(prefix)
        if problem:
            return f"prefix part {problem}"
    if not name:
        return "name part must be non-empty"
    if len(name) > MAX_LABEL:
        return f"name part must be no more than {MAX_LABEL} characters"
    if not _QUALIFIED.fullmatch(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
            "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return ""


def label_value_error(value: str) -> str:
    if value == "":
        return ""
    if len(value) > MAX_LABEL:
        return f"must be no more than {MAX_LABEL} characters"
    if not _QUALIFIED.fullmatch(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  "
            "or 'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    return ""


def path_segment_error(value: str) -> str:
    """Names of any object must at least be usable as one URL path segment."""
    if value in (".", ".."):
        return f"may not be '{value}'"
    for bad in ("/", "%"):
        if bad in value:
            return f"may not contain '{bad}'"
    return ""

"""Authentication (ServiceAccount bearer tokens) and RBAC authorization, as a real
kube-apiserver does them.

* **Who**: a request without ``Authorization`` is the sandbox's administrator
  (``system:admin`` in ``system:masters``), as on the insecure port old kube-apiservers
  had: the emulator's own kubeconfig carries no credentials and keeps full access. A
  ``Bearer`` token minted by ``POST .../serviceaccounts/NAME/token`` (TokenRequest) is that
  ServiceAccount (``system:serviceaccount:NS:NAME`` in ``system:serviceaccounts``,
  ``system:serviceaccounts:NS`` and ``system:authenticated``) while it has not expired and
  the ServiceAccount still exists with the same uid. Any other token is ``401 Unauthorized``.
* **May they**: ``system:masters`` may do anything; everybody else gets what the RBAC
  objects grant (Role/ClusterRole rules bound by RoleBindings in the request's namespace and
  by ClusterRoleBindings), rule by rule as ``rbac/v1`` ``RuleAllows`` matches them.
  A denied request is ``403 Forbidden`` worded as the real server words it.
* The request attributes (verb, API group, resource, subresource, namespace, name, or a
  non-resource path) follow apiserver's ``RequestInfoFactory``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.sandbox.kubeapi import errors
from kuryr_k8s.sandbox.kubeapi.options import timestamp
from kuryr_k8s.sandbox.kubeapi.selectors import SelectorError, parse_field_selector
from kuryr_k8s.sandbox.kubeapi.store import Store

Obj = dict[str, Any]

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES = f"{RBAC_GROUP}/roles"
CLUSTER_ROLES = f"{RBAC_GROUP}/clusterroles"
ROLE_BINDINGS = f"{RBAC_GROUP}/rolebindings"
CLUSTER_ROLE_BINDINGS = f"{RBAC_GROUP}/clusterrolebindings"
AUDIENCE = "https://kubernetes.default.svc.cluster.local"
MIN_EXPIRATION = 600
DEFAULT_EXPIRATION = 3600
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, compare=False, hash=False)

    @property
    def privileged(self) -> bool:
        return "system:masters" in self.groups

    def info(self) -> Obj:
        """``authentication.k8s.io/v1 UserInfo``."""
        out: Obj = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = self.extra
        return out


ADMIN = User("system:admin", ("system:masters", AUTHENTICATED))


# ---------------------------------------------------------------- request attributes


@dataclass(frozen=True)
class Attributes:
    """What is asked: apiserver's ``authorizer.Attributes``."""

    verb: str
    resource_request: bool
    path: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def combined(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_TRUE = ("1", "true", "True")


def request_attributes(method: str, path: str, query: dict[str, str]) -> Attributes:
    """apiserver's ``RequestInfoFactory.NewRequestInfo``, the parts authorization reads."""
    non_resource = Attributes(method.lower(), False, path=path)
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if parts[0] in ("watch", "proxy"):
        if len(parts) < 2:
            return non_resource  # the real server answers 500 here
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else ""
    sub = parts[2] if len(parts) > 2 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch") in _TRUE else "list"
        name = _name_from_field_selector(query.get("fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb, True, path, group, version, resource, sub, namespace, name)


def _name_from_field_selector(text: str | None) -> str:
    if not text:
        return ""
    try:
        selector = parse_field_selector(text)
    except SelectorError:
        return ""
    return selector.exact("metadata.name") or ""


# ---------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unauthorized() -> errors.ApiError:
    return errors.ApiError(401, "Unauthorized", "Unauthorized")


class Tokens:
    """ServiceAccount tokens: JWTs signed (HS256) with a key derived from this state's
    ``kube-system`` namespace uid, so they survive an emulator restart of the same state."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def _key(self) -> bytes:
        ns = self.store.get("/namespaces", "", "kube-system")
        uid = ns["metadata"]["uid"] if ns else ""
        return hashlib.sha256(f"kuryr-emulator-sa-token:{uid}".encode()).digest()

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._key(), signing_input.encode(), hashlib.sha256).digest())

    def issue(self, sa: Obj, body: Any) -> Obj:
        """A ``TokenRequest`` answer for ServiceAccount ``sa`` (the request ``body``)."""
        meta = sa["metadata"]
        spec = (body.get("spec") if isinstance(body, dict) else None) or {}
        audiences = list(spec.get("audiences") or [AUDIENCE])
        expiration = spec.get("expirationSeconds")
        expiration = DEFAULT_EXPIRATION if expiration is None else expiration
        if not isinstance(expiration, int) or isinstance(expiration, bool):
            raise errors.bad_request(
                'TokenRequest in version "v1" cannot be handled as a TokenRequest: '
                "json: cannot unmarshal into Go struct field "
                "TokenRequestSpec.spec.expirationSeconds of type int64"
            )
        problem = ""
        if expiration < MIN_EXPIRATION:
            problem = "may not specify a duration less than 10 minutes"
        elif expiration > 1 << 32:
            problem = "may not specify a duration larger than 2^32 seconds"
        if problem:
            raise errors.invalid(
                "TokenRequest",
                "authentication.k8s.io",
                meta["name"],
                [errors.invalid_value("spec.expirationSeconds", expiration, problem)],
            )
        now = int(self.clock())
        claims = {
            "aud": audiences,
            "exp": now + expiration,
            "iat": now,
            "iss": AUDIENCE,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": meta["namespace"],
                "serviceaccount": {"name": meta["name"], "uid": meta["uid"]},
            },
            "nbf": now,
            "sub": f"system:serviceaccount:{meta['namespace']}:{meta['name']}",
        }
        header = _b64(json.dumps({"alg": "HS256", "kid": "kuryr-emulator"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{header}.{payload}.{self._sign(f'{header}.{payload}')}"
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "creationTimestamp": timestamp(),
            },
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration,
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {
                "token": token,
                "expirationTimestamp": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + expiration)
                ),
            },
        }

    def authenticate(self, authorization: str | None) -> User:
        """The user of a request's ``Authorization`` header (401 for a bad token)."""
        if not authorization:
            return ADMIN
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized()
        try:
            header, payload, signature = token.strip().split(".")
            if not hmac.compare_digest(signature, self._sign(f"{header}.{payload}")):
                raise unauthorized()
            claims = json.loads(_unb64(payload))
            k8s = claims["kubernetes.io"]
            ns, name = str(k8s["namespace"]), str(k8s["serviceaccount"]["name"])
            uid = str(k8s["serviceaccount"]["uid"])
            expired = int(claims["exp"]) <= self.clock()
        except (ValueError, KeyError, TypeError) as exc:
            raise unauthorized() from exc
        sa = self.store.get("/serviceaccounts", ns, name)
        if expired or AUDIENCE not in claims.get("aud", []):
            raise unauthorized()
        if sa is None or sa["metadata"]["uid"] != uid or sa["metadata"].get("deletionTimestamp"):
            raise unauthorized()
        return User(
            f"system:serviceaccount:{ns}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{ns}", AUTHENTICATED),
            uid,
            {
                "authentication.kubernetes.io/credential-id": [f"JTI={claims.get('jti', '')}"],
            },
        )


# ---------------------------------------------------------------- RBAC


def _matches(values: list[Any] | None, wanted: str) -> bool:
    return any(v == "*" or v == wanted for v in values or [])


def _resource_matches(rule: Obj, attrs: Attributes) -> bool:
    for res in rule.get("resources") or []:
        if res == "*" or res == attrs.combined:
            return True
        if attrs.subresource and res == f"*/{attrs.subresource}":
            return True
    return False


def _url_matches(rule: Obj, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or []:
        if url == "*" or url == path:
            return True
        if url.endswith("*") and path.startswith(url[:-1]):
            return True
    return False


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    """``rbac/v1`` ``RuleAllows``: one PolicyRule against the request attributes."""
    if not _matches(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return _url_matches(rule, attrs.path)
    names = rule.get("resourceNames") or []
    return (
        _matches(rule.get("apiGroups"), attrs.group)
        and _resource_matches(rule, attrs)
        and (not names or attrs.name in names)
    )


def _subject_applies(subject: Obj, user: User, binding_ns: str) -> str:
    """The subject's description (as the real ``describeSubject``) when it is ``user``."""
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User" and name == user.name:
        return f'User "{name}"'
    if kind == "Group" and name in user.groups:
        return f'Group "{name}"'
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        if user.name == f"system:serviceaccount:{ns}:{name}":
            shown = f"{name}/{subject.get('namespace') or binding_ns}"
            return f'ServiceAccount "{shown}"'
    return ""


@dataclass
class Decision:
    allowed: bool
    reason: str = ""


class Authorizer:
    """RBAC over the store's Roles, ClusterRoles and their bindings."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def role_rules(self, ref: Obj, namespace: str) -> tuple[list[Obj], str]:
        """The rules of the role ``ref`` names (a RoleBinding's Role is in ``namespace``),
        or the error a real server's role getter gives."""
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            role = self.store.get(CLUSTER_ROLES, "", name)
            missing = f'clusterrole.rbac.authorization.k8s.io "{name}" not found'
        elif kind == "Role":
            role = self.store.get(ROLES, namespace, name)
            missing = f'role.rbac.authorization.k8s.io "{name}" not found'
        else:
            return [], f"unsupported role reference kind: {kind!r}"
        if role is None:
            return [], missing
        return list(role.get("rules") or []), ""

    def _bound(self, user: User, namespace: str) -> Iterator[tuple[str, list[Obj], str]]:
        """For each binding of ``user`` (ClusterRoleBindings, then RoleBindings in
        ``namespace``): its description, its role's rules, and the error getting them."""
        sources: list[tuple[Obj, str, str]] = [
            (b, "", "ClusterRoleBinding") for b in self.store.iter(CLUSTER_ROLE_BINDINGS)
        ]
        if namespace:
            sources += [
                (b, namespace, "RoleBinding") for b in self.store.iter(ROLE_BINDINGS, namespace)
            ]
        for binding, ns, kind in sources:
            ref = binding.get("roleRef") or {}
            for subject in binding.get("subjects") or []:
                who = _subject_applies(subject, user, ns)
                if not who:
                    continue
                rules, problem = self.role_rules(ref, ns)
                shown = binding["metadata"]["name"] + (f"/{ns}" if ns else "")
                source = f'{kind} "{shown}" of {ref.get("kind")} "{ref.get("name")}" to {who}'
                yield source, rules, problem
                break  # one matching subject per binding is enough

    def user_rules(self, user: User, namespace: str) -> tuple[list[Obj], list[str]]:
        """Every rule granted to ``user`` in ``namespace``, and the resolution errors."""
        rules: list[Obj] = []
        problems: list[str] = []
        for _, granted, problem in self._bound(user, namespace):
            rules += granted
            if problem:
                problems.append(problem)
        return rules, problems

    def authorize(self, user: User, attrs: Attributes) -> Decision:
        if user.privileged:
            return Decision(True)
        problems: list[str] = []
        for source, rules, problem in self._bound(user, attrs.namespace):
            if problem and problem not in problems:
                problems.append(problem)
            if any(rule_allows(r, attrs) for r in rules):
                return Decision(True, f"RBAC: allowed by {source}")
        if not problems:
            return Decision(False)
        joined = problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]"
        return Decision(False, f"RBAC: {joined}")


def forbidden_message(user: User, attrs: Attributes) -> str:
    """apiserver's ``forbiddenMessage``."""
    if not attrs.resource_request:
        return f'User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'User "{user.name}" cannot {attrs.verb} resource "{attrs.combined}" in API group '
        f'"{attrs.group}" {where}'
    )


def forbidden(user: User, attrs: Attributes, reason: str) -> errors.ApiError:
    """The 403 of a denied request (``responsewriters.Forbidden``)."""
    message = forbidden_message(user, attrs) + (f": {reason}" if reason else "")
    if not attrs.resource_request or not attrs.resource:
        return errors.ApiError(403, "Forbidden", f"forbidden: {message}", {})
    return errors.forbidden(attrs.resource, attrs.group, attrs.name, message)


# ---------------------------------------------------------------- access reviews


def self_subject_access_review(authorizer: Authorizer, user: User, body: Any) -> Obj:
    """``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews``."""
    spec = (body.get("spec") if isinstance(body, dict) else None) or {}
    res, non_res = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if not isinstance(res, dict) and not isinstance(non_res, dict):
        raise errors.invalid(
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "",
            [
                errors.Cause(
                    "FieldValueRequired",
                    "spec.resourceAttributes",
                    "Required value: exactly one of nonResourceAttributes or "
                    "resourceAttributes must be specified",
                )
            ],
        )
    if isinstance(res, dict):
        attrs = Attributes(
            str(res.get("verb", "")),
            True,
            group=str(res.get("group", "")),
            version=str(res.get("version", "")),
            resource=str(res.get("resource", "")),
            subresource=str(res.get("subresource", "")),
            namespace=str(res.get("namespace", "")),
            name=str(res.get("name", "")),
        )
    else:
        assert isinstance(non_res, dict)
        attrs = Attributes(str(non_res.get("verb", "")), False, path=str(non_res.get("path", "")))
    decision = authorizer.authorize(user, attrs)
    status: Obj = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    meta = dict(body.get("metadata") or {}) if isinstance(body, dict) else {}
    meta["creationTimestamp"] = None
    return {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }


def self_subject_review(user: User) -> Obj:
    """``POST /apis/authentication.k8s.io/v1/selfsubjectreviews`` (``kubectl auth whoami``)."""
    return {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": user.info()},
    }


# ---------------------------------------------------------------- default policy


def _defaults_meta(name: str) -> Obj:
    return {
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    }


_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", *_PUBLIC_URLS, "/openapi", "/openapi/*"]

DEFAULT_CLUSTER_ROLES: tuple[Obj, ...] = (
    {
        "metadata": _defaults_meta("cluster-admin"),
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    },
    {
        "metadata": _defaults_meta("system:discovery"),
        "rules": [{"nonResourceURLs": sorted(_DISCOVERY_URLS), "verbs": ["get"]}],
    },
    {
        "metadata": _defaults_meta("system:basic-user"),
        "rules": [
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            },
        ],
    },
    {
        "metadata": _defaults_meta("system:public-info-viewer"),
        "rules": [{"nonResourceURLs": sorted(_PUBLIC_URLS), "verbs": ["get"]}],
    },
)


def _group_subjects(*names: str) -> list[Obj]:
    return [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": n} for n in names]


def _binding(name: str, *groups: str) -> Obj:
    return {
        "metadata": _defaults_meta(name),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": _group_subjects(*groups),
    }


DEFAULT_CLUSTER_ROLE_BINDINGS: tuple[Obj, ...] = (
    _binding("cluster-admin", "system:masters"),
    _binding("system:discovery", AUTHENTICATED),
    _binding("system:basic-user", AUTHENTICATED),
    _binding("system:public-info-viewer", AUTHENTICATED, "system:unauthenticated"),
)

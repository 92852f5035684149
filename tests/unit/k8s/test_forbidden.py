"""A 403 becomes a Forbidden that names the verb, resource, namespace and who to fix."""

from __future__ import annotations

from kuryr_k8s.k8s.errors import Forbidden, error_from_status
from kuryr_k8s.model.errors import PermanentError


def _status(message: str) -> dict[str, object]:
    return {
        "kind": "Status",
        "status": "Failure",
        "reason": "Forbidden",
        "code": 403,
        "message": message,
    }


def test_forbidden_names_what_to_grant_to_which_service_account() -> None:
    err = error_from_status(
        403,
        _status(
            'kuryrports.openstack.org "p-1" is forbidden: User '
            '"system:serviceaccount:kuryr-system:kuryr-controller" cannot patch resource '
            '"kuryrports/status" in API group "openstack.org" in the namespace "demo"'
        ),
    )
    assert isinstance(err, Forbidden) and isinstance(err, PermanentError)
    assert (err.verb, err.resource, err.group, err.namespace) == (
        "patch",
        "kuryrports/status",
        "openstack.org",
        "demo",
    )
    text = str(err)
    assert 'cannot patch resource "kuryrports/status"' in text  # the server's words, kept
    assert (
        'ServiceAccount kuryr-system/kuryr-controller lacks "patch" on "kuryrports/status" in '
        'API group "openstack.org" in namespace "demo"'
    ) in text
    assert "deploy/base/rbac.yaml" in text


def test_cluster_scope_and_other_users() -> None:
    err = error_from_status(
        403,
        _status(
            'nodes is forbidden: User "jane" cannot list resource "nodes" in API group "" at '
            "the cluster scope"
        ),
    )
    assert isinstance(err, Forbidden)
    assert (err.verb, err.resource, err.namespace) == ("list", "nodes", "")
    assert 'user "jane" lacks "list" on "nodes" cluster-wide' in str(err)


def test_a_forbidden_without_the_rbac_wording_is_kept_as_is() -> None:
    message = "unable to create new content in namespace x because it is being terminated"
    err = error_from_status(403, _status(f"pods is forbidden: {message}"))
    assert isinstance(err, Forbidden)
    assert err.verb == ""
    assert str(err) == f"403 Forbidden: pods is forbidden: {message}"

"""``KuryrNetwork`` (one per namespace) and ``KuryrNetworkPolicy`` (one per NetworkPolicy).

Upstream Kuryr's kinds in ``openstack.org/v1``. KuryrNetwork keeps upstream's fields
(``spec.nsName/projectId/nsLabels``, ``status.netId/subnetId/subnetCIDR/routerId/populated/
nsLabels``); KuryrNetworkPolicy records the security groups and address groups enforcing
the policy (``status.securityGroups``, ``status.addressGroups``) and Ready/Unsupported
conditions. See ``docs/design/network-policy.md``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

KURYRNETWORK_FINALIZER = "kuryr.openstack.org/kuryrnetwork-finalizer"
NAMESPACE_FINALIZER = "kuryr.openstack.org/namespace-finalizer"
KNP_FINALIZER = "kuryr.openstack.org/networkpolicy-finalizer"

POLICY_LABEL = "kuryr.openstack.org/policy-uid"


def crd_manifests() -> list[dict[str, Any]]:
    """The KuryrNetwork and KuryrNetworkPolicy CustomResourceDefinitions."""
    out: list[dict[str, Any]] = []
    for name in ("kuryrnetworks.yaml", "kuryrnetworkpolicies.yaml"):
        text = (resources.files("kuryr_k8s.model") / "crds" / name).read_text()
        out += [doc for doc in yaml.safe_load_all(text) if doc]
    return out

"""How to reach Neutron: a clouds.yaml cloud, or a keystone-less (``noauth``) endpoint.

:class:`NeutronSettings` is built by the composition root (from ``[neutron]`` in
``kuryr.conf``, see ``kuryr_k8s.controller.settings``) and handed to
:func:`kuryr_k8s.openstack.neutron.Neutron.connect`. Nothing here is global.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeutronSettings:
    """One of ``cloud`` or ``endpoint`` must be set."""

    cloud: str = ""
    """Name of a cloud in ``clouds.yaml`` (``OS_CLIENT_CONFIG_FILE`` or the usual paths).
    Keystone auth, region and interface all come from there."""
    endpoint: str = ""
    """Neutron URL for a keystone-less deployment (``auth_strategy = noauth``), e.g. the
    sandbox's ``http://127.0.0.1:9696``. Used only when ``cloud`` is empty."""
    region_name: str = ""
    """Region to use with ``cloud`` (empty: the cloud's default)."""
    timeout: float = 60.0
    """Seconds one HTTP request to Neutron may take before it counts as a timeout
    (a :class:`~kuryr_k8s.model.errors.TemporaryError`). A bulk create of 20 ports takes
    ~3.5 s on a small single-worker Neutron, so keep this generous."""
    max_concurrency: int = 8
    """Neutron calls in flight at once from this process (the SDK is synchronous and runs
    in a dedicated thread pool of this size). More only queues inside Neutron."""

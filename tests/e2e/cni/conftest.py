"""Fixtures of the CNI e2e tests: see ``functional/cni/harness.py`` and ``conftest.py``."""

from functional.cni.conftest import host, neutron_vif, ovsdb  # noqa: F401
from functional.cni.harness import cluster, cni_dirs, daemon_factory, kuryrport_crd  # noqa: F401

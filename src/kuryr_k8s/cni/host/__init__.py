"""Host primitives of the node: network namespaces, links (netlink), the OVS database.

Every operation is a small synchronous function named ``ensure_*`` (tolerates "already
there") or ``delete_*`` (tolerates "already gone"); the daemon calls them in worker
threads. Library exceptions are translated into :mod:`kuryr_k8s.cni.errors` here.
"""

"""Kubernetes API emulator: a real HTTP server with the semantics clients rely on.

* :class:`KubeApiServer`: in-process, ``async with KubeApiServer(host, port) as srv``.
* :class:`EmulatorProcess`: the same as a child process
  (``python -m kuryr_k8s.sandbox.kubeapi --port N --state-file F --kubeconfig-out K``).

See ``docs/design/kubeapi-emulator.md`` for what is covered and what is not.
"""

from kuryr_k8s.sandbox.kubeapi.process import EmulatorProcess
from kuryr_k8s.sandbox.kubeapi.server import KubeApiServer, kubeconfig

__all__ = ["EmulatorProcess", "KubeApiServer", "kubeconfig"]

"""The sandbox node agent: plays kubelet + container runtime (+ a trivial scheduler).

Run it as ``python -m kuryr_k8s.sandbox.nodeagent --help``. See docs/design/node-agent.md.

Public surface::

    NodeAgent(client, NodeAgentConfig(...)).run()    the agent
    exec_in_pod(namespace, name, argv, *, state_dir=..., capture_output=False)
                                                     run a command in a pod's netns
    netns_name(namespace, name, uid)                 the netns name of a pod incarnation
"""

from kuryr_k8s.sandbox.nodeagent.agent import NodeAgent
from kuryr_k8s.sandbox.nodeagent.config import NodeAgentConfig
from kuryr_k8s.sandbox.nodeagent.exec import exec_in_pod, find_sandbox
from kuryr_k8s.sandbox.nodeagent.netns import netns_name

__all__ = ["NodeAgent", "NodeAgentConfig", "exec_in_pod", "find_sandbox", "netns_name"]

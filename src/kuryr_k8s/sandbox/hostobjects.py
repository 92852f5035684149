"""What one sandbox owns in the host's global namespaces, found by its sandbox id.

``down`` removes it all (after the daemons are stopped), so a stopped sandbox leaves
nothing on the host but its state directory, and never touches another sandbox's objects:

* network namespaces named ``kuryr-<sid>_...`` (the VM stand-in, the node agent's pods) and
  those the node agent's records in this state directory name (pods made before names
  carried the id); a pod's veth goes with its netns, and the node agent plugs the pod
  again when it starts (the "netns vanished" path);
* links named ``ks<sid>...`` (stand-in veths) and ``kv<sid>...`` (VM taps);
* ``/etc/netns/<name>`` of those namespaces.

The OVS bridges' datapath devices (``br-int``, ``br-ex``, ``ovs-netdev``) belong to the
ovs-vswitchd that runs; ``services.delete_leftover_taps`` removes them only when no
ovs-vswitchd runs on the host.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

from kuryr_k8s.sandbox import naming
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.nodeagent.netns import ETC_NETNS_DIR, NETNS_DIR
from kuryr_k8s.sandbox.process import run


@dataclass(frozen=True)
class HostObjects:
    netns: list[str]
    links: list[str]

    def names(self) -> list[str]:
        return [*(f"netns {n}" for n in self.netns), *(f"link {n}" for n in self.links)]


def host_netns() -> list[str]:
    """Every named network namespace on the host."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def host_links() -> list[str]:
    """Every link name in the host's root network namespace."""
    out = run(["ip", "-j", "link", "show"]).stdout
    return sorted(str(link["ifname"]) for link in json.loads(out or "[]"))


def recorded_netns(ctx: Context) -> list[str]:
    """Pod network namespaces the node agent of this state directory recorded."""
    directory = ctx.paths.root / "nodeagent" / "sandboxes"
    if not directory.is_dir():
        return []
    names = []
    for path in sorted(directory.glob("*.json")):
        try:
            names.append(str(json.loads(path.read_text())["netns"]))
        except (OSError, ValueError, KeyError):
            continue
    return names


def select_owned(sid: str, netns: list[str], links: list[str], recorded: list[str]) -> HostObjects:
    """Of the host's ``netns`` and ``links``, those of sandbox ``sid``: named with its id,
    or (netns) named by its node agent's records ``recorded``."""
    mine = set(naming.owned_netns(sid, netns)) | (set(recorded) & set(netns))
    return HostObjects(sorted(mine), naming.owned_links(sid, links))


def owned(ctx: Context) -> HostObjects:
    """This sandbox's network namespaces and links that exist now."""
    sid = naming.sandbox_id(ctx.paths.root)
    return select_owned(sid, host_netns(), host_links(), recorded_netns(ctx))


def remove_owned(ctx: Context) -> list[str]:
    """Delete this sandbox's network namespaces and links; returns what was removed."""
    found = owned(ctx)
    removed = []
    for netns in found.netns:
        if run(["ip", "netns", "del", netns], check=False).returncode == 0:
            removed.append(f"netns {netns}")
        shutil.rmtree(ETC_NETNS_DIR / netns, ignore_errors=True)
    present = set(host_links())  # a veth's host end went with its netns
    for link in found.links:
        if link in present and run(["ip", "link", "del", link], check=False).returncode == 0:
            removed.append(f"link {link}")
    return removed

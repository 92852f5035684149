#!/usr/bin/env python3
"""A trivial CNI plugin for the node-agent tests (standard library and `ip` only).

Installed under two plugin names (the `type` in the config picks the behaviour):

* ``*-veth``: ADD creates a veth pair, host end ``ktc<hash>`` in the root netns (up, with
  proxy ARP and a /32 route to the pod) and the pod end directly in ``CNI_NETNS`` as
  ``CNI_IFNAME``, with an address from ``subnet`` (allocations kept in ``dataDir``) and a
  default route. DEL removes the pair and frees the address; absent things are fine.
  If the file named by ``failAddFile`` exists, ADD fails with code 11 and its content.
* ``*-passthrough``: ADD echoes ``prevResult`` (fails if there is none); DEL does nothing.

Every call appends ``{"command", "env", "stdin"}`` as a JSON line to ``logFile``.
"""

import fcntl
import hashlib
import ipaddress
import json
import os
import subprocess
import sys


def fail(version, code, msg, details=""):
    print(json.dumps({"cniVersion": version, "code": code, "msg": msg, "details": details}))
    sys.exit(1)


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True, check=False)


def locked_state(conf):
    data_dir = conf["dataDir"]
    os.makedirs(data_dir, exist_ok=True)
    lock = open(os.path.join(data_dir, "lock"), "w")  # noqa: SIM115 (held by the caller)
    fcntl.flock(lock, fcntl.LOCK_EX)
    path = os.path.join(data_dir, "ips.json")
    state = {}
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
    return lock, path, state


def save(path, state):
    with open(path + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(path + ".tmp", path)


def host_ifname(container_id):
    return "ktc" + hashlib.sha1(container_id.encode()).hexdigest()[:11]


def veth_add(conf, env):
    version = conf["cniVersion"]
    fail_file = conf.get("failAddFile")
    if fail_file and os.path.exists(fail_file):
        with open(fail_file) as f:
            fail(version, 11, "injected failure", f.read().strip())
    cid, netns, ifname = env["CNI_CONTAINERID"], env["CNI_NETNS"], env["CNI_IFNAME"]
    if not os.path.exists(netns):
        fail(version, 100, f"netns {netns} does not exist")
    net = ipaddress.ip_network(conf["subnet"])
    lock, path, state = locked_state(conf)
    with lock:
        ip = next((a for a, c in state.items() if c == cid), None)
        if ip is None:
            used = set(state)
            free = [str(h) for h in list(net.hosts())[1:] if str(h) not in used]
            if not free:
                fail(version, 100, f"no free address in {net}")
            ip = free[0]
            state[ip] = cid
            save(path, state)
    host = host_ifname(cid)
    if sh("ip", "link", "show", host).returncode != 0:
        r = sh("ip", "link", "add", host, "type", "veth", "peer", "name", ifname, "netns", netns)
        if r.returncode != 0:
            fail(version, 100, "creating veth failed", r.stderr.strip())
    in_ns = ("nsenter", f"--net={netns}")
    cidr = f"{ip}/{net.prefixlen}"
    sh(*in_ns, "ip", "addr", "replace", cidr, "dev", ifname)
    sh(*in_ns, "ip", "link", "set", ifname, "up")
    sh(*in_ns, "ip", "route", "replace", "default", "dev", ifname)
    sh("ip", "link", "set", host, "up")
    with open(f"/proc/sys/net/ipv4/conf/{host}/proxy_arp", "w") as f:
        f.write("1")
    sh("ip", "route", "replace", f"{ip}/32", "dev", host)

    def mac(prefix, name):
        return sh(*prefix, "cat", f"/sys/class/net/{name}/address").stdout.strip()

    return {
        "cniVersion": version,
        "interfaces": [
            {"name": host, "mac": mac((), host)},
            {"name": ifname, "mac": mac(in_ns, ifname), "sandbox": netns},
        ],
        "ips": [{"address": cidr, "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }


def veth_del(conf, env):
    cid = env["CNI_CONTAINERID"]
    sh("ip", "link", "del", host_ifname(cid))  # deletes the pod end too; absent is fine
    lock, path, state = locked_state(conf)
    with lock:
        state = {a: c for a, c in state.items() if c != cid}
        save(path, state)


def main():
    env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}))
        return
    conf = json.load(sys.stdin)
    if conf.get("logFile"):
        with open(conf["logFile"], "a") as f:
            f.write(json.dumps({"command": command, "env": env, "stdin": conf}) + "\n")
    passthrough = conf["type"].endswith("passthrough")
    if command == "ADD":
        if passthrough:
            if "prevResult" not in conf:
                fail(conf["cniVersion"], 100, "passthrough needs a prevResult")
            print(json.dumps(conf["prevResult"]))
        else:
            print(json.dumps(veth_add(conf, env)))
    elif command == "DEL":
        if not passthrough:
            veth_del(conf, env)
    elif command == "CHECK":
        pass
    else:
        fail(conf.get("cniVersion", "1.0.0"), 4, f"unknown CNI_COMMAND {command!r}")


if __name__ == "__main__":
    main()

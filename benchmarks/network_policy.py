"""NetworkPolicy on the sandbox: policy created → enforced (observed by traffic) on N
selected pods, pod churn under a policy, and Neutron calls per policy and per churn.

Uses the e2e environment (``tests/e2e/policy/env.py``): a private API emulator, the
policy reconciler in-process, pods as netns on real Neutron/OVN ports, and the
placement's SGs put on the ports by the environment (the KuryrPort reconciler's part until
it calls the placement). Peer mode: ip prefixes (the sandbox's Zed OVN ignores address
groups, see docs/design/network-policy.md).

* ``wiring``: one pod's port (placement → port create → plug → ACTIVE), no policy;
* ``enforced``: NetworkPolicy POST → every selected pod closed to an outsider and open
  to the allowed client on TCP 80, observed by probes (a probe round starts every
  ~0.3 s; a closed TCP probe is a 2 s timeout, so the observation is bounded by it;
  ``knp ready`` and ``ports moved`` are the reconciler-side moments);
* ``churn``: a new allowed client (peer set update) → it reaches a selected pod; a new
  selected pod's wiring time with the policy in force vs. ``wiring``.

With ``-n`` above ``--measured`` (10), the first ``--measured`` pods are wired one at a
time (the ``wiring`` sample), the rest ``--workers`` at a time (not timed). Ports are
moved to the placement's SGs ``--workers`` at a time, as the KuryrPort reconciler's
workers would (one ``PUT`` per port).

``--mode identity`` (default) enforces with one SG per pod identity
(``docs/design/network-policy-identities.md``): a policy changes SG rules, no port moves,
and probing starts right after the POST; ``--mode policy`` is the per-policy design.

Usage: ``python benchmarks/network_policy.py [-n 10] [--workers 8] [--mode identity]``
(root, sandbox up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from e2e.policy.env import PolicyEnv
from fixtures.sandbox import Sandbox
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.kubeapi import EmulatorProcess
from kuryr_k8s.sandbox.openstack import topology
from kuryr_k8s.sandbox.settings import settings_from_env
from netpol_truth import Endpoint

from fixtures.kubeapi import KubeApi, KubeConfig  # isort: skip


def _calls(env: PolicyEnv) -> Counter[str]:
    assert env.neutron is not None
    return Counter(env.neutron.stats.calls)


def _probe_all(env: PolicyEnv, src: str, targets: list[str]) -> list[bool]:
    """TCP 80 from ``src`` to each target, all at once (one agent run)."""
    res = env.observe(probes=[("TCP", 80)], only=(src, set(targets)))
    return [res[(src, t, "TCP", 80)] for t in targets]


def _move_ports(env: PolicyEnv, pool: ThreadPoolExecutor) -> int:
    """Every pod's port to the SGs the placement answers now, ``pool`` at a time (the
    stand-in for the KuryrPort reconciler's workers); how many moved."""

    def one(name: str) -> int:
        m = env.members[name]
        ns = m.endpoint.namespace or ""
        want = sorted(env.sgs_for(ns, name))
        have = sorted(env.sandbox.conn.network.get_port(m.port.id).security_group_ids)
        if want == have:
            return 0
        env.sandbox.conn.network.update_port(m.port.id, security_group_ids=want)
        return 1

    names = [n for n, m in env.members.items() if m.endpoint.is_pod]
    return sum(pool.map(one, names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=10, help="selected pods (default 10)")
    ap.add_argument("--workers", type=int, default=8, help="parallel port moves/wirings")
    ap.add_argument("--measured", type=int, default=10, help="pods wired one at a time")
    ap.add_argument(
        "--mode",
        choices=("policy", "identity"),
        default="identity",
        help="[network_policy] security_group_mode: an SG per policy (ports move when a "
        "policy selects them) or per pod identity (policies change rules only); "
        "default %(default)s",
    )
    ap.add_argument(
        "--probe-timeout",
        type=float,
        default=0.3,
        help="seconds without an answer after which a TCP probe counts as closed; it "
        "bounds how finely enforcement is timed (default %(default)s; the e2e uses 2)",
    )
    args = ap.parse_args()
    os.environ["KURYR_TEST_NP_MODE"] = args.mode
    os.environ["KURYR_PROBE_TCP_TIMEOUT"] = str(args.probe_timeout)
    pool = ThreadPoolExecutor(args.workers)
    settings = settings_from_env()
    conn = topology.connect(settings)
    topo = topology.ensure_base_topology(conn, lambda m: None)
    sandbox = Sandbox(settings, manager.context(settings), conn, topo)
    work = Path(tempfile.mkdtemp(prefix="np-bench-"))
    emulator = EmulatorProcess(work / "kubeconfig", log_file=work / "emulator.log")
    emulator.start()
    api = KubeApi(emulator.kubeconfig, emulator.url, True, KubeConfig.load(emulator.kubeconfig))
    http = api.client()
    env = PolicyEnv(sandbox, api.kubeconfig, http)
    try:
        env.start()
        for ns, labels in (("bench-a", {"role": "server"}), ("bench-b", {"role": "client"})):
            env.namespace(ns, labels)
        env.namespace("bench-c", {})
        wiring = []
        for i in range(min(args.n, args.measured)):
            t = time.monotonic()
            env.add_pod(Endpoint(f"t{i}", "", "bench-a", {"app": "target"}, {}))
            wiring.append(time.monotonic() - t)
        t = time.monotonic()
        list(
            pool.map(
                lambda i: env.add_pod(Endpoint(f"t{i}", "", "bench-a", {"app": "target"}, {})),
                range(args.measured, args.n),
            )
        )
        bulk = time.monotonic() - t
        env.add_pod(Endpoint("client", "", "bench-b", {"app": "c"}, {}))
        env.add_pod(Endpoint("outsider", "", "bench-c", {"app": "o"}, {}))
        targets = [f"t{i}" for i in range(args.n)]
        assert all(_probe_all(env, "outsider", targets)), "targets not open before the policy"

        policy = {
            "metadata": {"namespace": "bench-a", "name": "only-clients"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "target"}},
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"role": "client"}}}],
                        "ports": [{"port": 80}],
                    }
                ],
            },
        }
        before = _calls(env)
        t0 = time.monotonic()
        env.apply_policy(policy)
        knp_ready = ports_moved = observed = None
        assert env.parts is not None
        identity = env.mode == "identity"
        while observed is None:
            if knp_ready is None and env.converged() and env.parts.world.knps.keys():
                knp_ready = time.monotonic() - t0
            if identity:  # no port moves in this mode: probe from the start
                ports_moved = 0.0
            else:
                moved = _move_ports(env, pool) if knp_ready is not None else 1
                if moved == 0 and ports_moved is None:
                    ports_moved = time.monotonic() - t0
            if ports_moved is not None:
                started = time.monotonic() - t0
                closed = not any(_probe_all(env, "outsider", targets))
                if closed and all(_probe_all(env, "client", targets)):
                    observed = started
            if time.monotonic() - t0 > 300:
                raise SystemExit("policy not enforced in 300 s")
            time.sleep(0.1 if identity else 0.3)
        while knp_ready is None:
            if env.converged() and env.parts.world.knps.keys():
                knp_ready = time.monotonic() - t0
            time.sleep(0.05)
        per_policy = _calls(env) - before
        late_moves = _move_ports(env, pool)  # the identity mode claims none are needed

        # churn 1: a new allowed client (the peer set of the policy grows)
        before = _calls(env)
        t1 = time.monotonic()
        env.add_pod(Endpoint("client2", "", "bench-b", {"app": "c"}, {}))
        added = time.monotonic() - t1
        while not _probe_all(env, "client2", ["t0"])[0]:
            if time.monotonic() - t1 > 120:
                raise SystemExit("new client never allowed")
            time.sleep(0.2)
        peer_reach = time.monotonic() - t1
        env.wait_enforced([policy])
        per_peer = _calls(env) - before

        # churn 2: a new selected pod with the policy in force
        before = _calls(env)
        t2 = time.monotonic()
        env.add_pod(Endpoint("t-new", "", "bench-a", {"app": "target"}, {}))
        selected_wiring = time.monotonic() - t2
        first_closed = not _probe_all(env, "outsider", ["t-new"])[0]
        env.wait_enforced([policy])
        per_selected = _calls(env) - before

        peers = "remote groups (identity SGs)" if identity else "ip prefixes"
        print(
            f"mode: {args.mode}; selected pods: {args.n} (+ client, outsider, VM none); "
            f"peers: {peers}; TCP probe timeout {args.probe_timeout} s"
        )
        print(
            f"wiring without policy: median {statistics.median(wiring):.2f} s, "
            f"max {max(wiring):.2f} s (n={len(wiring)}); the other {args.n - len(wiring)} "
            f"in {bulk:.1f} s, {args.workers} at a time"
        )
        print(
            f"policy → KNP ready {knp_ready:.2f} s, ports moved {ports_moved:.2f} s, "
            f"enforced observed by traffic {observed:.2f} s"
        )
        print(f"Neutron calls for the policy: {sum(per_policy.values())} {dict(per_policy)}")
        print(f"ports whose SGs still had to change after enforcement: {late_moves}")
        print(
            f"new allowed client: wired in {added:.2f} s, reaches a selected pod "
            f"{peer_reach:.2f} s after its creation started; Neutron calls "
            f"{sum(per_peer.values())} {dict(per_peer)}"
        )
        print(
            f"new selected pod: wired in {selected_wiring:.2f} s with the policy in force "
            f"(vs. median {statistics.median(wiring):.2f} s plain); closed at first probe: "
            f"{first_closed}; Neutron calls {sum(per_selected.values())} {dict(per_selected)}"
        )
        env.delete_policy("bench-a", "only-clients")
        env.wait_enforced([])
    finally:
        pool.shutdown()
        leaks = env.cleanup()
        http.close()
        emulator.stop()
        conn.close()
        if leaks:
            print(f"LEFT IN NEUTRON: {leaks}")
            raise SystemExit(1)


if __name__ == "__main__":
    main()

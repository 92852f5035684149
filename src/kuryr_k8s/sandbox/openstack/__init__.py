"""The sandbox's OpenStack part: real Neutron ML2/OVN, OVN, OVS, MariaDB and Octavia.

* ``services``: the daemons as components (start order, readiness probes, ownership);
* ``configs``: the generated neutron.conf, ml2_conf.ini, octavia.conf, clouds.yaml;
* ``topology``: the seed's base topology (net0, net1, router1, default SG), idempotent;
* ``hostplug``: a Neutron port plugged into br-int from a network namespace (the VM
  stand-in of the side-by-side demo and the benchmarks' floor).

Docs: docs/sandbox.md. The sandbox's other parts: ``sandbox/kubeapi`` (the Kubernetes API
emulator), ``sandbox/nodeagent`` (kubelet stand-in), ``sandbox/vm`` (QEMU guests).
"""

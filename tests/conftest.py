"""Root test configuration.

Fixture plugins live in ``tests/fixtures``:

* ``fixtures.kubeapi``: the Kubernetes API (emulator by default, a real cluster with
  ``--kubeconfig``/``KURYR_TEST_KUBECONFIG``).
* ``fixtures.sandbox``: live Neutron/OVN/OVS from ``kuryr sandbox`` (started if not running).
"""

pytest_plugins = ["fixtures.sandbox", "fixtures.kubeapi"]

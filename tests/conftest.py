"""Root test configuration.

Fixture plugins live in ``tests/fixtures``:

* ``fixtures.kubeapi``: the Kubernetes API (emulator by default, a real cluster with
  ``--kubeconfig``/``KURYR_TEST_KUBECONFIG``).
* ``fixtures.sandbox``: live Neutron/OVN/OVS from ``kuryr sandbox`` (started if not running).

Every test is marked by the folder it lives in (``unit``, ``functional``, ``e2e``,
``conformance``), so ``pytest -m unit`` runs only the fast ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["fixtures.sandbox", "fixtures.kubeapi"]

_FOLDER_MARKS = {
    "unit": "unit",
    "functional": "functional",
    "e2e": "e2e",
    "kubeapi_conformance": "conformance",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        try:
            top = Path(item.path).relative_to(root).parts[0]
        except ValueError:
            continue
        mark = _FOLDER_MARKS.get(top)
        if mark is not None:
            item.add_marker(mark)

"""Conformance suite setup: every test here is marked ``conformance``.

The suite only talks HTTP (and kubectl) to whatever ``kube_api`` provides, so it runs
unchanged against a real cluster: ``pytest tests/kubeapi_conformance --kubeconfig PATH``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.kubeapi import KubeClient, create_namespace

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.conformance)


@pytest.fixture(scope="module")
def module_namespace(kube_client: KubeClient) -> Iterator[str]:
    """One namespace shared by the tests of a module (for read-mostly tests)."""
    name = create_namespace(kube_client, "kuryr-conf")
    yield name
    kube_client.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def ns(kube_namespace: str) -> str:
    return kube_namespace

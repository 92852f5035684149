"""Differential test: ``scenarios.py`` against the emulator answers as the real v1.36.2 did.

``data/real/scenarios.py`` is the scenario script that recorded
``data/real/scenarios-real-v1.36.2.jsonl`` against a real kube-apiserver (copies of
``../shared/k8s-real/``). Here it runs against the emulator of this session, its transcript
is normalised with the recorder's own normaliser, and every exchange is compared with the
recording on what a client reads (see ``differential.py``). A difference fails the test
unless ``ALLOWED`` names it with the reason: keep that list short, and every entry must be
about the recording setup, never about behaviour the emulator gets wrong.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.kubeapi import KubeApi
from kubeapi_conformance import differential

SCENARIOS = differential.REAL / "scenarios.py"
RECORDING = differential.REAL / "scenarios-real-v1.36.2.jsonl"

ALLOWED: dict[tuple[str, str, str], str] = {
    (
        "kuryrport_crd",
        "POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        what,
    ): "recording setup: another client had created the KuryrPort CRD on the shared real "
    "server, so the real POST got 409 (README caveat); the emulator starts without it"
    for what in ("status", "reason", "object")
}
ALLOWED[
    (
        "kuryrport_crd",
        "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/kuryrports.openstack.org",
        "only-real",
    )
] = "the script polls for Established only when it created the CRD: it did not on the real server"
ALLOWED[
    (
        "list_limit_continue_and_selectors",
        "GET /api/v1/pods?limit=1&labelSelector=app=sel",
        "items",
    )
] = (
    "cluster-wide list: the shared real server still had a terminating pod of an earlier run "
    "(no kubelet there), the emulator is fresh"
)
ALLOWED[
    ("setup", "GET /api/v1/namespaces/kuryr-scn-<hex>/serviceaccounts/default", "only-real")
] = (
    "timing: the real service-account controller needed a moment (the script polled); the "
    "emulator's answers the first GET"
)


@pytest.fixture(scope="module")
def emulated(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not kube_api.is_emulator:
        pytest.skip("compares the emulator with the recording (a real cluster is the recording)")
    out = tmp_path_factory.mktemp("scenarios") / "emulator.jsonl"
    run = subprocess.run(
        [
            sys.executable,
            str(SCENARIOS),
            "--kubeconfig",
            str(kube_api.kubeconfig),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return differential.normalise(differential.load(Path(out)))


def test_scenarios_answer_as_the_real_server(emulated: list[dict]) -> None:
    real = differential.load(RECORDING)
    diffs = differential.compare(real, emulated)
    unexplained = [d for d in diffs if d.key() not in ALLOWED]
    assert not unexplained, "\n".join(str(d) for d in unexplained)


def test_allow_list_has_no_stale_entries(emulated: list[dict]) -> None:
    """An allowed difference that no longer happens must leave the list."""
    seen = {d.key() for d in differential.compare(differential.load(RECORDING), emulated)}
    stale = [k for k in ALLOWED if k not in seen and k[2] != "object"]
    assert not stale, stale


def test_comparison_catches_a_difference() -> None:
    """The comparison itself: a changed status, event order or field is reported."""
    real = differential.load(RECORDING)
    changed = [dict(r) for r in real]
    watch = next(
        r for r in changed if isinstance(r["response_body"], list) and len(r["response_body"]) > 2
    )
    watch["response_body"] = list(reversed(watch["response_body"]))
    changed[0] = {**changed[0], "status": 599}
    whats = {d.what for d in differential.compare(real, changed)}
    assert {"status", "events"} <= whats
    assert not differential.compare(real, real)

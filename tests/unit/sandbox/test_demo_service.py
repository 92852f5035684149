"""The main job's Service check: what a probe's output makes of it."""

from __future__ import annotations

import json

import pytest

from kuryr_k8s.sandbox import demo_service

pytestmark = pytest.mark.unit
BACKENDS = ["busybox-sleep", "busybox-sleep-2"]


def _out(answers: dict[str, int], failed: int = 0, **extra: object) -> str:
    bodies = {f"hello from {k}": v for k, v in answers.items()}
    return "noise\n" + json.dumps({"answers": bodies, "failed": failed, **extra})


def test_all_answered_by_every_backend_passes_with_counts() -> None:
    check = demo_service.service_check("c", 0, _out({"busybox-sleep": 8, "busybox-sleep-2": 12}),
                                       BACKENDS, "LB 1 (2 members)")  # fmt: skip
    assert check.ok
    assert check.detail == "LB 1 (2 members); 20/20 answered: busybox-sleep 8, busybox-sleep-2 12"


@pytest.mark.parametrize(
    ("rc", "out", "why"),
    [
        (0, _out({"busybox-sleep": 20}), "busybox-sleep-2 0"),
        (0, _out({"busybox-sleep": 10, "busybox-sleep-2": 9}, failed=1), "19/20"),
        (0, _out({"busybox-sleep": 10, "busybox-sleep-2": 9, "stranger": 1}), "unexpected"),
        (1, _out({}, failed=-1, error="timed out"), "no answer: timed out"),
        (1, "Traceback ...", "exit 1"),
    ],
)
def test_failures_say_why(rc: int, out: str, why: str) -> None:
    check = demo_service.service_check("c", rc, out, BACKENDS, "LB 1 (2 members)")
    assert not check.ok
    assert why in check.detail


def test_probe_script_compiles_and_names_the_target() -> None:
    script = demo_service.probe_script("10.96.0.2", 80, 20, 300.0)
    compile(script, "probe", "exec")
    assert "http://10.96.0.2:80/" in script

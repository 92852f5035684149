"""The rollback of a nested pod: our ``vlan`` VIF back to upstream 10.0.0's
``VIFVlanNested`` primitive (``to_upstream_vif``), compared with what upstream's own
``os_vif_util`` generated (``os-vif-primitives-generated.json``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from kuryr_k8s.model.kuryrport import to_upstream_vif
from kuryr_k8s.model.vif import from_os_vif, to_os_vif

DATA = Path(__file__).parents[2] / "fixtures" / "upstream"
GENERATED: dict[str, Any] = json.loads((DATA / "os-vif-primitives-generated.json").read_text())
SUBNETS = {"10.20.1.193": "3c01b96f-c65d-42d1-84f8-d911756b15a3"}


def _without_changes(prim: Any) -> Any:
    """A primitive without ``versioned_object.changes`` (bookkeeping of the object that
    made it; ``obj_from_primitive`` needs none, ``to_os_vif`` writes none)."""
    if isinstance(prim, dict):
        return {k: _without_changes(v) for k, v in prim.items() if k != "versioned_object.changes"}
    if isinstance(prim, list):
        return [_without_changes(v) for v in prim]
    return prim


def test_an_adopted_nested_vif_goes_back_to_exactly_what_upstream_wrote() -> None:
    vif = from_os_vif(GENERATED["vlan"], SUBNETS)
    back = to_upstream_vif(vif, network_label="pod-net")
    assert back == _without_changes(GENERATED["vlan"])
    assert from_os_vif(back, SUBNETS) == vif


def test_our_own_nested_vif_gets_upstreams_device_name_and_vlan() -> None:
    ours = dataclasses.replace(from_os_vif(GENERATED["vlan"], SUBNETS), adopted=False)
    data = to_upstream_vif(ours)["versioned_object.data"]
    assert (data["vif_name"], data["vlan_id"], data["plugin"]) == ("tap5f1e2d3c-4b", 101, "noop")
    assert "bridge" not in data["network"]["versioned_object.data"]


def test_side_by_side_vifs_are_converted_as_before() -> None:
    vif = from_os_vif(GENERATED["ovs"], SUBNETS)
    assert to_upstream_vif(vif, network_label="x") == to_os_vif(vif, network_label="x")

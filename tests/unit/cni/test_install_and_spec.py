"""The installed plugin, exec'd as a runtime does; result conversion; the error mapping."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kuryr_k8s.cni import spec
from kuryr_k8s.cni.errors import (
    BridgeMissing,
    HostError,
    InvalidRequest,
    UnknownContainer,
    UnsupportedVif,
    VifTimeout,
    to_cni_error,
)
from kuryr_k8s.cni.install import InstallSettings, install, uninstall
from kuryr_k8s.model.errors import ConfigError, TemporaryError
from kuryr_k8s.model.vif import InvalidVif

pytestmark = pytest.mark.unit


def test_install_writes_an_executable_plugin_and_a_conflist(tmp_path: Path) -> None:
    settings = InstallSettings(tmp_path / "bin", tmp_path / "net.d", daemon_socket="/x.sock")
    plugin, conf = install(settings)
    assert os.access(plugin, os.X_OK)
    doc = json.loads(conf.read_text())
    assert doc["name"] == "kuryr" and doc["cniVersion"] == spec.LATEST_VERSION
    assert doc["plugins"] == [{"type": "kuryr-cni", "daemonSocket": "/x.sock", "timeout": 300.0}]
    proc = subprocess.run(
        [plugin],
        input=json.dumps({"cniVersion": "1.0.0"}),
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["supportedVersions"] == list(spec.SUPPORTED_VERSIONS)
    install(settings)  # again: same files
    assert sorted(uninstall(settings)) == sorted([plugin, conf])
    assert uninstall(settings) == []


def test_convert_result_per_version() -> None:
    result = {
        "interfaces": [{"name": "eth0", "mac": "fa:16:3e:00:00:01", "mtu": 1442, "sandbox": "/n"}],
        "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
        "dns": {},
    }
    v11 = spec.convert_result(result, "1.1.0")
    v10 = spec.convert_result(result, "1.0.0")
    v04 = spec.convert_result(result, "0.4.0")
    assert v11["interfaces"][0]["mtu"] == 1442 and "version" not in v11["ips"][0]
    assert "mtu" not in v10["interfaces"][0]
    assert v04["ips"][0]["version"] == "4" and v04["cniVersion"] == "0.4.0"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UnknownContainer("x"), spec.UNKNOWN_CONTAINER),
        (InvalidRequest("x", spec.DECODE_FAILURE), spec.DECODE_FAILURE),
        (ConfigError("x"), spec.INVALID_NETWORK_CONFIG),
        (UnsupportedVif("x"), spec.UNSUPPORTED_VIF),
        (VifTimeout("x"), spec.TRY_AGAIN_LATER),
        (BridgeMissing("x"), spec.TRY_AGAIN_LATER),
        (TemporaryError("x"), spec.TRY_AGAIN_LATER),
        (InvalidVif("x"), 102),
        (HostError("x"), 102),
        (spec.CniError(7, "x"), 7),
        (RuntimeError("x"), spec.INTERNAL),
    ],
)
def test_error_tree_maps_to_cni_codes(exc: BaseException, code: int) -> None:
    err = to_cni_error(exc)
    assert err.code == code and err.msg


def test_cni_args_parsing() -> None:
    assert spec.parse_cni_args("A=1;B=;C=x=y") == {"A": "1", "B": "", "C": "x=y"}
    with pytest.raises(spec.CniError):
        spec.parse_cni_args("A")

"""``[kubernetes]``/``[health_server]`` settings, the controller's readiness rules, and
``kuryr controller`` refusing bad configuration with a message naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuryr_k8s.cli.main import main
from kuryr_k8s.controller.health import HealthState
from kuryr_k8s.controller.settings import KubernetesSettings, load_kubernetes
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError

GOOD = """\
[neutron]
endpoint_override = http://127.0.0.1:9696
auth_type = none

[neutron_defaults]
project = p1
pod_subnet = s1
pod_security_groups = sg1
cluster_id = c1
"""


def test_kubernetes_defaults_and_upstream_names() -> None:
    cfg = ConfigFile.from_text(
        "[kubernetes]\nport_debug = true\nworkers = 4\nenabled_handlers = vif,kuryrport\n"
        "[health_server]\nport = 9000\n"
    )
    k = load_kubernetes(cfg)
    cfg.tolerate("kubernetes", "vif_pool_driver")
    cfg.reject_unknown()
    assert k == KubernetesSettings(port_debug=True, workers=4, health_server_port=9000)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[kubernetes]\nleader_renew_deadline = 20\n", "leader_renew_deadline = 20.0"),
        ("[kubernetes]\nleader_retry_period = 0\n", "leader_retry_period = 0.0"),
        ("[kubernetes]\nworkers = 0\n", "[kubernetes] workers = 0"),
        ("[kubernetes]\npod_vif_driver = nested-vlan-x\n", "'nested-vlan-x': allowed values"),
        ("[health_server]\nport = 70000\n", "[health_server] port = 70000"),
    ],
)
def test_bad_kubernetes_values_name_the_option(text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        load_kubernetes(ConfigFile.from_text(text))


def test_readiness_needs_synced_caches_and_rebuilt_pools_when_leading() -> None:
    state = HealthState()
    assert state.readiness() == (False, "starting: informers not synced")
    state.informers_synced = True
    state.role = "standby"
    assert state.readiness() == (True, "standby")
    state.role = "leader"
    assert state.readiness() == (False, "leader: pools are being rebuilt")
    state.startup_done = True
    assert state.readiness() == (True, "leader")
    state.failures.append("informer pods died")
    assert state.readiness()[0] is False


def test_the_cli_refuses_a_missing_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["controller", "--config-file", str(tmp_path / "nope.conf")])
    assert rc == 2
    assert "nope.conf does not exist" in capsys.readouterr().err


def test_the_cli_refuses_an_unknown_option_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "kuryr.conf"
    conf.write_text(GOOD + "pod_subet = typo\n")
    rc = main(["controller", "--config-file", str(conf)])
    assert rc == 2
    assert "unknown option [neutron_defaults] pod_subet" in capsys.readouterr().err


def test_the_cli_refuses_a_missing_required_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "kuryr.conf"
    conf.write_text(GOOD.replace("pod_subnet = s1\n", ""))
    assert main(["controller", "--config-file", str(conf)]) == 2
    assert "[neutron_defaults] pod_subnet is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("[kubernetes]\npod_vif_driver = nested-macvlan\n", "Use pod_vif_driver = nested-vlan"),
        ("[kubernetes]\npod_vif_driver = mixed\n", "worker_nodes_subnets is required"),
    ],
)
def test_the_cli_refuses_nested_configuration_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, says: str
) -> None:
    conf = tmp_path / "kuryr.conf"
    conf.write_text(GOOD + extra)
    assert main(["controller", "--config-file", str(conf)]) == 2
    assert says in capsys.readouterr().err

"""``kuryr daemon`` settings from kuryr.conf and flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuryr_k8s.cli.main import main
from kuryr_k8s.cni.daemon.main import DaemonSettings
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError

pytestmark = pytest.mark.unit


def test_options_from_kuryr_conf() -> None:
    conf = ConfigFile.from_text(
        "[cni_daemon]\nnode_name = n1\nsocket_path = /tmp/k.sock\nmetrics_address =\n"
        "vif_annotation_timeout = 7\nready_timeout = 9\novsdb_connection = tcp:127.0.0.1:6640\n"
        "[kubernetes]\nkubeconfig = /etc/kube.conf\n"
    )
    settings = DaemonSettings.from_config(conf)
    assert settings.node_name == "n1" and settings.socket_path == Path("/tmp/k.sock")
    assert settings.metrics_address is None
    assert (settings.service.vif_timeout, settings.service.ready_timeout) == (7.0, 9.0)
    assert settings.ovsdb_connection == "tcp:127.0.0.1:6640"
    assert settings.kubeconfig == Path("/etc/kube.conf")


def test_unknown_option_and_bad_value_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"\[cni_daemon\] vif_timout"):
        DaemonSettings.from_config(ConfigFile.from_text("[cni_daemon]\nvif_timout = 3\n"))
    with pytest.raises(ConfigError, match=r"ready_timeout = 'soon'"):
        DaemonSettings.from_config(ConfigFile.from_text("[cni_daemon]\nready_timeout = soon\n"))


def test_daemon_command_refuses_a_bad_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "kuryr.conf"
    conf.write_text("[cni_daemon]\nbogus = 1\n")
    assert main(["daemon", "--config-file", str(conf)]) == 2
    assert "bogus" in capsys.readouterr().err


def test_cluster_id_comes_from_neutron_defaults_and_must_be_one_word() -> None:
    conf = ConfigFile.from_text("[neutron_defaults]\ncluster_id = kuryr-real\n")
    assert DaemonSettings.from_config(conf).cluster_id == "kuryr-real"
    assert DaemonSettings.from_config(ConfigFile.from_text("")).cluster_id == "default"
    with pytest.raises(ConfigError, match=r"cluster_id = 'two words'"):
        DaemonSettings.from_config(
            ConfigFile.from_text("[neutron_defaults]\ncluster_id = two words\n")
        )

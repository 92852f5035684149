"""Preflight refusals, settings resolution and generated configuration."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.manager import ComponentStatus, format_status
from kuryr_k8s.sandbox.openstack import configs
from kuryr_k8s.sandbox.paths import paths_for
from kuryr_k8s.sandbox.process import SandboxError
from kuryr_k8s.sandbox.settings import SandboxSettings, record, settings_from_env


def _os_release(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "os-release"
    path.write_text(text)
    return path


def test_preflight_refuses_non_root(tmp_path: Path) -> None:
    debian = _os_release(tmp_path, 'ID=debian\nVERSION_ID="12"\n')
    with pytest.raises(SandboxError, match="needs root"):
        manager.preflight(debian, root=False)


@pytest.mark.parametrize(
    "text",
    ['ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04"\n', 'ID=debian\nVERSION_ID="13"\n'],
)
def test_preflight_refuses_other_systems(tmp_path: Path, text: str) -> None:
    with pytest.raises(SandboxError, match="unsupported OS.*Debian 12"):
        manager.preflight(_os_release(tmp_path, text), root=True)


def test_preflight_accepts_debian_12(tmp_path: Path) -> None:
    manager.preflight(_os_release(tmp_path, 'ID=debian\nVERSION_ID="12"\n'), root=True)


def test_unknown_neutron_flavour_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'kilo'.*--neutron.*'debian'.*'pypi'"):
        settings_from_env(state_dir=str(tmp_path), neutron="kilo")


def test_later_commands_reuse_what_up_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KURYR_SANDBOX_NEUTRON", raising=False)
    monkeypatch.delenv("KURYR_SANDBOX_OCTAVIA", raising=False)
    record(SandboxSettings(state_dir=tmp_path, neutron="pypi", octavia=True))
    settings = settings_from_env(state_dir=str(tmp_path))
    assert (settings.neutron, settings.octavia) == ("pypi", True)
    assert settings_from_env(state_dir=str(tmp_path), neutron="debian").neutron == "debian"


def _parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(text)
    return parser


@pytest.mark.parametrize("flavour", ["debian", "pypi"])
def test_neutron_conf_matches_the_sandbox_facts(tmp_path: Path, flavour: str) -> None:
    settings = SandboxSettings(state_dir=tmp_path, neutron=flavour, hostname="node-a")  # type: ignore[arg-type]
    paths = paths_for(settings)
    conf = _parse(configs.neutron_conf(settings, paths))
    assert conf["DEFAULT"]["host"] == "node-a"
    assert conf["DEFAULT"]["auth_strategy"] == "noauth"
    assert conf["DEFAULT"]["transport_url"] == "fake:/"
    assert conf["DEFAULT"]["bind_host"] == "127.0.0.1"
    assert set(conf["DEFAULT"]["service_plugins"].split(",")) == {"ovn-router", "trunk", "segments"}
    assert str(paths.mysql_socket) in conf["database"]["connection"]
    assert conf.has_section("oslo_policy") == (flavour == "debian")
    ml2 = _parse(configs.ml2_conf(settings))
    assert "tag_ports_during_bulk_creation" in ml2["ml2"]["extension_drivers"]
    assert ml2["ml2"]["mechanism_drivers"] == "ovn"


def test_uwsgi_ini_carries_both_env_lines(tmp_path: Path) -> None:
    settings = SandboxSettings(state_dir=tmp_path, neutron="pypi")
    text = configs.uwsgi_ini(settings, paths_for(settings))
    assert f"env = OS_NEUTRON_CONFIG_DIR={tmp_path / 'etc'}" in text
    assert "env = OS_NEUTRON_CONFIG_FILES=neutron.conf;ml2_conf.ini" in text
    assert "http-socket = 127.0.0.1:9696" in text


def test_octavia_conf_avoids_the_noauth_option_clash(tmp_path: Path) -> None:
    settings = SandboxSettings(state_dir=tmp_path, octavia=True)
    conf = _parse(configs.octavia_conf(settings, paths_for(settings)))
    assert "auth_type" not in conf["neutron"]
    assert conf["neutron"]["auth_section"] == "neutron_noauth"
    assert conf["neutron_noauth"]["auth_type"] == "none"


def test_status_table_marks_down_components(tmp_path: Path) -> None:
    rows = [
        ComponentStatus("ovsdb-server", True, 10, 2.5, True, tmp_path / "a.log"),
        ComponentStatus("neutron-server", True, None, None, None, tmp_path / "b.log"),
        ComponentStatus("octavia-api", False, None, None, None, tmp_path / "c.log"),
    ]
    text = format_status(rows)
    assert "neutron-server         DOWN" in text
    assert "octavia-api            disabled" in text
    assert [r.healthy for r in rows] == [True, False, True]


def test_up_kubeconfig_runs_the_product_against_an_existing_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kuryr_k8s.sandbox.components import Context, all_components

    monkeypatch.delenv("KURYR_SANDBOX_KUBECONFIG", raising=False)
    cluster = tmp_path / "cluster.kubeconfig"
    cluster.write_text("apiVersion: v1\n")
    state = tmp_path / "state"
    settings = settings_from_env(state_dir=str(state), kubeconfig=str(cluster))
    assert settings.kubeconfig == cluster and settings.kuryr, "--kubeconfig implies --kuryr"
    paths = paths_for(settings)
    assert paths.kubeconfig == cluster, "the product's kuryr.conf and env point at the cluster"
    names = [c.name for c in all_components(Context(settings, paths))]
    assert "kube-api" not in names
    record(settings)
    again = settings_from_env(state_dir=str(state))
    assert again.kubeconfig == cluster, "later commands remember the cluster"
    own = settings_from_env(state_dir=str(tmp_path / "other"))
    assert own.kubeconfig is None
    assert "kube-api" in [c.name for c in all_components(Context(own, paths_for(own)))]


def test_up_kubeconfig_that_is_not_a_file_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--kubeconfig"):
        settings_from_env(state_dir=str(tmp_path), kubeconfig=str(tmp_path / "missing"))

"""An upstream kuryr-kubernetes 10.0.0 kuryr.conf loads here: each of its documented
options is honoured or reported as ignored with why; typos and bad values still fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuryr_k8s.cli.config_cmd import report
from kuryr_k8s.cli.main import main
from kuryr_k8s.cni.daemon.main import DaemonSettings
from kuryr_k8s.controller import settings as s
from kuryr_k8s.controller.build import load_config
from kuryr_k8s.controller.lbwiring import load_services
from kuryr_k8s.controller.namespaces import load_placement
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.model.upstream_options import ALIASES, UPSTREAM_OPTIONS

OPTIONS_FILE = Path(__file__).parents[2] / "fixtures" / "upstream" / "options-10.0.0.txt"

# What benchmarks/upstream_peer.py writes for upstream 10.0.0 on the sandbox (ran there).
UPSTREAM_CONF = """\
[DEFAULT]
debug = false

[kubernetes]
api_root = http://127.0.0.1:6443
token_file =
ssl_verify_server_crt = false
pod_vif_driver = neutron-vif
vif_pool_driver = neutron
pod_subnets_driver = default
pod_security_groups_driver = default
enabled_handlers = vif,kuryrport
port_debug = false
use_events = true
watch_reconcile_period = 0

[neutron]
auth_type = none
endpoint = http://127.0.0.1:9696

[neutron_defaults]
project = cd277203c1b75a91a296a05c92230b0b
pod_subnet = 3c01b96f-c65d-42d1-84f8-d911756b15a3
pod_security_groups = 0536f74a-5074-4ec6-a151-6b77ece6f9d2
ovs_bridge = br-int
resource_tags = kuryr-upstream-bench

[vif_pool]
ports_pool_min = 5
ports_pool_batch = 10
ports_pool_max = 0
ports_pool_update_frequency = 20

[cni_daemon]
bind_address = 127.0.0.1:5036
vif_annotation_timeout = 120
worker_num = 30

[health_server]
port = 8282

[cni_health_server]
port = 8290

[os_vif_ovs]
ovsdb_connection = tcp:127.0.0.1:6640

[oslo_concurrency]
lock_path = /var/lib/kuryr/locks
"""
WITH_CLUSTER = UPSTREAM_CONF.replace("ovs_bridge = br-int", "ovs_bridge = br-int\ncluster_id = c1")
"""The one line an upstream file needs here (upstream has no cluster id)."""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kuryr.conf"
    path.write_text(text)
    return path


def _upstream_names() -> set[tuple[str, str]]:
    lines = OPTIONS_FILE.read_text().splitlines()
    return {(a, b) for a, b in (line.split() for line in lines if not line.startswith("#"))}


def test_every_documented_upstream_option_has_a_disposition() -> None:
    names = _upstream_names()
    assert len(names) > 140  # the recorded list, not an empty file
    assert names - set(UPSTREAM_OPTIONS) == set()
    assert all(UPSTREAM_OPTIONS[n].honoured or UPSTREAM_OPTIONS[n].note for n in names)


def test_honoured_upstream_options_are_really_read_by_a_loader() -> None:
    cfg = ConfigFile.from_text(WITH_CLUSTER)
    k = s.load_kubernetes(cfg)
    s.load_neutron(cfg)
    s.load_neutron_defaults(cfg)
    s.load_vif_pool(cfg)
    s.load_nested(cfg, k.pod_vif_driver)
    load_services(cfg)
    load_placement(cfg)
    DaemonSettings.from_config(cfg)
    read = {(sec, o) for sec, opts in cfg.read_options.items() for o in opts}
    honoured = {key for key, up in UPSTREAM_OPTIONS.items() if up.honoured}
    assert honoured - read == set()
    assert set(ALIASES.values()) <= honoured


def test_upstream_conf_loads_in_both_processes_with_its_meaning(tmp_path: Path) -> None:
    path = _write(tmp_path, WITH_CLUSTER)
    config = load_config(path)
    assert config.neutron.endpoint == "http://127.0.0.1:9696"  # [neutron] endpoint
    assert config.kubernetes.watch_reconcile_period == 300.0  # upstream 0: our default
    assert config.pool.enabled and config.pool.ports_pool_min == 5
    assert config.defaults.resource_tags == ("kuryr-upstream-bench",)
    daemon = DaemonSettings.from_config(ConfigFile.load(path))
    assert daemon.ovsdb_connection == "tcp:127.0.0.1:6640"  # [os_vif_ovs]
    assert daemon.service.vif_timeout == 120.0


def test_ignored_options_are_named_with_why() -> None:
    cfg = ConfigFile.from_text(UPSTREAM_CONF)
    ignored = {(u.section, u.option): u for u in cfg.ignored()}
    assert set(ignored) == {
        ("DEFAULT", "debug"),
        ("kubernetes", "token_file"),
        ("kubernetes", "ssl_verify_server_crt"),
        ("kubernetes", "use_events"),
        ("kubernetes", "watch_reconcile_period"),
        ("cni_daemon", "bind_address"),
        ("cni_daemon", "worker_num"),
        ("cni_health_server", "port"),
        ("oslo_concurrency", "lock_path"),
    }
    assert "socket_path" in ignored[("cni_daemon", "bind_address")].line()
    assert "300 s" in ignored[("kubernetes", "watch_reconcile_period")].why
    # a non-zero watch_reconcile_period is upstream's meaning, honoured
    cfg = ConfigFile.from_text("[kubernetes]\nwatch_reconcile_period = 120\n")
    assert cfg.ignored() == [] and cfg.get_float("kubernetes", "watch_reconcile_period", 1) == 120


def test_a_typo_is_still_refused() -> None:
    cfg = ConfigFile.from_text(UPSTREAM_CONF.replace("ports_pool_min", "ports_pool_mni"), "k.conf")
    with pytest.raises(ConfigError, match=r"k.conf: unknown option \[vif_pool\] ports_pool_mni"):
        cfg.reject_unknown()


def test_config_check_reports_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, WITH_CLUSTER)
    assert main(["config", "check", "--config-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ignored upstream option [cni_daemon] worker_num: " in out
    assert "honoured upstream option [neutron] endpoint" in out
    assert out.rstrip().endswith("ok: the controller and the daemon accept this file")


def test_config_check_fails_on_a_bad_value_naming_file_and_option(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        WITH_CLUSTER.replace("ports_pool_min = 5", "ports_pool_min = five"),
    )
    assert main(["config", "check", "--config-file", str(path)]) == 2
    _, errors = report(path)
    assert errors == [f"controller: {path}: [vif_pool] ports_pool_min = 'five': not an integer"]


def test_an_unchanged_upstream_file_is_accepted_and_the_cluster_id_explained(
    tmp_path: Path,
) -> None:
    lines, errors = report(_write(tmp_path, UPSTREAM_CONF))
    assert errors == []
    assert any(
        line.startswith("(not set) [neutron_defaults] cluster_id")
        and "k8s-<uid of the kube-system namespace>" in line
        for line in lines
    )
    lines, _ = report(_write(tmp_path, WITH_CLUSTER))
    assert not any("[neutron_defaults] cluster_id:" in line for line in lines)


def test_config_check_on_a_missing_file(tmp_path: Path) -> None:
    _, errors = report(tmp_path / "nope.conf")
    assert errors and "does not exist" in errors[0]

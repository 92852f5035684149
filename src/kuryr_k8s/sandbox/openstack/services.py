"""The OpenStack services of the sandbox: OVS, OVN, MariaDB, Neutron ML2/OVN, Octavia.

Start order (shared/notes/openstack-sandbox.md section 6): ovsdb-server, ovs-vswitchd,
bridges, OVN NB and SB, ovn-northd, chassis settings, ovn-controller, MariaDB, Neutron,
then optionally Octavia's driver agent and API. Stop is the reverse. Their configuration
files come from ``configs.py``; docs/sandbox.md has the commands and measurements.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kuryr_k8s.sandbox.components import (
    Component,
    Context,
    http_json,
    http_ok,
)
from kuryr_k8s.sandbox.openstack import configs
from kuryr_k8s.sandbox.process import (
    SandboxError,
    is_alive,
    owned_pid,
    run,
    spawn,
    terminate,
)

OCTAVIA_RUN_DIR = Path("/var/run/octavia")
"""octavia-lib hard-codes its sockets' directory."""


def _detach_opts(comp: Component) -> list[str]:
    return [
        f"--pidfile={comp.pidfile}",
        f"--log-file={comp.log_file}",
        "--detach",
        "--no-chdir",
    ]


def ensure_ovsdb_file(db: Path, schema: Path) -> None:
    if not db.exists():
        run(["ovsdb-tool", "create", str(db), str(schema)])
        return
    needs = run(["ovsdb-tool", "needs-conversion", str(db), str(schema)]).stdout.strip()
    if needs == "yes":
        run(["ovsdb-tool", "convert", str(db), str(schema)])


class OvsdbServer(Component):
    name = "ovsdb-server"
    tcp_port_attr = "ovsdb"

    def prepare(self) -> None:
        ensure_ovsdb_file(
            self.ctx.paths.ovs / "conf.db", Path("/usr/share/openvswitch/vswitch.ovsschema")
        )

    def launch(self) -> None:
        p = self.ctx.paths
        run(
            [
                "ovsdb-server",
                str(p.ovs / "conf.db"),
                f"--remote=punix:{p.ovs_db_sock}",
                f"--remote=ptcp:{self.tcp_port}:127.0.0.1",
                "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                f"--unixctl={p.run / 'ovsdb-server.ctl'}",
                *_detach_opts(self),
            ],
            env=self.ctx.ovs_env(),
        )

    def probe(self) -> bool:
        run(
            ["ovs-vsctl", f"--db=unix:{self.ctx.paths.ovs_db_sock}", "--no-wait", "init"],
            env=self.ctx.ovs_env(),
            timeout=10,
        )
        return True

    def api_probe(self) -> bool:
        try:
            self.ctx.vsctl("--no-wait", "get", "Open_vSwitch", ".", "ovs_version")
        except SandboxError:
            return False
        return True


class OvsVswitchd(Component):
    name = "ovs-vswitchd"

    def prepare(self) -> None:
        """A killed ovs-vswitchd (no 'down') leaves its netdev taps behind (pitfall 11)."""
        delete_leftover_taps()

    def launch(self) -> None:
        """With ``--monitor``, as Debian's ``ovs-ctl`` starts it: a parent process starts
        the daemon again when it crashes (OVS 3.1's userspace conntrack can hit an
        assertion, docs/design/network-policy.md), so the datapath is back in seconds
        instead of staying down until the next ``sandbox up``."""
        run(
            [
                "ovs-vswitchd",
                f"unix:{self.ctx.paths.ovs_db_sock}",
                f"--unixctl={self.ctx.paths.run / 'ovs-vswitchd.ctl'}",
                "--monitor",
                *_detach_opts(self),
            ],
            env=self.ctx.ovs_env(),
        )

    def monitor_pids(self) -> list[int]:
        """Our daemon's ``--monitor`` parent(s). OVS renames them (``comm`` "monitor",
        command line "ovs-vswitchd: monitoring pid N"), so they are recognised by this
        sandbox's ``OVS_RUNDIR`` in their environment, never another sandbox's or the
        host's ovs-vswitchd."""
        ours = f"OVS_RUNDIR={self.ctx.paths.run}".encode()
        found = []
        for comm in Path("/proc").glob("[0-9]*/comm"):
            try:
                if comm.read_text().strip() != "monitor":
                    continue
                argv = (comm.parent / "cmdline").read_bytes()
                environ = (comm.parent / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            pid = int(comm.parent.name)
            if argv.startswith(b"ovs-vswitchd: monitoring") and ours in environ and is_alive(pid):
                found.append(pid)
        return found

    def extra_pids(self) -> list[int]:
        return self.monitor_pids()

    def stop(self) -> bool:
        """The monitor first, so that it cannot start the daemon again meanwhile."""
        monitors = self.monitor_pids()
        for pid in monitors:
            terminate(pid)
        return super().stop() or bool(monitors)

    def after_start(self) -> None:
        """Bridges and chassis settings must exist before ovn-controller starts (pitfall 14)."""
        c = self.ctx
        c.vsctl(
            "--may-exist",
            "add-br",
            "br-int",
            "--",
            "set",
            "Bridge",
            "br-int",
            "datapath_type=netdev",
            "fail-mode=secure",
            "other-config:disable-in-band=true",
        )
        c.vsctl(
            "--may-exist", "add-br", "br-ex", "--", "set", "Bridge", "br-ex", "datapath_type=netdev"
        )
        host = c.settings.hostname
        ids = {
            "system-id": host,
            "hostname": host,
            "ovn-remote": f"tcp:127.0.0.1:{c.settings.ports.ovn_sb}",
            "ovn-encap-type": "geneve",
            "ovn-encap-ip": "127.0.0.1",
            "ovn-bridge": "br-int",
            "ovn-bridge-datapath-type": "netdev",
            "ovn-bridge-mappings": "physnet1:br-ex",
            "ovn-cms-options": "enable-chassis-as-gw",
        }
        c.vsctl("set", "Open_vSwitch", ".", *(f'external_ids:{k}="{v}"' for k, v in ids.items()))


class OvnDb(Component):
    """One of the two OVN OVSDB servers (Northbound, Southbound)."""

    def __init__(self, ctx: Context, which: str) -> None:
        super().__init__(ctx)
        self.which = which  # "nb" or "sb"
        self.name = f"ovn{which}_db"
        self.tcp_port_attr = f"ovn_{which}"
        self.db_name = "OVN_Northbound" if which == "nb" else "OVN_Southbound"
        self.global_table = "NB_Global" if which == "nb" else "SB_Global"

    @property
    def db_file(self) -> Path:
        return self.ctx.paths.ovn / f"ovn{self.which}_db.db"

    @property
    def sock(self) -> Path:
        return self.ctx.paths.nb_sock if self.which == "nb" else self.ctx.paths.sb_sock

    def prepare(self) -> None:
        ensure_ovsdb_file(self.db_file, Path(f"/usr/share/ovn/ovn-{self.which}.ovsschema"))

    def launch(self) -> None:
        run(
            [
                "ovsdb-server",
                str(self.db_file),
                f"--remote=punix:{self.sock}",
                f"--remote=ptcp:{self.tcp_port}:127.0.0.1",
                f"--remote=db:{self.db_name},{self.global_table},connections",
                f"--unixctl={self.ctx.paths.run / (self.name + '.ctl')}",
                *_detach_opts(self),
            ],
            env=self.ctx.ovs_env(),
        )

    def probe(self) -> bool:
        return self.sock.exists()

    def api_probe(self) -> bool:
        try:
            run(["ovsdb-client", "list-dbs", f"unix:{self.sock}"], timeout=10)
        except SandboxError:
            return False
        return True


class OvnNorthd(Component):
    name = "ovn-northd"

    def launch(self) -> None:
        p = self.ctx.paths
        run(
            [
                "ovn-northd",
                f"--ovnnb-db=unix:{p.nb_sock}",
                f"--ovnsb-db=unix:{p.sb_sock}",
                f"--unixctl={p.run / 'ovn-northd.ctl'}",
                *_detach_opts(self),
            ],
            env=self.ctx.ovs_env(),
        )


class OvnController(Component):
    name = "ovn-controller"
    ready_timeout = 30.0

    def launch(self) -> None:
        p = self.ctx.paths
        run(
            [
                "ovn-controller",
                f"unix:{p.ovs_db_sock}",
                *_detach_opts(self),
            ],
            env=self.ctx.ovs_env(),
        )

    def probe(self) -> bool:
        return self.chassis_registered()

    def chassis_registered(self) -> bool:
        out = self.ctx.sbctl(
            "--bare",
            "--columns=hostname",
            "find",
            "Chassis",
            f"hostname={self.ctx.settings.hostname}",
        )
        return out.strip() == self.ctx.settings.hostname

    def api_probe(self) -> bool:
        try:
            return self.chassis_registered()
        except SandboxError:
            return False


class MariaDB(Component):
    name = "mariadb"
    ready_timeout = 60.0

    @property
    def pidfile(self) -> Path:
        return self.ctx.paths.mysql_run / "mysqld.pid"

    @property
    def log_file(self) -> Path:
        return self.ctx.paths.log / "mysql" / "mariadb.log"

    def prepare(self) -> None:
        p = self.ctx.paths
        for d in (p.mysql, p.mysql_run, self.log_file.parent):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "mysql", "mysql")
        if not (p.mysql / "mysql").is_dir():
            run(
                [
                    "mariadb-install-db",
                    "--user=mysql",
                    f"--datadir={p.mysql}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                timeout=300,
            )

    def launch(self) -> None:
        p = self.ctx.paths
        self.spawn(
            [
                "mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={p.mysql}",
                f"--socket={p.mysql_socket}",
                f"--pid-file={self.pidfile}",
                "--skip-networking",
                f"--log-error={self.log_file}",
                "--innodb-buffer-pool-size=64M",
                "--performance-schema=OFF",
                "--character-set-server=utf8mb4",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--max-connections=300",
            ],
            "mariadb-stdout",
        )

    def sql(self, statement: str) -> str:
        return run(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={self.ctx.paths.mysql_socket}",
                "-N",
                "-B",
                "-e",
                statement,
            ],
            timeout=60,
        ).stdout

    def probe(self) -> bool:
        return self.ctx.paths.mysql_socket.exists() and self.sql("select 1").strip() == "1"

    def api_probe(self) -> bool:
        try:
            return self.probe()
        except SandboxError:
            return False

    def after_start(self) -> None:
        for db in ("neutron", "octavia"):
            self.sql(
                f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4; "
                f"CREATE USER IF NOT EXISTS '{db}'@'localhost' IDENTIFIED BY '{db}'; "
                f"GRANT ALL PRIVILEGES ON {db}.* TO '{db}'@'localhost';"
            )


class Neutron(Component):
    """neutron-server (Debian Zed), or uWSGI plus the two workers (PyPI 29)."""

    name = "neutron-server"
    tcp_port_attr = "neutron"
    ready_timeout = 180.0

    @property
    def venv(self) -> Path:
        return self.ctx.paths.venvs / "neutron29"

    @property
    def conf_args(self) -> list[str]:
        e = self.ctx.paths.etc
        return ["--config-file", str(e / "neutron.conf"), "--config-file", str(e / "ml2_conf.ini")]

    def _bin(self, name: str) -> str:
        if self.ctx.settings.neutron == "pypi":
            path = self.venv / "bin" / name
            if not path.exists():
                raise SandboxError(
                    f"{self.name}: {path} is missing; run "
                    "'kuryr sandbox install --neutron pypi' first"
                )
            return str(path)
        return name

    def write_config(self) -> None:
        s, p = self.ctx.settings, self.ctx.paths
        (p.neutron / "lock").mkdir(parents=True, exist_ok=True)
        (p.etc / "neutron.conf").write_text(configs.neutron_conf(s, p))
        (p.etc / "ml2_conf.ini").write_text(configs.ml2_conf(s))
        if s.neutron == "pypi":
            (p.etc / "neutron-uwsgi.ini").write_text(configs.uwsgi_ini(s, p))

    def prepare(self) -> None:
        self.write_config()
        self.migrate()

    def migrate(self) -> None:
        """Run the schema migration when the Neutron version changed (forward only)."""
        stamp = self.ctx.paths.neutron / "db-version"
        version = self.ctx.settings.neutron
        previous = stamp.read_text().strip() if stamp.exists() else None
        if previous == version:
            return
        if previous == "pypi" and version == "debian":
            raise SandboxError(
                f"{self.name}: the database was migrated by Neutron 29 and cannot go back to "
                "Zed (migrations only go forward). Run 'kuryr sandbox reset' first, or use a "
                "separate --state-dir for each Neutron flavour."
            )
        run([self._bin("neutron-db-manage"), *self.conf_args, "upgrade", "heads"], timeout=600)
        stamp.write_text(version + "\n")

    def launch(self) -> None:
        p = self.ctx.paths
        if self.ctx.settings.neutron == "debian":
            self.spawn(["neutron-server", *self.conf_args], "neutron-stdout", pidfile=self.pidfile)
            return
        self.spawn(
            [self._bin("uwsgi"), "--ini", str(p.etc / "neutron-uwsgi.ini")],
            "neutron-server",
            pidfile=self.pidfile,
        )
        for worker in ("neutron-ovn-maintenance-worker", "neutron-periodic-workers"):
            wpid = spawn([self._bin(worker), *self.conf_args], log_file=p.logfile(worker))
            self.ctx.paths.pidfile(worker).write_text(f"{wpid}\n")

    def extra_pids(self) -> list[int]:
        return self.worker_pids()

    def worker_pids(self) -> list[int]:
        pids = []
        for worker in ("neutron-ovn-maintenance-worker", "neutron-periodic-workers"):
            pid = owned_pid(self.ctx.paths.pidfile(worker), self.marker)
            if pid is not None:
                pids.append(pid)
        return pids

    def stop(self) -> bool:
        stopped = super().stop()
        for pid in self.worker_pids():
            terminate(pid)
            stopped = True
        return stopped

    def probe(self) -> bool:
        url = self.ctx.settings.neutron_url
        if not http_ok(f"{url}/v2.0/networks"):
            return False
        agents = http_json(f"{url}/v2.0/agents")
        assert isinstance(agents, dict)
        return any(a.get("alive") for a in agents.get("agents", []))

    def api_probe(self) -> bool:
        return http_ok(f"{self.ctx.settings.neutron_url}/v2.0/networks")


class OctaviaDriverAgent(Component):
    name = "octavia-driver-agent"
    ready_timeout = 60.0

    @property
    def venv(self) -> Path:
        return self.ctx.paths.venvs / "octavia"

    def enabled(self) -> bool:
        return self.ctx.settings.octavia

    def _bin(self, name: str) -> str:
        path = self.venv / "bin" / name
        if not path.exists():
            raise SandboxError(
                f"{self.name}: {path} is missing; run 'kuryr sandbox install --octavia' first"
            )
        return str(path)

    @property
    def conf(self) -> Path:
        return self.ctx.paths.etc / "octavia.conf"

    def prepare(self) -> None:
        p = self.ctx.paths
        (p.octavia / "lock").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(configs.octavia_conf(self.ctx.settings, p))
        OCTAVIA_RUN_DIR.mkdir(parents=True, exist_ok=True)
        stamp = p.octavia / "db-version"
        if not stamp.exists():
            run(
                [
                    self._bin("octavia-db-manage"),
                    "--config-file",
                    str(self.conf),
                    "upgrade",
                    "head",
                ],
                timeout=600,
            )
            stamp.write_text("19\n")

    def launch(self) -> None:
        self.spawn(
            [self._bin("octavia-driver-agent"), "--config-file", str(self.conf)],
            "octavia-driver-agent-stdout",
            pidfile=self.pidfile,
        )

    def probe(self) -> bool:
        return (OCTAVIA_RUN_DIR / "status.sock").exists()


class OctaviaApi(OctaviaDriverAgent):
    name = "octavia-api"
    tcp_port_attr = "octavia"
    ready_timeout = 120.0

    def prepare(self) -> None:
        """The driver agent prepared config and schema."""

    def launch(self) -> None:
        self.spawn(
            [self._bin("octavia-api"), "--config-file", str(self.conf)],
            "octavia-api-stdout",
            pidfile=self.pidfile,
        )

    def probe(self) -> bool:
        return http_ok(f"{self.ctx.settings.octavia_url}/v2/lbaas/providers")

    def api_probe(self) -> bool:
        return self.probe()


def openstack_services(ctx: Context) -> list[Component]:
    """The OpenStack daemons in start order (Octavia's only run when enabled)."""
    return [
        OvsdbServer(ctx),
        OvsVswitchd(ctx),
        OvnDb(ctx, "nb"),
        OvnDb(ctx, "sb"),
        OvnNorthd(ctx),
        OvnController(ctx),
        MariaDB(ctx),
        Neutron(ctx),
        OctaviaDriverAgent(ctx),
        OctaviaApi(ctx),
    ]


def delete_leftover_taps() -> list[str]:
    """With the netdev datapath, bridges stay behind as tap devices (pitfall 11).

    They are removed only when no ovs-vswitchd runs on the host: a running one (another
    state directory's sandbox) owns them."""
    if vswitchd_running():
        return []
    removed = []
    for dev in ("br-int", "br-ex", "ovs-netdev"):
        out = run(["ip", "-d", "link", "show", dev], check=False).stdout
        if "tun type tap" in out:
            run(["ip", "link", "del", dev], check=False)
            removed.append(dev)
    return removed


def vswitchd_running() -> bool:
    """Does any ovs-vswitchd run on this host (whoever started it)?"""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "ovs-vswitchd" and is_alive(int(comm.parent.name)):
                return True  # (a stopped one may linger a moment as a zombie)
        except OSError:
            continue
    return False

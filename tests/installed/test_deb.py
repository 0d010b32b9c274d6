"""The Debian package, installed: built with dpkg-buildpackage (in a scratch copy), installed with
dpkg -i (apt-get -f for what it depends on), then exercised through its installed files only —
a private bus configured with the standard system.d and system-services directories activates
/usr/libexec/sanbusd/sanbusd on the first call, through the installed activation file; the unit
passes `systemd-analyze verify`; polkitd (activated the same way) knows the actions; a broken
/etc/sanbusd/sanbusd.conf gives the clear error; dpkg -r / -P remove what it installed.

The second binary package, cockpit-sanbusd, is the Cockpit page: its contents are checked in the
.deb (the page's files, PatternFly's CSS and only the fonts it loads, every url() of its CSS a
file it ships, its manifest's condition a file sanbusd ships), then it is installed beside
sanbusd, cockpit-bridge (run as a user) lists it, and it is purged again.

This machine is also the development machine: the package keeps its Python modules private
(/usr/share/sanbusd, on sys.path only in the installed launchers), so the checkout's venv still
imports the checkout, before, during and after. The activated daemon runs on this machine's /sys
(the kernel backend: no SCSI here, but the Manager answers); test_roundtrip.py runs it on the
simulated SAN, chosen in the configuration file.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from sanbus_testing import css_references

TOP = Path(__file__).resolve().parents[2]
VENV_PY = TOP / ".venv" / "bin" / "python"
DAEMON = "/usr/libexec/sanbusd/sanbusd"
CONF = Path("/etc/sanbusd/sanbusd.conf")
POLKIT_FILE = Path("/usr/share/polkit-1/actions/org.example.sanstorage.policy")
ENABLE_LINKS = [Path("/etc/systemd/system/dbus-org.example.SanStorage.service"),
                Path("/etc/systemd/system/multi-user.target.wants/sanbusd.service")]
# The installed daemon runs with the newest dbus-fast (the venv's): Debian 12's 1.84 cannot
# import sanbusd yet (test_debians_dbus_fast below).
NEWEST_DBUS_FAST = sysconfig.get_paths()["purelib"]


def run(cmd, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


COCKPIT_PAGE = Path("/usr/share/cockpit/sanbusd")
# cockpit-sanbusd depends on sanbusd: removed first, or together
PACKAGES = ("cockpit-sanbusd", "sanbusd")


def is_installed(package: str = "sanbusd") -> bool:
    """Installed, or left with its configuration files or half-installed: what purge removes."""
    r = run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return r.returncode == 0 and r.stdout != "" and "not-installed" not in r.stdout


def purge() -> None:
    # dpkg warns about a package that is not installed and purges the others
    run(["dpkg", "--purge", *PACKAGES], check=False, timeout=300)


def restore_dev_polkit_file() -> None:
    # setup-dev.sh installs the same actions file for the demo and the bus tests; dpkg took it
    # over and removed it: put it back as setup-dev.sh does.
    if not POLKIT_FILE.exists():
        run(["install", "-m644", str(TOP / "data/org.example.sanstorage.policy"),
             str(POLKIT_FILE.parent) + "/"])


def checkout_import_path(cwd: str = "/") -> str:
    return run([str(VENV_PY), "-c", "import sanbusd; print(sanbusd.__file__)"],
               cwd=cwd).stdout.strip()


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    r = run(["bash", str(TOP / "packaging/build-deb.sh"), str(out)], timeout=600)
    *_, cockpit, path = map(Path, r.stdout.strip().splitlines())
    assert path.is_file() and path.suffix == ".deb"
    assert (out / path.name.replace("_all.deb", ".dsc")).is_file()   # the source package too
    assert cockpit == out / ("cockpit-" + path.name) and cockpit.is_file()
    return path


@pytest.fixture(scope="module")
def cockpit_deb(deb) -> Path:
    return deb.parent / ("cockpit-" + deb.name)


@pytest.fixture(scope="module")
def cockpit_page(cockpit_deb, tmp_path_factory) -> Path:
    """The page's directory, unpacked from the .deb (nothing installed)."""
    root = tmp_path_factory.mktemp("cockpit-deb")
    run(["dpkg-deb", "-x", str(cockpit_deb), str(root)])
    return root / str(COCKPIT_PAGE).lstrip("/")


def deb_listing(path: Path) -> dict[str, str]:
    """{installed path: mode string} of a .deb's data (dpkg-deb -c)."""
    listing = {}
    for line in run(["dpkg-deb", "-c", str(path)]).stdout.splitlines():
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        assert owner == "root/root", line
        listing["/" + name.split(" -> ")[0].removeprefix("./").rstrip("/")] = mode   # "./" is "/"
    return listing


@pytest.fixture(scope="module")
def installed(deb):
    if any(map(is_installed, PACKAGES)):    # left over from an interrupted run
        purge()
    r = run(["dpkg", "-i", str(deb)], check=False, timeout=300)
    if r.returncode != 0:               # missing dependencies: let apt bring them
        run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "-f", "install", "-y", "-qq"],
            timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert run(["dpkg-query", "-W", "-f=${Status}", "sanbusd"]).stdout == "install ok installed"
    original_conf = CONF.read_bytes()
    try:
        yield {"files": run(["dpkg", "-L", "sanbusd"]).stdout.split("\n"),
               "conf": original_conf}
    finally:
        if any(map(is_installed, PACKAGES)):
            purge()
        restore_dev_polkit_file()


class SystemBus:
    """A dbus-daemon configured like the system bus from the standard directories: services from
    <standard_system_servicedirs/> (/usr/share/dbus-1/system-services, ...), policy from
    /usr/share/dbus-1/system.d and /etc/dbus-1/system.d; listening in a private directory, and
    without the setuid activation helper (which reads only the real system bus's config), so
    activated services are run by this dbus-daemon itself with its environment."""

    CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={rundir}/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <standard_system_servicedirs/>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
</busconfig>
"""

    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.address = f"unix:path={rundir}/system_bus_socket"
        self.log = rundir / "bus.log"
        self.activated: set[int] = set()
        (rundir / "bus.conf").write_text(self.CONFIG.format(rundir=rundir))
        env = {**self.activation_env(), "DBUS_SYSTEM_BUS_ADDRESS": self.address,
               "PYTHONPATH": NEWEST_DBUS_FAST}
        self.proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={rundir}/bus.conf", "--nofork", "--nopidfile",
             "--print-address=1"], stdout=subprocess.PIPE, stderr=open(self.log, "wb"),
            stdin=subprocess.DEVNULL, env=env, cwd="/")
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        assert ready and self.proc.stdout.readline().strip(), self.log.read_text()

    def activation_env(self) -> dict[str, str]:
        """What the bus passes on to the daemons it activates: a state directory of its own."""
        (self.rundir / "state").mkdir()
        return {**os.environ, "SANBUSD_STATE_DIR": str(self.rundir / "state")}

    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def busctl(self, *args: str, check=True) -> subprocess.CompletedProcess:
        return run(["busctl", f"--address={self.address}", "--timeout=30", *args],
                   timeout=60, check=check)

    def pid_of(self, name: str) -> int | None:
        r = self.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                        "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", name,
                        check=False)
        if r.returncode != 0:
            return None
        pid = int(r.stdout.split()[1])
        self.activated.add(pid)
        return pid

    def stop(self) -> None:
        for name in ("org.example.SanStorage", "org.freedesktop.PolicyKit1"):
            self.pid_of(name)
        self.proc.terminate()
        self.proc.wait(10)
        # what this bus activated goes when its bus does; bounded, then ended by its pid
        deadline = time.monotonic() + 10
        for pid in self.activated:
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def bus(installed):
    # Not under pytest's tmp_path (0700): polkitd, once it is the polkitd user, must reach the
    # socket.
    rundir = Path(tempfile.mkdtemp(prefix="sanbusd-installed."))
    os.chmod(rundir, 0o755)
    b = SystemBus(rundir)
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(rundir, ignore_errors=True)


def test_installed_where_the_system_looks_and_the_checkout_still_imports(installed):
    files = set(installed["files"])
    for path in (DAEMON, "/usr/libexec/sanbusd/sanbusd-sim", "/usr/bin/sanctl",
                 "/usr/share/dbus-1/system-services/org.example.SanStorage.service",
                 "/usr/share/dbus-1/system.d/org.example.SanStorage.conf",
                 "/lib/systemd/system/sanbusd.service", str(POLKIT_FILE),
                 "/usr/share/sanbusd/org.example.SanStorage.xml",
                 "/usr/share/sanbusd/sanbusd/daemon.py", str(CONF),
                 "/usr/share/man/man8/sanbusd.8.gz", "/usr/share/man/man1/sanctl.1.gz",
                 "/usr/share/man/man5/sanbusd.conf.5.gz"):
        assert path in files and os.path.exists(path), path
    activation = Path("/usr/share/dbus-1/system-services/org.example.SanStorage.service")
    assert f"Exec={DAEMON}\n" in activation.read_text()
    assert "SystemdService=dbus-org.example.SanStorage.service" in activation.read_text()
    assert f"ExecStart={DAEMON}" in Path("/lib/systemd/system/sanbusd.service").read_text()
    assert CONF.read_bytes() == (TOP / "data/sanbusd.conf").read_bytes()
    # enabled (persistent vHBAs at boot), and the Alias that SystemdService= names
    for link in ENABLE_LINKS:
        assert link.is_symlink(), link
    # dh_python3 byte-compiled the private modules at install time
    assert list(Path("/usr/share/sanbusd/sanbusd").glob("__pycache__/*.pyc"))
    # the venv still imports the checkout, from anywhere; the system Python sees no sanbusd
    assert checkout_import_path("/") == str(TOP / "sanbusd" / "__init__.py")
    assert checkout_import_path("/tmp") == str(TOP / "sanbusd" / "__init__.py")
    assert run(["/usr/bin/python3", "-c", "import sanbusd"], check=False, cwd="/").returncode != 0


def test_installed_commands_run(installed):
    env = {**os.environ, "PYTHONPATH": NEWEST_DBUS_FAST}
    r = run([DAEMON, "--check-config"], env=env)
    assert r.stdout.startswith("# settings in force") and "/etc/sanbusd/sanbusd.conf" in r.stdout
    assert "--lun" in run(["/usr/bin/sanctl", "scan", "--help"], env=env).stdout
    assert run(["/usr/libexec/sanbusd/sanbusd-sim", "--help"], env=env).returncode == 0


def test_systemd_analyze_verify_passes_on_the_installed_unit(installed):
    r = run(["systemd-analyze", "verify", "/lib/systemd/system/sanbusd.service"], check=False,
            timeout=120)
    assert r.returncode == 0 and "sanbusd.service" not in r.stderr, r.stderr


def test_the_installed_man_pages_render(installed):
    for page in ("sanbusd.8.gz", "sanctl.1.gz", "sanbusd.conf.5.gz"):
        path = next(Path("/usr/share/man").glob(f"man?/{page}"))
        r = run(["man", "--warnings", "-l", str(path)], env={**os.environ, "MANWIDTH": "80",
                                                             "LC_ALL": "C.UTF-8"})
        assert r.stderr == "" and "SEE ALSO" in r.stdout, r.stderr


def test_first_call_activates_the_installed_daemon(bus):
    assert bus.pid_of("org.example.SanStorage") is None
    r = bus.busctl("call", "org.example.SanStorage", "/org/example/SanStorage",
                   "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    assert '"/org/example/SanStorage/Manager"' in r.stdout
    pid = bus.pid_of("org.example.SanStorage")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert DAEMON.encode() in cmdline, cmdline              # the installed daemon
    log = bus.log.read_text()
    assert "Activating service name='org.example.SanStorage'" in log
    assert "Successfully activated service 'org.example.SanStorage'" in log
    r = bus.busctl("get-property", "org.example.SanStorage", "/org/example/SanStorage/Manager",
                   "org.example.SanStorage.Manager", "Version")
    assert r.stdout.strip() == 's "0.1.0"'
    # the introspection data is the installed XML
    r = bus.busctl("introspect", "--xml-interface", "org.example.SanStorage",
                   "/org/example/SanStorage/Manager")
    assert "ScanAll" in r.stdout


def test_polkitd_loads_the_installed_actions(bus):
    for action in ("org.example.sanstorage.rescan", "org.example.sanstorage.manage-vhba",
                   "org.example.sanstorage.manage-multipath"):
        r = run(["pkaction", "--action-id", action], env=bus.env(), timeout=60)
        assert r.stdout.strip() == action
    r = run(["pkaction", "--action-id", "org.example.sanstorage.no-such"], env=bus.env(),
            check=False, timeout=60)
    assert r.returncode != 0


def test_a_broken_config_file_gives_the_clear_error(installed, bus):
    try:
        CONF.write_text("[scan]\nparallel_hostz = 3\n")
        r = run([DAEMON, "--check-config"], check=False,
                env={**os.environ, "PYTHONPATH": NEWEST_DBUS_FAST})
        assert r.returncode == 2
        assert "/etc/sanbusd/sanbusd.conf" in r.stderr and "parallel_hostz" in r.stderr
        assert "parallel_hosts" in r.stderr and "Traceback" not in r.stderr
        # activated with it: the call fails, and the log says why
        r = bus.busctl("call", "org.example.SanStorage", "/org/example/SanStorage",
                       "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", check=False)
        assert r.returncode != 0
        log = bus.log.read_text()
        assert "cannot start: /etc/sanbusd/sanbusd.conf: unknown key 'parallel_hostz'" in log
        assert "Traceback" not in log
        CONF.write_text("[scan]\nparallel_hosts = 1000\n")
        r = run([DAEMON, "--check-config"], check=False,
                env={**os.environ, "PYTHONPATH": NEWEST_DBUS_FAST})
        assert r.returncode == 2 and "parallel_hosts" in r.stderr and "256" in r.stderr
    finally:
        CONF.write_bytes(installed["conf"])


def test_debians_dbus_fast(installed):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = run(["/usr/bin/python3", "-c", "import dbus_fast, importlib.metadata as m; "
             "print(m.version('dbus-fast'))"], env=env, cwd="/")
    assert r.stdout.startswith("1.")                        # Debian 12's
    r = run([DAEMON, "--check-config"], check=False, env=env, cwd="/")
    assert r.returncode == 0, r.stderr


def test_the_cockpit_package_holds_the_page_and_nothing_else(cockpit_deb, deb):
    fields = run(["dpkg-deb", "-f", str(cockpit_deb), "Package", "Architecture", "Depends"]).stdout
    assert "Package: cockpit-sanbusd\n" in fields and "Architecture: all\n" in fields
    version = deb.name.split("_")[1]
    assert "cockpit-bridge (>= 286)" in fields and f"sanbusd (= {version})" in fields, fields
    listing = deb_listing(cockpit_deb)
    page = {p: m for p, m in listing.items() if p.startswith(str(COCKPIT_PAGE) + "/")}
    others = {p for p in listing if not p.startswith(("/usr/share/cockpit/sanbusd",
                                                      "/usr/share/doc/cockpit-sanbusd"))}
    assert others <= {"/", "/usr", "/usr/share", "/usr/share/cockpit", "/usr/share/doc"}, others
    for path in ("manifest.json", "index.html", "patternfly/patternfly.min.css"):
        assert f"{COCKPIT_PAGE}/{path}" in page, path
    fonts = [p for p in page if p.endswith((".woff2", ".woff", ".ttf", ".otf"))]
    assert any("/patternfly/assets/fonts/" in f for f in fonts)
    assert all(f.endswith(".woff2") for f in fonts), fonts       # only what a browser loads
    for path, mode in page.items():
        assert mode == ("drwxr-xr-x" if mode.startswith("d") else "-rw-r--r--"), (path, mode)
    # sanbusd's package holds none of it
    assert not [p for p in deb_listing(deb) if p.startswith("/usr/share/cockpit")]


def test_every_url_in_the_pages_css_is_a_file_it_ships(cockpit_page):
    refs = css_references(cockpit_page)
    assert "patternfly/patternfly.min.css" in refs
    for css, targets in refs.items():
        for target in targets:
            assert not Path(target).is_absolute() and (cockpit_page / target).is_file(), \
                f"{css}: url() of {target} is not shipped"
    assert sum(map(len, refs.values())) > 10             # the fonts at least


def test_the_pages_condition_is_a_file_sanbusd_ships(cockpit_page, deb):
    manifest = json.loads((cockpit_page / "manifest.json").read_text())
    paths = [c["path-exists"] for c in manifest["conditions"] if "path-exists" in c]
    assert paths, manifest.get("conditions")
    listing = deb_listing(deb)
    for path in paths:
        assert listing.get(path, "").startswith("-"), f"{path}: not a file of sanbusd's package"


def test_cockpit_bridge_lists_the_installed_page(installed, cockpit_deb):
    assert shutil.which("cockpit-bridge"), "no cockpit-bridge: packaging/setup-dev.sh --tests"

    def listed() -> dict[str, str]:
        # as a user, as Cockpit runs the bridge for whoever logs in
        r = run(["runuser", "-u", "nobody", "--", "cockpit-bridge", "--packages"], cwd="/")
        return {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}

    assert "sanbusd" not in listed()
    try:
        run(["dpkg", "-i", str(cockpit_deb)], timeout=300)
        assert run(["dpkg-query", "-W", "-f=${Status}", "cockpit-sanbusd"]).stdout \
            == "install ok installed"
        page = listed().get("sanbusd")
        assert page is not None, "cockpit-bridge does not list the page"
        assert "SAN storage" in page and page.rstrip().endswith(str(COCKPIT_PAGE)), page
    finally:
        run(["dpkg", "--purge", "cockpit-sanbusd"], timeout=300)
    assert not is_installed("cockpit-sanbusd") and not COCKPIT_PAGE.exists()
    assert "sanbusd" not in listed()
    assert is_installed("sanbusd")                       # the service stays, for the tests below


def test_remove_and_purge_take_away_what_it_installed(installed):
    files = [f for f in installed["files"] if f and f != "/."]
    run(["dpkg", "-r", "sanbusd"], timeout=300)
    left = [f for f in files if os.path.lexists(f) and not os.path.isdir(f)]
    assert left == [str(CONF)], left                         # a conffile stays until purge
    assert not Path("/usr/share/sanbusd").exists()           # the .pyc files went too
    assert not Path("/usr/libexec/sanbusd").exists()
    run(["dpkg", "--purge", "sanbusd"], timeout=300)
    assert run(["dpkg-query", "-W", "-f=${Status}", "sanbusd"], check=False).stdout \
        in ("", "unknown ok not-installed")
    left = [f for f in files if os.path.lexists(f) and not os.path.isdir(f)]
    assert left == [], left
    assert not Path("/etc/sanbusd").exists()
    for link in ENABLE_LINKS:
        assert not link.is_symlink(), link
    restore_dev_polkit_file()
    assert checkout_import_path("/") == str(TOP / "sanbusd" / "__init__.py")

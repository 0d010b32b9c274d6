"""The installed daemon's idle exit and re-activation, with nothing lost: the .deb installed (the
fixtures of test_deb.py), a private bus configured from the standard system.d and
system-services directories, and /etc/sanbusd/sanbusd.conf (written here, the original put back)
selecting the simulated SAN (`[simulation]`, for tests and demos), `[service] idle_exit` and
`state_dir`. The daemon is only ever started by D-Bus activation, through the installed
activation file, with no command line and no SANBUSD_* variable: every setting comes from the
file.

The SAN admin provisions a LUN, so the host's RescanSuggested turns true; a persistent NPIV vHBA
is created; sanbusd exits by itself once idle; the next call activates a new sanbusd, which
still says RescanSuggested and still has the vHBA, still persistent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sanbus_testing import wait_until
from sanbusd.cli.sim import request as sim_request
from sanbusd.sim.generate import small_fc_fabric
from test_deb import (CONF, DAEMON, NEWEST_DBUS_FAST, SystemBus, deb, installed,  # noqa: F401
                      run)

ROOT = "/org/example/SanStorage"
BUS_NAME = "org.example.SanStorage"
HOST_I = "org.example.SanStorage.ScsiHost"
VHBA_I = "org.example.SanStorage.Vhba"
PARENT = "1000000000000001"          # small_fc_fabric's FC port (NPIV-capable here)
VHBA = "5001a4a000000051"
IDLE_EXIT = 2                        # s
EXIT_WAIT = 30                       # s; an idle daemon must be gone well within this


class ConfiguredBus(SystemBus):
    """test_deb's SystemBus, except that what it activates inherits no SANBUSD_* variable (the
    plain SystemBus sets $SANBUSD_STATE_DIR, which would override the file's state_dir)."""

    def activation_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("SANBUSD_")}

    def owned(self) -> bool:
        r = self.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                        "org.freedesktop.DBus", "NameHasOwner", "s", BUS_NAME)
        return r.stdout.strip() == "b true"

    def objects(self) -> dict:
        r = self.busctl("--json=short", "call", BUS_NAME, ROOT,
                        "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        return {p: {i: {k: v["data"] for k, v in props.items()} for i, props in ifs.items()}
                for p, ifs in json.loads(r.stdout)["data"][0].items()}

    def prop(self, path: str, iface: str, name: str):
        r = self.busctl("--json=short", "get-property", BUS_NAME, path, iface, name)
        return json.loads(r.stdout)["data"]


@pytest.fixture
def configured(installed):
    """(bus, work directory): the configuration file set to the simulated SAN in `work`; the
    installed file is put back afterwards, whatever happens."""
    work = Path(tempfile.mkdtemp(prefix="sanbusd-roundtrip."))
    rundir = work / "bus"
    rundir.mkdir()
    os.chmod(work, 0o755)
    os.chmod(rundir, 0o755)                 # polkitd, once the polkitd user, reaches the socket
    b = ConfiguredBus(rundir)
    try:
        yield b, work
    finally:
        try:
            b.stop()
        finally:
            CONF.write_bytes(installed["conf"])
            shutil.rmtree(work, ignore_errors=True)


def write_conf(work: Path, fabric: Path) -> None:
    CONF.write_text(f'[service]\nidle_exit = {IDLE_EXIT}\nstate_dir = "{work}/vhba-records"\n'
                    f'[simulation]\nfabric = "{fabric}"\ndir = "{work}/san"\n')


def test_idle_exit_and_reactivation_keep_rescan_suggested_and_a_persistent_vhba(configured):
    bus, work = configured
    fabric = small_fc_fabric(work / "fabric.toml", hosts=1, luns=(1,), max_npiv_vports=4,
                             switch_npiv=True)
    write_conf(work, fabric)
    # what the installed daemon will read, as it reads it
    r = run([DAEMON, "--check-config"], env={**os.environ, "PYTHONPATH": NEWEST_DBUS_FAST})
    assert f'fabric = "{fabric}"' in r.stdout and f"idle_exit = {IDLE_EXIT}" in r.stdout

    # The first call activates it, on the simulated SAN the file names.
    assert not bus.owned()
    objs = bus.objects()
    first = bus.pid_of(BUS_NAME)
    assert DAEMON.encode() in Path(f"/proc/{first}/cmdline").read_bytes().split(b"\0")
    assert (work / "san" / "sys" / "class" / "fc_host").is_dir()
    (host,) = [p for p, ifs in objs.items() if "org.example.SanStorage.FcHost" in ifs]
    assert objs[host][HOST_I]["RescanSuggested"] is False

    # The SAN admin provisions a LUN: the storage reports changed LUN inventory.
    sim_request(str(work / "san"), {"command": "provision", "array": "arr", "luns": [27],
                                    "initiators": [PARENT], "size": "1G"})
    wait_until(lambda: bus.prop(host, HOST_I, "RescanSuggested"), 20, what="RescanSuggested")

    # A persistent vHBA on that port.
    r = bus.busctl("call", BUS_NAME, f"{ROOT}/Manager", "org.example.SanStorage.Manager",
                   "CreateVhba", "a{sv}", "2", "wwpn", "s", VHBA, "persistent", "b", "true")
    assert r.stdout.strip() == f'o "{ROOT}/vhbas/{VHBA}"'
    records = json.loads((work / "vhba-records" / "vhbas.json").read_text())   # state_dir
    assert [v["wwpn"] for v in records["vhbas"]] == [VHBA]

    # Idle (no call, no job, no ObjectManager client: busctl has gone): it exits by itself.
    wait_until(lambda: not bus.owned(), EXIT_WAIT, what="sanbusd's idle exit")
    wait_until(lambda: not Path(f"/proc/{first}").exists(), 10, what=f"pid {first} to end")
    assert (work / "san" / "run" / "state.json").is_file()     # what only its memory had

    # The next call starts it again: nothing lost.
    assert bus.prop(host, HOST_I, "RescanSuggested") is True
    second = bus.pid_of(BUS_NAME)
    assert second != first
    objs = bus.objects()
    vhba = objs[f"{ROOT}/vhbas/{VHBA}"][VHBA_I]
    assert vhba["Persistent"] is True and vhba["State"] == "Active", vhba
    assert not (work / "san" / "run" / "state.json").exists()  # read back, and removed
    log = bus.log.read_text()
    assert log.count(f"Successfully activated service '{BUS_NAME}'") == 2, log
    assert "Traceback" not in log and "ERROR" not in log, log


def test_a_simulation_setting_that_cannot_work_fails_the_activation_clearly(configured):
    """(test_deb.py covers a malformed file; here the file is valid TOML with known keys, but
    the fabric it names is relative, then absent.)"""
    bus, work = configured
    CONF.write_text('[simulation]\nfabric = "fabric.toml"\n')
    r = bus.busctl("call", BUS_NAME, ROOT, "org.freedesktop.DBus.ObjectManager",
                   "GetManagedObjects", check=False)
    assert r.returncode != 0
    wait_until(lambda: "cannot start:" in bus.log.read_text(), 10, what="the log line")
    assert ("cannot start: /etc/sanbusd/sanbusd.conf: [simulation] fabric must be an absolute "
            "path, not 'fabric.toml'") in bus.log.read_text()
    CONF.write_text(f'[simulation]\nfabric = "{work}/absent.toml"\ndir = "{work}/san"\n')
    r = bus.busctl("call", BUS_NAME, ROOT, "org.freedesktop.DBus.ObjectManager",
                   "GetManagedObjects", check=False)
    assert r.returncode != 0
    wait_until(lambda: f"{work}/absent.toml" in bus.log.read_text(), 10, what="the log line")
    log = bus.log.read_text()
    assert log.count("cannot start:") == 2 and "Traceback" not in log, log
    assert not bus.owned()

"""sanbusd under the real systemd in the kernel lab (boot `systemd`: systemd_guest.sh, systemd_driver.py).

Not a scenario group (scenarios.GROUPS): no private bus, no sanbusd from the checkout. The guest
installs sanbusd with packaging/install.sh --destdir / (Debian's /usr/bin/python3 in the
launcher), then runs the host's /lib/systemd/systemd as PID 1 of a PID namespace with
--unit=sanbus-lab.target; its system bus is the host package's dbus.socket/dbus.service. Shown:
the Type=dbus start (active only once org.example.SanStorage is owned), D-Bus activation through
the activation file's SystemdService= (the unit's Alias=), and the watchdog (WatchdogSec=3 by a
drop-in) killing a stopped event loop with SIGABRT and Restart=on-failure bringing it back.

What it does not show: systemd as the guest's real PID 1 (init=): the lab's /init stays PID 1
(so a hang still ends in an exit code and a power-off); the namespace shares the kernel, /sys,
/dev, /run and the root. systemd-tmpfiles-setup and other host units are masked (tmpfiles walks
the whole host root over 9p for minutes), /.dockerenv of the host root is removed in the guest
(else systemd-detect-virt says docker and systemd runs in container mode), and the namespace is
SIGKILLed once the driver wrote its exit code: systemd-shutdown remounts file systems read-only,
which broke the shared 9p output share (EIO writing exit_code).
One boot: 56 s guest time, 60 s host wall (install.sh 14 s, systemd to the driver 8 s, start 6 s,
activation 7 s, watchdog 14 s).
"""

from __future__ import annotations

import shlex

import pytest

import lab

pytestmark = pytest.mark.kernel_lab

NAME = "org.example.SanStorage"


@pytest.fixture(scope="module")
def boot(kernel_image: lab.KernelImage, tmp_path_factory: pytest.TempPathFactory) -> lab.GuestResult:
    command = shlex.join(["/bin/sh", str(lab.HERE / "systemd_guest.sh"), str(lab.REPO_ROOT),
                          "/usr/bin/python3", lab.guest_python()])
    result = lab.boot(command, image=kernel_image, outdir=tmp_path_factory.mktemp("group_systemd"),
                      timeout=600, label="systemd (Type=dbus start, activation, watchdog)")
    if result.report is None or result.exit_code is None:
        pytest.fail(f"the systemd boot did not complete\n{result.describe()}", pytrace=False)
    return result


@pytest.fixture(scope="module")
def data(boot: lab.GuestResult) -> dict:
    return boot.report["data"]


def test_checks_pass(boot):
    assert boot.ok and boot.report["checks"] and not boot.failed_checks, boot.describe()


def test_pid1_is_systemd_with_the_real_system_bus(data):
    pid1 = data["pid1"]
    assert pid1["comm"] == "systemd" and pid1["systemd"][0].startswith("systemd "), pid1
    assert pid1["virt"] == "qemu", pid1  # the VM, not the container the host root comes from
    assert pid1["units"][:3] == ["active", "active", "active"], pid1  # journald, udevd, dbus.socket
    assert "FragmentPath=/lib/systemd/system/dbus.service" in pid1["bus"], pid1
    assert pid1["launcher"] == ["#!/usr/bin/python3 -s"], pid1  # install.sh's launcher, Debian's Python


def test_type_dbus_start_is_active_only_once_the_name_is_owned(data):
    start = data["start"]
    assert start["rc"] == 0 and start["show"]["Type"] == "dbus" and start["show"]["BusName"] == NAME
    assert (start["show"]["ActiveState"], start["show"]["SubState"]) == ("active", "running"), start
    samples = start["samples"]
    assert not [s for s in samples if s[1] == "active" and not s[2]], samples
    assert [s for s in samples if s[1] == "activating" and not s[2]], samples
    assert str(start["owner_pid"]) == start["show"]["MainPID"], start
    assert start["show"]["DropInPaths"] == "/etc/systemd/system/sanbusd.service.d/lab.conf"
    assert start["show"]["WatchdogUSec"] == "3s"


def test_a_call_activates_the_stopped_service_through_systemd(data):
    act = data["activation"]
    assert act["call_rc"] == 0 and act["is_active"] == "active", act
    assert "dbus-org.example.SanStorage.service" in act["show"]["Names"].split(), act["show"]
    assert any(f"Activating via systemd: service name='{NAME}' unit='dbus-org.example.SanStorage.service'"
               in line for line in act["dbus_journal"]), act["dbus_journal"]
    assert str(act["owner_pid"]) == act["show"]["MainPID"], act


def test_the_watchdog_kills_a_stopped_loop_and_systemd_restarts_it(data):
    wd = data["watchdog"]
    journal = "\n".join(wd["journal"])
    assert "Watchdog timeout (limit 3s)!" in journal, journal
    assert f"Killing process {wd['old_pid']} (sanbusd) with signal SIGABRT" in journal, journal
    assert "status=6/ABRT" in journal and "Failed with result 'watchdog'" in journal, journal
    assert "Scheduled restart job, restart counter is at 1" in journal, journal
    assert int(wd["after"]["NRestarts"]) == int(wd["before"]["NRestarts"]) + 1, wd
    assert wd["after"]["MainPID"] != str(wd["old_pid"]) and wd["after"]["ActiveState"] == "active", wd
    assert str(wd["owner_pid"]) == wd["after"]["MainPID"], wd

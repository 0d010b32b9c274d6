"""Guest driver of the kernel lane's `systemd` boot (test_systemd.py; set up by systemd_guest.sh).

Runs as the oneshot unit sanbus-lab.service under the real systemd (PID 1 of its PID namespace)
with the real dbus-daemon (the host's dbus.socket/dbus.service) as the system bus, against the
sanbusd that packaging/install.sh installed into the guest (/usr/libexec/sanbusd/sanbusd, the
unit /lib/systemd/system/sanbusd.service with a WatchdogSec=3 drop-in, the activation file
/usr/share/dbus-1/system-services/org.example.SanStorage.service). Three things, recorded in
report.json (guestlib.Report) for the host-side test:

* start: `systemctl start sanbusd` (Type=dbus) while the unit's ActiveState and the bus name's
  owner are sampled: "active" never without org.example.SanStorage owned;
* activation: sanbusd stopped, a plain busctl call to org.example.SanStorage makes dbus-daemon ask
  systemd for SystemdService=dbus-org.example.SanStorage.service (the Alias= that
  `systemctl enable sanbusd` creates), and the unit is active again;
* watchdog: the daemon's main PID stopped with SIGSTOP (a stuck event loop, no more WATCHDOG=1)
  is killed by systemd with SIGABRT after WatchdogSec and restarted (Restart=on-failure).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import guestlib

NAME = "org.example.SanStorage"
UNIT = "sanbusd.service"
MANAGER = "/org/example/SanStorage/Manager"
RC_FILE = guestlib.OUT_DIR / "systemd-rc"
SHOW_PROPS = ("Type", "BusName", "ActiveState", "SubState", "MainPID", "NRestarts", "Result",
              "WatchdogUSec", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic",
              "FragmentPath", "DropInPaths", "Names", "UnitFileState")


def sh(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def show(unit: str = UNIT) -> dict[str, str]:
    out = sh("systemctl", "show", unit, *(f"-p{p}" for p in SHOW_PROPS)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def owned() -> bool:
    out = sh("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
             "org.freedesktop.DBus", "NameHasOwner", "s", NAME).stdout
    return out.strip() == "b true"


def owner_pid() -> int | None:
    out = sh("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
             "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", NAME).stdout.split()
    return int(out[1]) if len(out) == 2 and out[0] == "u" else None


def wait(predicate, timeout: float, what: str, interval: float = 0.2) -> Any:
    return guestlib.wait_for(predicate, timeout=timeout, what=what, interval=interval)


def journal(*units: str) -> list[str]:
    argv = ["journalctl", "--no-pager", "-o", "short-monotonic", "-b"]
    for unit in units:
        argv += ["-u", unit]
    return sh(*argv).stdout.splitlines()


def start(report: guestlib.Report) -> None:
    """systemctl start, sampling (ActiveState, name owned) until the start job is done."""
    report.check("the unit is Type=dbus with BusName", show().get("Type") == "dbus"
                 and show().get("BusName") == NAME, show())
    report.check("org.example.SanStorage not on the bus before the start", not owned())
    t0 = time.monotonic()
    job = subprocess.Popen(["systemctl", "start", UNIT], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, str, bool]] = []
    while True:
        done = job.poll() is not None
        state = show().get("ActiveState", "")  # the state first: "active" implies the name
        samples.append((round(time.monotonic() - t0, 2), state, owned()))
        if done:
            break
        time.sleep(0.05)
    out = job.communicate()[0]
    after = show()
    report.record("start", {"rc": job.returncode, "output": out, "seconds": round(time.monotonic() - t0, 2),
                            "samples": samples, "show": after, "owner_pid": owner_pid()})
    report.check("systemctl start sanbusd succeeded", job.returncode == 0, out)
    report.check("active (running) once the start job returned",
                 (after.get("ActiveState"), after.get("SubState")) == ("active", "running"), after)
    report.check("never active without the bus name",
                 not [s for s in samples if s[1] == "active" and not s[2]], samples)
    report.check("seen activating while the name was not yet on the bus",
                 any(s[1] == "activating" and not s[2] for s in samples), samples)
    report.check("the bus name's owner is the unit's MainPID", str(owner_pid()) == after.get("MainPID"),
                 f"owner {owner_pid()} MainPID {after.get('MainPID')}")


def activation(report: guestlib.Report) -> None:
    r = sh("systemctl", "enable", UNIT)  # creates the Alias= dbus-org.example.SanStorage.service
    report.check("systemctl enable sanbusd", r.returncode == 0, r.stdout + r.stderr)
    stop = sh("systemctl", "stop", UNIT)
    stopped = show()
    report.check("stopped: inactive and off the bus",
                 stopped.get("ActiveState") == "inactive" and not owned() and stop.returncode == 0,
                 stopped)
    t0 = time.monotonic()
    call = sh("busctl", "--system", "--timeout=60", "call", NAME, MANAGER,
              "org.freedesktop.DBus.Properties", "GetAll", "s", "org.example.SanStorage.Manager")
    seconds = round(time.monotonic() - t0, 2)
    after = show()
    is_active = sh("systemctl", "is-active", UNIT).stdout.strip()
    lines = [line for line in journal("dbus.service") if "Activat" in line and NAME in line]
    report.record("activation", {"call_rc": call.returncode, "reply": call.stdout[:2000],
                                 "error": call.stderr, "seconds": seconds, "is_active": is_active,
                                 "show": after, "dbus_journal": lines,
                                 "owner_pid": owner_pid()})
    report.check("the busctl call to the stopped service got its reply", call.returncode == 0,
                 call.stderr)
    report.check("systemctl is-active sanbusd: active after the call", is_active == "active", is_active)
    report.check("dbus-daemon activated it via systemd (SystemdService=)",
                 any("via systemd" in line and "dbus-org.example.SanStorage.service" in line
                     for line in lines), lines)
    report.check("the activated daemon is the unit's MainPID", str(owner_pid()) == after.get("MainPID"),
                 f"owner {owner_pid()} MainPID {after.get('MainPID')}")


def watchdog(report: guestlib.Report) -> None:
    before = show()
    pid = int(before["MainPID"])
    # Running longer than WatchdogSec=3 without being killed: the WATCHDOG=1 pings arrive.
    time.sleep(7)
    calm = show()
    report.check("alive past WatchdogSec while its loop runs (pings arrive)",
                 calm["MainPID"] == str(pid) and calm["NRestarts"] == before["NRestarts"], calm)
    t0 = time.monotonic()
    sh("kill", "-STOP", str(pid))
    new = wait(lambda: (s := show())["MainPID"] not in ("0", str(pid)) and s["ActiveState"] == "active"
               and owned() and s, timeout=90, what="sanbusd restarted after the watchdog", interval=0.3)
    seconds = round(time.monotonic() - t0, 2)
    lines = [line for line in journal(UNIT) if "atchdog" in line or "ABRT" in line
             or "restart" in line.lower() or "Failed with result" in line]
    report.record("watchdog", {"old_pid": pid, "before": before, "after": new, "seconds": seconds,
                               "journal": lines, "owner_pid": owner_pid()})
    report.check("NRestarts went up by one", int(new["NRestarts"]) == int(before["NRestarts"]) + 1,
                 f"{before['NRestarts']} -> {new['NRestarts']}")
    report.check("the journal shows the watchdog timeout", any("Watchdog timeout" in line for line in lines),
                 lines)
    report.check("killed with SIGABRT", any("ABRT" in line for line in lines), lines)
    report.check("the old PID is gone", not Path(f"/proc/{pid}").exists())
    report.check("on the bus again as the new MainPID", str(owner_pid()) == new["MainPID"],
                 f"owner {owner_pid()} MainPID {new['MainPID']}")


def main() -> int:
    report = guestlib.Report("systemd")
    report.record("pid1", {"comm": Path("/proc/1/comm").read_text().strip(),
                           "systemd": sh("systemctl", "--version").stdout.splitlines()[:1],
                           "bus": sh("systemctl", "show", "dbus.service", "-pActiveState",
                                     "-pExecMainPID", "-pFragmentPath").stdout.split(),
                           "virt": sh("systemd-detect-virt").stdout.strip(),
                           "units": sh("systemctl", "is-active", "systemd-journald", "systemd-udevd",
                                       "dbus.socket", "dbus.service").stdout.split(),
                           "launcher": Path("/usr/libexec/sanbusd/sanbusd").read_text().splitlines()[:1]})
    try:
        for name, step in (("start", start), ("activation", activation), ("watchdog", watchdog)):
            with report.step(f"{name} (whole step)"):
                step(report)
    except Exception:
        pass
    finally:
        report.record("sanbusd_journal", journal(UNIT)[-150:])
        report.record("system_state", sh("systemctl", "is-system-running").stdout.strip())
        report.record("failed_units", sh("systemctl", "--failed", "--no-legend").stdout.splitlines())
        report.write()
        RC_FILE.write_text("0\n" if report.ok else "1\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

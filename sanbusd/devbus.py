"""A private bus that behaves like the system bus, with real polkitd, for the demo and the tests.

It loads the policy files sanbusd ships (data/org.example.SanStorage.conf), so what is tested is
what is installed. Non-root test users can connect (the socket directory is 0755).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .bus.contract import data_dir

POLKITD_CANDIDATES = ("/usr/lib/polkit-1/polkitd", "/usr/libexec/polkitd",
                      "/usr/libexec/polkit-1/polkitd")


class PrivateBus:
    def __init__(self, rundir: str | None = None) -> None:
        self.rundir = Path(rundir or tempfile.mkdtemp(prefix="sanbus."))
        self.address = ""
        self.process: subprocess.Popen | None = None
        self.polkitd: subprocess.Popen | None = None
        self.extra_policy = self.rundir / "system.d"

    def start(self) -> "PrivateBus":
        self.rundir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.rundir, 0o755)             # test users must reach the socket
        self.extra_policy.mkdir(exist_ok=True)
        (self.rundir / "services").mkdir(exist_ok=True)
        template = (data_dir() / "dbus" / "private-system-bus.conf.in").read_text()
        conf = self.rundir / "bus.conf"
        conf.write_text(template.replace("@RUNDIR@", str(self.rundir))
                        .replace("@DATADIR@", str(data_dir())))
        log = open(self.rundir / "bus.log", "wb")
        self.process = subprocess.Popen(
            ["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile",
             "--print-address=1"], stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        assert self.process.stdout is not None
        self.address = self.process.stdout.readline().decode().strip()
        if not self.address:
            raise RuntimeError(f"dbus-daemon did not start; see {self.rundir / 'bus.log'}")
        return self

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        env.update(extra)
        return env

    def allow_test_owner(self, name: str) -> None:
        """Let root own `name` and anyone call it (e.g. a python-dbusmock polkitd, a test
        service); test-only policy."""
        (self.extra_policy / f"{name}.conf").write_text(
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            f'<busconfig><policy user="root"><allow own="{name}"/></policy>'
            f'<policy context="default"><allow send_destination="{name}"/></policy>'
            '</busconfig>\n')
        subprocess.run(["busctl", f"--address={self.address}", "call", "org.freedesktop.DBus",
                        "/org/freedesktop/DBus", "org.freedesktop.DBus", "ReloadConfig"],
                       check=True, capture_output=True)

    def start_polkitd(self, timeout: float = 10) -> None:
        """The real polkitd, on this bus (it uses DBUS_SYSTEM_BUS_ADDRESS)."""
        exe = next((p for p in POLKITD_CANDIDATES if os.path.exists(p)), None)
        if exe is None:
            raise RuntimeError("polkitd is not installed (apt-get install polkitd)")
        log = open(self.rundir / "polkitd.log", "wb")
        self.polkitd = subprocess.Popen([exe, "--no-debug"], env=self.env(), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_for_name("org.freedesktop.PolicyKit1", timeout)

    def has_name(self, name: str) -> bool:
        r = subprocess.run(["busctl", f"--address={self.address}", "call", "org.freedesktop.DBus",
                            "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s",
                            name], capture_output=True, text=True)
        return r.stdout.strip() == "b true"

    def wait_for_name(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.has_name(name):
                return
            time.sleep(0.02)
        raise TimeoutError(f"{name} did not appear on the bus within {timeout} s")

    def stop(self) -> None:
        for p in (self.polkitd, self.process):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(self.rundir, ignore_errors=True)

    def __enter__(self) -> "PrivateBus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

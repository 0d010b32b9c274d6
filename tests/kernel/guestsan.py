"""In the guest: what a real host runs around sanbusd, and a client that drives it over D-Bus.

``SanStack`` starts a private system bus (sanbusd.devbus.PrivateBus, with the policy files we ship),
the real polkitd on it, and ``python -m sanbusd`` on the real /sys (so events come from udev through
pyudev). ``SanClient`` is a dbus-fast client on its own thread: GetManagedObjects, method calls,
and a recorder of InterfacesAdded/InterfacesRemoved (AddMatch on the manager path) and
PropertiesChanged. Start systemd-udevd (guestlib.start_udevd) before any of this.

Needs the project venv (dbus-fast); lab.guest_python() runs scenarios with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from sanbusd.client import connect

import guestlib as g
from sanview import ROOT

from sanbusd.client import plain  # dbus-fast values as plain JSON-able data

BUS_NAME = "org.example.SanStorage"
OM_IFACE = "org.freedesktop.DBus.ObjectManager"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
RUN_DIR = Path("/run/sanbus-klab")  # its parents (/run) are 0755: user polkitd reaches the socket


class SanStack:
    """Private system bus + polkitd + sanbusd on the real kernel. Logs go to the report directory.

    Options: ``daemon_args`` (more sanbusd options, e.g. ``--state-dir DIR``), ``libvirtd`` (also
    start a libvirtd with the node-device driver, see ``Libvirtd``: started first and waited for
    only when used, ``Libvirtd.ready()``, so its 3 s start-up is off the critical path),
    ``run_dir`` and ``log_prefix`` (a second stack in the same guest: its own bus socket
    directory and log files).
    """

    def __init__(self, out_dir: Path = g.OUT_DIR, *, run_dir: Path = RUN_DIR, log_prefix: str = "",
                 daemon_args: tuple[str, ...] = (), libvirtd: bool = False) -> None:
        self.out_dir = out_dir
        self.run_dir = run_dir
        self.log_prefix = log_prefix
        self.daemon_args = tuple(daemon_args)
        self.bus: Any = None
        self.daemon: subprocess.Popen | None = None
        self.daemon_log = out_dir / f"{log_prefix}sanbusd.log"
        self.libvirtd: Libvirtd | None = Libvirtd(out_dir) if libvirtd else None
        self.timings: dict[str, float] = {}

    def start(self) -> SanStack:
        from sanbusd.devbus import PrivateBus  # the venv; imported late so guestlib users need not

        if self.libvirtd is not None:
            self.libvirtd.start()
        self.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        t = time.monotonic()
        self.bus = PrivateBus(str(self.run_dir / "bus")).start()
        self.timings["bus"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        self.bus.start_polkitd(timeout=60)
        self.timings["polkitd"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        self.start_daemon()
        self.timings["sanbusd"] = round(time.monotonic() - t, 2)
        return self

    @property
    def address(self) -> str:
        return self.bus.address

    def start_daemon(self, timeout: float = 120, args: tuple[str, ...] | None = None) -> None:
        """``python -m sanbusd --bus ADDRESS`` (sysfs root /sys, so udev via pyudev) with
        ``daemon_args`` (or ``args``); wait for ready. A later call starts it again (after
        ``stop_daemon``), appending to the same log.

        As tests/conftest.py's start_daemon: the daemon writes "ready" to --ready-fd once it owns
        its name, i.e. once every object is published.
        """
        r, w = os.pipe()
        log = open(self.daemon_log, "ab")
        argv = [sys.executable, "-m", "sanbusd", "--bus", self.address, "--ready-fd", str(w), "-v",
                *(self.daemon_args if args is None else args)]
        log.write(f"--- {' '.join(argv)}\n".encode())
        log.flush()
        self.daemon = subprocess.Popen(argv, env=self.bus.env(), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, pass_fds=(w,))
        os.close(w)
        ready: list[bytes] = []
        reader = threading.Thread(target=lambda: ready.append(os.fdopen(r, "rb").readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if ready != [b"ready\n"]:
            raise RuntimeError(f"sanbusd did not become ready within {timeout:.0f}s "
                               f"(exit code {self.daemon.poll()}):\n{self.log()[-4000:]}")

    def log(self) -> str:
        try:
            return self.daemon_log.read_text(errors="replace")
        except OSError:
            return ""

    def stop_daemon(self, timeout: float = 20) -> int | None:
        """SIGTERM, as systemd stops it; the exit code (None if it had to be killed)."""
        if self.daemon is None:
            return None
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
                return None
        return self.daemon.returncode

    def stop(self) -> None:
        self.stop_daemon()
        if self.bus is not None:
            # Keep the bus and polkitd logs for the report directory before PrivateBus deletes them.
            for name in ("bus.log", "polkitd.log"):
                try:
                    (self.out_dir / f"{self.log_prefix}{name}").write_bytes((self.bus.rundir / name).read_bytes())
                except OSError:
                    pass
            self.bus.stop()
        if self.libvirtd is not None:
            self.libvirtd.stop()

    def busctl(self, *args: str, timeout: float = 60) -> str:
        return g.run(["busctl", f"--address={self.address}", *args], timeout=timeout).stdout


class Libvirtd:
    """libvirtd (Debian 12: no modular virtnodedevd) with only the drivers the lab needs.

    The plain libvirtd dies at start in the guest: its QEMU driver cannot resolve the user
    libvirt-qemu (libvirt-daemon-system is not installed). LIBVIRT_DRIVER_DIR pointing at a
    directory of links to the nodedev, storage and secret drivers makes every other driver
    optional. Clients use ``nodedev:///system`` (and ``storage:///system``). Readiness is probed
    with ``virsh nodedev-list --cap fc_host``: ``virsh version`` never succeeds on nodedev:///.
    udevd must run first (libvirt learns of new devices from udev; without it nodedev-create
    fails after 63 s and leaves the vport behind).
    """

    URI = "nodedev:///system"
    DRIVERS = ("nodedev", "storage", "secret")

    def __init__(self, out_dir: Path = g.OUT_DIR) -> None:
        self.out_dir = out_dir
        self.driver_dir = Path("/run/klab-libvirt-drivers")
        self.log_path = out_dir / "libvirtd.log"
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.ready_seconds: float | None = None  # from start() to the first answer
        self.error = ""  # why it did not come up (SanStack.start keeps going without it)

    @staticmethod
    def installed_drivers() -> Path:
        for candidate in sorted(Path("/usr/lib").glob("*/libvirt/connection-driver")):
            return candidate
        raise FileNotFoundError("libvirt's connection drivers are not installed on the host "
                                "(apt-get install --no-install-recommends libvirt-daemon libvirt-clients)")

    def start(self) -> Libvirtd:
        try:
            source = self.installed_drivers()
        except FileNotFoundError as exc:
            self.error = str(exc)
            return self
        self.driver_dir.mkdir(parents=True, exist_ok=True)
        for name in self.DRIVERS:
            link = self.driver_dir / f"libvirt_driver_{name}.so"
            if not link.exists():
                link.symlink_to(source / link.name)
        env = {**os.environ, "LIBVIRT_DRIVER_DIR": str(self.driver_dir),
               "LIBVIRT_LOG_OUTPUTS": f"3:file:{self.log_path}"}
        self.started = time.monotonic()
        self.process = subprocess.Popen(["libvirtd", "--verbose"], env=env,
                                        stdout=open(self.out_dir / "libvirtd.out", "ab"),
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def virsh(self, *args: str, timeout: float = 90) -> dict[str, Any]:
        """``virsh -c nodedev:///system ARGS``: {"argv", "rc", "stdout", "stderr", "seconds"}."""
        argv = ["virsh", "-c", self.URI, *args]
        start = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = None, str(exc.stdout or ""), f"timed out after {timeout:.0f}s"
        return {"argv": ["virsh", "-c", self.URI, *args], "rc": rc, "stdout": out, "stderr": err.strip(),
                "seconds": round(time.monotonic() - start, 2)}

    def fc_hosts(self) -> list[str]:
        """``nodedev-list --cap fc_host``: the node device names (scsi_hostN)."""
        r = self.virsh("nodedev-list", "--cap", "fc_host")
        if r["rc"] != 0:
            raise RuntimeError(f"virsh nodedev-list failed: {r['stderr']}")
        return sorted(line.strip() for line in r["stdout"].splitlines() if line.strip())

    def ready(self, timeout: float = 60) -> bool:
        """Wait (once) until it answers; False, with ``error`` saying why, if it does not."""
        if self.ready_seconds is None and not self.error:
            try:
                self.wait_ready(timeout)
            except (OSError, RuntimeError, TimeoutError) as exc:
                self.error = str(exc)
        return not self.error

    def wait_ready(self, timeout: float = 60) -> None:
        if self.process is None:
            raise RuntimeError(self.error or "libvirtd was not started")
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"libvirtd exited with {self.process.returncode}: {self.log_tail()}")
            last = self.virsh("nodedev-list", "--cap", "fc_host", timeout=30)
            if last["rc"] == 0:
                self.ready_seconds = round(time.monotonic() - self.started, 2)
                return
            time.sleep(0.25)
        raise TimeoutError(f"libvirtd did not answer nodedev-list within {timeout:.0f}s "
                           f"(last: {last.get('stderr')}): {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        text = ""
        for path in (self.out_dir / "libvirtd.out", self.log_path):
            with contextlib.suppress(OSError):
                text += f"--- {path.name}\n" + path.read_text(errors="replace")[-chars:]
        return text

    def stop(self, timeout: float = 15) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


class SanClient:
    """A dbus-fast client on its own thread and event loop, usable from synchronous scenario code.

    Records every ObjectManager signal from the manager path, and every PropertiesChanged under
    it, as dicts: {"seq", "t" (monotonic), "member", "path", "sender", "object", "interfaces"} or,
    for PropertiesChanged, {"interface", "changed"}.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.signals: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="san-client", daemon=True)
        self._thread.start()
        self._bus: MessageBus = self._run(self._connect())
        self.owner: str = self._run(self._call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                               "org.freedesktop.DBus", "GetNameOwner", "s", [BUS_NAME]))[0]

    def _run(self, coro, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self) -> MessageBus:
        bus = await connect(self.address)
        bus.add_message_handler(self._on_message)
        for rule in (f"type='signal',sender='{BUS_NAME}',path='{ROOT}',interface='{OM_IFACE}'",
                     f"type='signal',sender='{BUS_NAME}',path_namespace='{ROOT}',"
                     f"interface='{PROPS_IFACE}',member='PropertiesChanged'"):
            reply = await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                           interface="org.freedesktop.DBus", member="AddMatch",
                                           signature="s", body=[rule]))
            if reply.message_type == MessageType.ERROR:
                raise RuntimeError(f"AddMatch {rule}: {reply.error_name} {reply.body}")
        return bus

    async def _call(self, dest: str, path: str, iface: str, member: str, sig: str = "",
                    body: list | None = None) -> list:
        reply = await self._bus.call(Message(destination=dest, path=path, interface=iface, member=member,
                                             signature=sig, body=body or []))
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{iface}.{member}: {reply.error_name}: {reply.body}")
        return reply.body

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        record: dict[str, Any] = {"t": time.monotonic(), "member": msg.member, "path": msg.path,
                                  "sender": msg.sender}
        if msg.interface == OM_IFACE and msg.member == "InterfacesAdded":
            record.update(object=msg.body[0], interfaces=sorted(msg.body[1]), properties=plain(msg.body[1]))
        elif msg.interface == OM_IFACE and msg.member == "InterfacesRemoved":
            record.update(object=msg.body[0], interfaces=sorted(msg.body[1]))
        elif msg.interface == PROPS_IFACE and msg.member == "PropertiesChanged":
            record.update(object=msg.path, interface=msg.body[0], changed=plain(msg.body[1]))
        else:
            return
        with self._cond:
            record["seq"] = len(self.signals)
            self.signals.append(record)
            self._cond.notify_all()

    # -- what scenarios use -----------------------------------------------------------------------

    def call(self, path: str, iface: str, member: str, sig: str = "", body: list | None = None) -> list:
        return plain(self._run(self._call(BUS_NAME, path, iface, member, sig, body)))

    def call_reply(self, path: str, iface: str, member: str, sig: str = "",
                   body: list | None = None) -> dict[str, Any]:
        """A call that may fail: {"ok": True, "body": [...]} or {"ok": False, "error": name,
        "message": text}, with how long it took ("seconds")."""
        start = time.monotonic()
        reply = self._run(self._bus.call(Message(destination=BUS_NAME, path=path, interface=iface,
                                                 member=member, signature=sig, body=body or [])))
        out: dict[str, Any] = {"seconds": round(time.monotonic() - start, 2)}
        if reply.message_type == MessageType.ERROR:
            out.update(ok=False, error=reply.error_name, message=reply.body[0] if reply.body else "")
        else:
            out.update(ok=True, body=plain(reply.body))
        return out

    def get(self, path: str, iface: str, prop: str) -> Any:
        return self.call(path, PROPS_IFACE, "Get", "ss", [iface, prop])[0]

    def managed_objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self.call(ROOT, OM_IFACE, "GetManagedObjects")[0]

    def mark(self) -> int:
        """A position in the signal record; ``since(mark)`` is what arrived after it."""
        with self._cond:
            return len(self.signals)

    def since(self, mark: int, member: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [s for s in self.signals[mark:] if member is None or s["member"] == member]

    def wait_signals(self, predicate: Callable[[list[dict[str, Any]]], bool], *, since: int,
                     timeout: float, what: str) -> list[dict[str, Any]]:
        """Wait until ``predicate(signals since the mark)`` holds; return those signals."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.signals[since:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; got "
                                       f"{[(s['member'], s.get('object')) for s in self.signals[since:]]}")
                self._cond.wait(left)
            return list(self.signals[since:])

    def close(self) -> None:
        try:
            self._bus.disconnect()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


class UdevLog:
    """``udevadm monitor --udev --property`` in the background: the processed events sanbusd
    listens to, with the unit attention a ``change`` carries (``SDEV_UA``) as ``"ua"``.

    Its timestamps are CLOCK_MONOTONIC, the clock of time.monotonic() and of the signal record, so
    tests can show that each object came or went after udev announced its device.
    """

    SUBSYSTEMS = ("scsi", "scsi_host", "scsi_device", "block", "fc_host", "fc_remote_ports", "fc_vports",
                  "iscsi_host", "iscsi_session", "iscsi_connection")

    def __init__(self, out_dir: Path = g.OUT_DIR) -> None:
        self.path = out_dir / "udev-monitor.txt"
        argv = ["udevadm", "monitor", "--udev", "--property"]
        for sub in self.SUBSYSTEMS:
            argv += ["--subsystem-match", sub]
        self.process = subprocess.Popen(argv, stdout=open(self.path, "wb"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        g.wait_for(lambda: "UDEV" in self.path.read_text(errors="replace"), timeout=30,
                   what="udevadm monitor to listen")

    def stop(self) -> list[dict[str, Any]]:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return parse_udev_monitor(self.path.read_text(errors="replace"))


def parse_udev_monitor(text: str) -> list[dict[str, Any]]:
    """``udevadm monitor --udev [--property]`` output -> [{"t", "action", "devpath", "subsystem"}],
    plus "ua" (the SDEV_UA property) on the events that carry a unit attention."""
    events: list[dict[str, Any]] = []
    for line in text.splitlines():
        m = re.match(r"^UDEV\s+\[(\d+\.\d+)\]\s+(\w+)\s+(\S+)\s+\((\S+)\)", line)
        if m:
            events.append({"t": float(m[1]), "action": m[2], "devpath": m[3], "subsystem": m[4]})
        elif events and line.startswith("SDEV_UA="):
            events[-1]["ua"] = line.split("=", 1)[1]
    return events


def property_changes(signals: list[dict], path: str, prop: str) -> list[Any]:
    """The values ``prop`` of object ``path`` took, in order, according to PropertiesChanged."""
    return [s["changed"][prop] for s in signals
            if s["member"] == "PropertiesChanged" and s["object"] == path and prop in s["changed"]]


def objects_added(signals: list[dict], paths: set[str]) -> bool:
    return paths <= {s["object"] for s in signals if s["member"] == "InterfacesAdded"}


def objects_removed(signals: list[dict], paths: set[str]) -> bool:
    return paths <= {s["object"] for s in signals if s["member"] == "InterfacesRemoved"}

"""The real kernel: typed operations become sysfs writes; events come from udev (pyudev)."""

from __future__ import annotations

import logging
import os
import subprocess

from ..model.ids import HCTL
from .multipathd import REAL_SOCKET
from .sysfs import SysfsReader
from .writes import format_scan, format_vport

log = logging.getLogger(__name__)


UDEV = ("(udev-worker)", "systemd-udevd", "udevd")


def _comm_ppid(pid: str) -> tuple[str, str]:
    """A process's name and its parent's pid, from /proc/PID/stat ("pid (comm) state ppid")."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    return comm, stat[stat.rindex(")") + 2:].split()[1]


def _parent_comm(ppid: str) -> str:
    try:
        return _comm_ppid(ppid)[0]
    except (OSError, ValueError):
        return ""


class KernelBackend:
    name = "kernel"
    multipathd_socket = REAL_SOCKET
    multipath_conf_dir = "/etc/multipath/conf.d"     # multipath-tools' default config_dir

    def __init__(self, root: str = "/sys", udev: bool | None = None) -> None:
        self.reader = SysfsReader(root)
        # udev only describes the live /sys; another root (a copy, a test tree) is read as is.
        self.use_udev = (os.path.realpath(root) == "/sys") if udev is None else udev
        self._monitor = None

    def _write(self, rel: str, data: str) -> None:
        fd = os.open(os.path.join(self.reader.root, rel), os.O_WRONLY)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def scan_host(self, host: int, channel: int | None, target: int | None,
                  lun: int | None) -> None:
        self._write(f"class/scsi_host/host{host}/scan", format_scan(channel, target, lun))

    def delete_lun(self, hctl: HCTL) -> None:
        self._write(f"class/scsi_device/{hctl}/device/delete", "1")

    def rescan_lun(self, hctl: HCTL) -> None:
        self._write(f"class/scsi_device/{hctl}/device/rescan", "1")

    def vport_create(self, host: int, wwpn: str, wwnn: str) -> None:
        self._write(f"class/fc_host/host{host}/vport_create", format_vport(wwpn, wwnn))

    def vport_delete(self, host: int, wwpn: str, wwnn: str) -> None:
        self._write(f"class/fc_host/host{host}/vport_delete", format_vport(wwpn, wwnn))

    def dm_deferred_remove(self, name: str) -> None:
        # An argument vector, never a shell string; `name` is a map name sanbusd read from sysfs.
        try:
            r = subprocess.run(["dmsetup", "remove", "--deferred", "--", name],
                               capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise OSError(2, "dmsetup is not installed (package dmsetup)") from None
        except subprocess.TimeoutExpired:
            raise OSError(110, "dmsetup remove --deferred did not finish in 30 s") from None
        if r.returncode != 0:
            raise OSError(16 if "busy" in r.stderr.lower() else 5,
                          (r.stderr.strip() or "dmsetup remove --deferred failed")[:300])

    def start(self, loop, on_events, on_overflow) -> None:
        if not self.use_udev:
            log.info("sysfs root %s is not the live /sys: no udev events, the tree is read "
                     "once and on reconcile", self.reader.root)
            return
        from .udev import UdevMonitor       # pyudev only where udev is used
        self._monitor = UdevMonitor(loop, on_events, on_overflow)
        self._monitor.start()

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()

    def block_users(self, block: str) -> list[str]:
        # As fuser and udisks do: mounts by device number, then every process's open files.
        # Holders (dm, md) are in the inventory already.
        try:
            with open(os.path.join(self.reader.root, "class", "block", block, "dev")) as f:
                dev = f.read().strip()
        except OSError:
            return []
        users = []
        if block.startswith("dm-"):
            # A map under an LV (or another dm device): its holder keeps it open.
            for h in sorted(os.listdir(os.path.join(self.reader.root, "class", "block", block,
                                                    "holders")) if self._exists(block) else []):
                users.append(f"held by {self._dm_name(h) or h} ({h})")
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 4 and fields[2] == dev:
                        users.append(f"mounted on {fields[4]}")
        except OSError:
            pass
        node = f"/dev/{block}"
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if not any(os.readlink(f"/proc/{pid}/fd/{fd}") == node
                           for fd in os.listdir(f"/proc/{pid}/fd")):
                    continue
                comm, ppid = _comm_ppid(pid)
                # udev probes every new or changed disk for a second or two after a scan (its
                # workers, and what its rules run: blkid, multipath -u). That is the system
                # setting the disk up, not someone using it.
                if comm in UDEV or _parent_comm(ppid) in UDEV:
                    continue
                users.append(f"{comm} (pid {pid})")
            except OSError:
                continue            # gone, or not ours to read
        return users

    def _exists(self, block: str) -> bool:
        return os.path.isdir(os.path.join(self.reader.root, "class", "block", block, "holders"))

    def _dm_name(self, dm: str) -> str:
        try:
            with open(os.path.join(self.reader.root, "class", "block", dm, "dm", "name")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def block_ready(self, block: str) -> bool:
        # udevd writes its database entry (/run/udev/data/bMAJ:MIN) after running the rules
        # and before it announces the event: then the /dev/disk/by-* links exist too.
        if not self.use_udev:
            return True
        try:
            with open(os.path.join(self.reader.root, "class", "block", block, "dev")) as f:
                dev = f.read().strip()
        except OSError:
            return False
        return os.path.exists(f"/run/udev/data/b{dev}")

"""Helpers for scenario scripts that run INSIDE the kernel-lab guest (see lab.py, README.md).

The guest runs the host's root filesystem (read-only 9p + tmpfs overlay) on Debian's stock kernel,
so everything here talks to real sysfs/configfs. Standard library only: the guest may run
Debian's /usr/bin/python3 without the project's virtualenv.

Anything a scenario wants the host to see goes into ``Report`` -> /run/kl-out/report.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

OUT_DIR = Path("/run/kl-out")
SCSI_HOST = Path("/sys/class/scsi_host")
SCSI_DEVICE = Path("/sys/class/scsi_device")
FC_HOST = Path("/sys/class/fc_host")
FC_RPORTS = Path("/sys/class/fc_remote_ports")
FC_VPORTS = Path("/sys/class/fc_vports")
SCSI_DEBUG = Path("/sys/bus/pseudo/drivers/scsi_debug")
FCOE_BUS = Path("/sys/bus/fcoe")
LIO = Path("/sys/kernel/config/target")

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Basics


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def log(message: str) -> None:
    """Progress line on the serial console (ends up in console.log on the host)."""
    print(f"[klab {uptime():8.2f}] {message}", flush=True)


def read_attr(path: Path | str) -> str | None:
    """A sysfs attribute without its trailing newline/padding; None if missing or unreadable.

    Some attributes exist but fail to read (e.g. ``device/wwid`` of a LIO RAM disk gives ENXIO).
    """
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def write_attr(path: Path | str, value: str) -> None:
    """Write a sysfs/configfs attribute in one write(), as the kernel expects.

    One os.write(), not a buffered file: when the kernel refuses a buffered write, Python tries
    the write again when it drops the file object, and the kernel sees (and acts on) it twice
    (a refused vport_create then uses up two vport numbers and logs its refusal twice).
    """
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"writing {value!r} to {path}: {exc.strerror}") from None


def run(argv: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def wait_for(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until ``predicate()`` returns something truthy and return it; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def modprobe(module: str, **params: Any) -> None:
    run(["modprobe", module, *(f"{key}={value}" for key, value in params.items())])


def hctl_key(hctl: str) -> tuple[int, ...]:
    """Sort key for "H:C:T:L" strings (numeric, so 10:0:0:0 sorts after 2:0:0:0)."""
    return tuple(int(part) for part in hctl.split(":"))


# --------------------------------------------------------------------------------------------
# udev


def start_udevd() -> None:
    """Start systemd-udevd in the background and wait until it accepts control messages.

    Start it BEFORE creating devices (scsi_debug, FCoE): it then sees the native kernel events.
    Replaying everything with `udevadm trigger` instead takes over a minute under TCG.
    """
    for candidate in ("/usr/lib/systemd/systemd-udevd", "/lib/systemd/systemd-udevd"):
        if os.access(candidate, os.X_OK):
            run([candidate, "--daemon"])
            break
    else:
        raise FileNotFoundError("systemd-udevd (package udev) is not installed on the host")
    wait_for(lambda: run(["udevadm", "control", "--ping"], check=False).returncode == 0,
             timeout=30, what="udevd to answer")


def settle(timeout: float = 120) -> float:
    """`udevadm settle`; returns how long it took. Raises if udev is still busy after ``timeout``."""
    start = time.monotonic()
    run(["udevadm", "settle", f"--timeout={int(timeout)}"], timeout=timeout + 10)
    return time.monotonic() - start


# --------------------------------------------------------------------------------------------
# SCSI


@dataclass
class ScsiDevice:
    hctl: str
    vendor: str | None
    model: str | None
    rev: str | None
    state: str | None
    wwid: str | None  # sysfs device/wwid (VPD 0x83); multipath uses udev's ID_SERIAL instead
    block: str | None  # e.g. "sda"
    size_bytes: int | None
    type: int | None = None  # SCSI peripheral device type (0 disk)
    rport: str | None = None  # "rport-H:C-N" the device hangs under (FC only)
    holders: list[str] | None = None  # what holds its block device (a multipath map's dm-N)


def scsi_hosts(proc_name: str | None = None) -> list[int]:
    """Host numbers under /sys/class/scsi_host, optionally only those of one driver."""
    hosts = []
    for entry in SCSI_HOST.iterdir() if SCSI_HOST.exists() else []:
        if proc_name is None or read_attr(entry / "proc_name") == proc_name:
            hosts.append(int(entry.name.removeprefix("host")))
    return sorted(hosts)


def scsi_host_info(host: int) -> dict[str, str | None]:
    base = SCSI_HOST / f"host{host}"
    names = ("proc_name", "state", "unique_id", "supported_mode", "active_mode", "can_queue")
    info: dict[str, str | None] = {name: read_attr(base / name) for name in names}
    info["device_path"] = os.path.realpath(base / "device")
    return info


def scsi_devices(host: int | None = None) -> list[str]:
    """H:C:T:L of every SCSI device (or those on one host), numerically sorted."""
    names = [p.name for p in SCSI_DEVICE.iterdir()] if SCSI_DEVICE.exists() else []
    if host is not None:
        names = [n for n in names if n.split(":")[0] == str(host)]
    return sorted(names, key=hctl_key)


def scsi_device_info(hctl: str) -> ScsiDevice:
    dev = SCSI_DEVICE / hctl / "device"
    blocks = sorted(os.listdir(dev / "block")) if (dev / "block").is_dir() else []
    block = blocks[0] if blocks else None
    sectors = read_attr(f"/sys/block/{block}/size") if block else None
    peripheral_type = read_attr(dev / "type")
    rports = [part for part in Path(os.path.realpath(dev)).parts if part.startswith("rport-")]
    return ScsiDevice(
        hctl=hctl,
        vendor=read_attr(dev / "vendor"),
        model=read_attr(dev / "model"),
        rev=read_attr(dev / "rev"),
        state=read_attr(dev / "state"),
        wwid=read_attr(dev / "wwid"),
        block=block,
        size_bytes=int(sectors) * 512 if sectors else None,  # /sys/block/*/size is in 512-byte units
        type=int(peripheral_type) if peripheral_type is not None else None,
        rport=rports[-1] if rports else None,
        holders=sorted(os.listdir(f"/sys/block/{block}/holders"))
        if block and os.path.isdir(f"/sys/block/{block}/holders") else [],
    )


def wait_for_block(hctl: str, timeout: float = 30) -> str:
    """Name of the disk (e.g. "sdb") once sd has attached to ``hctl``; sd probes asynchronously."""
    return wait_for(lambda: scsi_device_info(hctl).block, timeout=timeout,
                    what=f"a block device for {hctl}")


def udev_done(block: str) -> bool:
    """udevd has run its rules for /dev/sdX: its database entry exists (then by-id links do)."""
    dev = read_attr(f"/sys/class/block/{os.path.basename(block)}/dev") if block else None
    return dev is not None and os.path.exists(f"/run/udev/data/b{dev}")


def send_tur(hctl: str) -> subprocess.CompletedProcess[str]:
    """TEST UNIT READY to ``hctl`` (``sg_turs``, SG_IO), as multipathd's path checker sends one to
    every path every few seconds: a command reaches the LUN, and with it any unit attention the
    storage has queued for this path (sg_turs may report it, or a retry hides it: the exit code
    says nothing; udev's SDEV_UA change event does). SG_IO also reaches an ALUA standby path,
    where scsi_dh_alua fails ordinary reads with EIO."""
    return run(["sg_turs", f"/dev/{wait_for_block(hctl)}"], check=False)


def scan_host(host: int, channel: str = "-", target: str = "-", lun: str = "-") -> None:
    """Ask the midlayer to scan; "- - -" is the wildcard a SAN admin's rescan uses."""
    write_attr(SCSI_HOST / f"host{host}" / "scan", f"{channel} {target} {lun}")


def delete_lun(hctl: str) -> None:
    """Remove one SCSI device, like `echo 1 > .../device/delete`."""
    write_attr(SCSI_DEVICE / hctl / "device" / "delete", "1")
    wait_for(lambda: not (SCSI_DEVICE / hctl).exists(), timeout=30, what=f"{hctl} to go away")


# --------------------------------------------------------------------------------------------
# scsi_debug: an in-kernel fake HBA with as many hosts/targets/LUNs as asked for


def load_scsi_debug(
    add_host: int = 2,
    num_tgts: int = 2,
    max_luns: int = 4,
    *,
    vpd_use_hostno: int = 0,
    dev_size_mb: int = 8,
    timeout: float = 60,
    **params: Any,
) -> list[int]:
    """Load scsi_debug and wait for all its LUNs; return the new host numbers.

    ``vpd_use_hostno=0`` makes H:C:T:L on every host report the same WWID, i.e. each host is
    another path to the same LUNs -- what multipath needs.
    """
    before = set(scsi_hosts())
    modprobe("scsi_debug", add_host=add_host, num_tgts=num_tgts, max_luns=max_luns,
             vpd_use_hostno=vpd_use_hostno, dev_size_mb=dev_size_mb, **params)
    hosts = _wait_for_new_hosts(before, add_host, timeout)
    if "no_lun_0" not in params:  # otherwise the count below is not predictable
        for host in hosts:
            _wait_for_luns(host, num_tgts * max_luns, timeout)
    return hosts


def add_host(count: int = 1, *, timeout: float = 60) -> list[int]:
    """Add scsi_debug hosts at run time (like a new HBA port appearing); return their numbers."""
    before = set(scsi_hosts())
    write_attr(SCSI_DEBUG / "add_host", str(count))
    new = _wait_for_new_hosts(before, count, timeout)
    luns = int(read_attr(SCSI_DEBUG / "num_tgts") or 1) * int(read_attr(SCSI_DEBUG / "max_luns") or 1)
    for host in new:  # new hosts are scanned asynchronously
        _wait_for_luns(host, luns, timeout)
    return new


def _wait_for_new_hosts(before: set[int], count: int, timeout: float) -> list[int]:
    def new_hosts() -> list[int] | None:
        new = sorted(set(scsi_hosts("scsi_debug")) - before)
        return new if len(new) >= count else None

    return wait_for(new_hosts, timeout=timeout, what=f"{count} new scsi_debug hosts")


def _wait_for_luns(host: int, count: int, timeout: float) -> None:
    wait_for(lambda: len(scsi_devices(host)) >= count, timeout=timeout,
             what=f"{count} LUNs on host{host}")


# --------------------------------------------------------------------------------------------
# Fibre Channel (fc_host / fc_remote_ports) and FCoE VN2VN with a LIO tcm_fc target

FC_HOST_ATTRS = ("node_name", "port_name", "port_id", "port_state", "port_type", "fabric_name",
                 "speed", "supported_classes", "symbolic_name", "max_npiv_vports", "npiv_vports_inuse",
                 "dev_loss_tmo", "tgtid_bind_type")
FC_RPORT_ATTRS = ("node_name", "port_name", "port_id", "roles", "port_state", "scsi_target_id",
                  "dev_loss_tmo", "fast_io_fail_tmo", "supported_classes")


def fc_host_attrs(host: int) -> dict[str, str | None]:
    return {name: read_attr(FC_HOST / f"host{host}" / name) for name in FC_HOST_ATTRS}


def fc_rports(host: int) -> dict[str, dict[str, str | None]]:
    """The FC remote ports seen by one host: ``{"rport-3:0-0": {attr: value}}``."""
    names = sorted(p.name for p in FC_RPORTS.iterdir()) if FC_RPORTS.exists() else []
    return {
        name: {attr: read_attr(FC_RPORTS / name / attr) for attr in FC_RPORT_ATTRS}
        for name in names if name.startswith(f"rport-{host}:")
    }


FC_VPORT_ATTRS = ("node_name", "port_name", "roles", "vport_state", "vport_last_state", "vport_type",
                  "symbolic_name")


def fc_vports() -> dict[str, dict[str, Any]]:
    """Every NPIV vport: ``{"vport-1:0-0": {attr: value, "parent": 1, "host": 5}}``; "host" is
    the vport's own SCSI host (None until it exists), "parent" the physical port's."""
    names = sorted(p.name for p in FC_VPORTS.iterdir()) if FC_VPORTS.exists() else []
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        m = re.fullmatch(r"vport-(\d+):\d+-\d+", name)
        if not m:
            continue
        attrs: dict[str, Any] = {attr: read_attr(FC_VPORTS / name / attr) for attr in FC_VPORT_ATTRS}
        attrs["parent"] = int(m[1])
        attrs["host"] = vport_host(name)
        out[name] = attrs
    return out


def vport_host(name: str) -> int | None:
    """The SCSI host an NPIV vport brought (``fc_vports/<name>/device/hostM``), or None."""
    try:
        entries = os.listdir(FC_VPORTS / name / "device")
    except OSError:
        return None
    hosts = [int(e.removeprefix("host")) for e in entries if re.fullmatch(r"host\d+", e)]
    return hosts[0] if hosts else None


def vport_of_host(host: int) -> str | None:
    """The vport a SCSI host belongs to (its device path runs .../hostP/vport-P:C-N/hostM), or None."""
    parts = Path(os.path.realpath(SCSI_HOST / f"host{host}" / "device")).parts
    return next((p for p in parts if re.fullmatch(r"vport-\d+:\d+-\d+", p)), None)


def vport_string(wwpn: str, wwnn: str) -> str:
    """What vport_create/vport_delete take: "<16 hex wwpn>:<16 hex wwnn>" (no 0x)."""
    return f"{wwpn.removeprefix('0x')}:{wwnn.removeprefix('0x')}"


def try_write(path: Path | str, value: str) -> dict[str, Any]:
    """Write a sysfs attribute and say what the kernel answered, for the record:
    {"ok": True} or {"ok": False, "errno": "EINVAL", "error": "Invalid argument"}, with "seconds"."""
    import errno as errno_names

    start = time.monotonic()
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())  # one write() (see write_attr)
        finally:
            os.close(fd)
        out: dict[str, Any] = {"ok": True}
    except OSError as exc:
        out = {"ok": False, "errno": errno_names.errorcode.get(exc.errno or 0, str(exc.errno)),
               "error": exc.strerror}
    out["seconds"] = round(time.monotonic() - start, 3)
    return out


def vport_create(host: int, wwpn: str, wwnn: str) -> dict[str, Any]:
    """``echo wwpn:wwnn > /sys/class/fc_host/hostN/vport_create``; try_write's answer."""
    return try_write(FC_HOST / f"host{host}" / "vport_create", vport_string(wwpn, wwnn))


def vport_delete(host: int, wwpn: str, wwnn: str) -> dict[str, Any]:
    """``echo wwpn:wwnn > /sys/class/fc_host/hostN/vport_delete`` (N: the parent); try_write's answer."""
    return try_write(FC_HOST / f"host{host}" / "vport_delete", vport_string(wwpn, wwnn))


def find_vport(wwpn: str) -> str | None:
    """The fc_vports name of the vport with this WWPN ("0x…" or 16 hex digits), or None."""
    want = "0x" + wwpn.removeprefix("0x").lower().lstrip("0")
    for name, v in fc_vports().items():
        if (v["port_name"] or "").lower() == want:
            return name
    return None


def wwn(mac: str, prefix: str) -> str:
    """libfcoe's WWNs: ``0x2000<MAC>`` (port) and ``0x1000<MAC>`` (node)."""
    return "0x" + prefix + mac.replace(":", "").lower()


def lio_wwn(sysfs_wwn: str) -> str:
    """0x200052540000000a -> 20:00:52:54:00:00:00:0a (how LIO's tcm_fc names FC ports)."""
    digits = sysfs_wwn.removeprefix("0x")
    return ":".join(digits[i:i + 2] for i in range(0, 16, 2))


INITIATOR_MAC = "52:54:00:00:00:0a"  # lab.boot(nics=2): NIC 0
TARGET_MAC = "52:54:00:00:00:0b"  # NIC 1


@dataclass
class FcoeVn2vn:
    """An FCoE VN2VN initiator port and a LIO target port on the same (QEMU hub) Ethernet.

    The initiator is an ordinary fcoe ``fc_host``; the target side is a second fcoe port that LIO's
    tcm_fc serves RAM-disk LUNs through. ``map_lun``/``unmap_lun`` change the LUN masking (the ACL
    for the initiator's WWPN), like a storage admin provisioning or withdrawing a LUN; the
    initiator sees a newly mapped LUN after a scan (``scan_host(fc.initiator_host)``).
    """

    initiator_host: int
    initiator_wwpn: str  # "0x200052540000000a", as in /sys/class/fc_host
    initiator_wwnn: str
    target_host: int
    target_wwpn: str
    target_wwnn: str
    initiator_ifname: str
    target_ifname: str
    lun_mb: int = 8
    mapped: set[int] = field(default_factory=set)

    @property
    def _tpg(self) -> Path:
        return LIO / "fc" / lio_wwn(self.target_wwpn) / "tpgt_1"

    @property
    def _acl(self) -> Path:
        return self._tpg / "acls" / lio_wwn(self.initiator_wwpn)

    def map_lun(self, lun: int, size_mb: int | None = None) -> None:
        """Create (if needed) a RAM-disk backstore + target LUN ``lun`` and expose it to the initiator."""
        backstore = LIO / "core" / f"rd_mcp_{lun}" / f"ramdisk{lun}"
        if not backstore.exists():
            backstore.mkdir(parents=True)
            pages = (size_mb or self.lun_mb) * 256  # 4 KiB pages
            write_attr(backstore / "control", f"rd_pages={pages}")
            write_attr(backstore / "enable", "1")
        tpg_lun = self._tpg / "lun" / f"lun_{lun}"
        if not tpg_lun.exists():
            tpg_lun.mkdir(parents=True)
            os.symlink(backstore, tpg_lun / "backstore")
        mapped = self._acl / f"lun_{lun}"
        if not mapped.exists():
            mapped.mkdir(parents=True)
            os.symlink(tpg_lun, mapped / "lun")
        self.mapped.add(lun)

    def unmap_lun(self, lun: int) -> None:
        """Withdraw LUN ``lun`` from the initiator's ACL (the backstore and target LUN stay).

        The initiator is not told; its SCSI device stays until deleted or a rescan notices.
        """
        mapped = self._acl / f"lun_{lun}"
        if mapped.exists():
            (mapped / "lun").unlink()
            mapped.rmdir()
        self.mapped.discard(lun)


_FCOE: FcoeVn2vn | None = None  # FCoE + LIO can be set up once per boot: scenarios share it


def setup_fcoe_vn2vn(luns: tuple[int, ...] = (0,), *, timeout: float = 60) -> FcoeVn2vn:
    """Bring up FCoE VN2VN on the two lab NICs with LIO serving ``luns`` to the initiator.

    Needs ``lab.boot(..., nics=2)``. Returns once the initiator's rport to the target is Online
    and the first mapped LUN is visible. The target side comes up first so that the initiator
    finds LUNs already mapped when it logs in.

    A second call in the same boot (another scenario of the group) returns the same ports: the
    lab's two NICs carry one FCoE initiator and one LIO target. It must ask for the LUNs the
    first call mapped.
    """
    global _FCOE
    if _FCOE is not None:
        if set(luns) != _FCOE.mapped:
            raise RuntimeError(f"FCoE is already set up in this boot with LUNs {sorted(_FCOE.mapped)}, "
                               f"not {sorted(luns)}")
        return _FCOE
    _FCOE = _setup_fcoe_vn2vn(luns, timeout)
    return _FCOE


def _setup_fcoe_vn2vn(luns: tuple[int, ...], timeout: float) -> FcoeVn2vn:
    modprobe("fcoe")
    modprobe("tcm_fc")
    if not LIO.exists():  # /init mounts configfs; be robust if a scenario unmounted it
        run(["mount", "-t", "configfs", "configfs", "/sys/kernel/config"])
    initiator_if, target_if = _ifname_for_mac(INITIATOR_MAC), _ifname_for_mac(TARGET_MAC)
    for ifname in (initiator_if, target_if):
        run(["ip", "link", "set", ifname, "up"])

    target_ctlr = _create_fcoe_ctlr(target_if)
    fc = FcoeVn2vn(
        initiator_host=-1,
        initiator_wwpn=wwn(INITIATOR_MAC, "2000"),
        initiator_wwnn=wwn(INITIATOR_MAC, "1000"),
        target_host=-1,
        target_wwpn=wwn(TARGET_MAC, "2000"),
        target_wwnn=wwn(TARGET_MAC, "1000"),
        initiator_ifname=initiator_if,
        target_ifname=target_if,
    )
    for lun in luns:
        fc.map_lun(lun)
    if (fc._tpg / "enable").exists():  # not every kernel's tcm_fc has a TPG enable switch
        write_attr(fc._tpg / "enable", "1")
    write_attr(target_ctlr / "enabled", "1")
    fc.target_host = _ctlr_host(target_ctlr, timeout)

    initiator_ctlr = _create_fcoe_ctlr(initiator_if)
    write_attr(initiator_ctlr / "enabled", "1")
    fc.initiator_host = _ctlr_host(initiator_ctlr, timeout)

    wait_for(lambda: any(r["port_name"] == fc.target_wwpn and r["port_state"] == "Online"
                         for r in fc_rports(fc.initiator_host).values()),
             timeout=timeout, what="the initiator's rport to the LIO target to be Online")
    if luns:
        wait_for(lambda: any(hctl_key(h)[3] == min(luns) for h in scsi_devices(fc.initiator_host)),
                 timeout=timeout, what=f"LUN {min(luns)} on host{fc.initiator_host}")
    return fc


def _ifname_for_mac(mac: str) -> str:
    for iface in sorted(Path("/sys/class/net").iterdir()):
        if read_attr(iface / "address") == mac:
            return iface.name
    raise LookupError(f"no NIC with MAC {mac}; boot the guest with lab.boot(..., nics=2)")


def _create_fcoe_ctlr(ifname: str) -> Path:
    """Create a disabled FCoE controller in VN2VN mode on ``ifname``; return its sysfs dir."""
    devices = FCOE_BUS / "devices"
    before = set(os.listdir(devices))
    write_attr(FCOE_BUS / "ctlr_create", ifname)
    new = wait_for(lambda: sorted(set(os.listdir(devices)) - before), timeout=10,
                   what=f"an FCoE ctlr on {ifname}")
    ctlr = devices / new[0]
    write_attr(ctlr / "mode", "vn2vn")
    return ctlr


def _ctlr_host(ctlr: Path, timeout: float) -> int:
    hosts = wait_for(lambda: [p.name for p in ctlr.iterdir() if re.fullmatch(r"host\d+", p.name)],
                     timeout=timeout, what=f"the SCSI host of {ctlr.name}")
    return int(hosts[0].removeprefix("host"))


# --------------------------------------------------------------------------------------------
# iSCSI: a LIO iSCSI target on two portals and the open-iscsi initiator logged in to both
#
# Both ends live in the guest, which needs no NIC: portal 1 is 127.0.0.1 (lo, down in the bare
# guest), portal 2 the address of a dummy NIC. Traffic to either goes over lo, so a tc filter on
# lo that drops packets to one portal's address fails that portal's session (and only it) while
# the session stays configured: its paths go blocked, then transport-offline, and come back
# when the filter goes. (Logging out would remove the paths instead of failing them; `ip link set
# dummy down` changes nothing, local traffic still flows.)

ISCSI_TARGET_IQN = "iqn.2003-01.org.linux-iscsi.klab:tgt1"
ISCSI_INITIATOR_IQN = "iqn.2004-10.com.example:klab-initiator"
ISCSI_PORTALS = ("127.0.0.1", "192.168.77.1")
ISCSI_DUMMY_IF = "klab-dum0"
ISCSI_SESSION = Path("/sys/class/iscsi_session")
ISCSI_CONNECTION = Path("/sys/class/iscsi_connection")


@dataclass
class IscsiLio:
    """A LIO iSCSI target (RAM-disk LUNs) on ``portals`` with an ACL for one initiator IQN.

    ``export_lun`` creates a LUN in the target portal group (a backstore with a unit serial, so
    the LUN has a WWID: LIO refuses the serial with EIO once the backstore is exported, and a LUN
    without one has no VPD 0x83 NAA designator, so no WWID and no multipath); ``map_lun`` puts it
    into the initiator's ACL, as "the SAN admin provisions a LUN" does; ``unmap_lun`` withdraws it.
    The initiator sees a newly mapped LUN after a scan of each session's host.
    """

    target_iqn: str = ISCSI_TARGET_IQN
    initiator_iqn: str = ISCSI_INITIATOR_IQN
    portals: tuple[str, ...] = ISCSI_PORTALS
    lun_mb: int = 8
    exported: set[int] = field(default_factory=set)
    mapped: set[int] = field(default_factory=set)

    @property
    def tpg(self) -> Path:
        return LIO / "iscsi" / self.target_iqn / "tpgt_1"

    @property
    def acl(self) -> Path:
        return self.tpg / "acls" / self.initiator_iqn

    @staticmethod
    def serial(lun: int) -> str:
        """The LUN's unit serial; LIO's NAA WWID (naa.6001405 + its first 25 hex digits) and so
        udev's ID_SERIAL (multipath's WWID, "36001405…") differ per LUN through the first 8."""
        return f"{lun:08x}-1111-2222-3333-444455556666"

    @classmethod
    def wwid(cls, lun: int) -> str:
        """multipath's WWID of the LUN (udev's ID_SERIAL: "3" + the NAA designator)."""
        return "36001405" + cls.serial(lun).replace("-", "")[:25]

    def export_lun(self, lun: int, size_mb: int | None = None) -> None:
        backstore = LIO / "core" / f"rd_mcp_{100 + lun}" / f"iscsi{lun}"
        if not backstore.exists():
            backstore.mkdir(parents=True)
            write_attr(backstore / "control", f"rd_pages={(size_mb or self.lun_mb) * 256}")
            write_attr(backstore / "enable", "1")
            write_attr(backstore / "wwn" / "vpd_unit_serial", self.serial(lun))  # before the export
        tpg_lun = self.tpg / "lun" / f"lun_{lun}"
        if not tpg_lun.exists():
            tpg_lun.mkdir(parents=True)
            os.symlink(backstore, tpg_lun / "backstore")
        self.exported.add(lun)

    def map_lun(self, lun: int, size_mb: int | None = None) -> None:
        self.export_lun(lun, size_mb)
        mapped = self.acl / f"lun_{lun}"
        if not mapped.exists():
            mapped.mkdir(parents=True)
            os.symlink(self.tpg / "lun" / f"lun_{lun}", mapped / "lun")
        self.mapped.add(lun)

    def unmap_lun(self, lun: int) -> None:
        mapped = self.acl / f"lun_{lun}"
        if mapped.exists():
            (mapped / "lun").unlink()
            mapped.rmdir()
        self.mapped.discard(lun)


_ISCSI: IscsiLio | None = None


def setup_iscsi_target(luns: tuple[int, ...] = (0,), *, exported: tuple[int, ...] = (),
                       portals: tuple[str, ...] = ISCSI_PORTALS) -> IscsiLio:
    """lo up, a dummy NIC for the portals that are not on lo, LIO's iSCSI target with a portal
    on each address, LUNs ``exported`` (in the portal group, not mapped) and ``luns`` (mapped into
    the initiator's ACL). Once per boot; a second call returns the same target."""
    global _ISCSI
    if _ISCSI is not None:
        return _ISCSI
    run(["ip", "link", "set", "lo", "up"])
    others = [p for p in portals if not p.startswith("127.")]
    if others:
        modprobe("dummy")
        run(["ip", "link", "add", ISCSI_DUMMY_IF, "type", "dummy"])
        for address in others:
            run(["ip", "addr", "add", f"{address}/24", "dev", ISCSI_DUMMY_IF])
        run(["ip", "link", "set", ISCSI_DUMMY_IF, "up"])
    modprobe("iscsi_target_mod")
    if not LIO.exists():
        run(["mount", "-t", "configfs", "configfs", "/sys/kernel/config"])
    target = IscsiLio(portals=tuple(portals))
    target.tpg.mkdir(parents=True)
    for lun in sorted(set(luns) | set(exported)):
        target.export_lun(lun)
    for address in portals:
        (target.tpg / "np" / f"{address}:3260").mkdir()
    write_attr(target.tpg / "attrib" / "authentication", "0")
    write_attr(target.tpg / "attrib" / "generate_node_acls", "0")
    target.acl.mkdir(parents=True)
    for lun in luns:
        target.map_lun(lun)
    write_attr(target.tpg / "enable", "1")
    _ISCSI = target
    return target


def start_iscsid(initiator_iqn: str = ISCSI_INITIATOR_IQN) -> None:
    """open-iscsi's iscsid, by hand (iscsid.conf's startup line calls systemctl), with our IQN
    (/etc is the guest's tmpfs overlay: the host's file is never touched) and the lock directory
    systemd-tmpfiles would make (without it discovery fails: "Could not open /run/lock/iscsi")."""
    Path("/etc/iscsi").mkdir(parents=True, exist_ok=True)
    Path("/etc/iscsi/initiatorname.iscsi").write_text(f"InitiatorName={initiator_iqn}\n")
    Path("/run/lock/iscsi").mkdir(parents=True, exist_ok=True)
    modprobe("iscsi_tcp")
    if run(["pidof", "iscsid"], check=False).returncode != 0:
        run(["iscsid"])  # forks; answers once its IPC socket is up
    wait_for(lambda: run(["iscsiadm", "-m", "session"], check=False).returncode in (0, 21),
             timeout=30, what="iscsid to answer iscsiadm (21: no sessions)")


# Node settings for a quick, bounded path failure and recovery (iscsiadm -o update -n NAME -v V).
# noop-out every 2 s with a 2 s timeout notices a silent portal in ~4 s (the defaults, 5 + 5 s,
# take ~10 s); replacement_timeout (the session's recovery_tmo) is how long I/O waits for the
# session before the devices go transport-offline (multipathd may set it to its own
# fast_io_fail_tmo for paths of a map).
ISCSI_FAST_NODE = {
    "node.conn[0].timeo.noop_out_interval": "2",
    "node.conn[0].timeo.noop_out_timeout": "2",
    "node.session.timeo.replacement_timeout": "5",
}


def iscsi_login(target: IscsiLio, *, node_settings: dict[str, str] | None = None,
                timeout: float = 60, one_by_one: bool = False) -> list[int]:
    """Discovery through the first portal (sendtargets answers every portal), the node
    settings, login to every portal; returns the sessions' SCSI hosts once each has every mapped
    LUN attached (one session = one iscsi_tcp host)."""
    run(["iscsiadm", "-m", "discovery", "-t", "st", "-p", target.portals[0]], timeout=timeout)
    for name, value in (ISCSI_FAST_NODE if node_settings is None else node_settings).items():
        run(["iscsiadm", "-m", "node", "-T", target.target_iqn, "-o", "update", "-n", name, "-v", value])
    if one_by_one:  # portal by portal, in order: the first portal's session gets the lower host number
        for address in target.portals:
            run(["iscsiadm", "-m", "node", "-T", target.target_iqn, "-p", f"{address}:3260", "-l"],
                timeout=timeout)
            wait_for(lambda a=address: any(v["address"] == a and v["host"] is not None
                                           for v in iscsi_sessions().values()),
                     timeout=timeout, what=f"the iSCSI session through {address}")
    else:
        run(["iscsiadm", "-m", "node", "-T", target.target_iqn, "-l"], timeout=timeout)
    sessions = wait_for(lambda: (s := iscsi_sessions()) and len(s) == len(target.portals)
                        and all(v["host"] is not None for v in s.values()) and s,
                        timeout=timeout, what=f"{len(target.portals)} iSCSI sessions")
    hosts = sorted(v["host"] for v in sessions.values())
    for host in hosts:
        _wait_for_luns(host, len(target.mapped), timeout)
    return hosts


def iscsi_sessions() -> dict[str, dict[str, Any]]:
    """Every iSCSI session: {"session1": {"host": 2, "targetname", "state", "recovery_tmo",
    "address" (the portal, persistent_address), "port", "conn_state"}}."""
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(ISCSI_SESSION.iterdir()) if ISCSI_SESSION.exists() else []:
        parent = Path(os.path.realpath(entry / "device")).parent.name  # …/hostH/sessionN
        number = entry.name.removeprefix("session")
        conn = ISCSI_CONNECTION / f"connection{number}:0"
        out[entry.name] = {
            "host": int(parent.removeprefix("host")) if re.fullmatch(r"host\d+", parent) else None,
            "targetname": read_attr(entry / "targetname"),
            "state": read_attr(entry / "state"),
            "recovery_tmo": read_attr(entry / "recovery_tmo"),
            "address": read_attr(conn / "persistent_address"),
            "port": read_attr(conn / "persistent_port"),
            "conn_state": read_attr(conn / "state"),
            "tpgt": read_attr(entry / "tpgt"),
            "initiatorname": read_attr(entry / "initiatorname"),
        }
    return out


def iscsi_host_of_portal(address: str) -> int:
    """The SCSI host of the session through portal ``address`` (host numbers change on re-login)."""
    for session in iscsi_sessions().values():
        if session["address"] == address and session["host"] is not None:
            return session["host"]
    raise LookupError(f"no iSCSI session through {address}: {iscsi_sessions()}")


def cut_portal(address: str) -> None:
    """Drop every packet to ``address`` on lo (a prio qdisc, a u32 filter, the gact drop): the
    session through that portal times out and fails, the other one goes on."""
    run(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio"])
    run(["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
         "match", "ip", "dst", f"{address}/32", "action", "drop"])


def restore_portals() -> None:
    """Remove cut_portal's qdisc (and so its filter): traffic flows again, iscsid reconnects."""
    run(["tc", "qdisc", "del", "dev", "lo", "root"])


# --------------------------------------------------------------------------------------------
# multipathd (multipath-tools, the host's, run in the guest) and device-mapper

MULTIPATHD_SOCKET = "\0/org/kernel/linux/storage/multipathd"  # abstract; libmpathcmd's
MULTIPATH_CONF = Path("/etc/multipath.conf")  # in the guest: the tmpfs overlay, never the host's
MULTIPATH_DIR = Path("/etc/multipath")  # wwids, bindings, conf.d/ (multipathd's default config_dir)
_SIZE_T = struct.Struct("N")  # libmpathcmd frames each message with a native size_t length


class MultipathdError(OSError):
    pass


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise MultipathdError(f"multipathd closed the connection after {len(data)} of {count} bytes")
        data += chunk
    return data


def multipathd_command(command: str, *, timeout: float = 30) -> str:
    """One command over multipathd's socket, as `multipathd COMMAND` (libmpathcmd) sends it: a
    native size_t length (of the command plus its NUL), the command, a NUL; the reply comes
    framed the same way. Returns the reply without its NUL. OSError (ConnectionRefusedError when
    multipathd does not run, TimeoutError, MultipathdError) otherwise."""
    data = command.encode() + b"\0"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(MULTIPATHD_SOCKET)
        sock.sendall(_SIZE_T.pack(len(data)) + data)
        length = _SIZE_T.unpack(_recv_exact(sock, _SIZE_T.size))[0]
        reply = _recv_exact(sock, length)
    return reply.rstrip(b"\0").decode(errors="replace")


DEFAULT_MULTIPATH_CONF = """\
defaults {
    user_friendly_names yes
    find_multipaths strict
}
"""


class Multipathd:
    """multipathd in the foreground (``-d -s``), its log in the report directory.

    ``start()`` writes ``conf`` to /etc/multipath.conf and ``dropins`` ({name: text}) to
    /etc/multipath/conf.d/, starts from empty wwids and bindings files, and waits until the
    daemon answers ``show daemon`` with a state other than ``init``/``configure``. Start udevd
    first: multipathd takes its paths from udev's database (ID_SERIAL is the WWID).
    """

    def __init__(self, conf: str = DEFAULT_MULTIPATH_CONF, *, dropins: dict[str, str] | None = None,
                 out_dir: Path = OUT_DIR, verbosity: int = 2, log_name: str = "multipathd.log") -> None:
        self.conf = conf
        self.dropins = dict(dropins or {})
        self.verbosity = verbosity
        self.log_path = out_dir / log_name
        self.process: subprocess.Popen | None = None
        self.ready_seconds: float | None = None

    def start(self, timeout: float = 60) -> Multipathd:
        (MULTIPATH_DIR / "conf.d").mkdir(parents=True, exist_ok=True)
        MULTIPATH_CONF.write_text(self.conf)
        for name, text in self.dropins.items():
            write_dropin(name, text)
        for name in ("wwids", "bindings"):
            (MULTIPATH_DIR / name).write_text("")
        start = time.monotonic()
        self.process = subprocess.Popen(["multipathd", "-d", "-s", f"-v{self.verbosity}"],
                                        stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        self.wait_ready(timeout)
        self.ready_seconds = round(time.monotonic() - start, 2)
        return self

    def state(self) -> str | None:
        """``show daemon``'s state ("idle", "running", "configure", ...) or None if no answer."""
        try:
            reply = multipathd_command("show daemon", timeout=5)
        except OSError:
            return None
        m = re.match(r"pid \d+ (\w+)", reply)
        return m[1] if m else None

    def wait_ready(self, timeout: float = 60) -> str:
        def ready() -> str | None:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"multipathd exited with {self.process.returncode}: {self.log_tail()}")
            state = self.state()
            return state if state in ("idle", "running") else None

        return wait_for(ready, timeout=timeout, what="multipathd to answer and be idle", interval=0.2)

    def command(self, command: str, *, timeout: float = 30) -> str:
        return multipathd_command(command, timeout=timeout)

    def maps(self) -> list[dict[str, Any]]:
        """``show maps json``'s maps (an empty list when there are none)."""
        reply = self.command("show maps json")
        try:
            return json.loads(reply).get("maps", [])
        except ValueError:
            raise MultipathdError(f"show maps json: not JSON: {reply[:500]!r}") from None

    def map_by_wwid(self, wwid: str) -> dict[str, Any] | None:
        return next((m for m in self.maps() if m.get("uuid") == wwid), None)

    @staticmethod
    def path_states(mp: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
        """{dev: (dm_st, chk_st, dev_st)} of a map from ``show maps json``."""
        return {p["dev"]: (p.get("dm_st"), p.get("chk_st"), p.get("dev_st"))
                for pg in mp.get("path_groups", []) for p in pg.get("paths", [])}

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        with contextlib.suppress(OSError):
            multipathd_command("shutdown", timeout=5)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


# The kernel lane's multipathd (group mpath): maps only when sanbusd asks (strict, empty wwids),
# quick path checks (polling_interval 1: a path offline is failed in ~0.4 s, not ~9 s).
LAB_MULTIPATH_CONF = """\
defaults {
    user_friendly_names yes
    find_multipaths strict
    polling_interval 1
}
"""
_MULTIPATHD: Multipathd | None = None


def shared_multipathd(conf: str = LAB_MULTIPATH_CONF, timeout: float = 60) -> Multipathd:
    """multipathd for the boot, started once (udev settled first: it reads its paths from udev's
    database); a second caller gets the same one."""
    global _MULTIPATHD
    if _MULTIPATHD is None:
        settle(timeout=120)
        _MULTIPATHD = Multipathd(conf).start(timeout)
    return _MULTIPATHD


def write_dropin(name: str, text: str) -> Path:
    """/etc/multipath/conf.d/NAME (the guest's overlay), written atomically."""
    path = MULTIPATH_DIR / "conf.d" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def udev_property(block: str, name: str) -> str | None:
    """One property of a block device in udev's database (``ID_SERIAL``: multipath's WWID)."""
    out = run(["udevadm", "info", "--query=property", f"--name={block}"], check=False).stdout
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key == name:
            return value
    return None


def dm_devices() -> dict[str, dict[str, Any]]:
    """Every device-mapper device: {"dm-0": {"name", "uuid", "slaves": [...], "holders": [...],
    "size_bytes", "suspended"}}, straight from /sys/block/dm-*."""
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(Path("/sys/block").glob("dm-*")):
        sectors = read_attr(entry / "size")
        out[entry.name] = {
            "name": read_attr(entry / "dm" / "name"),
            "uuid": read_attr(entry / "dm" / "uuid"),
            "slaves": sorted(os.listdir(entry / "slaves")) if (entry / "slaves").is_dir() else [],
            "holders": sorted(os.listdir(entry / "holders")) if (entry / "holders").is_dir() else [],
            "size_bytes": int(sectors) * 512 if sectors else None,
            "suspended": read_attr(entry / "dm" / "suspended"),
        }
    return out


def set_device_state(hctl: str, state: str) -> None:
    """``echo offline|running > /sys/class/scsi_device/H:C:T:L/device/state`` (a path failing
    or coming back, as a transport would say it). The newline is part of it: the kernel
    compares "offline\\n" and answers EINVAL to a bare "offline"."""
    write_attr(SCSI_DEVICE / hctl / "device" / "state", f"{state}\n")


# --------------------------------------------------------------------------------------------
# The whole SCSI/FC picture, read straight from sysfs (independently of sanbusd's own reader)


def host_transport(host: int) -> str:
    """What the kernel says a host is: an fc_host, iscsi_host or sas_host class device, or none."""
    for cls, transport in (("fc_host", "fc"), ("iscsi_host", "iscsi"), ("sas_host", "sas")):
        if (Path("/sys/class") / cls / f"host{host}").exists():
            return transport
    return "other"


def sysfs_snapshot() -> dict[str, Any]:
    """Every SCSI host (with its fc_host attributes), FC remote port and SCSI device, as plain data.

    Host-side tests compare this with what sanbusd publishes (sanview.sysfs_differences), so it
    reads sysfs with nothing but open()/listdir(), not with sanbusd's reader.
    """
    hosts: dict[str, Any] = {}
    for n in scsi_hosts():
        info: dict[str, Any] = dict(scsi_host_info(n))
        info["transport"] = host_transport(n)
        if info["transport"] == "fc":
            info["fc"] = fc_host_attrs(n)
            info["fc"]["vport_create"] = (FC_HOST / f"host{n}" / "vport_create").exists()
            info["fc"]["vport"] = vport_of_host(n)
        hosts[f"host{n}"] = info
    rports = {}
    for n in scsi_hosts():
        rports.update(fc_rports(n))
    return {
        "hosts": hosts,
        "rports": rports,
        "vports": fc_vports(),
        "luns": {hctl: asdict(scsi_device_info(hctl)) for hctl in scsi_devices()},
        # device-mapper multipath maps (dm/uuid "mpath-<WWID>") and iSCSI sessions
        "maps": {dm: d for dm, d in dm_devices().items() if (d["uuid"] or "").startswith("mpath-")},
        "sessions": iscsi_sessions(),
    }


# --------------------------------------------------------------------------------------------
# Report: what the host-side test asserts on


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    seconds: float | None = None


class Report:
    """Named checks plus recorded data, written to /run/kl-out/report.json.

    ``check`` records a pass/fail with a detail string; ``step`` times a block and records it as a
    check (failed, with the traceback, if it raises); ``record`` keeps observations (sysfs dumps,
    command output) for the host-side test to assert on.
    """

    def __init__(self, scenario: str, out_dir: Path = OUT_DIR) -> None:
        self.scenario = scenario
        self.path = out_dir / "report.json"
        self.checks: list[Check] = []
        self.data: dict[str, Any] = {}
        self.started = uptime()
        self._recorded_errors: set[int] = set()  # id() of exceptions already in a failed check

    def check(self, name: str, ok: bool, detail: Any = "", seconds: float | None = None) -> bool:
        detail_text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
        self.checks.append(Check(name, bool(ok), detail_text, None if seconds is None else round(seconds, 3)))
        log(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail_text if detail_text else ''}")
        return bool(ok)

    def check_equal(self, name: str, actual: Any, expected: Any) -> bool:
        return self.check(name, actual == expected, f"expected {expected!r}, got {actual!r}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        except BaseException as exc:
            # An enclosing step re-raising the same error only notes that it failed too.
            detail = "failed (see above)" if self.recorded(exc) else traceback.format_exc(limit=8)
            self.check(name, False, detail, time.monotonic() - start)
            self._recorded_errors.add(id(exc))
            raise
        self.check(name, True, "", time.monotonic() - start)

    def recorded(self, exc: BaseException) -> bool:
        """Whether ``exc`` is already in the report (a ``step`` caught it on the way out)."""
        return id(exc) in self._recorded_errors

    def record(self, key: str, value: Any) -> None:
        self.data[key] = asdict(value) if hasattr(value, "__dataclass_fields__") else value

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def write(self) -> None:
        body = {
            "scenario": self.scenario,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "data": self.data,
            "uptime_start": self.started,
            "uptime_end": uptime(),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1, default=str))
        tmp.replace(self.path)

    def finish(self) -> int:
        """Write the report (and the kernel log, for debugging); return the scenario's exit code."""
        if not self.checks:
            self.check("scenario recorded at least one check", False)
        with contextlib.suppress(Exception):
            (self.path.parent / "dmesg.txt").write_text(run(["dmesg"], check=False).stdout)
        self.write()
        log(f"{self.scenario}: {'OK' if self.ok else 'FAILED'} "
            f"({sum(c.ok for c in self.checks)}/{len(self.checks)} checks passed)")
        return 0 if self.ok else 1


def run_scenario(name: str, body: Callable[[Report], None]) -> NoReturn:
    """Run ``body(report)``; an exception becomes a failed check. Exits with the report's verdict."""
    report = Report(name)
    try:
        body(report)
    except BaseException as exc:  # noqa: BLE001 - the report must be written whatever happened
        if not report.recorded(exc):
            report.check("scenario ran to completion", False, traceback.format_exc(limit=8))
    sys.exit(report.finish())

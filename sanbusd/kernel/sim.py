"""The simulated SAN: a fabric laid out as a sysfs-shaped tree, with the kernel's write semantics.

Like libvirt's test:///default, this is a product feature: the demo and most tests run on it. It
writes the tree that the real reader (sysfs.py) reads, with the kernel's names, links and formats,
so `lsscsi --sysfsroot DIR/sys` reads it too. Writes the daemon makes (`scan`, `delete`, `rescan`,
`vport_create`, `vport_delete`) are serviced here as the kernel would (see
shared/reference/kernel-san.md) and produce the uevents the kernel would send. Every write is
recorded, so tests can prove that bad input never reached "sysfs".

The SAN side (which LUNs an array masks to which initiator, ports going down) is changed by the
SAN admin through `sanbusd-sim` (control.py), never by the daemon.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .fabric import ArraySpec, Fabric, HostSpec, LunSpec, PortSpec
from .formats import (HCTL, SCAN_WILD_CARD, block_device_name, parse_scan_write,
                      parse_vport_write, sysfs_wwn_text)
from .uevent import LUNS_CHANGED_UA, UEvent

log = logging.getLogger(__name__)

EmitFn = Callable[[list[UEvent]], None]


@dataclass(slots=True)
class SimRport:
    name: str
    host: int
    number: int
    array: int
    port: PortSpec
    target_id: int
    state: str = "Online"


@dataclass(slots=True)
class SimHost:
    number: int
    devdir: str                     # relative to the sysfs root, e.g. devices/pci0000:00/.../host1
    spec: HostSpec
    wwpn: str = ""
    wwnn: str = ""
    fabric: str = ""
    vport: str = ""                 # vport-P:0-N when this host is an NPIV vport's
    rport_next: int = 0
    target_ids: dict[tuple[int, str], int] = field(default_factory=dict)  # (array, wwpn) -> tid
    vport_next: int = 0
    scan_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(slots=True)
class SimVport:
    name: str
    parent: int
    wwpn: str
    wwnn: str
    host: int
    state: str
    last_state: str


@dataclass(slots=True)
class WriteRecord:
    path: str
    data: str
    result: str                     # "ok" or the errno name
    end: float = 0.0                # time.time() when the write returned (the kernel work ended)


class SimulatedSan:
    def __init__(self, fabric: Fabric, root: str | os.PathLike) -> None:
        self.fabric = fabric
        self.root = Path(root)              # plays /sys
        self.sys = str(self.root)
        self.hosts: dict[int, SimHost] = {}
        self.rports: dict[str, SimRport] = {}
        self.luns: dict[HCTL, str] = {}     # hctl -> device dir (relative)
        self.blocks: dict[HCTL, str] = {}   # hctl -> sdX
        self.vports: dict[str, SimVport] = {}
        self.writes: list[WriteRecord] = []
        self._lock = threading.RLock()
        self._free_blocks: list[int] = []
        self._next_block = 0
        self._next_host = 0
        self._emit: EmitFn | None = None
        self._pci_slot = 3

    # -- plumbing -----------------------------------------------------------------------------

    def set_event_sink(self, emit: EmitFn | None) -> None:
        self._emit = emit

    def _send(self, events: list[UEvent]) -> None:
        if events and self._emit is not None:
            self._emit(events)

    def _p(self, rel: str) -> str:
        return os.path.join(self.sys, rel)

    def _mkdir(self, rel: str) -> None:
        os.makedirs(self._p(rel), exist_ok=True)

    def _attrs(self, rel: str, attrs: dict[str, str], writable: tuple[str, ...] = ()) -> None:
        d = self._p(rel)
        os.makedirs(d, exist_ok=True)
        for k, v in attrs.items():
            with open(os.path.join(d, k), "w") as f:
                f.write(v + "\n")
        for k in writable:
            fd = os.open(os.path.join(d, k), os.O_CREAT | os.O_WRONLY, 0o200)
            os.close(fd)

    def _set(self, rel: str, attr: str, value: str) -> None:
        with open(self._p(os.path.join(rel, attr)), "w") as f:
            f.write(value + "\n")

    def _link(self, link_rel: str, target_rel: str) -> None:
        link = self._p(link_rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        rel = os.path.relpath(self._p(target_rel), os.path.dirname(link))
        try:
            os.symlink(rel, link)
        except FileExistsError:
            os.unlink(link)
            os.symlink(rel, link)

    def _unlink(self, link_rel: str) -> None:
        try:
            os.unlink(self._p(link_rel))
        except FileNotFoundError:
            pass

    def _rmtree(self, rel: str) -> None:
        shutil.rmtree(self._p(rel), ignore_errors=True)

    def _class_dev(self, devdir: str, cls: str, name: str, attrs: dict[str, str],
                   writable: tuple[str, ...] = ()) -> str:
        """A class device under `devdir`, linked from class/<cls>/<name> with a `device` link."""
        rel = f"{devdir}/{cls}/{name}"
        self._attrs(rel, attrs, writable)
        self._link(f"{rel}/device", devdir)
        self._link(f"class/{cls}/{name}", rel)
        return rel

    @staticmethod
    def _ev(action: str, subsystem: str, rel: str, devtype: str = "",
            **props: str) -> UEvent:
        return UEvent(action, subsystem, "/" + rel, devtype, dict(props))

    # -- building the tree --------------------------------------------------------------------

    def build(self) -> None:
        """Lay out the coldplug state: every host, its logged-in ports and their masked LUNs."""
        with self._lock:
            if self.root.exists():
                shutil.rmtree(self.root)
            for d in ("devices", "class/scsi_host", "class/fc_host", "class/fc_remote_ports",
                      "class/fc_transport", "class/scsi_device", "class/block", "class/fc_vports",
                      "class/iscsi_host", "class/sas_host", "bus/scsi/devices", "block"):
                self._mkdir(d)
            for spec in self.fabric.hosts:
                self._add_host(spec)
            for h in list(self.hosts.values()):
                if h.spec.type == "fc":
                    self._login(h)
                else:
                    for disk in h.spec.disks:
                        self._add_lun(h, 0, disk.target, disk.lun, None)
            for h in list(self.hosts.values()):
                for wwpn, wwnn in h.spec.vports:
                    self._vport_create(h, f"{wwpn}:{wwnn}", login_delay=None)

    def _add_host(self, spec: HostSpec, parent: SimHost | None = None, vport: str = "",
                  wwpn: str = "", wwnn: str = "") -> tuple[SimHost, list[UEvent]]:
        n = self._next_host
        self._next_host += 1
        if parent is not None:
            devdir = f"{parent.devdir}/{vport}/host{n}"
        elif spec.type == "fc":
            devdir = f"devices/pci0000:00/0000:00:{self._pci_slot:02x}.0/host{n}"
            self._pci_slot += 1
        elif spec.type == "iscsi":
            devdir = f"devices/platform/host{n}"
        else:
            devdir = f"devices/pci0000:00/0000:00:{self._pci_slot:02x}.0/host{n}"
            self._pci_slot += 1
        h = SimHost(number=n, devdir=devdir, spec=spec, wwpn=wwpn or spec.wwpn,
                    wwnn=wwnn or spec.wwnn, fabric=spec.fabric, vport=vport)
        self.hosts[n] = h
        name = f"host{n}"
        self._attrs(devdir, {"uevent": "DEVTYPE=scsi_host"})
        self._link(f"bus/scsi/devices/{name}", devdir)
        events = [self._ev("add", "scsi", devdir, "scsi_host")]
        rel = self._class_dev(devdir, "scsi_host", name, {
            "proc_name": spec.driver, "state": "running", "unique_id": str(n),
            "active_mode": "Initiator", "supported_mode": "Initiator", "can_queue": "1024",
            "host_busy": "0"}, writable=("scan", "host_reset"))
        events.append(self._ev("add", "scsi_host", rel))
        if spec.type == "fc":
            fc = {"node_name": sysfs_wwn_text(h.wwnn), "port_name": sysfs_wwn_text(h.wwpn),
                  "permanent_port_name": sysfs_wwn_text(h.wwpn),
                  "fabric_name": self._fabric_name(h),
                  "port_id": (spec.port_id if parent is None and spec.port_id
                              else f"0x{0x010000 + n * 0x100:06x}"),
                  "port_state": spec.port_state if parent is None else "Online",
                  "port_type": "NPIV VPORT" if parent is not None else spec.port_type,
                  "speed": spec.speed, "supported_speeds": "4 Gbit, 8 Gbit, 16 Gbit",
                  "supported_classes": "Class 3", "symbolic_name": f"{spec.driver} sim",
                  "dev_loss_tmo": "60", "tgtid_bind_type": "wwpn (World Wide Port Name)",
                  "maxframe_size": "2048 bytes"}
            writable: tuple[str, ...] = ("issue_lip",)
            if parent is None and spec.max_npiv_vports > 0:
                fc["max_npiv_vports"] = str(spec.max_npiv_vports)
                fc["npiv_vports_inuse"] = "0"
                writable += ("vport_create", "vport_delete")
            rel = self._class_dev(devdir, "fc_host", name, fc, writable)
            events.append(self._ev("add", "fc_host", rel))
        elif spec.type in ("iscsi", "sas"):
            cls = "iscsi_host" if spec.type == "iscsi" else "sas_host"
            rel = self._class_dev(devdir, cls, name, {})
            events.append(self._ev("add", cls, rel))
        return h, events

    def _fabric_name(self, h: SimHost) -> str:
        if not h.fabric:
            return "0x0"
        if h.fabric in self.fabric.fabric_wwn:      # as the fabric file says (0: no switch)
            return f"0x{self.fabric.fabric_wwn[h.fabric]:x}"
        # A switch WWN derived from the fabric's name: stable across runs (hash() is not).
        return f"0x10000000{zlib.crc32(h.fabric.encode()):08x}"

    def _visible_ports(self, h: SimHost) -> list[tuple[int, ArraySpec, PortSpec]]:
        """Array target ports zoned with this initiator: same fabric (one zone per fabric)."""
        out = []
        for ai, arr in enumerate(self.fabric.arrays):
            for p in arr.ports:
                if p.fabric == h.fabric:
                    out.append((ai, arr, p))
        return out

    def _login(self, h: SimHost) -> list[UEvent]:
        """Fabric login: an rport per zoned target port, and (as fc_scsi_scan_rport does) a full
        scan of every new FCP target."""
        events: list[UEvent] = []
        if self._host_port_state(h) != "Online":
            return events
        for ai, arr, port in self._visible_ports(h):
            if any(r.host == h.number and r.port.wwpn == port.wwpn for r in self.rports.values()):
                continue
            events += self._add_rport(h, ai, arr, port)
        return events

    def _host_port_state(self, h: SimHost) -> str:
        try:
            with open(self._p(f"class/fc_host/host{h.number}/port_state")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def _add_rport(self, h: SimHost, ai: int, arr: ArraySpec, port: PortSpec) -> list[UEvent]:
        # fc_remote_port_add reuses the binding (same rport number and target id) for a WWPN it saw.
        key = (ai, port.wwpn)
        tid = h.target_ids.setdefault(key, len(h.target_ids))
        number = tid
        h.rport_next = max(h.rport_next, number + 1)
        name = f"rport-{h.number}:0-{number}"
        rdev = f"{h.devdir}/{name}"
        self._attrs(rdev, {"uevent": ""})
        rel = self._class_dev(rdev, "fc_remote_ports", name, {
            "node_name": sysfs_wwn_text(arr.wwnn), "port_name": sysfs_wwn_text(port.wwpn),
            "port_id": self._rport_port_id(ai, port, tid), "roles": ", ".join(port.roles),
            "port_state": "Online", "scsi_target_id": str(tid), "dev_loss_tmo": "60",
            "fast_io_fail_tmo": "off", "supported_classes": "Class 3",
            "maxframe_size": "2048 bytes"})
        self.rports[name] = SimRport(name=name, host=h.number, number=number, array=ai,
                                     port=port, target_id=tid)
        events = [self._ev("add", "fc_remote_ports", rel)]
        for lun in sorted(self._masked_luns(h, ai)):
            events += self._add_lun(h, 0, tid, lun, self.rports[name])
        return events

    @staticmethod
    def _rport_port_id(ai: int, port: PortSpec, tid: int) -> str:
        return port.port_id or f"0x{0x020000 + ai * 0x100 + tid:06x}"

    def _masked_luns(self, h: SimHost, ai: int) -> list[int]:
        return [n for n, spec in self.fabric.arrays[ai].luns.items() if h.wwpn in spec.masked_to]

    def _target_dir(self, h: SimHost, c: int, t: int, rport: SimRport | None) -> str:
        parent = f"{h.devdir}/{rport.name}" if rport else h.devdir
        return f"{parent}/target{h.number}:{c}:{t}"

    def _alloc_block(self) -> str:
        if self._free_blocks:
            self._free_blocks.sort()
            return block_device_name(self._free_blocks.pop(0))
        i = self._next_block
        self._next_block += 1
        return block_device_name(i)

    def _add_lun(self, h: SimHost, c: int, t: int, lun: int,
                 rport: SimRport | None) -> list[UEvent]:
        hctl = HCTL(h.number, c, t, lun)
        if hctl in self.luns:
            return []
        if rport is not None:
            arr = self.fabric.arrays[rport.array]
            spec: LunSpec = arr.luns[lun]
            vendor, model, rev, size, wwid, typ = (arr.vendor, arr.model, arr.rev, spec.size,
                                                   spec.wwid, 0)
        else:
            disk = next(d for d in h.spec.disks if d.target == t and d.lun == lun)
            vendor, model, rev, size, wwid, typ = (disk.vendor, disk.model, disk.rev, disk.size,
                                                   disk.wwid, disk.type)
        events: list[UEvent] = []
        tdir = self._target_dir(h, c, t, rport)
        tname = f"target{h.number}:{c}:{t}"
        if not os.path.isdir(self._p(tdir)):
            self._attrs(tdir, {"uevent": "DEVTYPE=scsi_target"})
            self._link(f"bus/scsi/devices/{tname}", tdir)
            events.append(self._ev("add", "scsi", tdir, "scsi_target"))
            if rport is not None:
                self._class_dev(tdir, "fc_transport", tname, {
                    "node_name": sysfs_wwn_text(self.fabric.arrays[rport.array].wwnn),
                    "port_name": sysfs_wwn_text(rport.port.wwpn),
                    # the kernel copies the rport's port_id here (lsscsi -t shows it)
                    "port_id": self._rport_port_id(rport.array, rport.port, rport.target_id)})
        name = str(hctl)
        ddir = f"{tdir}/{name}"
        attrs = {"vendor": f"{vendor:<8.8}", "model": f"{model:<16.16}", "rev": f"{rev:<4.4}",
                 "type": str(typ), "state": "running", "queue_depth": "32", "timeout": "30",
                 "scsi_level": "7", "uevent": "DEVTYPE=scsi_device"}
        if wwid:
            attrs["wwid"] = wwid
        self._attrs(ddir, attrs, writable=("delete", "rescan"))
        self._link(f"bus/scsi/devices/{name}", ddir)
        events.append(self._ev("add", "scsi", ddir, "scsi_device"))
        rel = self._class_dev(ddir, "scsi_device", name, {})
        events.append(self._ev("add", "scsi_device", rel))
        if typ == 0:
            sd = self._alloc_block()
            bdir = f"{ddir}/block/{sd}"
            idx = self._block_index(sd)
            self._attrs(bdir, {"size": str(size // 512), "dev": f"{8 + 0}:{idx * 16}",
                               "ro": "0", "removable": "0", "uevent": "DEVTYPE=disk"})
            self._mkdir(f"{bdir}/holders")
            self._mkdir(f"{bdir}/slaves")
            self._link(f"{bdir}/device", ddir)
            self._link(f"class/block/{sd}", bdir)
            self._link(f"block/{sd}", bdir)
            self.blocks[hctl] = sd
            events.append(self._ev("add", "block", bdir, "disk"))
        self.luns[hctl] = ddir
        return events

    @staticmethod
    def _block_index(sd: str) -> int:
        n = 0
        for ch in sd[2:]:
            n = n * 26 + (ord(ch) - ord("a") + 1)
        return n - 1

    def _remove_lun(self, hctl: HCTL) -> list[UEvent]:
        ddir = self.luns.pop(hctl, None)
        if ddir is None:
            return []
        events: list[UEvent] = []
        name = str(hctl)
        sd = self.blocks.pop(hctl, None)
        if sd is not None:
            events.append(self._ev("remove", "block", f"{ddir}/block/{sd}", "disk"))
            self._unlink(f"class/block/{sd}")
            self._unlink(f"block/{sd}")
            self._free_blocks.append(self._block_index(sd))
        events.append(self._ev("remove", "scsi_device", f"{ddir}/scsi_device/{name}"))
        events.append(self._ev("remove", "scsi", ddir, "scsi_device"))
        self._unlink(f"class/scsi_device/{name}")
        self._unlink(f"bus/scsi/devices/{name}")
        self._rmtree(ddir)
        # The target goes with its last LUN (scsi_target_reap).
        tdir = os.path.dirname(ddir)
        if not any(k[:3] == hctl[:3] for k in self.luns):
            tname = os.path.basename(tdir)
            self._unlink(f"class/fc_transport/{tname}")
            self._unlink(f"bus/scsi/devices/{tname}")
            self._rmtree(tdir)
            events.append(self._ev("remove", "scsi", tdir, "scsi_target"))
        return events

    def _remove_rport(self, name: str) -> list[UEvent]:
        rp = self.rports.pop(name, None)
        if rp is None:
            return []
        events: list[UEvent] = []
        for hctl in sorted(k for k in self.luns if k.host == rp.host and k.target == rp.target_id):
            events += self._remove_lun(hctl)
        h = self.hosts[rp.host]
        rdev = f"{h.devdir}/{name}"
        events.append(self._ev("remove", "fc_remote_ports", f"{rdev}/fc_remote_ports/{name}"))
        self._unlink(f"class/fc_remote_ports/{name}")
        self._rmtree(rdev)
        return events

    # -- the kernel's write semantics ---------------------------------------------------------

    def write(self, rel: str, data: str) -> None:
        """Service a write to DIR/<rel> as the kernel would, or raise OSError with its errno."""
        try:
            self._dispatch_write(rel, data)
        except OSError as e:
            code = e.errno or errno.EIO
            self._record(rel, data, errno.errorcode.get(code, "EIO"))
            # The kernel answers a bare errno: callers see strerror's words, not our reason
            # (the real kernel lane saw "EINVAL (Invalid argument)" for a refused scan).
            raise OSError(code, os.strerror(code)) from None
        self._record(rel, data, "ok")

    def _record(self, rel: str, data: str, result: str) -> None:
        with self._lock:
            self.writes.append(WriteRecord(rel, data, result, time.time()))

    def _dispatch_write(self, rel: str, data: str) -> None:
        parts = rel.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["class", "scsi_host"] and parts[3] == "scan":
            return self._scan(self._host_by_name(parts[2]), data)
        if len(parts) == 5 and parts[:2] == ["class", "scsi_device"] and parts[3] == "device":
            if parts[4] == "delete":
                return self._delete_lun(parts[2], data)
            if parts[4] == "rescan":
                return self._rescan_lun(parts[2])
        if len(parts) == 4 and parts[:2] == ["class", "fc_host"]:
            h = self._host_by_name(parts[2])
            if parts[3] == "vport_create" and self._npiv(h):
                return self._vport_create(h, data)
            if parts[3] == "vport_delete" and self._npiv(h):
                return self._vport_delete(h, data)
            if parts[3] == "issue_lip":
                return None
        raise OSError(errno.EACCES, f"{rel}: not a writable attribute")

    def _npiv(self, h: SimHost) -> bool:
        if h.vport or h.spec.max_npiv_vports <= 0:
            raise OSError(errno.ENOENT, "no vport_create in this driver")
        return True

    def _host_by_name(self, name: str) -> SimHost:
        with self._lock:
            for h in self.hosts.values():
                if f"host{h.number}" == name:
                    return h
        raise OSError(errno.ENOENT, f"{name}: no such host")

    def _scan(self, h: SimHost, data: str) -> None:
        spec = h.spec
        fc = spec.type == "fc"
        parsed = parse_scan_write(data, 0, spec.max_id, spec.max_lun, fc=fc)
        delay = spec.scan_delay if spec.scan_delay is not None else self.fabric.scan_delay
        # The kernel holds shost->scan_mutex for the whole scan: writes to one host serialize.
        with h.scan_lock:
            if delay > 0:
                time.sleep(delay)
            if parsed is None:
                return
            c, t, lun = parsed
            events: list[UEvent] = []
            with self._lock:
                if c not in (SCAN_WILD_CARD, 0):
                    return
                if fc:
                    # fc_user_scan: only Online rports with a SCSI target id are scanned.
                    for rp in sorted(self.rports.values(), key=lambda r: r.target_id):
                        if rp.host != h.number or rp.state != "Online" or rp.target_id < 0:
                            continue
                        if t not in (SCAN_WILD_CARD, rp.target_id):
                            continue
                        for n in sorted(self._masked_luns(h, rp.array)):
                            if lun in (SCAN_WILD_CARD, n):
                                events += self._add_lun(h, 0, rp.target_id, n, rp)
                else:
                    for disk in spec.disks:
                        if t in (SCAN_WILD_CARD, disk.target) and lun in (SCAN_WILD_CARD, disk.lun):
                            events += self._add_lun(h, 0, disk.target, disk.lun, None)
        self._send(events)

    def _delete_lun(self, name: str, data: str) -> None:
        from .formats import parse_hctl
        hctl = parse_hctl(name)
        with self._lock:
            if hctl is None or hctl not in self.luns:
                raise OSError(errno.ENOENT, f"{name}: no such device")
            if data.strip() != "1":
                # sdev_store_delete ignores the value; any write deletes. Keep the kernel's way.
                pass
            events = self._remove_lun(hctl)
        self._send(events)

    def _rescan_lun(self, name: str) -> None:
        from .formats import parse_hctl
        hctl = parse_hctl(name)
        events: list[UEvent] = []
        with self._lock:
            if hctl is None or hctl not in self.luns:
                raise OSError(errno.ENOENT, f"{name}: no such device")
            rp = self._rport_of(hctl)
            sd = self.blocks.get(hctl)
            if rp is not None and sd is not None:
                spec = self.fabric.arrays[rp.array].luns.get(hctl.lun)
                if spec is not None:
                    bdir = f"{self.luns[hctl]}/block/{sd}"
                    self._set(bdir, "size", str(spec.size // 512))
                    events.append(self._ev("change", "block", bdir, "disk", RESIZE="1"))
        self._send(events)

    def _rport_of(self, hctl: HCTL) -> SimRport | None:
        for rp in self.rports.values():
            if rp.host == hctl.host and rp.target_id == hctl.target:
                return rp
        return None

    def _vport_create(self, parent: SimHost, data: str, login_delay: float | None = 0.2) -> None:
        wwpn, wwnn = parse_vport_write(data)
        with self._lock:
            in_use = sum(1 for v in self.vports.values() if v.parent == parent.number)
            if in_use >= parent.spec.max_npiv_vports:
                raise OSError(errno.ENOSPC, "max_npiv_vports reached")
            used = {parent.wwpn} | {v.wwpn for v in self.vports.values()
                                    if v.parent == parent.number}
            if wwpn in used:
                # lpfc/libfc: "WWPN ... already exists" -> EINVAL (seen on a real kernel)
                raise OSError(errno.EINVAL, f"WWPN {wwpn} already exists")
            name = f"vport-{parent.number}:0-{parent.vport_next}"
            parent.vport_next += 1
            vdev = f"{parent.devdir}/{name}"
            self._attrs(vdev, {"uevent": ""})
            fabric_ok = self.fabric.fabric_npiv.get(parent.fabric, True)
            taken = any(h.wwpn == wwpn for h in self.hosts.values()) or any(
                p.wwpn == wwpn for a in self.fabric.arrays for p in a.ports)
            state = ("Fabric Rejected WWN" if taken else
                     "Active" if fabric_ok and self._host_port_state(parent) == "Online" else
                     "No Fabric Support")
            rel = self._class_dev(vdev, "fc_vports", name, {
                "node_name": sysfs_wwn_text(wwnn), "port_name": sysfs_wwn_text(wwpn),
                "roles": "FCP Initiator", "vport_type": "NPIV VPORT",
                "vport_state": "Initializing", "vport_last_state": "Unknown",
                "symbolic_name": ""}, writable=("vport_delete", "vport_disable"))
            events = [self._ev("add", "fc_vports", rel)]
            vh, host_events = self._add_host(parent.spec, parent=parent, vport=name,
                                             wwpn=wwpn, wwnn=wwnn)
            vh.fabric = parent.fabric
            events += host_events
            self.vports[name] = SimVport(name, parent.number, wwpn, wwnn, vh.number,
                                         "Initializing", "Unknown")
            self._set(f"{parent.devdir}/fc_host/host{parent.number}", "npiv_vports_inuse",
                      str(in_use + 1))
            events.append(self._ev("change", "fc_host",
                                   f"{parent.devdir}/fc_host/host{parent.number}"))
        self._send(events)
        if login_delay is None:             # a vport that existed before we started
            self._vport_login(name, state)
            return
        # Fabric login (FDISC) completes after the write returns, as on real HBAs.
        threading.Timer(login_delay, self._vport_login, args=(name, state)).start()

    def _vport_login(self, name: str, state: str) -> None:
        with self._lock:
            v = self.vports.get(name)
            if v is None:
                return
            h = self.hosts[v.host]
            vrel = f"{self.hosts[v.parent].devdir}/{name}/fc_vports/{name}"
            v.last_state, v.state = v.state if v.state != "Initializing" else "Unknown", state
            self._set(vrel, "vport_state", state)
            self._set(vrel, "vport_last_state", v.last_state)
            events = [self._ev("change", "fc_vports", vrel)]
            if state != "Active":
                self._set(f"{h.devdir}/fc_host/host{h.number}", "port_state", "Linkdown")
                events.append(self._ev("change", "fc_host", f"{h.devdir}/fc_host/host{h.number}"))
            else:
                events += self._login(h)
        self._send(events)

    def _vport_delete(self, parent: SimHost, data: str) -> None:
        wwpn, wwnn = parse_vport_write(data)
        with self._lock:
            v = next((v for v in self.vports.values() if v.parent == parent.number
                      and v.wwpn == wwpn and v.wwnn == wwnn), None)
            if v is None or v.state == "Initializing":
                raise OSError(errno.ENODEV, "no such vport")
            events = self._remove_host(v.host)
            vdev = f"{parent.devdir}/{v.name}"
            events.append(self._ev("remove", "fc_vports", f"{vdev}/fc_vports/{v.name}"))
            self._unlink(f"class/fc_vports/{v.name}")
            self._rmtree(vdev)
            del self.vports[v.name]
            in_use = sum(1 for x in self.vports.values() if x.parent == parent.number)
            self._set(f"{parent.devdir}/fc_host/host{parent.number}", "npiv_vports_inuse",
                      str(in_use))
            events.append(self._ev("change", "fc_host",
                                   f"{parent.devdir}/fc_host/host{parent.number}"))
        self._send(events)

    def _remove_host(self, n: int) -> list[UEvent]:
        h = self.hosts[n]
        events: list[UEvent] = []
        for name in sorted(r.name for r in self.rports.values() if r.host == n):
            events += self._remove_rport(name)
        for hctl in sorted(k for k in self.luns if k.host == n):
            events += self._remove_lun(hctl)
        name = f"host{n}"
        for cls in ("fc_host", "scsi_host"):
            if os.path.lexists(self._p(f"class/{cls}/{name}")):
                events.append(self._ev("remove", cls, f"{h.devdir}/{cls}/{name}"))
                self._unlink(f"class/{cls}/{name}")
        events.append(self._ev("remove", "scsi", h.devdir, "scsi_host"))
        self._unlink(f"bus/scsi/devices/{name}")
        self._rmtree(h.devdir)
        del self.hosts[n]
        return events

    # -- the SAN admin's side (driven by sanbusd-sim) -----------------------------------------

    def _array_port(self, wwpn: str) -> tuple[int, PortSpec]:
        for ai, arr in enumerate(self.fabric.arrays):
            for p in arr.ports:
                if p.wwpn == wwpn:
                    return ai, p
        raise KeyError(f"no array port with WWPN {wwpn}")

    def port_down(self, wwpn: str) -> None:
        """A target port leaves the fabric: its rports block, then go after dev_loss_tmo."""
        with self._lock:
            self._array_port(wwpn)
            names = [r.name for r in self.rports.values() if r.port.wwpn == wwpn]
            events = []
            for name in names:
                self.rports[name].state = "Blocked"
                rel = f"class/fc_remote_ports/{name}"
                self._set(rel, "port_state", "Blocked")
                events.append(self._ev("change", "fc_remote_ports", os.path.relpath(
                    os.path.realpath(self._p(rel)), self.sys)))
        self._send(events)
        threading.Timer(self.fabric.dev_loss_tmo, self._dev_loss, args=(names,)).start()

    def _dev_loss(self, names: list[str]) -> None:
        with self._lock:
            events: list[UEvent] = []
            for name in names:
                rp = self.rports.get(name)
                if rp is not None and rp.state == "Blocked":
                    events += self._remove_rport(name)
        self._send(events)

    def port_up(self, wwpn: str) -> None:
        """A target port (re)joins the fabric: every zoned initiator logs in and scans it."""
        with self._lock:
            ai, port = self._array_port(wwpn)
            events: list[UEvent] = []
            for h in list(self.hosts.values()):
                if h.spec.type != "fc" or h.fabric != port.fabric:
                    continue
                blocked = [r for r in self.rports.values()
                           if r.host == h.number and r.port.wwpn == wwpn]
                if blocked:
                    for r in blocked:
                        r.state = "Online"
                        rel = f"class/fc_remote_ports/{r.name}"
                        self._set(rel, "port_state", "Online")
                        events.append(self._ev("change", "fc_remote_ports", os.path.relpath(
                            os.path.realpath(self._p(rel)), self.sys)))
                elif self._host_port_state(h) == "Online":
                    events += self._add_rport(h, ai, self.fabric.arrays[ai], port)
        self._send(events)

    def provision(self, array: str, lun: int, size: int, initiators: set[str],
                  wwid: str = "") -> None:
        """The array admin maps LUN `lun` to initiator WWPNs. Hosts learn of it only through a
        unit attention on LUNs they already have (REPORTED LUNS DATA HAS CHANGED), then a scan."""
        from .fabric import generated_wwid
        with self._lock:
            ai = self._array_index(array)
            arr = self.fabric.arrays[ai]
            spec = arr.luns.get(lun)
            if spec is None:
                spec = arr.luns[lun] = LunSpec(lun=lun, size=size,
                                               wwid=wwid or generated_wwid(ai, lun),
                                               masked_to=set())
            spec.masked_to |= initiators
            events = self._unit_attention(ai, initiators)
        self._send(events)

    def unprovision(self, array: str, lun: int, initiators: set[str] | None = None) -> None:
        """Unmap on the array. As on a real SAN the hosts' sdevs stay (P3: stale LUNs)."""
        with self._lock:
            ai = self._array_index(array)
            spec = self.fabric.arrays[ai].luns.get(lun)
            if spec is None:
                raise KeyError(f"array {array} has no LUN {lun}")
            affected = set(spec.masked_to) if initiators is None else initiators
            spec.masked_to -= affected
            events = self._unit_attention(ai, affected)
        self._send(events)

    def resize(self, array: str, lun: int, size: int) -> None:
        """The array admin grows a LUN. Hosts see the new size after a rescan of the device."""
        with self._lock:
            ai = self._array_index(array)
            spec = self.fabric.arrays[ai].luns.get(lun)
            if spec is None:
                raise KeyError(f"array {array} has no LUN {lun}")
            spec.size = size
            events = [self._ev("change", "scsi", ddir, "scsi_device",
                               SDEV_UA="CAPACITY_DATA_HAS_CHANGED")
                      for hctl, ddir in sorted(self.luns.items())
                      if hctl.lun == lun and (rp := self._rport_of(hctl)) is not None
                      and rp.array == ai]
        self._send(events)

    def _array_index(self, name: str) -> int:
        for ai, arr in enumerate(self.fabric.arrays):
            if arr.name == name:
                return ai
        raise KeyError(f"no array named {name!r}")

    def _unit_attention(self, ai: int, initiators: set[str]) -> list[UEvent]:
        events = []
        for hctl, ddir in sorted(self.luns.items()):
            rp = self._rport_of(hctl)
            if rp is None or rp.array != ai or self.hosts[hctl.host].wwpn not in initiators:
                continue
            events.append(self._ev("change", "scsi", ddir, "scsi_device",
                                   SDEV_UA=LUNS_CHANGED_UA))
        return events

"""The SCSI midlayer: host scans, and LUNs (scsi_device, their sd block device) coming and going.

`scan_host`, `delete_lun` and `rescan_lun` are the Backend's calls; each is recorded as the sysfs
write the kernel adapter makes for it and refused with the errno the kernel gives that write.
"""

from __future__ import annotations

import errno
import os
import time

from ..backend.uevent import UEvent
from ..backend.writes import format_scan
from ..model.ids import HCTL, block_device_name, sysfs_wwn_text
from .core import SanCore
from .devices import SimHost, SimRport
from .fabric import LunSpec
from .files import uevent

# scsi_scan() refuses a channel above the host's max_channel: 0 on every simulated host.
MAX_CHANNEL = 0


def _einval(why: str) -> OSError:
    return OSError(errno.EINVAL, why)


class ScsiMixin(SanCore):
    # -- the Backend's calls ------------------------------------------------------------------

    def scan_host(self, host: int, channel: int | None, target: int | None,
                  lun: int | None) -> None:
        """A write to scsi_host/hostN/scan; None is the "-" wildcard. Blocks for the scan."""
        self._recorded(f"class/scsi_host/host{host}/scan", format_scan(channel, target, lun),
                       lambda: self._scan(self._host(host), (channel, target, lun)))

    def delete_lun(self, hctl: HCTL) -> None:
        self._recorded(f"class/scsi_device/{hctl}/device/delete", "1",
                       lambda: self._delete(hctl))

    def rescan_lun(self, hctl: HCTL) -> None:
        self._recorded(f"class/scsi_device/{hctl}/device/rescan", "1",
                       lambda: self._rescan(hctl))

    # -- the kernel's work --------------------------------------------------------------------

    @staticmethod
    def _check_scan(h: SimHost, channel: int | None, target: int | None,
                    lun: int | None) -> None:
        """scsi_scan()'s range checks, on values (backend/writes.py parses the string the same
        way). FC hosts take lun == max_lun, as fc_user_scan's caller does."""
        for v in (channel, target, lun):
            if v is not None and v < 0:
                raise _einval("scan values are unsigned")
        if channel is not None and channel > MAX_CHANNEL:
            raise _einval("channel out of range")
        if target is not None and target >= h.spec.max_id:
            raise _einval("id out of range")
        if lun is not None and (lun > h.spec.max_lun if h.spec.type == "fc"
                                else lun >= h.spec.max_lun):
            raise _einval("lun out of range")

    def _scan(self, h: SimHost, ctl: tuple[int | None, int | None, int | None] | None) -> None:
        """Scan `h` for (channel, target, lun), None each meaning every one; `ctl` None is the
        empty write, which the kernel accepts and does nothing with (after the scan mutex)."""
        if ctl is not None:
            self._check_scan(h, *ctl)
        spec = h.spec
        delay = spec.scan_delay if spec.scan_delay is not None else self.fabric.scan_delay
        with h.scan_lock:
            if delay > 0:
                time.sleep(delay)
            if ctl is None:
                return
            _c, t, lun = ctl
            events: list[UEvent] = []
            with self._lock:
                if spec.type == "fc":
                    # fc_user_scan: only Online rports with a SCSI target id are scanned.
                    for rp in sorted(self.rports.values(), key=lambda r: r.target_id):
                        if rp.host != h.number or rp.state != "Online" or rp.target_id < 0:
                            continue
                        if t not in (None, rp.target_id):
                            continue
                        luns = self.fabric.arrays[rp.array].luns
                        # A targeted scan asks for one LUN: REPORT LUNS, not a walk of them all.
                        wanted = (sorted(self._masked_luns(h, rp.array)) if lun is None else
                                  [lun] if lun in luns and h.wwpn in luns[lun].masked_to else [])
                        for n in wanted:
                            events += self._add_lun(h, 0, rp.target_id, n, rp)
                elif spec.portal:
                    events += self._iscsi_scan(h, t, lun)  # type: ignore[attr-defined]
                else:
                    for disk in spec.disks:
                        if t in (None, disk.target) and lun in (None, disk.lun):
                            events += self._add_lun(h, 0, disk.target, disk.lun, None)
                if events:                  # most targeted scans find nothing new
                    self._touched()
        self._send(events)

    def _delete(self, hctl: HCTL) -> None:
        # sdev_store_delete ignores the value written: any write deletes.
        with self._changing():
            if hctl not in self.luns:
                raise OSError(errno.ENOENT, f"{hctl}: no such device")
            events = self._remove_lun(hctl)
        self._send(events)

    def _rescan(self, hctl: HCTL) -> None:
        """Re-read the capacity: the array's current size reaches the block device (the tree
        changes; nothing the saved state holds does)."""
        events: list[UEvent] = []
        with self._lock:
            if hctl not in self.luns:
                raise OSError(errno.ENOENT, f"{hctl}: no such device")
            rp = self._rport_of(hctl)
            sd = self.blocks.get(hctl)
            if rp is not None and sd is not None:
                spec = self.fabric.arrays[rp.array].luns.get(hctl.lun)
                if spec is not None:
                    bdir = f"{self.luns[hctl]}/block/{sd}"
                    self.fs.set(bdir, "size", str(spec.size // 512))
                    events.append(uevent("change", "block", bdir, "disk", RESIZE="1"))
        self._send(events)

    # -- LUNs ---------------------------------------------------------------------------------

    def _rport_of(self, hctl: HCTL) -> SimRport | None:
        for rp in self.rports.values():
            if rp.host == hctl.host and rp.target_id == hctl.target:
                return rp
        return None

    def _target_dir(self, h: SimHost, c: int, t: int, rport: SimRport | None) -> str:
        parent = (f"{h.devdir}/{rport.name}" if rport else
                  f"{h.devdir}/session{h.session}" if h.session else h.devdir)
        return f"{parent}/target{h.number}:{c}:{t}"

    def _alloc_block(self) -> str:
        # sd takes the lowest free index, so a name freed by a delete is the next one given.
        if self._free_blocks:
            self._free_blocks.sort()
            return block_device_name(self._free_blocks.pop(0))
        i = self._next_block
        self._next_block += 1
        return block_device_name(i)

    @staticmethod
    def _block_index(sd: str) -> int:
        n = 0
        for ch in sd[2:]:
            n = n * 26 + (ord(ch) - ord("a") + 1)
        return n - 1

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
        elif h.session:                     # an iSCSI session: the array behind its portal
            ai, spec = self._iscsi_lun_spec(h, lun)  # type: ignore[attr-defined]
            arr = self.fabric.arrays[ai]
            vendor, model, rev, size, wwid, typ = (arr.vendor, arr.model, arr.rev, spec.size,
                                                   spec.wwid, 0)
        else:
            disk = next(d for d in h.spec.disks if d.target == t and d.lun == lun)
            vendor, model, rev, size, wwid, typ = (disk.vendor, disk.model, disk.rev, disk.size,
                                                   disk.wwid, disk.type)
        events: list[UEvent] = []
        tdir = self._target_dir(h, c, t, rport)
        tname = f"target{h.number}:{c}:{t}"
        if not self.fs.isdir(tdir):
            self.fs.attrs(tdir, {"uevent": "DEVTYPE=scsi_target"})
            self.fs.link(f"bus/scsi/devices/{tname}", tdir)
            events.append(uevent("add", "scsi", tdir, "scsi_target"))
            if rport is not None:
                self.fs.class_dev(tdir, "fc_transport", tname, {
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
        self.fs.attrs(ddir, attrs, writable=("delete", "rescan"))
        self.fs.link(f"bus/scsi/devices/{name}", ddir)
        events.append(uevent("add", "scsi", ddir, "scsi_device"))
        rel = self.fs.class_dev(ddir, "scsi_device", name, {})
        events.append(uevent("add", "scsi_device", rel))
        if typ == 0:
            sd = self._alloc_block()
            bdir = f"{ddir}/block/{sd}"
            idx = self._block_index(sd)
            self.fs.attrs(bdir, {"size": str(size // 512), "dev": f"{8 + 0}:{idx * 16}",
                                 "ro": "0", "removable": "0", "uevent": "DEVTYPE=disk"})
            self.fs.mkdir(f"{bdir}/holders")
            self.fs.mkdir(f"{bdir}/slaves")
            self.fs.link(f"{bdir}/device", ddir)
            self.fs.link(f"class/block/{sd}", bdir)
            self.fs.link(f"block/{sd}", bdir)
            self.blocks[hctl] = sd
            events.append(uevent("add", "block", bdir, "disk"))
        self.luns[hctl] = ddir
        if typ == 0:
            self._mp_path_added(hctl)  # type: ignore[attr-defined]
        return events

    def _remove_lun(self, hctl: HCTL) -> list[UEvent]:
        ddir = self.luns.pop(hctl, None)
        if ddir is None:
            return []
        events: list[UEvent] = []
        name = str(hctl)
        sd = self.blocks.pop(hctl, None)
        if sd is not None:
            # A map loses the path before the path goes (multipathd's ev_remove_path).
            events += self._mp_path_removed(hctl, sd, ddir)  # type: ignore[attr-defined]
            events.append(uevent("remove", "block", f"{ddir}/block/{sd}", "disk"))
            self.fs.unlink(f"class/block/{sd}")
            self.fs.unlink(f"block/{sd}")
            self._free_blocks.append(self._block_index(sd))
        self.dev_states.pop(hctl, None)
        events.append(uevent("remove", "scsi_device", f"{ddir}/scsi_device/{name}"))
        events.append(uevent("remove", "scsi", ddir, "scsi_device"))
        self.fs.unlink(f"class/scsi_device/{name}")
        self.fs.unlink(f"bus/scsi/devices/{name}")
        self.fs.rmtree(ddir)
        # The target goes with its last LUN (scsi_target_reap).
        tdir = os.path.dirname(ddir)
        if not any(k[:3] == hctl[:3] for k in self.luns):
            tname = os.path.basename(tdir)
            self.fs.unlink(f"class/fc_transport/{tname}")
            self.fs.unlink(f"bus/scsi/devices/{tname}")
            self.fs.rmtree(tdir)
            events.append(uevent("remove", "scsi", tdir, "scsi_target"))
        return events

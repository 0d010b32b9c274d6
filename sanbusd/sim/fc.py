"""The FC transport: fabric login (an rport per zoned target port, then a scan of each new
target), NPIV vports and the hosts they bring, and ports and hosts going away.

`vport_create` and `vport_delete` are the Backend's calls, recorded as the fc_host writes the
kernel adapter makes and refused as the kernel refuses them.
"""

from __future__ import annotations

import errno
import zlib

from ..backend.uevent import UEvent
from ..backend.writes import format_vport
from ..model.ids import HEX16_RE, sysfs_wwn_text
from .core import SanCore
from .devices import SimHost, SimRport, SimVport
from .fabric import ArraySpec, PortSpec
from .files import uevent

# A vport's own host before its fabric login: the kernel shows no FC address yet.
NO_PORT_ID = "0xffffffff"


def vport_host_port_id(n: int) -> str:
    return f"0x{0x010000 + n * 0x100:06x}"


class FcMixin(SanCore):
    # -- the Backend's calls ------------------------------------------------------------------

    def vport_create(self, host: int, wwpn: str, wwnn: str) -> None:
        self._recorded(f"class/fc_host/host{host}/vport_create", format_vport(wwpn, wwnn),
                       lambda: self._vport_create(self._npiv_host(host), *_vport_wwns(wwpn, wwnn)))

    def vport_delete(self, host: int, wwpn: str, wwnn: str) -> None:
        self._recorded(f"class/fc_host/host{host}/vport_delete", format_vport(wwpn, wwnn),
                       lambda: self._vport_delete(self._npiv_host(host), *_vport_wwns(wwpn, wwnn)))

    def _npiv_host(self, n: int) -> SimHost:
        h = self._host(n)
        if h.vport or h.spec.max_npiv_vports <= 0:
            # Only a physical port whose driver does NPIV has vport_create: no such file.
            raise OSError(errno.ENOENT, f"host{n}: no vport_create in this driver")
        return h

    # -- fabric login and remote ports ----------------------------------------------------------

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

    def _host_port_state(self, h: SimHost) -> str:
        return self.fs.get(f"class/fc_host/host{h.number}", "port_state")

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

    def _add_rport(self, h: SimHost, ai: int, arr: ArraySpec, port: PortSpec) -> list[UEvent]:
        # fc_remote_port_add reuses the binding (same rport number and target id) for a WWPN it saw.
        key = (ai, port.wwpn)
        tid = h.target_ids.setdefault(key, len(h.target_ids))
        number = tid
        h.rport_next = max(h.rport_next, number + 1)
        name = f"rport-{h.number}:0-{number}"
        rdev = f"{h.devdir}/{name}"
        self.fs.attrs(rdev, {"uevent": ""})
        rel = self.fs.class_dev(rdev, "fc_remote_ports", name, {
            "node_name": sysfs_wwn_text(arr.wwnn), "port_name": sysfs_wwn_text(port.wwpn),
            "port_id": self._rport_port_id(ai, port, tid), "roles": ", ".join(port.roles),
            "port_state": "Online", "scsi_target_id": str(tid), "dev_loss_tmo": "60",
            "fast_io_fail_tmo": "off", "supported_classes": "Class 3",
            "maxframe_size": "2048 bytes"})
        self.rports[name] = SimRport(name=name, host=h.number, number=number, array=ai,
                                     port=port, target_id=tid)
        events = [uevent("add", "fc_remote_ports", rel)]
        for lun in sorted(self._masked_luns(h, ai)):
            events += self._add_lun(h, 0, tid, lun, self.rports[name])
        return events

    @staticmethod
    def _rport_port_id(ai: int, port: PortSpec, tid: int) -> str:
        return port.port_id or f"0x{0x020000 + ai * 0x100 + tid:06x}"

    def _masked_luns(self, h: SimHost, ai: int) -> list[int]:
        return [n for n, spec in self.fabric.arrays[ai].luns.items() if h.wwpn in spec.masked_to]

    def _remove_rport(self, name: str) -> list[UEvent]:
        rp = self.rports.pop(name, None)
        if rp is None:
            return []
        events: list[UEvent] = []
        for hctl in sorted(k for k in self.luns if k.host == rp.host and k.target == rp.target_id):
            events += self._remove_lun(hctl)
        h = self.hosts[rp.host]
        rdev = f"{h.devdir}/{name}"
        events.append(uevent("remove", "fc_remote_ports", f"{rdev}/fc_remote_ports/{name}"))
        self.fs.unlink(f"class/fc_remote_ports/{name}")
        self.fs.rmtree(rdev)
        return events

    # -- NPIV vports ----------------------------------------------------------------------------

    def _vport_create(self, parent: SimHost, wwpn: str, wwnn: str,
                      login_delay: float | None = -1.0) -> None:
        """`login_delay` None: a vport that existed before we started, logged in already;
        -1: the fabric file's login_delay (the write returns before the login, as on HBAs)."""
        if login_delay is not None and login_delay < 0:
            login_delay = self.fabric.login_delay
        with self._changing():
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
            self.fs.attrs(vdev, {"uevent": ""})
            fabric_ok = self.fabric.fabric_npiv.get(parent.fabric, True)
            taken = any(h.wwpn == wwpn for h in self.hosts.values()) or any(
                p.wwpn == wwpn for a in self.fabric.arrays for p in a.ports)
            state = ("Fabric Rejected WWN" if taken else
                     "Active" if fabric_ok and self._host_port_state(parent) == "Online" else
                     "No Fabric Support")
            rel = self.fs.class_dev(vdev, "fc_vports", name, {
                "node_name": sysfs_wwn_text(wwnn), "port_name": sysfs_wwn_text(wwpn),
                "roles": "FCP Initiator", "vport_type": "NPIV VPORT",
                "vport_state": "Initializing", "vport_last_state": "Unknown",
                "symbolic_name": ""}, writable=("vport_delete", "vport_disable"))
            events = [uevent("add", "fc_vports", rel)]
            vh, host_events = self._add_host(parent.spec, parent=parent, vport=name,
                                             wwpn=wwpn, wwnn=wwnn)
            vh.fabric = parent.fabric
            events += host_events
            self.vports[name] = SimVport(name, parent.number, wwpn, wwnn, vh.number,
                                         "Initializing", "Unknown", pending=state)
            self._set_vports_inuse(parent)
            events.append(uevent("change", "fc_host",
                                 f"{parent.devdir}/fc_host/host{parent.number}"))
        self._send(events)
        if login_delay is None:
            self._vport_login(name)
        else:
            self._later(login_delay, self._vport_login, name)

    def _vport_login(self, name: str) -> None:
        with self._changing():
            v = self.vports.get(name)
            if v is None or not v.pending:
                return
            state, v.pending = v.pending, ""
            h = self.hosts[v.host]
            vrel = f"{self.hosts[v.parent].devdir}/{name}/fc_vports/{name}"
            # A vport that never logs in saw its link down first (as a real kernel reports it);
            # one that logs in was Initializing.
            v.last_state = "Initializing" if state == "Active" else "Linkdown"
            v.state = state
            self.fs.set(vrel, "vport_state", state)
            self.fs.set(vrel, "vport_last_state", v.last_state)
            events = [uevent("change", "fc_vports", vrel)]
            fch = f"{h.devdir}/fc_host/host{h.number}"
            if state == "Active":
                self.fs.set(fch, "port_state", "Online")
                self.fs.set(fch, "port_id", vport_host_port_id(h.number))
                events.append(uevent("change", "fc_host", fch))
                events += self._login(h)
        self._send(events)

    def _vport_delete(self, parent: SimHost, wwpn: str, wwnn: str) -> None:
        with self._changing():
            v = next((v for v in self.vports.values() if v.parent == parent.number
                      and v.wwpn == wwpn and v.wwnn == wwnn), None)
            if v is None or v.state == "Initializing":
                raise OSError(errno.ENODEV, "no such vport")
            events = self._remove_host(v.host)
            vdev = f"{parent.devdir}/{v.name}"
            events.append(uevent("remove", "fc_vports", f"{vdev}/fc_vports/{v.name}"))
            self.fs.unlink(f"class/fc_vports/{v.name}")
            self.fs.rmtree(vdev)
            del self.vports[v.name]
            self._set_vports_inuse(parent)
            events.append(uevent("change", "fc_host",
                                 f"{parent.devdir}/fc_host/host{parent.number}"))
        self._send(events)

    def _set_vports_inuse(self, parent: SimHost) -> None:
        in_use = sum(1 for v in self.vports.values() if v.parent == parent.number)
        self.fs.set(f"{parent.devdir}/fc_host/host{parent.number}", "npiv_vports_inuse",
                    str(in_use))

    def _remove_host(self, n: int) -> list[UEvent]:
        h = self.hosts[n]
        events: list[UEvent] = []
        for name in sorted(r.name for r in self.rports.values() if r.host == n):
            events += self._remove_rport(name)
        for hctl in sorted(k for k in self.luns if k.host == n):
            events += self._remove_lun(hctl)
        name = f"host{n}"
        for cls in ("fc_host", "scsi_host"):
            if self.fs.lexists(f"class/{cls}/{name}"):
                events.append(uevent("remove", cls, f"{h.devdir}/{cls}/{name}"))
                self.fs.unlink(f"class/{cls}/{name}")
        events.append(uevent("remove", "scsi", h.devdir, "scsi_host"))
        self.fs.unlink(f"bus/scsi/devices/{name}")
        self.fs.rmtree(h.devdir)
        del self.hosts[n]
        return events

    def _resume_fc(self) -> None:
        """After reopening a saved SAN: the fabric logins that were under way complete."""
        for v in self.vports.values():
            if v.pending:
                self._later(self.fabric.login_delay, self._vport_login, v.name)


def _vport_wwns(wwpn: str, wwnn: str) -> tuple[str, str]:
    """fc_parse_wwn's rule on values: 16 hex digits each (either case), else EINVAL."""
    wwpn, wwnn = wwpn.lower(), wwnn.lower()
    if not (HEX16_RE.fullmatch(wwpn) and HEX16_RE.fullmatch(wwnn)):
        raise OSError(errno.EINVAL, "vport WWN is not 16 hex digits")
    return wwpn, wwnn

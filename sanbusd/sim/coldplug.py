"""Laying out the tree as the kernel has it after boot (coldplug), and adding SCSI hosts: the
physical HBAs of the fabric file, and the hosts NPIV vports bring.
"""

from __future__ import annotations

from ..backend.uevent import UEvent
from ..model.ids import sysfs_wwn_text
from .core import SanCore
from .devices import SimHost
from .fabric import HostSpec
from .fc import NO_PORT_ID
from .files import uevent

# The class and bus directories exist in any kernel that has the subsystems, devices or not.
_SKELETON = ("devices", "class/scsi_host", "class/fc_host", "class/fc_remote_ports",
             "class/fc_transport", "class/scsi_device", "class/block", "class/fc_vports",
             "class/iscsi_host", "class/iscsi_session", "class/iscsi_connection",
             "class/sas_host", "bus/scsi/devices", "block")


class ColdplugMixin(SanCore):
    def build(self) -> None:
        """Lay out the coldplug state afresh: every host, its logged-in ports and their masked
        LUNs, and the vports that exist at start."""
        with self._changing():
            self.fs.wipe()
            for d in _SKELETON:
                self.fs.mkdir(d)
            self._mp_setup(fresh=True)  # type: ignore[attr-defined]
            for spec in self.fabric.hosts:
                self._add_host(spec)
            for h in list(self.hosts.values()):
                if h.spec.type == "fc":
                    self._login(h)
                elif h.spec.portal:
                    self._iscsi_login(h)  # type: ignore[attr-defined]
                else:
                    for disk in h.spec.disks:
                        self._add_lun(h, 0, disk.target, disk.lun, None)
            for h in list(self.hosts.values()):
                for wwpn, wwnn in h.spec.vports:
                    self._vport_create(h, wwpn, wwnn, login_delay=None)
            # multipathd starts after the disks are there and makes the maps its policy allows.
            self._mp_adopt_new()  # type: ignore[attr-defined]
            if self.write_log is not None:
                self.write_log.clear()
            self.writes = []
            self.save()                     # the SAN as laid out, on disk at once

    def _add_host(self, spec: HostSpec, parent: SimHost | None = None, vport: str = "",
                  wwpn: str = "", wwnn: str = "") -> tuple[SimHost, list[UEvent]]:
        n = self._next_host
        self._next_host += 1
        if parent is not None:
            devdir = f"{parent.devdir}/{vport}/host{n}"
        elif spec.type == "iscsi":
            devdir = f"devices/platform/host{n}"
        else:
            devdir = f"devices/pci0000:00/0000:00:{self._pci_slot:02x}.0/host{n}"
            self._pci_slot += 1
        h = SimHost(number=n, devdir=devdir, spec=spec, wwpn=wwpn or spec.wwpn,
                    wwnn=wwnn or spec.wwnn, fabric=spec.fabric, vport=vport)
        self.hosts[n] = h
        name = f"host{n}"
        self.fs.attrs(devdir, {"uevent": "DEVTYPE=scsi_host"})
        self.fs.link(f"bus/scsi/devices/{name}", devdir)
        events = [uevent("add", "scsi", devdir, "scsi_host")]
        rel = self.fs.class_dev(devdir, "scsi_host", name, {
            "proc_name": spec.driver, "state": "running", "unique_id": str(n),
            "active_mode": "Initiator", "supported_mode": "Initiator", "can_queue": "1024",
            "host_busy": "0"}, writable=("scan", "host_reset"))
        events.append(uevent("add", "scsi_host", rel))
        if spec.type == "fc":
            fc = {"node_name": sysfs_wwn_text(h.wwnn), "port_name": sysfs_wwn_text(h.wwpn),
                  "permanent_port_name": sysfs_wwn_text(h.wwpn),
                  "fabric_name": self._fabric_name(h),
                  # a vport's own host has no FC address and no link until its fabric login
                  "port_id": (NO_PORT_ID if parent is not None else
                              spec.port_id or f"0x{0x010000 + n * 0x100:06x}"),
                  "port_state": spec.port_state if parent is None else "Linkdown",
                  # libfc (fcoe) shows a vport's host as an N_Port; lpfc, qla2xxx as NPIV
                  "port_type": (spec.port_type if parent is None else
                                "NPort (fabric via point-to-point)" if spec.driver == "fcoe"
                                else "NPIV VPORT"),
                  "speed": spec.speed, "supported_speeds": "4 Gbit, 8 Gbit, 16 Gbit",
                  "supported_classes": "Class 3", "symbolic_name": f"{spec.driver} sim",
                  "dev_loss_tmo": "60", "tgtid_bind_type": "wwpn (World Wide Port Name)",
                  "maxframe_size": "2048 bytes"}
            writable: tuple[str, ...] = ("issue_lip",)
            if parent is None and spec.max_npiv_vports > 0:
                fc["max_npiv_vports"] = str(spec.max_npiv_vports)
                fc["npiv_vports_inuse"] = "0"
                writable += ("vport_create", "vport_delete")
            rel = self.fs.class_dev(devdir, "fc_host", name, fc, writable)
            events.append(uevent("add", "fc_host", rel))
        elif spec.type in ("iscsi", "sas"):
            cls = "iscsi_host" if spec.type == "iscsi" else "sas_host"
            rel = self.fs.class_dev(devdir, cls, name, {})
            events.append(uevent("add", cls, rel))
        return h, events

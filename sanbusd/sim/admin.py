"""The SAN admin's side, driven by `sanbusd-sim` through the control socket, never by the daemon:
target ports leaving and rejoining the fabric, LUNs masked to or from initiators, LUNs grown.

What hosts notice is what a real host notices: an rport that blocks and goes after dev_loss_tmo,
a fabric login, a unit attention on the LUNs they have. They never see new LUNs without a scan.
"""

from __future__ import annotations

from ..backend.uevent import LUNS_CHANGED_UA, UEvent
from .core import SanAdminError, SanCore
from .fabric import LunSpec, PortSpec, generated_wwid
from .files import uevent


class AdminMixin(SanCore):
    def _array_port(self, wwpn: str) -> tuple[int, PortSpec]:
        for ai, arr in enumerate(self.fabric.arrays):
            for p in arr.ports:
                if p.wwpn == wwpn:
                    return ai, p
        ports = ", ".join(p.wwpn for a in self.fabric.arrays for p in a.ports) or "none"
        raise SanAdminError(f"no array port with WWPN {wwpn} (array ports: {ports})")

    def _array_index(self, name: str) -> int:
        for ai, arr in enumerate(self.fabric.arrays):
            if arr.name == name:
                return ai
        names = ", ".join(a.name for a in self.fabric.arrays) or "none"
        raise SanAdminError(f"no array named {name!r} (arrays: {names})")

    def array_lun(self, array: str, lun: int) -> tuple[int, LunSpec]:
        """The array's index and its LUN `lun`; SanAdminError naming what exists if none."""
        ai = self._array_index(array)
        spec = self.fabric.arrays[ai].luns.get(lun)
        if spec is None:
            raise SanAdminError(f"array {array} has no LUN {lun}")
        return ai, spec

    def port_down(self, wwpn: str) -> None:
        """A target port leaves the fabric: its rports block, then go after dev_loss_tmo."""
        with self._changing():
            self._array_port(wwpn)
            names = [r.name for r in self.rports.values() if r.port.wwpn == wwpn]
            events = []
            for name in names:
                events += self._block_rport(self.rports[name])
        self._send(events)
        self._later(self.fabric.dev_loss_tmo, self._dev_loss, names)

    def _block_rport(self, r) -> list[UEvent]:
        """fc_remote_port_delete: the rport blocks and so do its SCSI devices (no uevent for
        theirs); multipathd's checker fails their paths."""
        r.state = "Blocked"
        rel = f"class/fc_remote_ports/{r.name}"
        self.fs.set(rel, "port_state", "Blocked")
        events = [uevent("change", "fc_remote_ports", self.fs.devpath(rel))]
        hctls = [h for h in self._lun_hctls(r.host, r.target_id)
                 if self._set_device_state(h, "blocked")]
        return events + self._devices_changed(hctls)

    def _unblock_rport(self, r) -> list[UEvent]:
        r.state = "Online"
        rel = f"class/fc_remote_ports/{r.name}"
        self.fs.set(rel, "port_state", "Online")
        events = [uevent("change", "fc_remote_ports", self.fs.devpath(rel))]
        hctls = [h for h in self._lun_hctls(r.host, r.target_id)
                 if self.dev_states.get(h) == "blocked" and self._set_device_state(h, "running")]
        return events + self._devices_changed(hctls)

    def _dev_loss(self, names: list[str]) -> None:
        with self._changing():
            events: list[UEvent] = []
            for name in names:
                rp = self.rports.get(name)
                if rp is not None and rp.state == "Blocked":
                    events += self._remove_rport(name)
        self._send(events)

    def port_up(self, wwpn: str) -> None:
        """A target port (re)joins the fabric: every zoned initiator logs in and scans it."""
        with self._changing():
            ai, port = self._array_port(wwpn)
            events: list[UEvent] = []
            for h in list(self.hosts.values()):
                if h.spec.type != "fc" or h.fabric != port.fabric:
                    continue
                blocked = [r for r in self.rports.values()
                           if r.host == h.number and r.port.wwpn == wwpn]
                if blocked:
                    for r in blocked:
                        events += self._unblock_rport(r)
                elif self._host_port_state(h) == "Online":
                    events += self._add_rport(h, ai, self.fabric.arrays[ai], port)
        self._send(events)

    def hold_open(self, block: str, by: str) -> None:
        """Someone on the host opens a disk or a multipath map (a VM's QEMU, a mount): it is
        in use. A map is named by dm-N or by its name (mpatha)."""
        with self._changing():
            name = self._resolve_open(block)
            if name not in self.blocks.values() and name not in self.maps:
                raise SanAdminError(f"no disk or multipath map {block!r}; `sanbusd-sim "
                                    "status` lists them")
            self.opened[name] = by

    def release(self, block: str) -> None:
        """The holder closes it; a map whose deferred remove waited for that goes now."""
        with self._changing():
            name = self._resolve_open(block)
            if self.opened.pop(name, None) is None:
                raise SanAdminError(f"{block!r} is not held open")
            events = self._released(name)
        self._send(events)

    def block_users(self, block: str) -> list[str]:
        """Who holds the disk (sdX) or the map (dm-N) open."""
        with self._lock:
            return [self.opened[block]] if block in self.opened else []

    def _fabric_hosts(self, name: str) -> list:
        known = {h.fabric for h in self.hosts.values()} | {
            p.fabric for a in self.fabric.arrays for p in a.ports}
        if name not in known:
            raise SanAdminError(f"no fabric named {name!r}; the fabric file names "
                                + ", ".join(sorted(f for f in known if f)))
        return [h for h in self.hosts.values() if h.spec.type == "fc" and h.fabric == name]

    def fabric_down(self, name: str) -> None:
        """The fabric's switch goes away: every port on it loses its link, its remote ports
        block (and go after dev_loss_tmo), and its vports go Linkdown."""
        with self._changing():
            events: list[UEvent] = []
            names = []
            hosts = self._fabric_hosts(name)
            for h in hosts:
                fch = f"{h.devdir}/fc_host/host{h.number}"
                self.fs.set(fch, "port_state", "Linkdown")
                events.append(uevent("change", "fc_host", fch))
                for r in self.rports.values():
                    if r.host == h.number and r.state != "Blocked":
                        events += self._block_rport(r)
                        names.append(r.name)
            numbers = {h.number for h in hosts}
            for v in self.vports.values():
                if v.parent in numbers and v.state != "Linkdown":
                    v.last_state, v.state = v.state, "Linkdown"
                    events += self._vport_files(v)
        self._send(events)
        self._later(self.fabric.dev_loss_tmo, self._dev_loss, names)

    def fabric_up(self, name: str) -> None:
        """The switch is back: ports log in again (remote ports come back and are scanned),
        and vports log in again if the switch does NPIV."""
        with self._changing():
            events: list[UEvent] = []
            hosts = self._fabric_hosts(name)
            npiv = self.fabric.fabric_npiv.get(name, True)
            vport_hosts = {v.host for v in self.vports.values()}
            for h in hosts:
                if h.number in vport_hosts:
                    continue            # a vport's host comes up with its vport's login
                fch = f"{h.devdir}/fc_host/host{h.number}"
                self.fs.set(fch, "port_state", h.spec.port_state)
                events.append(uevent("change", "fc_host", fch))
            numbers = {h.number for h in hosts}
            for v in self.vports.values():
                if v.parent in numbers and v.state == "Linkdown":
                    v.last_state, v.state = v.state, "Active" if npiv else "No Fabric Support"
                    events += self._vport_files(v)
                    if v.state == "Active":
                        fch = f"{self.hosts[v.host].devdir}/fc_host/host{v.host}"
                        self.fs.set(fch, "port_state", "Online")
                        events.append(uevent("change", "fc_host", fch))
            for h in hosts:
                for r in self.rports.values():
                    if r.host == h.number and r.state == "Blocked":
                        events += self._unblock_rport(r)
                events += self._login(h)
        self._send(events)

    def _vport_files(self, v) -> list[UEvent]:
        vrel = f"{self.hosts[v.parent].devdir}/{v.name}/fc_vports/{v.name}"
        self.fs.set(vrel, "vport_state", v.state)
        self.fs.set(vrel, "vport_last_state", v.last_state)
        return [uevent("change", "fc_vports", vrel)]

    def provision(self, array: str, lun: int, size: int, initiators: set[str],
                  wwid: str = "") -> None:
        """The array admin maps LUN `lun` to initiator WWPNs. Hosts learn of it only through a
        unit attention on LUNs they already have (REPORTED LUNS DATA HAS CHANGED), then a scan."""
        with self._changing():
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
        """Unmap on the array. As on a real SAN the hosts' LUN paths stay (stale) until deleted."""
        with self._changing():
            ai, spec = self.array_lun(array, lun)
            affected = set(spec.masked_to) if initiators is None else initiators
            spec.masked_to -= affected
            events = self._unit_attention(ai, affected)
        self._send(events)

    def resize(self, array: str, lun: int, size: int) -> None:
        """The array admin grows a LUN. Hosts see the new size after a rescan of the device."""
        with self._changing():
            ai, spec = self.array_lun(array, lun)
            spec.size = size
            events = [uevent("change", "scsi", ddir, "scsi_device",
                             SDEV_UA="CAPACITY_DATA_HAS_CHANGED")
                      for hctl, ddir in sorted(self.luns.items())
                      if hctl.lun == lun and (rp := self._rport_of(hctl)) is not None
                      and rp.array == ai]
        self._send(events)

    def _unit_attention(self, ai: int, initiators: set[str]) -> list[UEvent]:
        events = []
        heard: dict[str, int] = {}      # iSCSI initiator name -> the session host that hears it
        for hctl, ddir in sorted(self.luns.items()):
            h = self.hosts[hctl.host]
            if h.session:
                # LIO queues the unit attention per ACL (the initiator's name), not per session:
                # the first command through any of the initiator's sessions takes it. Here the
                # session with the lowest host number hears it.
                if self._iscsi_array(h) != ai or h.spec.initiator not in initiators:  # type: ignore[attr-defined]
                    continue
                if heard.setdefault(h.spec.initiator, h.number) != h.number:
                    continue
                events.append(uevent("change", "scsi", ddir, "scsi_device", SDEV_UA=LUNS_CHANGED_UA))
                continue
            rp = self._rport_of(hctl)
            if rp is None or rp.array != ai or h.wwpn not in initiators:
                continue
            events.append(uevent("change", "scsi", ddir, "scsi_device", SDEV_UA=LUNS_CHANGED_UA))
        return events

    def _resume_admin(self) -> None:
        """After reopening a saved SAN: ports that were down when it stopped still lose their
        rports after dev_loss_tmo."""
        blocked = [r.name for r in self.rports.values() if r.state == "Blocked"]
        if blocked:
            self._later(self.fabric.dev_loss_tmo, self._dev_loss, blocked)

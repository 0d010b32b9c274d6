"""Read the SCSI/FC/NPIV/multipath picture from a sysfs tree into Inventory records.

One reader for both worlds: the real /sys, and the simulated SAN's tree (sanbusd/sim lays it out
with the kernel's names and formats). Which kinds of record exist and how a burst of events is
re-read is said once, in sanbusd/kinds.py; this module only knows how to read one record. A tree that is missing attributes, has odd names or loses a
device while we read it yields records with what could be read; each gap is logged once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..model.ids import (HCTL, host_number, parse_hctl, parse_roles, parse_rport_name,
                         parse_target_name, parse_vport_name, session_number, sysfs_wwn)
from ..model.records import (FcPort, IscsiSession, Lun, MultipathMap, RemotePort, ScsiHost,
                             Vport)

log = logging.getLogger(__name__)


class SysfsReader:
    def __init__(self, root: str | os.PathLike = "/sys") -> None:
        self.root = Path(root)
        self._gaps_logged: set[tuple[str, str]] = set()

    # -- small readers ------------------------------------------------------------------------

    def _gap(self, where: str, attr: str, err: Exception) -> None:
        key = (where.split("/")[0], attr)
        if key not in self._gaps_logged:
            self._gaps_logged.add(key)
            log.warning("sysfs: cannot read %s/%s (%s); publishing without it",
                        where, attr, err.__class__.__name__)

    def _attr(self, d: str, attr: str, where: str, *, quiet: bool = False,
              misses: list[tuple[str, Exception]] | None = None) -> str:
        # os.open/os.read, not open(): at 16,384 LUNs x 8 attributes the io stack's overhead
        # is most of the start-up time.
        try:
            fd = os.open(f"{d}/{attr}", os.O_RDONLY)
            try:
                return os.read(fd, 4096).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
        except (OSError, ValueError) as e:
            if quiet:
                pass
            elif misses is not None:    # the caller decides: a gap, or a device going away
                misses.append((attr, e))
            else:
                self._gap(where, attr, e)
            return ""

    @staticmethod
    def _int(text: str, default: int) -> int:
        try:
            return int(text, 0) if text.startswith("0x") else int(text)
        except ValueError:
            return default

    def _listdir(self, d: str) -> list[str]:
        try:
            return os.listdir(d)
        except OSError:
            return []

    def _class(self, cls: str) -> str:
        return str(self.root / "class" / cls)

    # -- records ------------------------------------------------------------------------------

    def host_numbers(self) -> list[int]:
        nums = (host_number(n) for n in self._listdir(self._class("scsi_host")))
        return sorted(n for n in nums if n is not None)

    def read_host(self, n: int) -> ScsiHost | None:
        name = f"host{n}"
        d = os.path.join(self._class("scsi_host"), name)
        if not os.path.isdir(d):
            return None
        where = f"scsi_host/{name}"
        driver = self._attr(d, "proc_name", where)
        state = self._attr(d, "state", where)
        unique_id = self._int(self._attr(d, "unique_id", where, quiet=True), 0)
        fc = None
        vport = ""
        fcd = os.path.join(self._class("fc_host"), name)
        if os.path.isdir(fcd):
            transport = "fc"
            fc = self._read_fc(fcd, f"fc_host/{name}")
            vport = self._vport_of_host_dir(d)
        elif os.path.isdir(os.path.join(self._class("iscsi_host"), name)):
            transport = "iscsi"
        elif os.path.isdir(os.path.join(self._class("sas_host"), name)):
            transport = "sas"
        else:
            transport = "other"
        return ScsiHost(number=n, driver=driver, state=state, unique_id=unique_id,
                        transport=transport, fc=fc, vport=vport)

    def _vport_of_host_dir(self, host_class_dir: str) -> str:
        # The vport's scsi_host hangs below the vport device: .../hostP/vport-P:0-N/hostM/...
        try:
            real = os.path.realpath(host_class_dir)
        except OSError:
            return ""
        for part in reversed(Path(real).parts):
            if parse_vport_name(part):
                return part
        return ""

    def _read_fc(self, d: str, where: str) -> FcPort:
        a = lambda attr, quiet=False: self._attr(d, attr, where, quiet=quiet)  # noqa: E731
        capable = os.path.exists(os.path.join(d, "vport_create"))
        return FcPort(
            wwnn=sysfs_wwn(a("node_name")), wwpn=sysfs_wwn(a("port_name")),
            fabric_name=sysfs_wwn(a("fabric_name", True)), port_state=a("port_state"),
            port_type=a("port_type", True), port_id=a("port_id", True), speed=a("speed", True),
            symbolic_name=a("symbolic_name", True), npiv_capable=capable,
            max_vports=self._int(a("max_npiv_vports", not capable), 0),
            vports_in_use=self._int(a("npiv_vports_inuse", not capable), 0))

    def rport_names(self) -> list[str]:
        return sorted(n for n in self._listdir(self._class("fc_remote_ports"))
                      if parse_rport_name(n))

    def read_rport(self, name: str) -> RemotePort | None:
        parsed = parse_rport_name(name)
        d = os.path.join(self._class("fc_remote_ports"), name)
        if parsed is None or not os.path.isdir(d):
            return None
        where = f"fc_remote_ports/{name}"
        return RemotePort(
            name=name, host=parsed[0], channel=parsed[1],
            wwpn=sysfs_wwn(self._attr(d, "port_name", where)),
            wwnn=sysfs_wwn(self._attr(d, "node_name", where)),
            port_id=self._attr(d, "port_id", where, quiet=True),
            roles=parse_roles(self._attr(d, "roles", where)),
            port_state=self._attr(d, "port_state", where),
            scsi_target_id=self._int(self._attr(d, "scsi_target_id", where), -1))

    def lun_ids(self) -> list[HCTL]:
        ids = (parse_hctl(n) for n in self._listdir(self._class("scsi_device")))
        return sorted(h for h in ids if h is not None)

    def read_lun(self, hctl: HCTL, rports: dict[str, RemotePort] | None = None) -> Lun | None:
        """`rports`: the remote ports already read, so a LUN's target WWPN is not read again."""
        name = str(hctl)
        # /sys/bus/scsi/devices/H:C:T:L links to the device; one readlink tells the rport it
        # hangs under (…/rport-H:C-N/targetH:C:T/H:C:T:L) without resolving every component.
        real = f"{self.root}/bus/scsi/devices/{name}"
        try:
            link = os.readlink(real)
        except OSError:
            return None
        if not os.path.isdir(real):
            return None
        where = f"scsi_device/{name}"
        rport = ""
        for part in link.split("/"):
            if part.startswith("rport-"):
                rport = part
        target_wwpn = ""
        if rport:
            if rports is not None and rport in rports:
                target_wwpn = rports[rport].wwpn
            else:
                target_wwpn = sysfs_wwn(self._attr(
                    os.path.join(self._class("fc_remote_ports"), rport), "port_name", where,
                    quiet=True))
        misses: list[tuple[str, Exception]] = []
        blocks = self._listdir(os.path.join(real, "block"))
        block = sorted(blocks)[0] if blocks else ""
        size = 0
        holder = ""
        if block:
            bd = os.path.join(real, "block", block)
            size = self._int(self._attr(bd, "size", where, misses=misses), 0) * 512
            holders = sorted(self._listdir(os.path.join(bd, "holders")))
            holder = holders[0] if holders else ""
        lun = Lun(
            hctl=hctl, vendor=self._attr(real, "vendor", where, misses=misses),
            model=self._attr(real, "model", where, misses=misses),
            rev=self._attr(real, "rev", where, misses=misses),
            type=self._int(self._attr(real, "type", where, misses=misses), -1),
            # LUNs without VPD page 0x83 (LIO ramdisks, say) answer ENXIO here: not a gap.
            wwid=self._attr(real, "wwid", where, quiet=True),
            state=self._attr(real, "state", where, misses=misses), size=size, block=block,
            rport=rport, target_wwpn=target_wwpn, holder=holder)
        if misses:
            # The kernel removes a device's scsi_device class entry first, then its attributes,
            # then its directory: attributes missing while that entry is gone mean the LUN went
            # away during the read (a delete, a lost path), not a gap. Its remove events follow.
            if not os.path.lexists(os.path.join(self._class("scsi_device"), name)):
                return None
            for attr, err in misses:
                self._gap(where, attr, err)
        return lun

    def vport_names(self) -> list[str]:
        return sorted(n for n in self._listdir(self._class("fc_vports")) if parse_vport_name(n))

    def read_vport(self, name: str) -> Vport | None:
        parsed = parse_vport_name(name)
        d = os.path.join(self._class("fc_vports"), name)
        if parsed is None or not os.path.isdir(d):
            return None
        where = f"fc_vports/{name}"
        host = None
        for entry in self._listdir(os.path.join(d, "device")):
            n = host_number(entry)
            if n is not None:
                host = n
        return Vport(
            name=name, parent=parsed[0],
            wwpn=sysfs_wwn(self._attr(d, "port_name", where)),
            wwnn=sysfs_wwn(self._attr(d, "node_name", where)),
            state=self._attr(d, "vport_state", where),
            last_state=self._attr(d, "vport_last_state", where, quiet=True), host=host)

    def session_names(self) -> list[str]:
        return sorted((n for n in self._listdir(self._class("iscsi_session"))
                       if session_number(n) is not None), key=session_number)

    def read_session(self, name: str) -> IscsiSession | None:
        d = os.path.join(self._class("iscsi_session"), name)
        if session_number(name) is None or not os.path.isdir(d):
            return None
        where = f"iscsi_session/{name}"
        host = None
        try:
            # .../platform/hostH/sessionN/iscsi_session/sessionN: the host is the session
            # device's parent.
            host = host_number(os.path.basename(os.path.dirname(
                os.path.realpath(os.path.join(d, "device")))))
        except OSError:
            pass
        conn = os.path.join(self._class("iscsi_connection"), f"connection{name[7:]}:0")
        address = self._attr(conn, "persistent_address", where, quiet=True) or \
            self._attr(conn, "address", where, quiet=True)
        port = self._attr(conn, "persistent_port", where, quiet=True) or \
            self._attr(conn, "port", where, quiet=True)
        return IscsiSession(
            name=name, host=host, target_name=self._attr(d, "targetname", where),
            state=self._attr(d, "state", where),
            tpgt=self._int(self._attr(d, "tpgt", where, quiet=True), 0),
            initiator_name=self._attr(d, "initiatorname", where, quiet=True),
            address=address if address != "(null)" else "", port=self._int(port, 0),
            recovery_tmo=self._int(self._attr(d, "recovery_tmo", where, quiet=True), 0))

    def map_names(self) -> list[str]:
        out = []
        for n in self._listdir(self._class("block")):
            if n.startswith("dm-") and self._attr(
                    os.path.join(self._class("block"), n, "dm"), "uuid", n,
                    quiet=True).startswith("mpath-"):
                out.append(n)
        return sorted(out)

    def read_map(self, dm: str) -> MultipathMap | None:
        d = os.path.join(self._class("block"), dm)
        uuid = self._attr(os.path.join(d, "dm"), "uuid", f"block/{dm}", quiet=True)
        if not uuid.startswith("mpath-"):
            return None
        return MultipathMap(
            dm=dm, name=self._attr(os.path.join(d, "dm"), "name", f"block/{dm}"),
            wwid=uuid[len("mpath-"):],
            size=self._int(self._attr(d, "size", f"block/{dm}"), 0) * 512,
            slaves=tuple(sorted(self._listdir(os.path.join(d, "slaves")))))

    def lun_of_block(self, block: str) -> HCTL | None:
        try:
            real = os.path.realpath(os.path.join(self._class("block"), block))
        except OSError:
            return None
        for part in reversed(Path(real).parts):
            h = parse_hctl(part)
            if h:
                return h
        return None

    def host_exists(self, n: int) -> bool:
        return os.path.isdir(os.path.join(self._class("scsi_host"), f"host{n}"))

    def scan_targets(self, host: int) -> tuple[bool, list[tuple[int, int]], list[tuple[int, int]]]:
        """What a targeted scan of `host` may address, fresh from sysfs: (is FC, (channel,
        scsi_target_id) of its Online target rports, (channel, id) of its known SCSI targets).
        None of it when the host is gone (KeyError)."""
        h = self.read_host(host)
        if h is None:
            raise KeyError(host)
        fc_targets = []
        for name in self.rport_names():
            if name.startswith(f"rport-{host}:"):
                r = self.read_rport(name)
                if r is not None and r.port_state == "Online" and r.scsi_target_id >= 0:
                    fc_targets.append((r.channel, r.scsi_target_id))
        known = []
        for entry in self._listdir(os.path.join(self.root, "bus", "scsi", "devices")):
            t = parse_target_name(entry)
            if t is not None and t[0] == host:
                known.append((t[1], t[2]))
        return h.transport == "fc", fc_targets, known

"""The simulated SAN: a fabric laid out as a sysfs-shaped tree, with the kernel's write semantics.

Like libvirt's test:///default, this is a product feature: the demo and most tests run on it. It
writes the tree that the real reader (backend/sysfs.py) reads, with the kernel's names, links and
formats, so `lsscsi --sysfsroot DIR/sys` reads it too. The Backend's calls (scan_host, delete_lun,
rescan_lun, vport_create, vport_delete) are serviced as the kernel services the sysfs writes the
kernel adapter makes for them, with the kernel's errnos and uevents. Every call is recorded as
that write, so tests can prove that bad input never reached "sysfs".

The SAN side (which LUNs an array masks to which initiator, ports going down, multipath maps) is
changed by the SAN admin through `sanbusd-sim` (control.py), never by the daemon.

The parts, one module each, put together here:

    coldplug.py   the tree as after boot; SCSI hosts
    scsi.py       scans; LUNs and their block devices
    fc.py         fabric login, remote ports, NPIV vports
    iscsi.py      iSCSI sessions logged in to an array's portals; a portal going silent
    admin.py      the SAN admin's changes
    multipath.py  dm-multipath maps over a LUN's paths, and multipathd's part in them
    multipathd.py multipathd's configuration, JSON and command socket
    persist.py    the state in DIR/state.json: the SAN outlives the daemon
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from ..backend.writes import SCAN_WILD_CARD, parse_scan_write, parse_vport_write
from ..model.ids import host_number, parse_hctl
from . import persist
from .admin import AdminMixin
from .coldplug import ColdplugMixin
from .core import SanAdminError
from .devices import SimHost
from .fabric import load_fabric
from .fc import FcMixin
from .iscsi import IscsiMixin
from .multipath import MultipathMixin
from .scsi import MAX_CHANNEL, ScsiMixin

__all__ = ["SanAdminError", "SimulatedSan"]

log = logging.getLogger(__name__)


class SimulatedSan(ColdplugMixin, ScsiMixin, FcMixin, IscsiMixin, AdminMixin, MultipathMixin):
    @classmethod
    def open(cls, fabric_file: str | os.PathLike, directory: str | os.PathLike,
             fresh: bool = False) -> "SimulatedSan":
        """The SAN in `directory` (its tree in DIR/sys, its state in DIR/state.json), as it was
        when the last daemon stopped; laid out afresh from `fabric_file` when `fresh`, when there
        is none, or when it was laid out from a different fabric file."""
        directory = Path(directory)
        fabric = load_fabric(fabric_file)   # a bad file is an error even when the state is reused
        origin = {"file": os.path.abspath(fabric_file), "digest": persist.digest(fabric_file)}
        san = cls(fabric, directory / "sys", state_file=directory / persist.STATE_FILE)
        why = "asked to lay it out afresh" if fresh else san._reopen(origin)
        if why is None:
            log.info("reusing the simulated SAN in %s (%d hosts, %d LUN paths, %d writes so "
                     "far)", directory, len(san.hosts), len(san.luns), len(san.writes))
            return san
        log.info("laying out the simulated SAN in %s from %s: %s", directory, fabric_file, why)
        san.origin = origin
        san.build()
        return san

    def _reopen(self, origin: dict[str, str]) -> str | None:
        """Carry on from the saved state; None if that worked, else why it cannot be used."""
        if self.state_file is None or not self.state_file.exists():
            return "no simulated SAN there yet"
        if not self.root.is_dir():
            return f"{self.root} is missing"
        try:
            state = persist.load(self.state_file)
        except (OSError, persist.StateError) as e:
            return str(e)
        was = state.get("origin") or {}
        if was.get("digest") != origin["digest"]:
            return (f"the fabric file differs from the one the SAN there was laid out from "
                    f"({was.get('file', 'unknown')})")
        try:
            persist.restore(self, state)
        except persist.StateError as e:
            return str(e)
        self._mp_setup(fresh=False)     # multipathd reads its configuration and files
        # Work the kernel had under way when the last daemon stopped goes on.
        self._resume_fc()
        self._resume_iscsi()
        self._resume_admin()
        return None

    # -- raw writes -----------------------------------------------------------------------------

    def write(self, rel: str, data: str) -> None:
        """Service a write of the string `data` to DIR/sys/<rel>, parsed as the kernel parses it
        (backend/writes.py), or raise OSError with its errno. For replaying exact kernel strings;
        the daemon makes the typed calls."""
        self._recorded(rel, data, lambda: self._dispatch_write(rel, data))

    def _dispatch_write(self, rel: str, data: str) -> None:
        parts = rel.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["class", "scsi_host"] and parts[3] == "scan":
            h = self._host_named(parts[2])
            parsed = parse_scan_write(data, MAX_CHANNEL, h.spec.max_id, h.spec.max_lun,
                                      fc=h.spec.type == "fc")
            ctl = None if parsed is None else tuple(
                None if v == SCAN_WILD_CARD else v for v in parsed)
            return self._scan(h, ctl)  # type: ignore[arg-type]
        if len(parts) == 5 and parts[:2] == ["class", "scsi_device"] and parts[3] == "device":
            hctl = parse_hctl(parts[2])
            if hctl is None:
                raise OSError(errno.ENOENT, f"{parts[2]}: no such device")
            if parts[4] == "delete":
                return self._delete(hctl)
            if parts[4] == "rescan":
                return self._rescan(hctl)
            if parts[4] == "state":
                # store_state_field: a state's name then a newline, exactly ("echo offline >").
                if not data.endswith("\n"):
                    raise OSError(errno.EINVAL, "device/state needs a newline")
                return self.device_state(hctl, data[:-1])
        if len(parts) == 4 and parts[:2] == ["class", "fc_host"]:
            h = self._host_named(parts[2])
            if parts[3] in ("vport_create", "vport_delete"):
                h = self._npiv_host(h.number)
                wwpn, wwnn = parse_vport_write(data)
                if parts[3] == "vport_create":
                    return self._vport_create(h, wwpn, wwnn)
                return self._vport_delete(h, wwpn, wwnn)
            if parts[3] == "issue_lip":
                return None
        raise OSError(errno.EACCES, f"{rel}: not a writable attribute")

    def _host_named(self, name: str) -> SimHost:
        n = host_number(name)
        if n is None:
            raise OSError(errno.ENOENT, f"{name}: no such host")
        return self._host(n)

"""Kernel uevents, from udev (pyudev) or from the simulated SAN, and what records they touch.

Both worlds produce UEvent; `dirty_from_event` is the one place that decides which inventory keys a
uevent makes stale (the filter half of lvmdbusd's udevwatch; the coalescing half is in state.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..model.ids import (host_number, parse_hctl, parse_rport_name, parse_target_name,
                         parse_vport_name, session_number)
from ..model.records import Dirty

# The subsystems whose events can change what we publish; everything else is dropped unread.
SUBSYSTEMS = ("scsi_host", "fc_host", "fc_vports", "fc_remote_ports", "scsi", "scsi_device",
              "block", "iscsi_host", "fc_transport", "iscsi_session", "iscsi_connection")


@dataclass(frozen=True, slots=True)
class UEvent:
    action: str                     # add | remove | change | bind | unbind | move
    subsystem: str
    devpath: str                    # /devices/... (relative to the sysfs root)
    devtype: str = ""
    properties: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def sys_name(self) -> str:
        return os.path.basename(self.devpath)


LUNS_CHANGED_UA = "REPORTED_LUNS_DATA_HAS_CHANGED"


def dirty_from_event(ev: UEvent) -> Dirty:
    d = Dirty()
    name = ev.sys_name
    sub = ev.subsystem
    if sub in ("scsi_host", "fc_host", "iscsi_host"):
        if (n := host_number(name)) is not None:
            d.hosts.add(n)
    elif sub == "fc_vports":
        if (v := parse_vport_name(name)) is not None:
            d.vports.add(name)
            d.hosts.add(v[0])       # the parent's npiv_vports_inuse moves
    elif sub == "fc_remote_ports":
        if parse_rport_name(name) is not None:
            d.rports.add(name)
    elif sub in ("scsi", "scsi_device"):
        if (h := parse_hctl(name)) is not None:
            d.luns.add(h)
        elif (n := host_number(name)) is not None:
            d.hosts.add(n)
        elif parse_target_name(name) is not None:
            pass                    # targets carry nothing we publish; their LUNs send their own
    elif sub == "iscsi_session":
        if session_number(name) is not None:
            d.sessions.add(name)
    elif sub == "iscsi_connection":
        # connectionN:0 belongs to sessionN
        number = name.removeprefix("connection").split(":", 1)[0]
        if number.isdigit():
            d.sessions.add(f"session{int(number)}")
    elif sub == "fc_transport":
        pass
    elif sub == "block":
        if name.startswith("dm-"):
            d.maps.add(name)
        elif ev.devtype != "partition":
            # The devpath names the LUN (.../H:C:T:L/block/sdX) even on remove, when sysfs can't.
            parts = ev.devpath.split("/")
            for part in reversed(parts):
                if (h := parse_hctl(part)) is not None:
                    d.luns.add(h)
                    break
            else:
                d.blocks.add(name)
            d.blocks.add(name)
    return d

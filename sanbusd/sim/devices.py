"""What the simulated kernel keeps about its devices beside the tree it lays out, and the record of
the writes it serviced.

The tree holds what the reader sees; these hold what the kernel knows but sysfs does not show (a
host's target id bindings, the next vport number, the fabric port behind an rport), and what the
simulation must find quickly (which HCTL is which device directory).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .fabric import HostSpec, PortSpec


@dataclass(slots=True)
class SimRport:
    name: str
    host: int
    number: int
    array: int                      # index into fabric.arrays
    port: PortSpec
    target_id: int
    state: str = "Online"


@dataclass(slots=True)
class SimHost:
    number: int
    devdir: str                     # relative to the sysfs root, e.g. devices/pci0000:00/.../host1
    spec: HostSpec                  # a vport's host shares its parent's
    wwpn: str = ""
    wwnn: str = ""
    fabric: str = ""
    vport: str = ""                 # vport-P:0-N when this host is an NPIV vport's
    rport_next: int = 0
    target_ids: dict[tuple[int, str], int] = field(default_factory=dict)  # (array, wwpn) -> tid
    vport_next: int = 0
    session: int = 0                # iSCSI: the number of the session this host is (sessionN)
    session_state: str = ""         # LOGGED_IN, FAILED (recovering), FREE (recovery timed out)
    # The kernel holds shost->scan_mutex for a whole scan: scans of one host serialize.
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
    # The state fabric login (FDISC) will reach; it completes after the vport_create write.
    pending: str = ""


@dataclass(slots=True)
class SimMap:
    dm: str                         # dm-N
    name: str                       # mpatha, mpathb, ... (user_friendly_names)
    wwid: str                       # the multipath form (3600a...), dm/uuid without "mpath-"
    size: int                       # bytes
    slaves: list[str] = field(default_factory=list)     # sdX of its paths, in table order
    failed: list[str] = field(default_factory=list)     # slaves dm has failed (dm_st "failed")
    deferred: bool = False          # dmsetup remove --deferred: goes when its last holder closes
    action: str = "create"          # multipathd's last action on it (JSON "action")
    path_faults: int = 0
    map_loads: int = 1
    event_nr: int = 0               # dm's event counter (DM_SEQNUM of its path uevents)


@dataclass(slots=True)
class WriteRecord:
    """One write to the simulated sysfs, as the kernel adapter would have made it."""
    path: str                       # relative to the sysfs root: class/scsi_host/host1/scan
    data: str                       # "0 0 27"
    result: str                     # "ok" or the errno name
    end: float = 0.0                # time.time() when the write returned (the kernel work ended)

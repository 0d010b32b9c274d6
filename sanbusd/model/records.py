"""The Inventory: what the kernel has, as plain immutable records, and how two inventories differ.

No I/O here. The backend's reader (backend/sysfs.py reads /sys or the simulated SAN's tree) makes
records; the publisher turns them into D-Bus objects. The kinds of record are the Inventory's
fields; sanbusd/kinds.py says how each is read and published.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Iterable

from .ids import HCTL
from .multipath import UNKNOWN, MapStatus, PathStatus, PathView


@dataclass(frozen=True, slots=True)
class FcPort:
    wwnn: str
    wwpn: str
    fabric_name: str = ""
    port_state: str = ""
    port_type: str = ""
    port_id: str = ""
    speed: str = ""
    symbolic_name: str = ""
    npiv_capable: bool = False      # vport_create exists: libvirt's "vport capable" test
    max_vports: int = 0
    vports_in_use: int = 0


@dataclass(frozen=True, slots=True)
class ScsiHost:
    number: int
    driver: str = ""
    state: str = ""
    unique_id: int = 0
    transport: str = "other"        # fc | iscsi | sas | other
    fc: FcPort | None = None
    vport: str = ""                 # name of the fc_vports entry when this host is an NPIV vport

    @property
    def name(self) -> str:
        return f"host{self.number}"


@dataclass(frozen=True, slots=True)
class RemotePort:
    name: str                       # rport-H:C-N
    host: int
    channel: int
    wwpn: str = ""
    wwnn: str = ""
    port_id: str = ""
    roles: tuple[str, ...] = ()
    port_state: str = ""
    scsi_target_id: int = -1


@dataclass(frozen=True, slots=True)
class Lun:
    hctl: HCTL
    vendor: str = ""
    model: str = ""
    rev: str = ""
    type: int = -1
    wwid: str = ""                  # sysfs device/wwid (naa.…), "" if the device has no VPD 0x83
    state: str = ""
    size: int = 0                   # bytes
    block: str = ""                 # sdX, "" when no block driver is bound
    rport: str = ""                 # rport-H:C-N for FC paths
    target_wwpn: str = ""
    holder: str = ""                # dm-N holding the block device (multipath)


@dataclass(frozen=True, slots=True)
class Vport:
    name: str                       # vport-H:C-N
    parent: int                     # parent host number
    wwpn: str = ""
    wwnn: str = ""
    state: str = ""
    last_state: str = ""
    host: int | None = None         # the vport's own scsi_host number, once it exists


@dataclass(frozen=True, slots=True)
class IscsiSession:
    name: str                       # sessionN
    host: int | None = None         # its SCSI host (iscsi_tcp: one host per session)
    target_name: str = ""           # the target's IQN
    state: str = ""                 # LOGGED_IN | FAILED | FREE
    tpgt: int = 0
    initiator_name: str = ""
    address: str = ""               # the portal: persistent_address and port of connection 0
    port: int = 0
    recovery_tmo: int = 0           # s before its devices go transport-offline


@dataclass(frozen=True, slots=True)
class MultipathMap:
    dm: str                         # dm-N
    name: str = ""
    wwid: str = ""                  # dm/uuid without "mpath-"
    size: int = 0
    slaves: tuple[str, ...] = ()    # sdX
    # What multipathd says (None of it when it does not answer): features, hardware handler,
    # device-mapper's and the checker's state of each path.
    features: str = ""
    hwhandler: str = ""
    path_states: tuple[PathStatus, ...] = ()
    known: bool = False             # multipathd answered for this map

    def with_status(self, st: MapStatus | None) -> "MultipathMap":
        if st is None:
            return self
        return MultipathMap(self.dm, self.name, self.wwid, self.size, self.slaves,
                            st.features, st.hwhandler, st.paths, True)


@dataclass(slots=True)
class Inventory:
    hosts: dict[int, ScsiHost] = field(default_factory=dict)
    rports: dict[str, RemotePort] = field(default_factory=dict)
    luns: dict[HCTL, Lun] = field(default_factory=dict)
    vports: dict[str, Vport] = field(default_factory=dict)
    sessions: dict[str, IscsiSession] = field(default_factory=dict)
    maps: dict[str, MultipathMap] = field(default_factory=dict)

    def copy(self) -> "Inventory":
        return Inventory(dict(self.hosts), dict(self.rports), dict(self.luns),
                         dict(self.vports), dict(self.sessions), dict(self.maps))

    def rports_of_host(self, host: int) -> list[RemotePort]:
        return sorted((r for r in self.rports.values() if r.host == host),
                      key=lambda r: r.name)


KINDS: tuple[str, ...] = tuple(f.name for f in fields(Inventory))


def map_paths(inv: Inventory, m: MultipathMap,
              by_block: dict[str, HCTL] | None = None) -> list[PathView]:
    """Each path of a map with every state there is of it: the kernel's (its LUN) and
    multipathd's. `by_block` (sdX -> LUN) saves a pass over the LUNs when there are many maps."""
    if by_block is None:
        by_block = {lun.block: lun.hctl for lun in inv.luns.values() if lun.block in m.slaves}
    views = []
    for dev in m.slaves:
        hctl = by_block.get(dev)
        lun = inv.luns.get(hctl) if hctl is not None else None
        st = next((p for p in m.path_states if p.dev == dev), None)
        views.append(PathView(dev, lun.state if lun is not None and lun.state else UNKNOWN,
                              st.dm_state if st else UNKNOWN,
                              st.checker_state if st else UNKNOWN))
    return views


def _no_keys() -> dict[str, set]:
    return {k: set() for k in KINDS}


@dataclass(slots=True)
class Dirty:
    """Keys per kind that a burst of events touched; the reader re-reads exactly these."""
    keys: dict[str, set] = field(default_factory=_no_keys)
    blocks: set[str] = field(default_factory=set)   # sdX whose LUN the event did not name
    everything: bool = False

    @classmethod
    def of(cls, **keys: Iterable) -> "Dirty":
        """Dirty.of(luns={hctl}, hosts={2})"""
        d = cls()
        for kind, ks in keys.items():
            d.keys[kind].update(ks)         # KeyError for a kind that does not exist
        return d

    def __getattr__(self, kind: str) -> set:
        try:
            return self.keys[kind]
        except KeyError:
            raise AttributeError(kind) from None

    def __bool__(self) -> bool:
        return self.everything or bool(self.blocks) or any(self.keys.values())

    def merge(self, other: "Dirty") -> None:
        for kind, ks in other.keys.items():
            self.keys[kind] |= ks
        self.blocks |= other.blocks
        self.everything |= other.everything


@dataclass(slots=True)
class Diff:
    """Keys per kind that were added, removed or changed between two inventories."""
    added: dict[str, set] = field(default_factory=_no_keys)
    removed: dict[str, set] = field(default_factory=_no_keys)
    changed: dict[str, set] = field(default_factory=_no_keys)

    def __bool__(self) -> bool:
        return any(any(d.values()) for d in (self.added, self.removed, self.changed))

    def touched(self, kind: str) -> set:
        return self.added[kind] | self.removed[kind] | self.changed[kind]


def diff(old: Inventory, new: Inventory, only: dict[str, set] | None = None) -> Diff:
    """What changed from `old` to `new`; `only` restricts the comparison to given keys per kind
    (a udev burst touches a few records out of tens of thousands)."""
    out = Diff()
    for kind in KINDS:
        a_all, b_all = getattr(old, kind), getattr(new, kind)
        keys: Iterable = (a_all.keys() | b_all.keys()) if only is None else only.get(kind, ())
        for k in keys:
            a, b = a_all.get(k), b_all.get(k)
            if a is None and b is not None:
                out.added[kind].add(k)
            elif a is not None and b is None:
                out.removed[kind].add(k)
            elif a is not None and a != b:
                out.changed[kind].add(k)
    return out

"""The one list of record kinds: how each is listed and read from the backend, which other
records a change makes stale, where its object lives and how it is rendered.

Adding a kind (say, iSCSI sessions) means a record and an Inventory field (model/records.py), a
reader method (backend/sysfs.py), a render function (publish/render.py), and one entry here; the
dirty sets, the diff, the re-read and the publishing all follow from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from .backend.sysfs import SysfsReader
from .model.multipath import MapStatus
from .model.records import KINDS, Inventory
from .publish import paths, render
from .publish.render import Objects, RenderContext

Keys = dict[str, set]


def _nothing(*_args) -> Keys:
    return {}


class MapStates(Protocol):
    """What multipathd says about maps, fetched once per re-read (ops/multipath.py asks it)."""
    def prefetch(self, dms: set[str], total: int) -> None: ...
    def get(self, dm: str) -> MapStatus | None: ...


class NoMapStates:
    def prefetch(self, dms: set[str], total: int) -> None:
        pass

    def get(self, dm: str) -> MapStatus | None:
        return None


@dataclass(frozen=True)
class Kind:
    name: str                                                   # Inventory field
    keys: Callable[[SysfsReader], Iterable]                     # every key in the tree
    read: Callable[[SysfsReader, Any, Inventory, MapStates], Any]  # one record, None if gone
    # After re-reading `key` (record None: gone): what else must be re-read, of later kinds in
    # this table, given the old inventory. A host that went takes its ports and LUNs with it.
    also_read: Callable[[SysfsReader, Inventory, Any, Any], Keys]
    path: Callable[[Any], str | None]                           # object path of a record
    render: Callable[[RenderContext, Any], Objects]
    # Objects that show something of this record, so render again when it changes.
    shown_by: Callable[[RenderContext, Any], Keys]


def _host_also(reader: SysfsReader, inv: Inventory, n: int, h) -> Keys:
    if h is None:
        return {"rports": {k for k, r in inv.rports.items() if r.host == n},
                "luns": {k for k in inv.luns if k.host == n},
                "vports": {k for k, v in inv.vports.items() if v.parent == n or v.host == n},
                "sessions": {k for k, s in inv.sessions.items() if s.host == n}}
    # A host that appears (a vport's, say) brings its own remote ports and LUNs.
    return {"rports": {r for r in reader.rport_names() if r.startswith(f"rport-{n}:")},
            "luns": {k for k in reader.lun_ids() if k.host == n}}


def _lun_also(reader: SysfsReader, inv: Inventory, hctl, lun) -> Keys:
    old = inv.luns.get(hctl)
    out: Keys = {"maps": {x.holder for x in (old, lun) if x is not None and x.holder}}
    # An iSCSI session's state changes without an event of its own; its paths' do.
    out["sessions"] = {k for k, s in inv.sessions.items() if s.host == hctl.host}
    return out


def _session_shown_by(ctx: RenderContext, s) -> Keys:
    return {}


def _lun_read(reader: SysfsReader, hctl, new: Inventory, _states):
    return reader.read_lun(hctl, new.rports)


def _map_read(reader: SysfsReader, dm: str, _inv, states: MapStates):
    m = reader.read_map(dm)
    return m.with_status(states.get(dm)) if m is not None else None


def _lun_shown_by(ctx: RenderContext, lun) -> Keys:
    out: Keys = {"hosts": {lun.hctl.host}}
    if lun.holder:
        out["maps"] = {lun.holder}
    return out


def _vport_shown_by(ctx: RenderContext, v) -> Keys:
    return {"hosts": {v.parent} | ({v.host} if v.host is not None else set())}


def _map_shown_by(ctx: RenderContext, m) -> Keys:
    by_block = ctx.lun_by_block
    return {"luns": {by_block[s] for s in m.slaves if s in by_block}}


def _host_shown_by(ctx: RenderContext, h) -> Keys:
    return {"vports": {h.vport}} if h.vport else {}


KIND_TABLE: tuple[Kind, ...] = (
    Kind("hosts", SysfsReader.host_numbers, lambda r, n, _inv, _s: r.read_host(n), _host_also,
         lambda h: paths.host(h.number), render.render_host, _host_shown_by),
    Kind("rports", SysfsReader.rport_names, lambda r, name, _i, _s: r.read_rport(name), _nothing,
         lambda _r: None, lambda _ctx, _r: {},      # shown on their host's FcHost.RemotePorts
         lambda _ctx, r: {"hosts": {r.host}}),
    Kind("luns", SysfsReader.lun_ids, _lun_read, _lun_also,
         lambda lun: paths.lun(lun.hctl), render.render_lun, _lun_shown_by),
    Kind("vports", SysfsReader.vport_names, lambda r, name, _i, _s: r.read_vport(name), _nothing,
         lambda v: paths.vhba(v.wwpn) if v.wwpn else None, render.render_vhba, _vport_shown_by),
    Kind("sessions", SysfsReader.session_names, lambda r, n, _i, _s: r.read_session(n),
         _nothing, lambda s: paths.session(s.name), render.render_session, _session_shown_by),
    Kind("maps", SysfsReader.map_names, _map_read, _nothing,
         lambda m: paths.multipath(m.wwid) if m.wwid else None, render.render_map,
         _map_shown_by),
)
KIND_BY_NAME = {k.name: k for k in KIND_TABLE}
assert tuple(KIND_BY_NAME) == KINDS, "every Inventory field needs an entry here, in order"


def read_all(reader: SysfsReader, states: MapStates | None = None) -> Inventory:
    states = states or NoMapStates()
    inv = Inventory()
    for kind in KIND_TABLE:
        records = getattr(inv, kind.name)
        keys = list(kind.keys(reader))
        if kind.name == "maps":
            states.prefetch(set(keys), len(keys))
        for key in keys:
            if (rec := kind.read(reader, key, inv, states)) is not None:
                records[key] = rec
    return inv


def refresh(reader: SysfsReader, inv: Inventory, dirty,
            states: MapStates | None = None) -> tuple[Inventory, Keys]:
    """A new Inventory with the dirty keys re-read (and what they drag along); returns it and
    the keys looked at, for the diff."""
    states = states or NoMapStates()
    if dirty.everything:
        new = read_all(reader, states)
        return new, {k: getattr(inv, k).keys() | getattr(new, k).keys() for k in KINDS}
    new = inv.copy()
    look: Keys = {k: set(v) for k, v in dirty.keys.items()}
    for block in dirty.blocks:
        h = reader.lun_of_block(block)
        if h is not None:
            look["luns"].add(h)
        else:  # a block device that went away: the LUN that had it, and maps holding it
            look["luns"].update(k for k, v in inv.luns.items() if v.block == block)
            look["maps"].update(k for k, v in inv.maps.items() if block in v.slaves)
    if look["maps"]:
        # A map's change (a path failed, reinstated) comes as one dm event while its paths'
        # device states change without any: read them again with it.
        slaves = {s for dm in look["maps"] if (m := inv.maps.get(dm)) for s in m.slaves}
        look["luns"].update(k for k, v in inv.luns.items() if v.block in slaves)
    for kind in KIND_TABLE:
        records = getattr(new, kind.name)
        if kind.name == "maps":     # the last kind: every map to re-read is known by now
            states.prefetch(look["maps"], len(inv.maps) + len(look["maps"]))
        for key in look[kind.name]:
            rec = kind.read(reader, key, new, states)
            if rec is None:
                records.pop(key, None)
            else:
                records[key] = rec
            for other, keys in kind.also_read(reader, inv, key, rec).items():
                look[other] |= keys
    _relink_paths(reader, new, look)
    return new, look


def _relink_paths(reader: SysfsReader, new: Inventory, look: Keys) -> None:
    """A map's table names its paths, but a path hears nothing when a map takes or leaves it
    (no event on the sdX): its LUN, read before, may name no holder or the wrong one. Read those
    LUNs again now that the maps are read."""
    if not look["maps"]:
        return
    holder = {sd: dm for dm in look["maps"] if (m := new.maps.get(dm)) for sd in m.slaves}
    stale = {k for k, lun in new.luns.items() if lun.block and
             (holder.get(lun.block, lun.holder if lun.holder not in look["maps"] else "")
              != lun.holder)}
    for hctl in stale:
        lun = reader.read_lun(hctl, new.rports)
        if lun is None:
            new.luns.pop(hctl, None)
        else:
            new.luns[hctl] = lun
    look["luns"] |= stale

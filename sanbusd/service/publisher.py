"""Inventory -> D-Bus objects. Renders records into property dicts and keeps the tree in step.

When a burst of kernel events changes some records, only the objects those records (and the
objects that point at them) map to are rendered again; the tree compares and signals.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from .. import __version__, paths
from ..inventory import Diff, Inventory, Lun, MultipathMap, ScsiHost, Vport
from ..kernel.formats import HCTL, fabric_known
from .tree import ObjectTree

IFACE = "org.example.SanStorage."
MANAGER_I = IFACE + "Manager"
HOST_I = IFACE + "ScsiHost"
FC_I = IFACE + "FcHost"
LUN_I = IFACE + "Lun"
VHBA_I = IFACE + "Vhba"
MAP_I = IFACE + "MultipathMap"

Objects = dict[str, dict[str, Any]]


def render_manager(backend: str) -> Objects:
    return {MANAGER_I: {"Version": __version__, "Backend": backend}}


def render_host(inv: Inventory, h: ScsiHost, luns: list[Lun],
                rescan_suggested: bool = False) -> Objects:
    out: Objects = {HOST_I: {
        "Name": h.name, "Number": h.number, "Driver": h.driver, "Transport": h.transport,
        "State": h.state, "UniqueId": h.unique_id & 0xFFFFFFFF,
        "Luns": [paths.lun(lun.hctl) for lun in sorted(luns, key=lambda x: x.hctl)],
        "RescanSuggested": rescan_suggested}}
    if h.fc is not None:
        fc = h.fc
        vport = inv.vports.get(h.vport) if h.vport else None
        out[FC_I] = {
            "WWNN": fc.wwnn, "WWPN": fc.wwpn,
            "FabricName": fc.fabric_name if fabric_known(fc.fabric_name) else "",
            "PortState": fc.port_state, "PortType": fc.port_type, "PortId": fc.port_id,
            "Speed": fc.speed, "NpivCapable": fc.npiv_capable,
            "MaxVports": fc.max_vports if fc.npiv_capable else 0,
            "VportsInUse": fc.vports_in_use if fc.npiv_capable else 0,
            "RemotePorts": [[r.name, r.wwpn, r.wwnn, r.port_id, list(r.roles), r.port_state,
                             r.scsi_target_id] for r in inv.rports_of_host(h.number)],
            "Vhba": paths.vhba(vport.wwpn) if vport is not None and vport.wwpn else paths.NO_OBJECT,
        }
    return out


def render_lun(inv: Inventory, lun: Lun) -> Objects:
    m = inv.maps.get(lun.holder) if lun.holder else None
    return {LUN_I: {
        "HCTL": str(lun.hctl), "Host": paths.host(lun.hctl.host), "Lun": lun.hctl.lun,
        "Vendor": lun.vendor, "Model": lun.model, "Revision": lun.rev, "Type": lun.type,
        "WWID": lun.wwid, "Size": lun.size,
        "BlockDevice": f"/dev/{lun.block}" if lun.block else "", "State": lun.state,
        "TargetPortName": lun.target_wwpn,
        "MultipathMap": paths.multipath(m.wwid) if m is not None and m.wwid else paths.NO_OBJECT,
    }}


def render_vhba(inv: Inventory, v: Vport) -> Objects:
    return {VHBA_I: {
        "Name": v.name, "WWNN": v.wwnn, "WWPN": v.wwpn, "Parent": paths.host(v.parent),
        "Host": paths.host(v.host) if v.host is not None and v.host in inv.hosts
        else paths.NO_OBJECT,
        "State": v.state, "LastState": v.last_state}}


def render_map(inv: Inventory, m: MultipathMap, lun_by_block: dict[str, HCTL]) -> Objects:
    return {MAP_I: {
        "Name": m.name, "WWID": m.wwid, "DmDevice": f"/dev/{m.dm}", "Size": m.size,
        "Paths": [paths.lun(lun_by_block[s]) for s in m.slaves if s in lun_by_block]}}


class Publisher:
    def __init__(self, tree: ObjectTree, backend: str) -> None:
        self.tree = tree
        self.backend = backend
        self.inventory = Inventory()
        self._vhba_paths: dict[str, str] = {}   # vport name -> path (WWPN keyed)
        self._map_paths: dict[str, str] = {}    # dm-N -> path
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self.rescan_suggested: set[int] = set()     # hosts whose storage reported new LUNs
        tree.details = self.details

    # -- whole and partial publication ---------------------------------------------------------

    def publish_all(self, inv: Inventory) -> None:
        updates: dict[str, Objects | None] = {paths.MANAGER: render_manager(self.backend)}
        by_host: dict[int, list[Lun]] = {}
        for lun in inv.luns.values():
            by_host.setdefault(lun.hctl.host, []).append(lun)
        for n, h in inv.hosts.items():
            updates[paths.host(n)] = render_host(inv, h, by_host.get(n, []),
                                                 n in self.rescan_suggested)
        for lun in inv.luns.values():
            updates[paths.lun(lun.hctl)] = render_lun(inv, lun)
        self._vhba_paths = {}
        for v in inv.vports.values():
            if v.wwpn:
                self._vhba_paths[v.name] = paths.vhba(v.wwpn)
                updates[paths.vhba(v.wwpn)] = render_vhba(inv, v)
        lun_by_block = {lun.block: lun.hctl for lun in inv.luns.values() if lun.block}
        self._map_paths = {}
        for m in inv.maps.values():
            if m.wwid:
                self._map_paths[m.dm] = paths.multipath(m.wwid)
                updates[paths.multipath(m.wwid)] = render_map(inv, m, lun_by_block)
        # objects that are no longer there
        for path in self.tree.objects:
            if path not in updates:
                updates[path] = None
        self.inventory = inv
        self.tree.apply(updates)
        self._wake()

    def update(self, new: Inventory, d: Diff) -> None:
        """Publish what `d` says changed from self.inventory to `new`."""
        old = self.inventory
        hosts: set[int] = set()
        luns: set[HCTL] = set()
        vports: set[str] = set()
        maps: set[str] = set()
        for kind in ("added", "removed", "changed"):
            dd = getattr(d, kind)
            hosts |= dd["hosts"]
            luns |= dd["luns"]
            vports |= dd["vports"]
            maps |= dd["maps"]
            for name in dd["rports"]:
                r = new.rports.get(name) or old.rports.get(name)
                if r is not None:
                    hosts.add(r.host)
        for hctl in list(luns):
            hosts.add(hctl.host)
            for inv in (old, new):
                lun = inv.luns.get(hctl)
                if lun is not None and lun.holder:
                    maps.add(lun.holder)
        for dm in list(maps):
            for inv in (old, new):
                m = inv.maps.get(dm)
                if m is not None:
                    luns.update(lun.hctl for lun in inv.luns.values() if lun.block in m.slaves)
        for name in list(vports):
            for inv in (old, new):
                v = inv.vports.get(name)
                if v is not None:
                    hosts.add(v.parent)
                    if v.host is not None:
                        hosts.add(v.host)
        for n in list(hosts):
            for inv in (old, new):
                h = inv.hosts.get(n)
                if h is not None and h.vport:
                    vports.add(h.vport)

        updates: dict[str, Objects | None] = {}
        if hosts:
            by_host: dict[int, list[Lun]] = {n: [] for n in hosts}
            for lun in new.luns.values():
                if lun.hctl.host in by_host:
                    by_host[lun.hctl.host].append(lun)
            for n in hosts:
                h = new.hosts.get(n)
                updates[paths.host(n)] = (render_host(new, h, by_host[n],
                                                      n in self.rescan_suggested)
                                          if h else None)
        for hctl in luns:
            lun = new.luns.get(hctl)
            updates[paths.lun(hctl)] = render_lun(new, lun) if lun else None
        for name in vports:
            v = new.vports.get(name)
            old_path = self._vhba_paths.pop(name, None)
            if v is not None and v.wwpn:
                p = paths.vhba(v.wwpn)
                self._vhba_paths[name] = p
                updates[p] = render_vhba(new, v)
                if old_path and old_path != p:
                    updates[old_path] = None
            elif old_path:
                updates[old_path] = None
        if maps:
            lun_by_block = {lun.block: lun.hctl for lun in new.luns.values() if lun.block}
            for dm in maps:
                m = new.maps.get(dm)
                old_path = self._map_paths.pop(dm, None)
                if m is not None and m.wwid:
                    p = paths.multipath(m.wwid)
                    self._map_paths[dm] = p
                    updates[p] = render_map(new, m, lun_by_block)
                    if old_path and old_path != p:
                        updates[old_path] = None
                elif old_path:
                    updates[old_path] = None
        self.inventory = new
        self.tree.apply(updates)
        self._wake()

    # -- hosts whose storage says its LUN inventory changed (SDEV_UA) -------------------------

    def _rerender_hosts(self, hosts: set[int]) -> None:
        d = Diff()
        d.changed["hosts"] |= hosts & self.inventory.hosts.keys()
        self.update(self.inventory, d)

    def suggest_rescan(self, hosts: set[int]) -> None:
        new = hosts - self.rescan_suggested
        if new:
            self.rescan_suggested |= new
            self._rerender_hosts(new)

    def clear_rescan_suggested(self, hosts) -> None:
        gone = set(hosts) & self.rescan_suggested
        if gone:
            self.rescan_suggested -= gone
            self._rerender_hosts(gone)

    # -- waiting for objects (a call returns only once its objects are on the bus) -------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if predicate():
            fut.set_result(True)
            return fut
        self._waiters.append((predicate, fut))

        def expire() -> None:
            if not fut.done():
                fut.set_result(False)
        asyncio.get_running_loop().call_later(timeout, expire)
        return fut

    def _wake(self) -> None:
        keep = []
        for pred, fut in self._waiters:
            if fut.done():
                continue
            if pred():
                fut.set_result(True)
            else:
                keep.append((pred, fut))
        self._waiters = keep

    # -- polkit details for an object ---------------------------------------------------------

    def details(self, path: str) -> dict[str, str]:
        parsed = paths.parse(path)
        if parsed is None:
            return {}
        kind, key = parsed
        inv = self.inventory
        if kind == "host":
            h = inv.hosts.get(key)  # type: ignore[arg-type]
            d = {"host": f"host{key}"}
            if h is not None and h.fc is not None:
                d["wwpn"] = h.fc.wwpn
            return d
        if kind == "lun":
            lun = inv.luns.get(key)  # type: ignore[arg-type]
            d = {"host": f"host{key.host}", "hctl": str(key)}  # type: ignore[union-attr]
            if lun is not None:
                d["wwid"] = lun.wwid
            return d
        if kind == "vhba":
            return {"wwpn": str(key)}
        if kind == "multipath":
            return {"wwid": str(key)}
        return {}

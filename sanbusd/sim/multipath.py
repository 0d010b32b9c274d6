"""Multipath maps, minimally: what device-mapper and multipathd leave in sysfs when a map is made
over a LUN's paths (the SAN admin asks for it with `sanbusd-sim mpath-create`).

A map is /sys/devices/virtual/block/dm-N with dm/name (user_friendly_names: mpatha, mpathb, ...),
dm/uuid "mpath-<WWID in the multipath form>", its size, slaves/<sdX> links to its paths and a
holders/dm-N link in each path's block directory. Creating or removing one sends the block uevents
the kernel sends for dm-N, plus a "change" for each path, as multipathd triggers on its paths so
udev re-evaluates them (that is how a reader learns a path's holder changed).
"""

from __future__ import annotations

from ..backend.uevent import UEvent
from ..model.ids import HCTL, multipath_wwid
from ..model.ids import letters
from .core import SanAdminError, SanCore
from .devices import SimMap
from .files import uevent

DM_MAJOR = 253


def _friendly_name(index: int) -> str:
    """multipath's user_friendly_names: 0 -> mpatha, 25 -> mpathz, 26 -> mpathaa."""
    return "mpath" + letters(index)


class MultipathMixin(SanCore):
    def mpath_create(self, wwid: str) -> SimMap:
        """Make a map over every present path of the LUN with this WWID (naa.6… as sysfs shows
        it, or 36… as multipath does)."""
        with self._changing():
            want = self._mpath_wwid(wwid)
            for m in self.maps.values():
                if m.wwid == want:
                    raise SanAdminError(f"WWID {wwid} already has a map: {m.name} ({m.dm})")
            paths = sorted((hctl, sd) for hctl, sd in self.blocks.items()
                           if self._path_wwid(hctl) == want)
            if not paths:
                raise SanAdminError(f"no LUN path with WWID {wwid} has a block device here "
                                    "(scan for the LUN first)")
            dm = self._lowest_free("dm-", {int(m.dm[3:]) for m in self.maps.values()})
            names = {m.name for m in self.maps.values()}
            name = next(_friendly_name(i) for i in range(len(names) + 1)
                        if _friendly_name(i) not in names)
            first = f"{self.luns[paths[0][0]]}/block/{paths[0][1]}"
            size = int(self.fs.get(first, "size") or 0) * 512
            m = SimMap(dm=dm, name=name, wwid=want, size=size, slaves=[sd for _, sd in paths])
            ddir = self._dm_dir(dm)
            minor = int(dm[3:])
            self.fs.attrs(ddir, {
                "dev": f"{DM_MAJOR}:{minor}", "size": str(size // 512), "ro": "0",
                "removable": "0",
                "uevent": f"MAJOR={DM_MAJOR}\nMINOR={minor}\nDEVNAME={dm}\nDEVTYPE=disk"})
            self.fs.attrs(f"{ddir}/dm", {"name": name, "uuid": f"mpath-{want}",
                                         "suspended": "0"})
            self.fs.mkdir(f"{ddir}/holders")
            self.fs.mkdir(f"{ddir}/slaves")
            for hctl, sd in paths:
                bdir = f"{self.luns[hctl]}/block/{sd}"
                self.fs.link(f"{ddir}/slaves/{sd}", bdir)
                self.fs.link(f"{bdir}/holders/{dm}", ddir)
            self.fs.link(f"class/block/{dm}", ddir)
            self.fs.link(f"block/{dm}", ddir)
            self.maps[dm] = m
            # dm creates the device, then loading and resuming the table announces it again.
            events = [uevent("add", "block", ddir, "disk"),
                      uevent("change", "block", ddir, "disk", DM_NAME=name,
                             DM_UUID=f"mpath-{want}")]
            events += self._path_changes(hctl for hctl, _ in paths)
        self._send(events)
        return m

    def mpath_remove(self, wwid: str) -> None:
        """Flush the map of this WWID (multipath -f): its paths stay, without a holder."""
        with self._changing():
            want = self._mpath_wwid(wwid)
            m = next((m for m in self.maps.values() if m.wwid == want), None)
            if m is None:
                have = ", ".join(f"{x.name} ({x.wwid})" for x in self.maps.values()) or "none"
                raise SanAdminError(f"no map for WWID {wwid} (maps: {have})")
            ddir = self._dm_dir(m.dm)
            held = [hctl for hctl, sd in self.blocks.items() if sd in m.slaves]
            for hctl in held:
                self.fs.unlink(f"{self.luns[hctl]}/block/{self.blocks[hctl]}/holders/{m.dm}")
            self.fs.unlink(f"class/block/{m.dm}")
            self.fs.unlink(f"block/{m.dm}")
            self.fs.rmtree(ddir)
            del self.maps[m.dm]
            events = [uevent("remove", "block", ddir, "disk")]
            events += self._path_changes(sorted(held))
        self._send(events)

    def _drop_map_path(self, sd: str) -> list[UEvent]:
        """A path held by a map is going away: multipathd takes it out of the map's table."""
        events = []
        for m in self.maps.values():
            if sd in m.slaves:
                m.slaves.remove(sd)
                self.fs.unlink(f"{self._dm_dir(m.dm)}/slaves/{sd}")
                events.append(uevent("change", "block", self._dm_dir(m.dm), "disk"))
        return events

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _dm_dir(dm: str) -> str:
        return f"devices/virtual/block/{dm}"

    @staticmethod
    def _lowest_free(prefix: str, used: set[int]) -> str:
        n = 0
        while n in used:
            n += 1
        return f"{prefix}{n}"

    @staticmethod
    def _mpath_wwid(wwid: str) -> str:
        """Either form of a WWID -> the multipath form (naa.6001… -> 36001…)."""
        w = wwid.strip()
        if not w:
            raise SanAdminError("give a WWID, e.g. naa.6001405... or 36001405...")
        return multipath_wwid(w) if w.startswith(("naa.", "eui.", "t10.")) else w

    def _path_wwid(self, hctl: HCTL) -> str:
        sysfs = self.fs.get(self.luns[hctl], "wwid")
        return multipath_wwid(sysfs) if sysfs else ""

    def _path_changes(self, hctls) -> list[UEvent]:
        return [uevent("change", "block", f"{self.luns[h]}/block/{self.blocks[h]}", "disk")
                for h in hctls]

"""device-mapper multipath and multipathd on the simulated host: maps over a LUN's paths, made
and flushed as multipathd (its socket, multipathd.py) or the multipath tool (`sanbusd-sim
mpath-create`) makes them, with what they leave in sysfs and the uevents the kernel sends.

A map is /sys/devices/virtual/block/dm-N with dm/name (the alias: mpatha, mpathb, ... from the
bindings with user_friendly_names, else the WWID), dm/uuid "mpath-<WWID>", its size, slaves/<sdX>
links to its paths and a holders/dm-N link in each path's block directory. Creating or removing
one sends the block uevents the kernel sends for dm-N, plus a "change" for each path, as
multipathd triggers on its paths so udev re-evaluates them.

The WWID multipath groups paths by is udev's ID_SERIAL: "3" + the NAA id for most LUNs, or what
the fabric file says (`mpath_wwid`, e.g. scsi_debug's "1Linux_scsi_debug_2000").

multipathd, as 0.9.4 behaves:
- new paths (a scan, a port coming back) are put into their map, or make one when the policy
  allows: find_multipaths strict (the WWID is in the wwids file), yes/smart (in it, or two paths
  or more), no/greedy (every WWID); never a blacklisted WWID (an exception wins);
- a path whose device stops running (its port blocked, `device/state` offline) is failed by the
  path checker (dm_st failed, chk_st faulty) and dm sends a "change" with DM_ACTION=PATH_FAILED;
  PATH_REINSTATED when it runs again;
- a path that goes is taken out of its map; the last one going flushes the map unless it is open;
- `del map` of an open map answers "fail" and changes nothing; after a flush, `add map` of that
  WWID answers "fail" until a `reconfigure` (seen on a real 0.9.4);
- `reconfigure` re-reads the configuration, renames maps whose name changed, flushes maps now
  blacklisted (not open ones) and makes every map the policy allows.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..backend.uevent import UEvent
from ..model.ids import HCTL, letters, multipath_wwid, sysfs_wwn_text
from .core import SanAdminError, SanCore
from .devices import SimMap
from .files import uevent
from .multipathd import DEFAULT_CONF, GroupView, MapView, MpathConf, PathView, load_conf

if TYPE_CHECKING:
    from .multipathd import MultipathdServer

DM_MAJOR = 253
RUNNING = "running"
# What device/state takes from a write (store_state_field): anything else is EINVAL.
WRITABLE_STATES = ("running", "offline")
DEVICE_STATES = ("running", "offline", "blocked", "transport-offline")

WWIDS_HEADER = """\
# Multipath wwids, Version : 1.0
# NOTE: This file is automatically maintained by multipath and multipathd.
# You should not need to edit this file in normal circumstances.
#
# Valid WWIDs:
"""
BINDINGS_HEADER = """\
# Multipath bindings, Version : 1.0
# NOTE: this file is automatically maintained by the multipath program.
# You should not need to edit this file in normal circumstances.
#
# Format:
# alias wwid
#
"""
_PCI_RE = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]")
# multipath-tools' built-in hardware table, the entries the simulated SAN's arrays meet (vendor:
# what they set); LIO's ("LIO-ORG") is what the kernel lane's iSCSI maps showed: queueing
# "12 chk", features "1 queue_if_no_path", failback "immediate".
HWTABLE = {"LIO-ORG": {"no_path_retry": "12", "failback": "immediate"}}


def friendly_name(index: int) -> str:
    """multipath's user_friendly_names: 0 -> mpatha, 25 -> mpathz, 26 -> mpathaa."""
    return "mpath" + letters(index)


def lun_hex(lun: int) -> str:
    """print.c's %L: the LUN as its 8-byte SCSI form (int_to_scsilun), in hex."""
    out = ""
    for _ in range(4):
        out += f"{lun & 0xFFFF:04x}"
        lun >>= 16
    return "0x" + out


class MultipathMixin(SanCore):
    multipathd: "MultipathdServer | None" = None     # its socket, when a backend serves one

    # -- set up: configuration, wwids and bindings files -------------------------------------

    @property
    def multipath_dir(self) -> Path:
        return self.etc / "multipath"

    def _mp_setup(self, fresh: bool) -> None:
        """The host's multipath files: multipath.conf laid out if missing (the fabric's, or
        the default), conf.d/, and the wwids and bindings files (emptied when laid out
        afresh); then the configuration read as multipathd reads it at start."""
        self.multipath_dir.joinpath("conf.d").mkdir(parents=True, exist_ok=True)
        conf = self.etc / "multipath.conf"
        if not conf.exists():
            conf.write_text(self.fabric.multipathd.conf or DEFAULT_CONF)
        if fresh:
            self.wwids, self.bindings = [], {}
            self._bound, self._alias_hint = set(), 0
            self._mp_write_files()
        else:
            self._mp_read_files()
        self.mpconf = load_conf(self.etc)
        self._mp_reindex()

    def _mp_read_files(self) -> None:
        """The wwids and bindings files, as multipathd reads them; a missing file leaves what
        is known (the saved state's copy)."""
        try:
            text = (self.multipath_dir / "wwids").read_text()
        except OSError:
            pass
        else:
            self.wwids = []
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if len(line) > 2 and line[0] == line[-1] == "/" and line[1:-1] not in self.wwids:
                    self.wwids.append(line[1:-1])
        self._bound, self._alias_hint = set(), 0      # rebuilt from the bindings when asked
        try:
            text = (self.multipath_dir / "bindings").read_text()
        except OSError:
            return
        self.bindings = {}
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 2:
                self.bindings.setdefault(words[1], words[0])

    def _mp_write_files(self) -> None:
        self.multipath_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.multipath_dir / "wwids",
                      WWIDS_HEADER + "".join(f"/{w}/\n" for w in self.wwids))
        _atomic_write(self.multipath_dir / "bindings",
                      BINDINGS_HEADER + "".join(f"{a} {w}\n" for w, a in self.bindings.items()))

    def _remember_wwid(self, wwid: str) -> None:
        # Appended, as multipath does: rewriting the file per map made 4,096 maps quadratic.
        if wwid not in self._wwid_set():
            self.wwids.append(wwid)
            self._wwids_known.add(wwid)
            _append(self.multipath_dir / "wwids", WWIDS_HEADER, f"/{wwid}/\n")

    def _wwid_set(self) -> set[str]:
        if len(self._wwids_known) != len(self.wwids):
            self._wwids_known = set(self.wwids)
        return self._wwids_known

    def _conf(self) -> MpathConf:
        if self.mpconf is None:
            self._mp_setup(fresh=False)
        return self.mpconf  # type: ignore[return-value]

    # -- paths: their multipath WWID (ID_SERIAL), state and index ------------------------------

    def _serial_of(self, hctl: HCTL) -> str:
        """udev's ID_SERIAL for the path: the fabric's mpath_wwid, else "3" + the NAA id."""
        rp = self._rport_of(hctl)  # type: ignore[attr-defined]
        if rp is not None:
            spec = self.fabric.arrays[rp.array].luns.get(hctl.lun)
            if spec is None:
                return ""
            return spec.mpath_wwid or multipath_wwid(spec.wwid)
        h = self.hosts.get(hctl.host)
        if h is not None and h.session:
            _ai, spec = self._iscsi_lun_spec(h, hctl.lun)  # type: ignore[attr-defined]
            return (spec.mpath_wwid or multipath_wwid(spec.wwid)) if spec is not None else ""
        disk = next((d for d in h.spec.disks if d.target == hctl.target and d.lun == hctl.lun),
                    None) if h is not None else None
        if disk is None:
            sysfs = self.fs.get(self.luns.get(hctl, ""), "wwid") if hctl in self.luns else ""
            return multipath_wwid(sysfs) if sysfs else ""
        return disk.mpath_wwid or multipath_wwid(disk.wwid)

    def _mp_reindex(self) -> None:
        self.serials.clear()
        self.paths_of.clear()
        for hctl in self.blocks:
            self._index_path(hctl)

    def _index_path(self, hctl: HCTL) -> str:
        serial = self._serial_of(hctl)
        if serial:
            self.serials[hctl] = serial
            self.paths_of.setdefault(serial, set()).add(hctl)
        return serial

    def _mp_path_added(self, hctl: HCTL) -> None:
        """A LUN path got its block device (lock held): multipathd hears of it once its uevents
        are out (_send)."""
        if self._index_path(hctl):
            self._mp_new.append(hctl)

    def _mp_path_removed(self, hctl: HCTL, sd: str, ddir: str) -> list[UEvent]:
        """A path is going (lock held; `ddir` its device directory, already out of self.luns):
        multipathd takes it out of its map's table first."""
        serial = self.serials.pop(hctl, "")
        if serial:
            left = self.paths_of.get(serial)
            if left is not None:
                left.discard(hctl)
                if not left:
                    del self.paths_of[serial]
        self.dev_states.pop(hctl, None)
        events: list[UEvent] = []
        for m in list(self.maps.values()):
            if sd not in m.slaves:
                continue
            m.slaves.remove(sd)
            if sd in m.failed:
                m.failed.remove(sd)
            self.fs.unlink(f"{self._dm_dir(m.dm)}/slaves/{sd}")
            self.fs.unlink(f"{ddir}/block/{sd}/holders/{m.dm}")
            if not m.slaves and m.dm not in self.opened:
                # ev_remove_path: removing the last path flushes the map, unless it is open.
                events += self._mp_remove(m)
                continue
            m.map_loads += 1
            m.action = "reload"
            events.append(self._dm_change(m))
        return events

    def _device_running(self, hctl: HCTL) -> bool:
        return self.dev_states.get(hctl, RUNNING) == RUNNING

    def _set_device_state(self, hctl: HCTL, state: str) -> bool:
        """The kernel's sdev_state, in device/state; True if it changed."""
        if hctl not in self.luns or self.dev_states.get(hctl, RUNNING) == state:
            return False
        if state == RUNNING:
            self.dev_states.pop(hctl, None)
        else:
            self.dev_states[hctl] = state
        self.fs.set(self.luns[hctl], "state", state)
        return True

    # -- the path checker ---------------------------------------------------------------------

    def _devices_changed(self, hctls: Iterable[HCTL]) -> list[UEvent]:
        """Devices stopped or started running (lock held): the checker's verdict now, as
        events to go out with the change, or later (checker_delay) in a batch of its own."""
        hctls = [h for h in hctls if h in self.serials]
        if not hctls:
            return []
        delay = self.fabric.multipathd.checker_delay
        if delay > 0:
            self._later(delay, self._checker_run, hctls)
            return []
        return self._check_paths(hctls)

    def _checker_run(self, hctls: list[HCTL]) -> None:
        with self._changing():
            events = self._check_paths(hctls)
        self._send(events)

    def _check_paths(self, hctls: Iterable[HCTL]) -> list[UEvent]:
        events: list[UEvent] = []
        by_sd = {self.blocks[h]: h for h in hctls if h in self.blocks}
        for m in self.maps.values():
            for sd in m.slaves:
                hctl = by_sd.get(sd)
                if hctl is None:
                    continue
                failed = sd in m.failed
                if self._device_running(hctl) == failed:
                    events.append(self._path_event(m, hctl, sd, fail=not failed))
        return events

    def _path_event(self, m: SimMap, hctl: HCTL, sd: str, fail: bool) -> UEvent:
        """dm-mpath fails or reinstates the path and says so (dm_path_uevent)."""
        if fail:
            m.failed.append(sd)
            m.path_faults += 1
        else:
            m.failed.remove(sd)
        m.action = ""
        m.event_nr += 1
        return uevent("change", "block", self._dm_dir(m.dm), "disk",
                      DM_TARGET="multipath",
                      DM_ACTION="PATH_FAILED" if fail else "PATH_REINSTATED",
                      DM_SEQNUM=str(m.event_nr), DM_PATH=self._dev_t(sd),
                      DM_NR_VALID_PATHS=str(len(m.slaves) - len(m.failed)),
                      DM_NAME=m.name, DM_UUID=f"mpath-{m.wwid}")

    def device_state(self, hctl: HCTL, state: str) -> None:
        """What `echo STATE > /sys/class/scsi_device/H:C:T:L/device/state` does: running or
        offline, else EINVAL. The kernel sends no uevent for it; multipathd's path checker
        notices (and dm sends PATH_FAILED / PATH_REINSTATED on the map)."""
        with self._changing():
            events = self._device_state(hctl, state)
        self._send(events)

    def _device_state(self, hctl: HCTL, state: str) -> list[UEvent]:
        state = state.strip()
        if hctl not in self.luns:
            raise OSError(errno.ENOENT, f"{hctl}: no such device")
        if state not in WRITABLE_STATES:
            raise OSError(errno.EINVAL, f"{state!r}: device/state takes running or offline")
        if not self._set_device_state(hctl, state):
            return []
        return self._devices_changed([hctl])

    def _lun_hctls(self, host: int, target: int) -> list[HCTL]:
        return sorted(h for h in self.luns if h.host == host and h.target == target)

    # -- maps: made, extended, removed ----------------------------------------------------------

    def _map_index(self) -> tuple[dict[str, SimMap], dict[str, SimMap]]:
        """Maps by WWID and by name, rebuilt when the maps changed (thousands of `add map`s
        would otherwise each walk every map)."""
        key = (id(self.maps), self._maps_changed)
        if self._index_key != key:
            self._by_wwid = {m.wwid: m for m in self.maps.values()}
            self._by_name = {m.name: m for m in self.maps.values()}
            self._index_key = key
        return self._by_wwid, self._by_name

    def _index_update(self, add: SimMap | None = None, drop: SimMap | None = None) -> None:
        by_wwid, by_name = self._map_index()
        if drop is not None:
            by_wwid.pop(drop.wwid, None)
            by_name.pop(drop.name, None)
        if add is not None:
            by_wwid[add.wwid] = by_name[add.name] = add

    def _map_of(self, wwid: str) -> SimMap | None:
        return self._map_index()[0].get(wwid)

    def _find_map(self, name: str) -> SimMap | None:
        """A map by dm-N or by its name (what dmsetup and the kernel take); "/dev/..." too."""
        for prefix in ("/dev/mapper/", "/dev/"):
            if name.startswith(prefix):
                name = name[len(prefix):]
        return self.maps.get(name) or self._map_index()[1].get(name)

    def _present_paths(self, wwid: str) -> list[tuple[HCTL, str]]:
        return sorted((h, self.blocks[h]) for h in self.paths_of.get(wwid, ()) if h in self.blocks)

    def _alias_for(self, wwid: str) -> str:
        """The map's name: a multipaths{} alias, else the binding (made now if there is none:
        the lowest mpathX no binding and no map uses), else the WWID itself."""
        conf = self._conf()
        if wwid in conf.aliases:
            return conf.aliases[wwid]
        if not conf.user_friendly_names:
            return wwid
        if wwid in self.bindings:
            return self.bindings[wwid]
        if len(self._bound) != len(self.bindings):
            self._bound, self._alias_hint = set(self.bindings.values()), 0
        # Bindings only grow between reads of the file: the lowest free index only rises.
        i = self._alias_hint
        while friendly_name(i) in self._bound or self._find_map(friendly_name(i)) is not None:
            i += 1
        self._alias_hint = i + 1
        alias = friendly_name(i)
        self.bindings[wwid] = alias
        self._bound.add(alias)
        _append(self.multipath_dir / "bindings", BINDINGS_HEADER, f"{alias} {wwid}\n")
        return alias

    def _eligible(self, wwid: str) -> bool:
        """Would multipathd make a map of this WWID by itself (a new path, a reconfigure)?"""
        conf = self._conf()
        if not wwid or conf.blacklisted(wwid):
            return False
        policy = conf.find_multipaths
        if policy in ("off", "greedy"):
            return True
        if wwid in self.wwids:
            return True
        return policy in ("on", "smart") and len(self.paths_of.get(wwid, ())) >= 2

    def _mp_create(self, wwid: str) -> tuple[SimMap, list[UEvent]]:
        """Make the map of `wwid` over its present paths (there are some; lock held)."""
        paths = self._present_paths(wwid)
        dm = self._free_dm()
        name = self._alias_for(wwid)
        first = f"{self.luns[paths[0][0]]}/block/{paths[0][1]}"
        size = int(self.fs.get(first, "size") or 0) * 512
        m = SimMap(dm=dm, name=name, wwid=wwid, size=size, slaves=[sd for _, sd in paths])
        ddir = self._dm_dir(dm)
        minor = int(dm[3:])
        self.fs.attrs(ddir, {
            "dev": f"{DM_MAJOR}:{minor}", "size": str(size // 512), "ro": "0",
            "removable": "0",
            "uevent": f"MAJOR={DM_MAJOR}\nMINOR={minor}\nDEVNAME={dm}\nDEVTYPE=disk"})
        self.fs.attrs(f"{ddir}/dm", {"name": name, "uuid": f"mpath-{wwid}", "suspended": "0"})
        self.fs.mkdir(f"{ddir}/holders")
        self.fs.mkdir(f"{ddir}/slaves")
        for hctl, sd in paths:
            self._link_path(m, hctl, sd)
        self.fs.link(f"class/block/{dm}", ddir)
        self.fs.link(f"block/{dm}", ddir)
        self.maps[dm] = m
        self._index_update(add=m)
        self._remember_wwid(wwid)           # multipathd remembers every WWID it made a map of
        # dm creates the device, then loading and resuming the table announces it again.
        events = [uevent("add", "block", ddir, "disk"), self._dm_change(m)]
        events += self._path_changes(hctl for hctl, _ in paths)
        return m, events

    def _link_path(self, m: SimMap, hctl: HCTL, sd: str) -> None:
        bdir = f"{self.luns[hctl]}/block/{sd}"
        ddir = self._dm_dir(m.dm)
        self.fs.link(f"{ddir}/slaves/{sd}", bdir)
        self.fs.link(f"{bdir}/holders/{m.dm}", ddir)
        if not self._device_running(hctl) and sd not in m.failed:
            m.failed.append(sd)             # loaded failed: the checker finds it down

    def _mp_extend(self, m: SimMap) -> list[UEvent]:
        """Put the WWID's present paths that are not in the map into it (a table reload)."""
        new = [(h, sd) for h, sd in self._present_paths(m.wwid) if sd not in m.slaves]
        if not new:
            return []
        for hctl, sd in new:
            self._link_path(m, hctl, sd)
        order = {sd: h for h, sd in self._present_paths(m.wwid)}
        m.slaves.extend(sd for _, sd in new)
        m.slaves.sort(key=lambda sd: order.get(sd, HCTL(1 << 30, 0, 0, 0)))
        m.map_loads += 1
        m.action = "reload"
        return [self._dm_change(m)] + self._path_changes(h for h, _ in new)

    def _mp_remove(self, m: SimMap) -> list[UEvent]:
        """Remove the map from device-mapper (lock held); its paths stay, without a holder."""
        ddir = self._dm_dir(m.dm)
        held = sorted(hctl for hctl, sd in self.blocks.items() if sd in m.slaves)
        for hctl in held:
            self.fs.unlink(f"{self.luns[hctl]}/block/{self.blocks[hctl]}/holders/{m.dm}")
        self.fs.unlink(f"class/block/{m.dm}")
        self.fs.unlink(f"block/{m.dm}")
        self.fs.rmtree(ddir)
        del self.maps[m.dm]
        self._index_update(drop=m)
        self._dm_hint = min(self._dm_hint, int(m.dm[3:]))
        return [uevent("remove", "block", ddir, "disk")] + self._path_changes(held)

    def _mp_rename(self, m: SimMap, name: str) -> list[UEvent]:
        self._index_update(drop=m)
        m.name = name
        self._index_update(add=m)
        self.fs.set(f"{self._dm_dir(m.dm)}/dm", "name", name)
        return [self._dm_change(m)]

    def _dm_change(self, m: SimMap) -> UEvent:
        return uevent("change", "block", self._dm_dir(m.dm), "disk", DM_NAME=m.name,
                      DM_UUID=f"mpath-{m.wwid}")

    # -- multipathd hears of new paths --------------------------------------------------------

    def _send(self, events: list[UEvent]) -> None:
        super()._send(events)
        if self._mp_new and not self._closed:
            delay = self.fabric.multipathd.create_delay
            if delay > 0:
                self._later(delay, self._mp_adopt_new)
            else:
                self._mp_adopt_new()

    def _mp_adopt_new(self) -> None:
        """uev_add_path for the paths that appeared: into their map, or a new map if the
        policy allows."""
        with self._changing():
            new, self._mp_new = self._mp_new, []
            events = self._mp_adopt(new)
        self._send(events)

    def _mp_adopt(self, hctls: Iterable[HCTL]) -> list[UEvent]:
        events: list[UEvent] = []
        seen: set[str] = set()
        for hctl in hctls:
            wwid = self.serials.get(hctl)
            if not wwid or wwid in seen or hctl not in self.blocks:
                continue
            seen.add(wwid)
            m = self._map_of(wwid)
            if m is not None:
                events += self._mp_extend(m)
            elif self._eligible(wwid):
                events += self._mp_create(wwid)[1]
        return events

    # -- the multipathd commands (its socket calls these with its lock held) --------------------

    def _refwwid(self, param: str) -> str:
        """get_refwwid(DEV_DEVMAP): a map's WWID, a binding's, an alias's, or the WWID given."""
        m = self._find_map(param)
        if m is not None:
            return m.wwid
        if param.startswith("mpath"):
            for wwid, alias in self.bindings.items():
                if alias == param:
                    return wwid
        for wwid, alias in self._conf().aliases.items():
            if alias == param:
                return wwid
        return param

    def mpd_add_map(self, param: str) -> str:
        """cli_add_map: make the map of a WWID over every present path, whatever find_multipaths
        says; "blacklisted", or "fail" with no path (or right after a flush of it)."""
        with self._changing():
            wwid = self._refwwid(param)
            if self._conf().blacklisted(wwid):
                return "blacklisted\n"
            if self._map_of(wwid) is not None:
                return "ok\n"
            if wwid in self.flushed or not self._present_paths(wwid):
                return "fail\n"
            _m, events = self._mp_create(wwid)
        self._send(events)
        return "ok\n"

    def mpd_del_map(self, param: str) -> str:
        """cli_del_map: flush the map named `param` (its device-mapper name); "fail" if there is
        none by that name or it is open (nothing changes then)."""
        name = param[len("/dev/"):] if param.startswith("/dev/") else param
        with self._changing():
            m = next((m for m in self.maps.values() if m.name == name), None)
            if m is None or m.dm in self.opened:
                return "fail\n"
            events = self._flush(m)
        self._send(events)
        return "ok\n"

    def _flush(self, m: SimMap) -> list[UEvent]:
        self.flushed.add(m.wwid)
        return self._mp_remove(m)

    def mpd_reconfigure(self) -> None:
        """The configuration read again; maps renamed, flushed (blacklisted, not open) and made
        as it now says; the post-flush refusal of `add map` ends."""
        with self._changing():
            self.mpconf = load_conf(self.etc)
            self._mp_read_files()
            self.flushed.clear()
            conf = self.mpconf
            events: list[UEvent] = []
            for m in sorted(self.maps.values(), key=lambda m: int(m.dm[3:])):
                if conf.blacklisted(m.wwid):
                    if m.dm not in self.opened:
                        events += self._mp_remove(m)
                    continue
                name = self._alias_for(m.wwid)
                if name != m.name:
                    events += self._mp_rename(m, name)
                events += self._mp_extend(m)
            for wwid in sorted(self.paths_of):
                if self._map_of(wwid) is None and self._eligible(wwid) and \
                        self._present_paths(wwid):
                    events += self._mp_create(wwid)[1]
        self._send(events)

    def mpd_views(self) -> list[MapView]:
        with self._lock:
            sd_hctl = {sd: h for h, sd in self.blocks.items()}
            return [self._view(m, sd_hctl)
                    for m in sorted(self.maps.values(), key=lambda m: int(m.dm[3:]))]

    def mpd_view(self, name: str) -> MapView | None:
        """find_mp_by_str: dm-N or the map's name (0.9.4 takes no WWID here)."""
        with self._lock:
            m = self.maps.get(name) if re.fullmatch(r"dm-\d+", name) else next(
                (m for m in self.maps.values() if m.name == name), None)
            if m is None:
                return None
            return self._view(m, {sd: h for h, sd in self.blocks.items()})

    def mpd_paths_raw(self, fmt: str) -> str:
        """`show paths raw format FMT` for the wildcards sanbusd uses: %d (device), %w (WWID),
        %i (H:C:T:L), %m (map name, "[orphan]" without one), %t (dm state), %T (checker
        state), %o (device state; orphans: "undef" dm and checker). Blacklisted paths are not
        multipathd's, so they are not listed."""
        with self._lock:
            conf = self._conf()
            by_sd = {sd: m for m in self.maps.values() for sd in m.slaves}
            lines = []
            for hctl, sd in sorted(self.blocks.items()):
                wwid = self.serials.get(hctl, "")
                if not wwid or conf.blacklisted(wwid):
                    continue
                m = by_sd.get(sd)
                fields = {"d": sd, "w": wwid, "i": str(hctl),
                          "m": m.name if m is not None else "[orphan]",
                          "o": "running" if self._device_running(hctl) else "offline"}
                if m is not None:
                    failed = sd in m.failed
                    fields["t"] = "failed" if failed else "active"
                    fields["T"] = "faulty" if failed else "ready"
                else:
                    fields["t"], fields["T"] = "undef", "undef"
                lines.append(re.sub(r"%(\w)", lambda x: fields.get(x.group(1), "[undef]"), fmt))
        return "".join(line + "\n" for line in lines) or "ok\n"

    def mpd_status(self) -> str:
        with self._lock:
            up = sum(len(m.slaves) - len(m.failed) for m in self.maps.values())
            down = sum(len(m.failed) for m in self.maps.values())
        out = "path checker states:\n"
        if down:
            out += f"{'down':<20}{down}\n"
        if up:
            out += f"{'up':<20}{up}\n"
        return out + f"\npaths: {up + down}\nbusy: False\n"

    def _view(self, m: SimMap, sd_hctl: dict[str, HCTL]) -> MapView:
        conf = self._conf()
        paths = [self._path_view(m, sd, sd_hctl.get(sd)) for sd in m.slaves]
        if conf.path_grouping_policy == "failover":
            for i, p in enumerate(paths):
                p.pri = 50 if i == 0 else 10
            groups = [GroupView(pri=p.pri, dm_st="enabled", paths=[p]) for p in paths]
        else:
            groups = [GroupView(pri=50, dm_st="enabled", paths=paths)] if paths else []
        live = next((g for g in groups if any(p.dm_st == "active" for p in g.paths)),
                    groups[0] if groups else None)
        if live is not None:
            live.dm_st = "active"
        vend, prod, rev = self._inquiry(sd_hctl.get(m.slaves[0]) if m.slaves else None)
        hw = HWTABLE.get(vend, {})
        # multipath.conf's defaults win over the built-in hardware table (as in 0.9.4's merge)
        mp = MpathConf(no_path_retry=conf.no_path_retry or hw.get("no_path_retry", ""))
        return MapView(name=m.name, uuid=m.wwid, sysfs=m.dm,
                       failback=conf.failback or hw.get("failback", "-"),
                       queueing=mp.queueing, features=mp.features, hwhandler="1 alua",
                       action=m.action, path_faults=m.path_faults, vend=vend, prod=prod,
                       rev=rev, map_loads=m.map_loads, groups=groups)

    def _path_view(self, m: SimMap, sd: str, hctl: HCTL | None) -> PathView:
        failed = sd in m.failed
        p = PathView(dev=sd, dev_t=self._dev_t(sd), dm_st="failed" if failed else "active",
                     dev_st="running" if hctl is None or self._device_running(hctl)
                     else "offline",
                     chk_st="faulty" if failed else "ready", pri=50)
        if hctl is None:
            return p
        p.lun_hex = lun_hex(hctl.lun)
        h = self.hosts.get(hctl.host)
        rp = self._rport_of(hctl)  # type: ignore[attr-defined]
        if h is not None and h.spec.type == "fc" and rp is not None:
            p.host_wwnn, p.host_wwpn = sysfs_wwn_text(h.wwnn), sysfs_wwn_text(h.wwpn)
            p.target_wwnn = sysfs_wwn_text(self.fabric.arrays[rp.array].wwnn)
            p.target_wwpn = sysfs_wwn_text(rp.port.wwpn)
            pci = _PCI_RE.findall(h.devdir)
            p.host_adapter = pci[-1] if pci else "[undef]"
        elif h is not None and h.session:
            # iSCSI: the target's name and the portal's address ("[undef]" with the session gone)
            ai, _spec = self._iscsi_lun_spec(h, hctl.lun)  # type: ignore[attr-defined]
            p.target_wwnn = self.fabric.arrays[ai].iqn if ai is not None else "[undef]"
            p.host_adapter = (h.spec.portal.rpartition(":")[0] if h.session_state == "LOGGED_IN"
                              else "[undef]")
        return p

    def _inquiry(self, hctl: HCTL | None) -> tuple[str, str, str]:
        if hctl is None:
            return "", "", ""
        rp = self._rport_of(hctl)  # type: ignore[attr-defined]
        if rp is not None:
            a = self.fabric.arrays[rp.array]
            return a.vendor, a.model, a.rev
        h = self.hosts.get(hctl.host)
        if h is not None and h.session:
            ai, _spec = self._iscsi_lun_spec(h, hctl.lun)  # type: ignore[attr-defined]
            if ai is not None:
                a = self.fabric.arrays[ai]
                return a.vendor, a.model, a.rev
        disk = next((d for d in h.spec.disks if (d.target, d.lun) == (hctl.target, hctl.lun)),
                    None) if h is not None else None
        return (disk.vendor, disk.model, disk.rev) if disk is not None else ("", "", "")

    def _dev_t(self, sd: str) -> str:
        return f"8:{self._block_index(sd) * 16}"  # type: ignore[attr-defined]

    # -- the multipath tool and dmsetup, for the SAN admin and the daemon ------------------------

    def mpath_create(self, wwid: str) -> SimMap:
        """`multipath WWID`: make a map over every present path of the LUN with this WWID
        (naa.6… as sysfs shows it, or the multipath form 36…), whatever find_multipaths says."""
        with self._changing():
            want = self._mpath_wwid(wwid)
            m = self._map_of(want)
            if m is not None:
                raise SanAdminError(f"WWID {wwid} already has a map: {m.name} ({m.dm})")
            if not self._present_paths(want):
                raise SanAdminError(f"no LUN path with WWID {wwid} has a block device here "
                                    "(scan for the LUN first)")
            if self._conf().blacklisted(want):
                raise SanAdminError(f"WWID {want} is blacklisted by the multipath "
                                    f"configuration in {self.etc}")
            m, events = self._mp_create(want)
        self._send(events)
        return m

    def mpath_remove(self, wwid: str) -> None:
        """`multipath -f`: flush the map of this WWID; its paths stay, without a holder."""
        with self._changing():
            want = self._mpath_wwid(wwid)
            m = self._map_of(want)
            if m is None:
                have = ", ".join(f"{x.name} ({x.wwid})" for x in self.maps.values()) or "none"
                raise SanAdminError(f"no map for WWID {wwid} (maps: {have})")
            if m.dm in self.opened:
                raise SanAdminError(f"{m.name}: map in use (held open by {self.opened[m.dm]})")
            events = self._flush(m)
        self._send(events)

    def dm_deferred_remove(self, name: str) -> None:
        """`dmsetup remove --deferred NAME`: gone now if nobody holds it open, else when the
        last holder closes it. OSError(ENXIO) for no such map."""
        with self._changing():
            m = self._find_map(name)
            if m is None:
                raise OSError(errno.ENXIO, f"{name}: no such device-mapper device")
            if m.dm in self.opened:
                m.deferred = True
                return
            events = self._flush(m)
        self._send(events)

    def _released(self, name: str) -> list[UEvent]:
        """The last holder of `name` closed it: a deferred remove happens now."""
        m = self.maps.get(name)
        if m is None or not m.deferred:
            return []
        return self._flush(m)

    def _resolve_open(self, name: str) -> str:
        """What hold-open and release name: a disk (sdX), a map's dm-N, or a map's name."""
        if name in self.blocks.values() or name in self.maps:
            return name
        m = self._find_map(name)
        return m.dm if m is not None else name

    def multipath_state(self) -> dict:
        """For the control socket's status."""
        with self._lock:
            return {"wwids": list(self.wwids), "bindings": dict(self.bindings),
                    "flushed": sorted(self.flushed),
                    "mode": self.multipathd.mode if self.multipathd is not None else "none",
                    "config": {"user_friendly_names": self._conf().user_friendly_names,
                               "find_multipaths": self._conf().find_multipaths,
                               "blacklist": list(self._conf().blacklist),
                               "exceptions": list(self._conf().exceptions)}}

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _dm_dir(dm: str) -> str:
        return f"devices/virtual/block/{dm}"

    def _free_dm(self) -> str:
        """The lowest free dm minor, as device-mapper gives it."""
        n = self._dm_hint if self._dm_hint_for is self.maps else 0
        while f"dm-{n}" in self.maps:
            n += 1
        self._dm_hint, self._dm_hint_for = n + 1, self.maps
        return f"dm-{n}"

    @staticmethod
    def _mpath_wwid(wwid: str) -> str:
        """Either form of a WWID -> the multipath form (naa.6001… -> 36001…)."""
        w = wwid.strip()
        if not w:
            raise SanAdminError("give a WWID, e.g. naa.6001405... or 36001405...")
        return multipath_wwid(w) if w.startswith(("naa.", "eui.", "t10.")) else w

    def _path_changes(self, hctls: Iterable[HCTL]) -> list[UEvent]:
        return [uevent("change", "block", f"{self.luns[h]}/block/{self.blocks[h]}", "disk")
                for h in hctls]


def _append(path: Path, header: str, line: str) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        line = header + line
    with open(path, "a") as f:
        f.write(line)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)

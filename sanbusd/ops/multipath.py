"""Multipath maps: what multipathd says about them, creating all that should exist, flushing one,
and the few settings sanbusd manages (a drop-in beside the admin's multipath.conf).

multipathd stays in charge of its maps: sanbusd asks it ("add map", "del map", "reconfigure")
and never loads or removes a dm table behind its back. What users of multipath-tools and
os-brick run into is handled here: a flush races with users of the map (check the holders
first, and let multipathd refuse an open map), "add map" fails right after a flush (one
"reconfigure" then), "reconfigure" makes multipathd answer "timeout" for a while (the client
retries within its deadline), and a map exists before it is ready for I/O (wait for udev and
for a path that is up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Callable

from .. import errors
from ..backend.base import Backend
from ..backend.multipathd import (MultipathdAbsent, MultipathdClient, MultipathdError,
                                  MultipathdGarbage, MultipathdTimeout)
from ..config import Settings
from ..model.multipath import MapStatus, MultipathSettings, parse_dropin, render_dropin
from ..model.ids import multipath_wwid
from ..model.records import Dirty, MultipathMap, map_paths
from ..persist import write_text
from ..state import State
from .jobs import Jobs
from .lun import LunOps

log = logging.getLogger(__name__)

DROPIN = "sanbusd.conf"
ADD_MAP_WAIT = 5.0      # s for a map multipathd said it made to appear before reconfiguring
RUNNING, ABSENT, NOT_RESPONDING, ERROR = "running", "absent", "not-responding", "error"


async def off_loop(fn, *args):
    """fn(*args) in a daemon thread: a multipathd that hangs must not hold up the daemon's exit
    (asyncio.to_thread's pool is joined at exit)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def hand_over(cb) -> None:
        try:
            loop.call_soon_threadsafe(cb)
        except RuntimeError:
            pass                    # the daemon stopped meanwhile: nobody waits any more

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            hand_over(lambda err=e: fut.done() or fut.set_exception(err))
        else:
            hand_over(lambda: fut.done() or fut.set_result(result))
    threading.Thread(target=run, name="multipathd-call", daemon=True).start()
    return await fut


def status_of(e: MultipathdError) -> str:
    if isinstance(e, MultipathdAbsent):
        return ABSENT
    if isinstance(e, MultipathdTimeout):
        return NOT_RESPONDING
    return ERROR


def san_error(e: MultipathdError, doing: str) -> errors.SanError:
    if isinstance(e, MultipathdAbsent):
        return errors.NotSupported(f"{doing}: {e}")
    if isinstance(e, MultipathdTimeout):
        return errors.TimedOut(f"{doing}: {e}")
    if isinstance(e, MultipathdGarbage):
        return errors.Failed(f"{doing}: multipathd's answer could not be read ({e})")
    return errors.Failed(f"{doing}: {e}")


class MultipathdStates:
    """The map states a re-read of the inventory attaches to its map records (kinds.MapStates).

    Called from the refresh's worker thread. A few maps are asked for one by one, many with one
    `show maps json`. A multipathd that does not answer costs a re-read one short wait, then
    is left alone for `backoff` seconds (the poller notices when it is back), so kernel events
    keep flowing while multipathd hangs.
    """

    # One `show maps json` when at least this many maps, and a quarter of them all, are to be
    # read (start-up, a storm); one `show map dm-N json` each otherwise: while thousands of
    # maps are being created, each burst of new ones must not cost the whole table.
    BULK = 64

    def __init__(self, client: MultipathdClient, report: Callable[[str], None],
                 quick_timeout: float = 2.0, backoff: float = 10.0) -> None:
        self.client = client
        self.report = report
        self.quick_timeout = min(quick_timeout, client.timeout)
        self.backoff = backoff
        self._cache: dict[str, MapStatus] = {}
        self._quiet_until = 0.0
        self._lock = threading.Lock()

    def prefetch(self, dms: set[str], total: int = 0) -> None:
        with self._lock:
            self._cache = {}
            if not dms or time.monotonic() < self._quiet_until:
                return
            try:
                if len(dms) >= self.BULK and len(dms) * 4 >= total:
                    # A whole table at start-up, or a storm: one bulk answer.
                    self._cache = self.client.maps(self.quick_timeout * 4)
                else:
                    for dm in sorted(dms):
                        st = self.client.map(dm, self.quick_timeout)
                        if st is not None:
                            self._cache[dm] = st
            except MultipathdError as e:
                self.failed(e)
                return
            self.report(RUNNING)

    def get(self, dm: str) -> MapStatus | None:
        return self._cache.get(dm)

    def failed(self, e: MultipathdError) -> None:
        if not isinstance(e, MultipathdAbsent):
            self._quiet_until = time.monotonic() + self.backoff
        self.report(status_of(e))

    def answered(self) -> None:
        self._quiet_until = 0.0
        self.report(RUNNING)


def _states_match(m: MultipathMap, states: dict[str, tuple[str, str, str]]) -> bool:
    """Does the published map still say what multipathd says of its paths?"""
    if not m.known:
        return False
    seen = {p.dev: (p.dm_state, p.checker_state, p.dev_state) for p in m.path_states}
    return all(states.get(dev, seen.get(dev)) == seen.get(dev) for dev in m.slaves)


def _in_use(name: str, users: list[str]) -> errors.SanError:
    return errors.Busy(f"multipath map {name} is in use by {', '.join(users)}; stop using it "
                       "first (unmount it, shut the VM down), or pass deferred=true to remove "
                       "it when it is closed")


class MultipathOps:
    def __init__(self, backend: Backend, state: State, jobs: Jobs, settings: Settings,
                 client: MultipathdClient, lun_ops: LunOps) -> None:
        self.backend = backend
        self.state = state
        self.jobs = jobs
        self.settings = settings
        self.client = client
        self.lun_ops = lun_ops
        conf_dir = settings.multipath_conf_dir or backend.multipath_conf_dir
        self.dropin = os.path.join(conf_dir, DROPIN)
        self.states = MultipathdStates(client, self._report)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task | None = None
        self._config_lock = asyncio.Lock()
        self._create_lock = asyncio.Lock()

    # -- how multipathd answers, shown as Manager.Multipathd ------------------------------------

    def _report(self, status: str) -> None:
        """From any thread: multipathd's status for the Manager."""
        loop = self._loop
        if loop is None:
            return
        try:
            if asyncio.get_running_loop() is loop:
                self.state.set_multipath(daemon=status)
                return
        except RuntimeError:
            pass
        try:
            loop.call_soon_threadsafe(lambda: self._loop is not None
                                      and self.state.set_multipath(daemon=status))
        except RuntimeError:
            pass                    # the loop is closed: the daemon has stopped

    async def _ask(self, fn, *args, doing: str):
        """One multipathd command off the loop; its failure as the caller's named error."""
        try:
            result = await off_loop(fn, *args)
        except MultipathdError as e:
            self.states.failed(e)
            raise san_error(e, doing) from None
        self.states.answered()
        return result

    def start(self) -> None:
        """At start-up (on the loop): show the drop-in, and keep path states fresh."""
        self._loop = asyncio.get_running_loop()
        self._show_config()
        self._poller = asyncio.ensure_future(self._poll())

    def stop(self) -> None:
        self._loop = None           # late answers from worker threads are not published
        if self._poller is not None:
            self._poller.cancel()

    async def _poll(self) -> None:
        """Path checker verdicts change without a kernel event: compare multipathd's view with
        the published one now and then, and re-read the maps that differ."""
        while True:
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive one bad answer
                log.exception("polling multipathd failed")
            await asyncio.sleep(self.settings.multipathd_poll)

    async def poll_once(self) -> None:
        inv = self.state.inventory
        try:
            if inv.maps:
                states = await off_loop(self.client.path_states)
            else:
                await off_loop(self.client.running)
                states = {}
        except MultipathdError as e:
            self.states.failed(e)
            stale = {dm for dm, m in self.state.inventory.maps.items() if m.known}
        else:
            self.states.answered()
            stale = {dm for dm, m in self.state.inventory.maps.items()
                     if not _states_match(m, states)}
        if stale:
            self.state.pump.feed_dirty(Dirty.of(maps=stale))

    # -- create ---------------------------------------------------------------------------------

    async def candidates(self, wwids: list[str] | None, all_eligible: bool) -> dict[str, list[str]]:
        """WWID -> path devices, as multipathd groups paths, of the WWIDs to map."""
        known = await self._ask(self.client.paths, doing="listing paths")
        by_wwid: dict[str, list[str]] = {}
        blocks = {lun.block for lun in self.state.inventory.luns.values() if lun.block}
        for dev, wwid in known.items():
            if dev in blocks:
                by_wwid.setdefault(wwid, []).append(dev)
        if wwids is not None:
            missing = [w for w in wwids if w not in by_wwid]
            if missing:
                self._not_listed(missing[0])
                raise errors.NotFound(
                    f"no LUN path here has WWID {missing[0]} as multipath knows it; "
                    "`sanctl status` lists the LUNs (multipath's WWID is 3 + the naa. digits, "
                    "or udev's ID_SERIAL)")
            return {w: sorted(by_wwid[w]) for w in wwids}
        least = 1 if all_eligible else 2
        return {w: sorted(d) for w, d in sorted(by_wwid.items()) if len(d) >= least}

    def _not_listed(self, wwid: str) -> None:
        """multipathd does not list this WWID's paths: say why when sanbusd can tell."""
        s = self.state.multipath_settings
        if wwid in s.exclude_wwids or (s.include_wwids and wwid not in s.include_wwids):
            raise errors.Failed(f"WWID {wwid} is excluded from multipath (Manager.MultipathConfig, "
                                f"{self.dropin}); include it first (sanctl multipath config)")
        if any(lun.wwid and multipath_wwid(lun.wwid) == wwid
               for lun in self.state.inventory.luns.values()):
            raise errors.Failed(f"multipathd does not list the paths of WWID {wwid}: it is "
                                "blacklisted in its configuration (/etc/multipath.conf), or "
                                "its paths are not set up yet")

    async def create_all(self, wwids: list[str] | None, all_eligible: bool, timeout: float,
                         uid: int) -> list[str]:
        """Map every chosen WWID; returns their WWIDs once each map is on the bus and ready."""
        async with self._create_lock:
            chosen = await self.candidates(wwids, all_eligible)
            job = self.jobs.start("multipath-create", [], uid, cancelable=False)
            try:
                done = await self._create(job, chosen, timeout)
            except errors.SanError as e:
                self.jobs.finish(job, False, e.message)
                raise
            except Exception:
                self.jobs.finish(job, False, "internal error (see sanbusd's log)")
                raise
            self.jobs.finish(job, True, f"{len(done)} multipath maps ready")
            return done

    def _map_of(self, wwid: str) -> MultipathMap | None:
        return next((m for m in self.state.inventory.maps.values() if m.wwid == wwid), None)

    async def _create(self, job, chosen: dict[str, list[str]], timeout: float) -> list[str]:
        # multipathd 0.9 makes the map and then answers "fail" when the map gets a friendly
        # name (it looks the new map up by the WWID), also right after a flush: its answer
        # says nothing. What counts is whether the map appears; a WWID whose map does not
        # (multipathd still remembers its flush) gets one "reconfigure".
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        todo = [w for w in chosen if self._map_of(w) is None]

        def progress(done: int) -> None:        # from the worker thread
            loop.call_soon_threadsafe(self.jobs.progress, job, done / max(1, len(todo)) * 0.8)
        answers = await self._ask(self.client.add_maps, todo, progress,
                                  doing="creating multipath maps")
        refused = [w for w, reply in answers.items() if reply == "blacklisted"]
        if refused:
            raise errors.Failed(f"multipathd will not map {refused[0]}: it is blacklisted "
                                "(see MultipathConfig and /etc/multipath.conf)")
        want = list(chosen)
        first = min(timeout, ADD_MAP_WAIT + len(todo) * 0.01)
        if not await self.state.wait_for(lambda: not self._unmapped(want), first):
            await self._pick_up_new_maps()
        missing = self._unmapped(want)
        if missing:
            log.info("no map yet for %d WWIDs (%s%s); asking multipathd to reconfigure",
                     len(missing), ", ".join(missing[:3]), ", ..." if len(missing) > 3 else "")
            await self._ask(self.client.reconfigure, doing="reconfiguring multipathd")
        self.jobs.progress(job, 0.9)
        rest = max(0.1, deadline - loop.time())
        if not await self.state.wait_for(lambda: not self._ready(want), rest):
            await self._pick_up_new_maps()
            missing = self._ready(want)
            if not missing:
                return want
            w = missing[0]
            if self._map_of(w) is None:
                raise errors.Failed(f"multipathd did not create a map for {w} (it answered "
                                    f"{answers.get(w, 'nothing')!r}, also after a "
                                    "reconfigure); its log says why")
            raise errors.TimedOut(f"{len(missing)} of {len(want)} maps not ready for I/O after "
                                  f"{timeout:g} s, e.g. {self._map_of(w).name or w}")
        return want

    def _unmapped(self, wwids: list[str]) -> list[str]:
        have = {m.wwid for m in self.state.inventory.maps.values()}
        return [w for w in wwids if w not in have]

    async def _pick_up_new_maps(self) -> None:
        """udev announces new maps; in case it is slow or absent, look for them once."""
        fresh = set(await asyncio.to_thread(self.backend.reader.map_names))
        fresh -= self.state.inventory.maps.keys()
        if fresh:
            await self.state.pump.sync(Dirty.of(maps=fresh))

    def _ready(self, wwids: list[str]) -> list[str]:
        """The WWIDs whose map is not yet on the bus and ready for I/O (its /dev/mapper node set
        up by udev, a path up)."""
        inv = self.state.inventory
        by_wwid = {m.wwid: m for m in inv.maps.values()}
        by_block = {lun.block: lun.hctl for lun in inv.luns.values() if lun.block}
        return [w for w in wwids
                if (m := by_wwid.get(w)) is None or not self.backend.block_ready(m.dm)
                or not any(v.up for v in map_paths(inv, m, by_block))]

    # -- flush ----------------------------------------------------------------------------------

    async def flush(self, wwid: str, deferred: bool = False, remove_paths: bool = False) -> None:
        m = self._map_of(wwid)
        if m is None:
            raise errors.NotFound(f"no multipath map with WWID {wwid}")
        name = m.name or m.dm
        users = await asyncio.to_thread(self.backend.block_users, m.dm)
        if users and deferred and remove_paths:
            raise errors.Busy(f"multipath map {name} is in use by {', '.join(users)}, so a "
                              "deferred remove would leave its paths behind; flush it with "
                              "deferred alone, and delete the paths (Lun.Delete) once it is gone")
        if users and deferred:
            try:
                await asyncio.to_thread(self.backend.dm_deferred_remove, m.name or m.dm)
            except OSError as e:
                raise errors.from_errno(e, f"deferred remove of {name}") from None
            log.info("map %s is in use by %s: it goes when its last user closes it", name,
                     ", ".join(users))
            return
        if users:
            raise _in_use(name, users)
        # "del map" takes the device-mapper name (not dm-N, not the WWID).
        reply = await self._ask(self.client.del_map, name, doing=f"flushing {name}")
        if reply not in ("ok", "delayed"):
            # A user seen only now (it opened the map meanwhile) gets the same answer as one
            # seen before: who holds it, and what to do.
            if users := await asyncio.to_thread(self.backend.block_users, m.dm):
                raise _in_use(name, users)
            raise errors.Busy(f"multipathd refused to flush {name} (it answered {reply!r}): "
                              "it is probably in use; retry once it is closed")
        await self.state.pump.sync(Dirty.of(maps={m.dm}))
        wait = self.settings.settle_timeout
        if not await self.state.wait_for(lambda: m.dm not in self.state.inventory.maps, wait):
            raise errors.TimedOut(f"multipathd flushed {name} but it is still listed after "
                                  f"{wait:g} s")
        if remove_paths:
            await self._remove_paths(m)

    async def _remove_paths(self, m: MultipathMap) -> None:
        by_block = {lun.block: lun.hctl for lun in self.state.inventory.luns.values()
                    if lun.block}
        failed = []
        for dev in m.slaves:
            hctl = by_block.get(dev)
            if hctl is None:
                continue
            try:
                await self.lun_ops.delete(hctl)
            except errors.NotFound:
                continue
            except errors.SanError as e:
                failed.append(f"{hctl}: {e.message}")
        if failed:
            raise errors.Failed(f"map {m.name or m.dm} was flushed, but not every path could be "
                                "removed: " + "; ".join(failed))

    # -- configuration --------------------------------------------------------------------------

    def _read(self, path: str) -> MultipathSettings:
        try:
            with open(path) as f:
                return parse_dropin(f.read())
        except FileNotFoundError:
            return MultipathSettings()
        except (OSError, UnicodeDecodeError) as e:
            log.warning("cannot read %s: %s", path, e)
            return MultipathSettings()

    def _read_dropin(self) -> MultipathSettings:
        return self._read(self.dropin)

    def _read_effective(self) -> MultipathSettings:
        """multipath.conf, then the drop-ins in name order, a later value over an earlier one,
        as multipathd reads them (multipath.conf sits two levels above conf.d)."""
        conf_dir = os.path.dirname(self.dropin)
        files = [os.path.join(os.path.dirname(os.path.dirname(conf_dir)), "multipath.conf")]
        try:
            files += sorted(os.path.join(conf_dir, n) for n in os.listdir(conf_dir)
                            if n.endswith(".conf"))
        except OSError:
            pass
        friendly, find = None, None
        for path in files:
            s = self._read(path)
            friendly = s.user_friendly_names if s.user_friendly_names is not None else friendly
            find = s.find_multipaths or find
        return MultipathSettings(friendly, find)

    def _show_config(self) -> None:
        self.state.set_multipath(settings=self._read_dropin(), dropin=self.dropin,
                                 effective=self._read_effective())

    async def set_config(self, changes: dict) -> None:
        async with self._config_lock:
            cur = self.state.multipath_settings
            try:
                new = replace(cur, **changes).validated()
            except ValueError as e:
                raise errors.InvalidArgument(str(e)) from None
            for m in self.state.inventory.maps.values():
                if _excluded(new, m.wwid) and not _excluded(cur, m.wwid):
                    users = await asyncio.to_thread(self.backend.block_users, m.dm)
                    if users:
                        raise errors.Busy(
                            f"excluding {m.wwid} would take map {m.name or m.dm} away from "
                            f"{', '.join(users)}; stop using it first; nothing was written")
            text = render_dropin(new)
            try:
                await asyncio.to_thread(write_text, self.dropin, text, 0o644)
            except OSError as e:
                raise errors.Failed(f"cannot write {self.dropin}: {e.strerror or e}") from None
            self._show_config()
            try:
                reply = await self._ask(self.client.reconfigure, doing="applying the settings")
            except (errors.NotSupported, errors.TimedOut) as e:
                raise type(e)(f"{self.dropin} is written and applies when multipathd (re)starts; "
                              f"{e.message}") from None
            if reply != "ok":
                raise errors.Failed(f"{self.dropin} is written, but multipathd's reconfigure "
                                    f"answered {reply!r}; its log says why")


def _excluded(s: MultipathSettings, wwid: str) -> bool:
    return wwid in s.exclude_wwids or bool(s.include_wwids) and wwid not in s.include_wwids

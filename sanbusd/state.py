"""The live state: the inventory as the kernel has it now, kept in step by events, published on
every change; hints that only events can give (RescanSuggested); and waiting for an object.

Kernel events are coalesced per burst (lvmdbusd's udevwatch does the same) into one re-read of
exactly the touched records and one batch of signals; a lost event (ENOBUFS) or an explicit
reconcile re-reads everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from .backend.base import Backend
from .backend.uevent import LUNS_CHANGED_UA, UEvent, dirty_from_event
from .kinds import MapStates, NoMapStates, read_all, refresh
from .model.multipath import UNKNOWN, MultipathSettings
from .model.records import Diff, Dirty, Inventory, diff
from .publish.publisher import Publisher

log = logging.getLogger(__name__)

SETTLE_QUIET = 0.05     # a burst has ended after this long without events (s)
SETTLE_MAX = 0.5        # ... or after this long in any case, so a storm still makes progress


class State:
    def __init__(self, backend: Backend, publisher: Publisher,
                 map_states: MapStates | None = None) -> None:
        self.backend = backend
        self.publisher = publisher
        self.map_states = map_states or NoMapStates()   # multipathd's word on maps' paths
        self.inventory = Inventory()
        self.rescan_suggested: set[int] = set()     # hosts whose storage reported new LUNs
        self.persistent: set[str] = set()           # WWPNs of the vHBAs kept across restarts
        self.persistent_rows: list[dict[str, str]] = []  # Manager.PersistentVhbas
        self.multipath_settings = MultipathSettings()     # sanbusd's drop-in
        self.multipath_effective = MultipathSettings()    # with multipath.conf and drop-ins
        self.multipath_dropin = ""
        self.multipathd = UNKNOWN                         # Manager.Multipathd
        self._lock = asyncio.Lock()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self.pump = EventPump(self.refresh, self._unit_attentions)

    async def load(self) -> Inventory:
        """Read everything and publish it (start-up)."""
        inv = await asyncio.to_thread(read_all, self.backend.reader, self.map_states)
        self._publish(inv, diff(Inventory(), inv), first=True)
        return inv

    async def refresh(self, dirty: Dirty) -> None:
        if not dirty:
            return
        async with self._lock:
            old = self.inventory
            # sysfs reads block (and a host may vanish mid-read): keep them off the loop.
            new, keys = await asyncio.to_thread(refresh, self.backend.reader, old, dirty,
                                                self.map_states)
            # Also with nothing to publish: waiters may be waiting for udev to finish (a uevent
            # announced after its rules ran), which the records do not show.
            self._publish(new, diff(old, new, keys))

    def _publish(self, new: Inventory, d: Diff, first: bool = False) -> None:
        old, self.inventory = self.inventory, new
        self.publisher.publish(old, new, d, self, first)
        self._wake()

    # -- hosts whose storage says its LUN inventory changed (SDEV_UA) -------------------------

    def _unit_attentions(self, events: list[UEvent]) -> None:
        """The storage said its LUN inventory changed (the kernel does not rescan by itself):
        surface it on the host, so a GUI can offer a scan; never scan blindly from here."""
        hosts = set()
        for ev in events:
            if ev.properties.get("SDEV_UA") == LUNS_CHANGED_UA:
                hosts |= {h.host for h in dirty_from_event(ev).luns}
        if hosts:
            log.info("storage reports changed LUN inventory on %s: a scan will find the new "
                     "LUNs", ", ".join(f"host{h}" for h in sorted(hosts)))
            self.suggest_rescan(hosts)

    def _rerender(self, kind: str, keys: set) -> None:
        d = Diff()
        d.changed[kind] |= keys & getattr(self.inventory, kind).keys()
        self._publish(self.inventory, d)

    def _rerender_hosts(self, hosts: set[int]) -> None:
        self._rerender("hosts", hosts)

    def set_persistent(self, wwpns: set[str], rows: list[dict[str, str]]) -> None:
        """The vHBAs kept across restarts changed: their objects and the Manager show it."""
        changed = wwpns ^ self.persistent
        self.persistent, self.persistent_rows = set(wwpns), rows
        self._rerender("vports", {n for n, v in self.inventory.vports.items()
                                  if v.wwpn in changed})
        self.publisher.publish_manager(self)

    def set_multipath(self, settings: MultipathSettings | None = None, dropin: str | None = None,
                      daemon: str | None = None,
                      effective: MultipathSettings | None = None) -> None:
        """What the Manager shows of multipath changed (the drop-in, or how multipathd answers)."""
        before = (self.multipath_settings, self.multipath_dropin, self.multipathd,
                  self.multipath_effective)
        if settings is not None:
            self.multipath_settings = settings
        if effective is not None:
            self.multipath_effective = effective
        if dropin is not None:
            self.multipath_dropin = dropin
        if daemon is not None:
            self.multipathd = daemon
        if (self.multipath_settings, self.multipath_dropin, self.multipathd,
                self.multipath_effective) != before:
            self.publisher.publish_manager(self)

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
        """A future that is True once `predicate()` holds after a publication, False after
        `timeout` seconds."""
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


class EventPump:
    """Collects uevents, waits for the burst to end, has what they touched re-read."""

    def __init__(self, refresh_fn: Callable[[Dirty], "asyncio.Future | object"],
                 *listeners: Callable[[list[UEvent]], None]) -> None:
        self._refresh = refresh_fn
        self.pending = Dirty()
        self.events: list[UEvent] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.listeners = list(listeners)       # run with each burst's events after its refresh
        self._waiting: list[asyncio.Future] = []   # resolved after the next refresh

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def sync(self, dirty: Dirty) -> None:
        """feed_dirty, and return once those records are published."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        self.feed_dirty(dirty)
        await fut

    def feed_dirty(self, dirty: Dirty) -> None:
        """Records an operation knows it changed (e.g. LUNs a scan found): re-read them now
        instead of waiting on udev, which may be slow under a storm or not running at all."""
        self.pending.merge(dirty)
        self._wakeup.set()

    def feed(self, events: list[UEvent]) -> None:
        for ev in events:
            self.pending.merge(dirty_from_event(ev))
        self.events.extend(events)
        self._wakeup.set()

    def reconcile(self) -> None:
        self.pending.everything = True
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            start = time.monotonic()
            while time.monotonic() - start < SETTLE_MAX:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), SETTLE_QUIET)
                except asyncio.TimeoutError:
                    break
            self._wakeup.clear()
            dirty, self.pending = self.pending, Dirty()
            events, self.events = self.events, []
            waiting, self._waiting = self._waiting, []
            try:
                await self._refresh(dirty)  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - never let one bad burst stop the pump
                log.exception("refresh after %d events failed; reconciling", len(events))
                self.pending.everything = True
                self._wakeup.set()
                await asyncio.sleep(1)
            for fut in waiting:
                if not fut.done():
                    fut.set_result(None)
            for fn in self.listeners:
                fn(events)

"""What every part of the simulated SAN shares: the devices it has, one lock, the event sink, the
record of writes, timers, and saving the state after each change.

The parts (coldplug, scsi, fc, admin, multipath) are mixins over this core, put together in
san.py; they call each other through `self` as the kernel's subsystems call each other (an FC
login scans the new target, removing a LUN drops it from its multipath map).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..backend.uevent import UEvent
from ..model.ids import HCTL
from . import persist
from .devices import SimHost, SimMap, SimRport, SimVport, WriteRecord
from .fabric import Fabric
from .files import SysfsFiles

log = logging.getLogger(__name__)

EmitFn = Callable[[list[UEvent]], None]

SAVE_DELAY = 0.1    # seconds from a change to its save; changes in between are saved with it


class SanAdminError(ValueError):
    """A SAN admin request that cannot be done (no such array, port or LUN); says what is
    there instead."""


class SanCore:
    def __init__(self, fabric: Fabric, root: str | os.PathLike,
                 state_file: str | os.PathLike | None = None) -> None:
        self.fabric = fabric
        self.root = Path(root)              # plays /sys
        self.fs = SysfsFiles(self.root)
        self.hosts: dict[int, SimHost] = {}
        self.rports: dict[str, SimRport] = {}
        self.luns: dict[HCTL, str] = {}     # hctl -> device dir (relative)
        self.blocks: dict[HCTL, str] = {}   # hctl -> sdX
        self.vports: dict[str, SimVport] = {}
        self.maps: dict[str, SimMap] = {}   # dm-N -> map
        self.opened: dict[str, str] = {}    # sdX or dm-N -> who holds it open (a VM, say)
        # The host's multipath side (multipath.py): its /etc, multipathd's memory.
        self.etc = self.root.parent / "etc"     # plays /etc: multipath.conf, multipath/
        self.wwids: list[str] = []              # /etc/multipath/wwids
        self.bindings: dict[str, str] = {}      # WWID -> alias (/etc/multipath/bindings)
        self.flushed: set[str] = set()          # WWIDs flushed since the last reconfigure
        self.mpconf = None                      # multipathd.MpathConf, read at start
        self.serials: dict[HCTL, str] = {}      # path -> its multipath WWID (udev ID_SERIAL)
        self.paths_of: dict[str, set[HCTL]] = {}    # multipath WWID -> its paths
        self.dev_states: dict[HCTL, str] = {}   # device/state of devices not "running"
        self._mp_new: list[HCTL] = []           # paths multipathd has not heard of yet
        self._wwids_known: set[str] = set()     # caches of the above for large SANs
        self._bound: set[str] = set()
        self._alias_hint = 0
        self._maps_changed = 0
        self._index_key: tuple = ()
        self._by_wwid: dict = {}
        self._by_name: dict = {}
        self._dm_hint = 0
        self._dm_hint_for: object = None
        self.writes: list[WriteRecord] = []
        # None: the state lives only in this process (unit tests, benchmarks).
        self.state_file = Path(state_file) if state_file is not None else None
        self.write_log = (persist.WriteLog(self.state_file.with_name(persist.WRITES_FILE))
                          if self.state_file is not None else None)
        self.origin: dict[str, str] = {}    # the fabric file it was laid out from: path, digest
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()     # one writer of state.json at a time
        self._snapshots = 0                     # snapshots taken ...
        self._written = 0                       # ... and the latest one on disk
        self._free_blocks: list[int] = []
        self._next_block = 0
        self._next_host = 0
        self._next_session = 1              # iSCSI session numbers start at 1
        self._pci_slot = 3
        self._emit: EmitFn | None = None
        self._timers: set[threading.Timer] = set()
        self._closed = False
        self._unsaved = False
        self._save_timer: threading.Timer | None = None
        self._save_failed = False

    # -- events -------------------------------------------------------------------------------

    def set_event_sink(self, emit: EmitFn | None) -> None:
        self._emit = emit

    def _send(self, events: list[UEvent]) -> None:
        if events and self._emit is not None:
            self._emit(events)

    # -- changes and their persistence ----------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the SAN still while changing it, then have the change saved."""
        with self._lock:
            try:
                yield
            finally:
                self._touched()

    def _touched(self) -> None:
        """The saved state is out of date (call with the lock held): save it shortly. Changes
        close together are saved together: a targeted scan of 4,096 LUNs is 4,096 writes, and
        a save of that many LUNs takes milliseconds. close() saves whatever is left."""
        if self.state_file is None:
            return
        self._unsaved = True
        if self._closed:
            # Kernel work that was under way when the daemon stopped (a scan): save it now.
            self.save()
        elif self._save_timer is None:
            self._save_timer = threading.Timer(SAVE_DELAY, self._save_due)
            self._save_timer.daemon = True
            self._save_timer.start()

    def _save_due(self) -> None:
        with self._lock:
            self._save_timer = None
            if not self._unsaved or self._closed:
                return
        self.save()

    def save(self) -> None:
        """Write the state now (DIR/state.json). Callable with or without the lock held."""
        if self.state_file is None:
            return
        # The snapshot needs the SAN still; writing it out does not (scans go on meanwhile).
        with self._lock:
            self._unsaved = False
            state = persist.snapshot(self)
            self._snapshots += 1
            number = self._snapshots
        # Lock order: _lock before _write_lock, never the other way round.
        with self._write_lock:
            if number < self._written:
                return                      # a later snapshot is on disk already
            try:
                persist.save(self.state_file, state)
                self._written = number
                self._save_failed = False
            except OSError as e:
                if not self._save_failed:   # once per run of failures, not once per change
                    log.warning("cannot save the simulated SAN's state to %s: %s; a restart "
                                "will not find the latest changes", self.state_file, e)
                self._save_failed = True

    # -- the record of writes ---------------------------------------------------------------

    def _recorded(self, rel: str, data: str, op: Callable[[], None]) -> None:
        """Run one write's kernel work and record it as the sysfs write `data` to `rel`.
        Raises OSError with the kernel's errno (and its bare words, as the kernel answers)."""
        try:
            op()
        except OSError as e:
            code = e.errno or errno.EIO
            self._record(rel, data, errno.errorcode.get(code, "EIO"))
            # The kernel answers a bare errno: callers see strerror's words, not our reason
            # (the real kernel lane saw "EINVAL (Invalid argument)" for a refused scan).
            raise OSError(code, os.strerror(code)) from None
        self._record(rel, data, "ok")

    def _record(self, rel: str, data: str, result: str) -> None:
        w = WriteRecord(rel, data, result, time.time())
        with self._lock:
            self.writes.append(w)
            if self.write_log is not None:
                self.write_log.append(w)

    # -- timers (dev_loss_tmo, fabric login) ---------------------------------------------------

    def _later(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        """Run fn(*args) after `delay` seconds unless the SAN is closed first. Pending work is
        in the saved state (Blocked rports, Initializing vports), so reopening re-arms it."""
        def run() -> None:
            with self._lock:
                self._timers.discard(timer)
                if self._closed:
                    return
                fn(*args)
        timer = threading.Timer(delay, run)
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            self._timers.add(timer)
        timer.start()

    def close(self) -> None:
        """Stop the clock and save: no timer fires after this, and the saved state is the last
        word (the next daemon on DIR carries on from it)."""
        with self._lock:
            self._closed = True
            self._emit = None
            for t in self._timers:
                t.cancel()
            self._timers.clear()
            if self._save_timer is not None:
                self._save_timer.cancel()
                self._save_timer = None
            if self._unsaved:
                self.save()
            if self.write_log is not None:
                self.write_log.close()      # reopened if a write still under way ends

    # -- lookups every part needs -----------------------------------------------------------

    def _host(self, n: int) -> SimHost:
        h = self.hosts.get(n)
        if h is None:
            # The write would open class/scsi_host/hostN/...: no such file.
            raise OSError(errno.ENOENT, f"host{n}: no such host")
        return h

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
from contextlib import AbstractContextManager, contextmanager
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
        self.writes: list[WriteRecord] = []
        # None: the state lives only in this process (unit tests, benchmarks).
        self.state_file = Path(state_file) if state_file is not None else None
        self.origin: dict[str, str] = {}    # the fabric file it was laid out from: path, digest
        self._lock = threading.RLock()
        self._free_blocks: list[int] = []
        self._next_block = 0
        self._next_host = 0
        self._pci_slot = 3
        self._emit: EmitFn | None = None
        self._timers: set[threading.Timer] = set()
        self._closed = False
        self._depth = 0
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
        """Hold the SAN still while changing it. The outermost change saves the state, so a
        daemon restarted at any point finds the SAN as it was (a real SAN outlives sanbusd)."""
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.save()

    def batch(self) -> AbstractContextManager[None]:
        """Many SAN admin changes saved once (provisioning 4,096 LUNs is one save, not 4,096)."""
        return self._changing()

    def save(self) -> None:
        if self.state_file is None:
            return
        with self._lock:
            try:
                persist.save(self.state_file, persist.snapshot(self))
                self._save_failed = False
            except OSError as e:
                if not self._save_failed:   # once per run of failures, not once per write
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
        with self._changing():
            self.writes.append(WriteRecord(rel, data, result, time.time()))

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
            self._timers.add(timer)
        timer.start()

    def close(self) -> None:
        """Stop the clock: no timer fires after this, and the saved state is the last word."""
        with self._lock:
            self._closed = True
            for t in self._timers:
                t.cancel()
            self._timers.clear()
            self._emit = None

    # -- lookups every part needs -----------------------------------------------------------

    def _host(self, n: int) -> SimHost:
        h = self.hosts.get(n)
        if h is None:
            # The write would open class/scsi_host/hostN/...: no such file.
            raise OSError(errno.ENOENT, f"host{n}: no such host")
        return h

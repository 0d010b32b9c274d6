"""The Kernel port: read the SAN picture, write to sysfs, hear uevents.

Two adapters with one reader (sysfs.py): the real kernel (/sys and udev through pyudev) and the
simulated SAN (sim.py, a sysfs-shaped tree whose writes are serviced with kernel semantics). The
D-Bus layer and the operations never know which one they talk to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

from .sysfs import SysfsReader
from .uevent import UEvent

log = logging.getLogger(__name__)

EventsFn = Callable[[list[UEvent]], None]


class Kernel:
    backend = "kernel"

    def __init__(self, reader: SysfsReader) -> None:
        self.reader = reader

    def write(self, rel: str, data: str) -> None:
        """Write `data` to <sysfs root>/<rel>. Blocking (a scan can take minutes): call it from a
        worker thread. Raises OSError with the kernel's errno."""
        fd = os.open(os.path.join(self.reader.root, rel), os.O_WRONLY)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def start(self, loop: asyncio.AbstractEventLoop, on_events: EventsFn,
              on_overflow: Callable[[], None]) -> None:
        pass

    def stop(self) -> None:
        pass

    def block_ready(self, block: str) -> bool:
        """Has the system finished setting up this block device (udev rules run, by-id links
        made), so that it can be handed to a VM?"""
        return True


class SysfsKernel(Kernel):
    """The real kernel. Uevents come from udev when the root is the live /sys."""

    def __init__(self, root: str = "/sys", udev: bool | None = None) -> None:
        super().__init__(SysfsReader(root))
        self.use_udev = (os.path.realpath(root) == "/sys") if udev is None else udev
        self._monitor = None

    def start(self, loop, on_events, on_overflow) -> None:
        if not self.use_udev:
            log.info("sysfs root %s is not the live /sys: no udev events, the tree is read "
                     "once and on reconcile", self.reader.root)
            return
        from .udev import UdevMonitor
        self._monitor = UdevMonitor(loop, on_events, on_overflow)
        self._monitor.start()

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()

    def block_ready(self, block: str) -> bool:
        # udevd writes its database entry (/run/udev/data/bMAJ:MIN) after running the rules
        # and before it announces the event: then the /dev/disk/by-* links exist too.
        if not self.use_udev:
            return True
        try:
            with open(os.path.join(self.reader.root, "class", "block", block, "dev")) as f:
                dev = f.read().strip()
        except OSError:
            return False
        return os.path.exists(f"/run/udev/data/b{dev}")


class SimKernel(Kernel):
    """The simulated SAN, laid out under `directory` (DIR/sys plays /sys)."""

    backend = "simulated"

    def __init__(self, fabric_file: str | os.PathLike, directory: str | None = None) -> None:
        from .fabric import load_fabric
        from .sim import SimulatedSan
        self.directory = Path(directory or tempfile.mkdtemp(prefix="sanbusd-sim."))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sim = SimulatedSan(load_fabric(fabric_file), self.directory / "sys")
        self.sim.build()
        super().__init__(SysfsReader(self.directory / "sys"))

    def write(self, rel: str, data: str) -> None:
        self.sim.write(rel, data)

    @property
    def control_path(self) -> str:
        return str(self.directory / "control")

    def start(self, loop, on_events, on_overflow) -> None:
        from .control import serve
        # Sim events come from worker threads (scans) and timers: hop onto the loop.
        self.sim.set_event_sink(lambda evs: loop.call_soon_threadsafe(on_events, evs))
        self._server_task = loop.create_task(serve(self.sim, self.control_path))

    def stop(self) -> None:
        self.sim.set_event_sink(None)
        try:
            os.unlink(self.control_path)
        except OSError:
            pass

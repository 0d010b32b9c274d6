"""udev events from the real kernel, through pyudev, on the asyncio loop.

The monitor's socket is read with loop.add_reader (no extra thread). Only the subsystems that can
change what we publish are let through, by a kernel-side filter. When the netlink socket
overflows (ENOBUFS), events were lost: the daemon is told to reconcile everything.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Callable

import pyudev

from .uevent import SUBSYSTEMS, UEvent

log = logging.getLogger(__name__)


class UdevMonitor:
    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_events: Callable[[list[UEvent]], None],
                 on_overflow: Callable[[], None]) -> None:
        self.loop = loop
        self.on_events = on_events
        self.on_overflow = on_overflow
        self.context = pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(self.context, source="udev")
        for sub in SUBSYSTEMS:
            self.monitor.filter_by(sub)
        try:
            # A rescan of thousands of LUNs is a uevent storm: give the socket room.
            self.monitor.set_receive_buffer_size(64 * 1024 * 1024)
        except Exception as e:  # noqa: BLE001 - needs CAP_NET_ADMIN; a smaller buffer still works
            log.info("cannot enlarge the udev receive buffer: %s", e)

    def start(self) -> None:
        self.monitor.start()
        self.loop.add_reader(self.monitor.fileno(), self._readable)

    def stop(self) -> None:
        try:
            self.loop.remove_reader(self.monitor.fileno())
        except Exception:  # noqa: BLE001
            pass

    def _readable(self) -> None:
        batch: list[UEvent] = []
        while True:
            try:
                dev = self.monitor.poll(timeout=0)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    log.warning("udev events were lost (ENOBUFS): reconciling everything")
                    self.on_overflow()
                    continue
                log.error("udev monitor failed: %s", e)
                break
            if dev is None:
                break
            batch.append(to_uevent(dev))
        if batch:
            self.on_events(batch)


def to_uevent(dev: "pyudev.Device") -> UEvent:
    devpath = dev.properties.get("DEVPATH", "") or dev.sys_path[len("/sys"):]
    return UEvent(action=dev.action or "change", subsystem=dev.subsystem or "",
                  devpath=devpath, devtype=dev.device_type or "",
                  properties={k: dev.properties[k] for k in ("SDEV_UA", "DM_UUID", "DM_NAME")
                              if k in dev.properties})

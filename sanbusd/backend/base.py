"""The Backend: everything sanbusd does to the outside world, as typed calls.

Operations never build sysfs paths or command strings: they call these methods, and each adapter
turns them into what its world understands. Two adapters implement it today: the real kernel
(backend/kernel.py: sysfs writes, udev events) and the simulated SAN (sim/backend.py: the same
calls serviced with the kernel's semantics on a sysfs-shaped tree). Beside them: the multipathd
client (backend/multipathd.py; each backend says where its multipathd listens, and the simulated
SAN runs a multipathd that speaks the same protocol) and the libvirt adapter (backend/libvirt.py:
node devices for vHBAs, storage pool refresh).

Every write method blocks (a `scan` can take minutes and cannot be interrupted): call it from a
worker thread. Each raises OSError with the kernel's errno when the kernel refuses.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Protocol

from ..model.ids import HCTL
from .sysfs import SysfsReader
from .uevent import UEvent

EventsFn = Callable[[list[UEvent]], None]


class Backend(Protocol):
    name: str                       # "kernel" | "simulated": the Manager's Backend property
    reader: SysfsReader             # reads the picture (the real /sys or the simulated tree)
    multipathd_socket: str          # where multipathd listens ("@…": an abstract socket)
    multipath_conf_dir: str         # multipathd's config_dir, where sanbusd's drop-in goes

    def scan_host(self, host: int, channel: int | None, target: int | None,
                  lun: int | None) -> None:
        """Ask the kernel to scan `host` for C T L (None: every value). Blocks for the scan."""

    def delete_lun(self, hctl: HCTL) -> None:
        """Remove one LUN path (scsi_device delete)."""

    def rescan_lun(self, hctl: HCTL) -> None:
        """Re-read one LUN's capacity and INQUIRY data."""

    def vport_create(self, host: int, wwpn: str, wwnn: str) -> None:
        """Create an NPIV vport on FC host `host`; returns before fabric login."""

    def vport_delete(self, host: int, wwpn: str, wwnn: str) -> None:
        """Delete the vport with these WWNs from FC host `host`."""

    def block_users(self, block: str) -> list[str]:
        """Who holds this block device open or mounted ("mounted on /srv", "qemu-system-x86
        (pid 4242)"); [] when nobody. Blocking (reads /proc)."""

    def dm_deferred_remove(self, name: str) -> None:
        """Have device-mapper remove map `name` when its last user closes it (at once if
        unused). multipath-tools has no operator command for it; multipathd drops the map on
        the remove uevent."""

    def block_ready(self, block: str) -> bool:
        """Has the system finished setting up this block device (udev rules run, by-id links
        made), so that it can be handed to a VM?"""

    def start(self, loop: asyncio.AbstractEventLoop, on_events: EventsFn,
              on_overflow: Callable[[], None]) -> None:
        """Begin delivering events (on the loop) about what changed."""

    def stop(self) -> None:
        ...

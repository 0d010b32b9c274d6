"""The simulated SAN as a Backend: the typed operations, serviced with the kernel's semantics on a
sysfs-shaped tree under DIR/sys, plus the SAN admin's control socket at DIR/control, and the host's
multipathd (its command socket at DIR/multipathd.sock, its configuration under DIR/etc).

The SAN in DIR outlives the daemon (its state is in DIR/state.json): a restart carries on where
the last daemon stopped, unless `fresh` lays it out again from the fabric file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..backend.sysfs import SysfsReader
from ..model.ids import HCTL
from .multipathd import SOCKET_NAME, MultipathdServer
from .san import SimulatedSan


class SimBackend:
    name = "simulated"

    def __init__(self, fabric_file: str | os.PathLike, directory: str | None = None,
                 fresh: bool = False) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="sanbusd-sim."))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sim = SimulatedSan.open(fabric_file, self.directory, fresh=fresh)
        self.reader = SysfsReader(self.directory / "sys")
        self._server = None
        # multipathd runs on the host whether or not the daemon does: it serves from now on,
        # from threads of its own (a hung multipathd must not hang the daemon's loop).
        self.multipathd = MultipathdServer(self.sim, self.directory / SOCKET_NAME)
        self.sim.multipathd = self.multipathd
        self.multipathd.start()

    @property
    def multipathd_socket(self) -> str:
        """Where the simulated multipathd listens (the real one: @/org/kernel/linux/storage/
        multipathd)."""
        return self.multipathd.path

    @property
    def multipath_conf_dir(self) -> str:
        """The simulated /etc/multipath/conf.d: drop-ins there apply at the next reconfigure."""
        return str(self.sim.multipath_dir / "conf.d")

    def dm_deferred_remove(self, name: str) -> None:
        """`dmsetup remove --deferred NAME` (NAME: the map's name or dm-N): removed now, or when
        its last holder closes it; OSError(ENXIO) if there is no such map."""
        self.sim.dm_deferred_remove(name)

    def scan_host(self, host: int, channel: int | None, target: int | None,
                  lun: int | None) -> None:
        self.sim.scan_host(host, channel, target, lun)

    def delete_lun(self, hctl: HCTL) -> None:
        self.sim.delete_lun(hctl)

    def rescan_lun(self, hctl: HCTL) -> None:
        self.sim.rescan_lun(hctl)

    def vport_create(self, host: int, wwpn: str, wwnn: str) -> None:
        self.sim.vport_create(host, wwpn, wwnn)

    def vport_delete(self, host: int, wwpn: str, wwnn: str) -> None:
        self.sim.vport_delete(host, wwpn, wwnn)

    def block_users(self, block: str) -> list[str]:
        return self.sim.block_users(block)

    def block_ready(self, block: str) -> bool:
        return True                 # no udev rules run on the simulated SAN

    @property
    def control_path(self) -> str:
        return str(self.directory / "control")

    def start(self, loop, on_events, on_overflow) -> None:
        from .control import serve
        # Sim events come from worker threads (scans) and timers: hop onto the loop.
        self.sim.set_event_sink(lambda evs: loop.call_soon_threadsafe(on_events, evs))
        self._server = loop.create_task(serve(self.sim, self.control_path))

    def stop(self) -> None:
        # The SAN stops where it is; the next daemon on DIR carries on from its saved state.
        self.multipathd.close()
        self.sim.close()
        try:
            os.unlink(self.control_path)
        except OSError:
            pass

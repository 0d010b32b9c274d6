"""One LUN path: re-read it (a grown LUN), or remove it (a LUN the SAN took away).

Removing a path that a multipath map holds would take I/O away from whoever uses the map, so it
answers Busy unless forced. Removing a path while a scan of its host runs would race the scan,
which may add it right back: that answers Busy too, until the scan is over.
"""

from __future__ import annotations

import asyncio
import errno

from .. import errors
from ..backend.base import Backend
from ..config import Settings
from ..model.ids import HCTL
from ..model.records import Dirty
from ..state import State
from .scan import Scanner

# The kernel answers a write to a device that went away with one of these.
_GONE = (errno.ENOENT, errno.ENODEV, errno.ENXIO)


class LunOps:
    def __init__(self, backend: Backend, state: State, scanner: Scanner,
                 settings: Settings) -> None:
        self.backend = backend
        self.state = state
        self.scanner = scanner
        self.settings = settings

    async def _kernel(self, fn, hctl: HCTL, what: str) -> None:
        try:
            await asyncio.to_thread(fn, hctl)
        except OSError as e:
            if e.errno in _GONE:
                raise errors.NotFound(f"LUN {hctl} is gone (removed while this call was on "
                                      "its way); `sanctl status` lists the LUNs there are") from None
            raise errors.from_errno(e, f"{hctl}: {what} was refused") from None

    def _lun(self, hctl: HCTL):
        lun = self.state.inventory.luns.get(hctl)
        if lun is None:
            raise errors.NotFound(f"LUN {hctl} is gone")
        return lun

    async def rescan(self, hctl: HCTL) -> None:
        self._lun(hctl)
        await self._kernel(self.backend.rescan_lun, hctl, "rescan")
        # The kernel re-reads capacity and INQUIRY data synchronously; publish what it has now.
        await self.state.pump.sync(Dirty.of(luns={hctl}))

    async def delete(self, hctl: HCTL, force: bool = False) -> None:
        lun = self._lun(hctl)
        inv = self.state.inventory
        m = inv.maps.get(lun.holder) if lun.holder else None
        if m is not None and not force:
            raise errors.Busy(f"{hctl} (/dev/{lun.block}) is a path of multipath map {m.name}; "
                              "flush the map first, or pass force=true to remove the path anyway")
        users = await asyncio.to_thread(self.backend.block_users, lun.block) if lun.block else []
        if users and not force:
            raise errors.Busy(f"{hctl} (/dev/{lun.block}) is in use by {', '.join(users)}; "
                              "stop using it first, or pass force=true to remove it anyway")
        if self.scanner.is_scanning(hctl.host):
            raise errors.Busy(f"a scan of host{hctl.host} is running and could add {hctl} right "
                              "back; delete it once the scan has finished")
        await self._kernel(self.backend.delete_lun, hctl, "delete")
        await self.state.pump.sync(Dirty.of(luns={hctl}))
        wait = self.settings.settle_timeout
        if not await self.state.wait_for(lambda: hctl not in self.state.inventory.luns, wait):
            raise errors.TimedOut(f"{hctl} was deleted but is still listed after {wait:g} s")

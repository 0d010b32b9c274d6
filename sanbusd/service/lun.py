"""org.example.SanStorage.Lun methods: re-read one LUN, remove a stale one."""

from __future__ import annotations

import asyncio

from .. import errors, paths
from ..kernel.sysfs import Dirty
from .context import daemon
from .publisher import LUN_I
from .tree import Call, method

WAIT = 20.0


async def _write(hctl, attr: str) -> None:
    d = daemon()
    try:
        await asyncio.to_thread(d.kernel.write, f"class/scsi_device/{hctl}/device/{attr}", "1")
    except OSError as e:
        raise errors.from_errno(e, f"{hctl}: writing {attr} was refused") from None


@method(LUN_I, "Rescan", action="org.example.sanstorage.rescan")
async def rescan(call: Call) -> None:
    _, hctl = paths.parse(call.path)  # type: ignore[misc]
    await _write(hctl, "rescan")
    # The kernel re-reads capacity and INQUIRY data synchronously; publish what it has now.
    await daemon().pump.sync(Dirty(luns={hctl}))


@method(LUN_I, "Delete", action="org.example.sanstorage.remove-device", options={"force": "b"})
async def delete(call: Call) -> None:
    d = daemon()
    _, hctl = paths.parse(call.path)  # type: ignore[misc]
    lun = d.publisher.inventory.luns.get(hctl)
    if lun is None:
        raise errors.NotFound(f"LUN {hctl} is gone")
    m = d.publisher.inventory.maps.get(lun.holder) if lun.holder else None
    if m is not None and not call.options.get("force", False):
        raise errors.Busy(f"{hctl} (/dev/{lun.block}) is a path of multipath map {m.name}; "
                          "flush the map first, or pass force=true to remove the path anyway")
    await _write(hctl, "delete")
    await d.pump.sync(Dirty(luns={hctl}))
    if not await d.publisher.wait_for(lambda: call.path not in d.tree.objects, WAIT):
        raise errors.TimedOut(f"{hctl} was deleted but is still listed after {WAIT:g} s")

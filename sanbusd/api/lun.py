"""org.example.SanStorage.Lun: re-read one LUN path, remove a stale one."""

from __future__ import annotations

from ..authz.registry import Call, method
from ..ops.lun import LunOps
from ..publish import paths
from ..publish.render import LUN_I


class LunApi:
    def __init__(self, luns: LunOps) -> None:
        self.luns = luns

    @method(LUN_I, "Rescan", action="org.example.sanstorage.rescan")
    async def rescan(self, call: Call) -> None:
        _, hctl = paths.parse(call.path)  # type: ignore[misc]
        await self.luns.rescan(hctl)  # type: ignore[arg-type]

    @method(LUN_I, "Delete", action="org.example.sanstorage.remove-device", options={"force": "b"})
    async def delete(self, call: Call) -> None:
        _, hctl = paths.parse(call.path)  # type: ignore[misc]
        await self.luns.delete(hctl, call.options.get("force", False))  # type: ignore[arg-type]

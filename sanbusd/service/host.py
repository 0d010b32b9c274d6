"""org.example.SanStorage.ScsiHost methods."""

from __future__ import annotations

from .. import paths
from ..scan import SCAN_OPTIONS, request_from_options
from .context import daemon
from .publisher import HOST_I
from .tree import Call, method


@method(HOST_I, "Scan", action="org.example.sanstorage.rescan", options=SCAN_OPTIONS)
async def scan(call: Call) -> list[str]:
    d = daemon()
    _, host = paths.parse(call.path)  # type: ignore[misc]
    req = request_from_options(call.options, set(d.publisher.inventory.hosts), host=host)
    return await d.scanner.scan(req, await d.caller_uid(call.sender))

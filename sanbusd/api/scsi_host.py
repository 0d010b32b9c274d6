"""org.example.SanStorage.ScsiHost: scan one host."""

from __future__ import annotations

from typing import Any

from .. import errors
from ..authz.polkit import PolkitAuthorizer
from ..authz.registry import Call, method
from ..config import Settings
from ..ops.scan import ScanRequest, Scanner, scan_request
from ..publish import paths
from ..publish.render import HOST_I

SCAN_OPTIONS = {"luns": "at", "channel": "u", "target": "u", "timeout": "u"}


def host_number(path: str, known) -> int:
    """A path-typed option naming a published SCSI host, exactly; NotFound otherwise."""
    parsed = paths.parse(path)
    if parsed is None or parsed[0] != "host" or parsed[1] not in known:
        raise errors.NotFound(f"no SCSI host at {path[:120]}; `sanctl status` lists them")
    return parsed[1]  # type: ignore[return-value]


def scan_options(settings: Settings, options: dict[str, Any],
                 hosts: tuple[int, ...]) -> ScanRequest:
    return scan_request(settings, hosts, luns=options.get("luns"),
                        channel=options.get("channel"), target=options.get("target"),
                        timeout=options.get("timeout"))


class ScsiHostApi:
    def __init__(self, scanner: Scanner, authorizer: PolkitAuthorizer,
                 settings: Settings) -> None:
        self.scanner = scanner
        self.authorizer = authorizer
        self.settings = settings

    @method(HOST_I, "Scan", action="org.example.sanstorage.rescan", options=SCAN_OPTIONS)
    async def scan(self, call: Call) -> list[str]:
        _, host = paths.parse(call.path)  # type: ignore[misc]
        req = scan_options(self.settings, call.options, (host,))
        added = await self.scanner.scan(req, await self.authorizer.uid_of(call))
        return [paths.lun(h) for h in added]

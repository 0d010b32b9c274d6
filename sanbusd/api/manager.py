"""org.example.SanStorage.Manager: find a device, scan every host."""

from __future__ import annotations

import os

from dbus_fast import Variant

from .. import errors
from ..authz.polkit import PolkitAuthorizer
from ..authz.registry import Call, method
from ..config import Settings
from ..model.ids import multipath_wwid, normalize_wwn, parse_hctl
from ..ops.scan import Scanner
from ..publish import paths
from ..publish.render import MANAGER_I
from ..state import State
from .scsi_host import SCAN_OPTIONS, host_number, scan_options

_DEVSPEC_KEYS = {"path": "s", "wwid": "s", "wwpn": "s", "hctl": "s"}


def _devspec(raw: dict[str, Variant]) -> dict[str, str]:
    out = {}
    for key, var in raw.items():
        sig = _DEVSPEC_KEYS.get(key)
        if sig is None:
            raise errors.InvalidArgs(f"unknown devspec key {key[:64]!r}; use one or more of "
                                     + ", ".join(f"{k} (s)" for k in _DEVSPEC_KEYS))
        if var.signature != sig:
            raise errors.InvalidArgs(f"devspec key {key!r} must have type s, not {var.signature}")
        out[key] = var.value
    if not out:
        raise errors.InvalidArgs("devspec is empty; give path, wwid, wwpn or hctl")
    return out


def _device_name(path: str) -> str:
    """/dev/sdb, /dev/disk/by-id/… or /dev/mapper/… -> the kernel name (sdb, dm-3)."""
    if "\0" in path or not path.startswith("/dev/"):
        raise errors.InvalidArgument(f"path {path[:80]!r} is not a device under /dev")
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        real = path
    return os.path.basename(real if real.startswith("/dev/") else path)


class ManagerApi:
    def __init__(self, state: State, scanner: Scanner, authorizer: PolkitAuthorizer,
                 settings: Settings) -> None:
        self.state = state
        self.scanner = scanner
        self.authorizer = authorizer
        self.settings = settings

    @method(MANAGER_I, "ResolveDevice", readonly=True)
    async def resolve_device(self, call: Call, devspec: dict[str, Variant]) -> list[str]:
        spec = _devspec(devspec)
        inv = self.state.inventory
        candidates: list[set[str]] = []
        if "path" in spec:
            name = _device_name(spec["path"])
            found = {paths.lun(l.hctl) for l in inv.luns.values() if l.block == name}
            found |= {paths.multipath(m.wwid) for m in inv.maps.values()
                      if name in (m.dm, m.name) and m.wwid}
            candidates.append(found)
        if "wwid" in spec:
            w = spec["wwid"].strip()
            found = {paths.lun(l.hctl) for l in inv.luns.values()
                     if l.wwid and w in (l.wwid, multipath_wwid(l.wwid))}
            found |= {paths.multipath(m.wwid) for m in inv.maps.values() if m.wwid == w}
            candidates.append(found)
        if "wwpn" in spec:
            w = errors.invalid_argument(normalize_wwn, spec["wwpn"], "wwpn")
            found = {paths.host(h.number) for h in inv.hosts.values()
                     if h.fc is not None and h.fc.wwpn == w}
            found |= {paths.vhba(v.wwpn) for v in inv.vports.values() if v.wwpn == w}
            found |= {paths.lun(l.hctl) for l in inv.luns.values() if l.target_wwpn == w}
            candidates.append(found)
        if "hctl" in spec:
            hctl = parse_hctl(spec["hctl"].strip())
            if hctl is None:
                raise errors.InvalidArgument(
                    f"hctl {spec['hctl'][:40]!r} is not H:C:T:L, e.g. 1:0:0:27")
            candidates.append({paths.lun(hctl)} if hctl in inv.luns else set())
        return sorted(set.intersection(*candidates))

    @method(MANAGER_I, "ScanAll", action="org.example.sanstorage.rescan",
            options={**SCAN_OPTIONS, "hosts": "ao"})
    async def scan_all(self, call: Call) -> list[str]:
        known = set(self.state.inventory.hosts)
        if "hosts" in call.options:
            hosts = tuple(host_number(p, known) for p in call.options["hosts"])
        else:
            hosts = tuple(sorted(known))
        req = scan_options(self.settings, call.options, hosts)
        added = await self.scanner.scan(req, await self.authorizer.uid_of(call))
        return [paths.lun(h) for h in added]

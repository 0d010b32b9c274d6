"""org.example.SanStorage.Manager methods."""

from __future__ import annotations

import os
from dbus_fast import Variant

from .. import errors, paths
from ..kernel.formats import multipath_wwid, normalize_wwn, parse_hctl
from ..scan import SCAN_ALL_OPTIONS, request_from_options
from .context import daemon
from .publisher import MANAGER_I
from .tree import Call, method

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


@method(MANAGER_I, "ResolveDevice", readonly=True)
async def resolve_device(call: Call, devspec: dict[str, Variant]) -> list[str]:
    spec = _devspec(devspec)
    inv = daemon().publisher.inventory
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
        w = normalize_wwn(spec["wwpn"], "wwpn")
        found = {paths.host(h.number) for h in inv.hosts.values()
                 if h.fc is not None and h.fc.wwpn == w}
        found |= {paths.vhba(v.wwpn) for v in inv.vports.values() if v.wwpn == w}
        found |= {paths.lun(l.hctl) for l in inv.luns.values() if l.target_wwpn == w}
        candidates.append(found)
    if "hctl" in spec:
        hctl = parse_hctl(spec["hctl"].strip())
        if hctl is None:
            raise errors.InvalidArgument(f"hctl {spec['hctl'][:40]!r} is not H:C:T:L, e.g. 1:0:0:27")
        candidates.append({paths.lun(hctl)} if hctl in inv.luns else set())
    result = set.intersection(*candidates)
    return sorted(result)


@method(MANAGER_I, "ScanAll", action="org.example.sanstorage.rescan", options=SCAN_ALL_OPTIONS)
async def scan_all(call: Call) -> list[str]:
    d = daemon()
    req = request_from_options(call.options, set(d.publisher.inventory.hosts))
    return await d.scanner.scan(req, await d.caller_uid(call.sender))

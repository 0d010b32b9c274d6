"""Records -> property dicts, one function per D-Bus interface. Pure: the publisher decides when."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from dbus_fast import Variant

from .. import __version__
from ..model.ids import HCTL, fabric_known
from ..model.multipath import (DEFAULT_FIND, DEFAULT_FRIENDLY, UNKNOWN, MultipathSettings,
                               health)
from ..model.records import (Inventory, IscsiSession, Lun, MultipathMap, RemotePort,
                             ScsiHost, Vport, map_paths)
from ..ops.jobs import Job
from . import paths

IFACE = "org.example.SanStorage."
MANAGER_I = IFACE + "Manager"
HOST_I = IFACE + "ScsiHost"
FC_I = IFACE + "FcHost"
LUN_I = IFACE + "Lun"
VHBA_I = IFACE + "Vhba"
MAP_I = IFACE + "MultipathMap"
SESSION_I = IFACE + "IscsiSession"
JOB_I = IFACE + "Job"

Objects = dict[str, dict[str, Any]]


class Hints(Protocol):
    """What only the daemon knows about records (state.State has them)."""
    rescan_suggested: set[int]          # hosts whose storage reported new LUNs
    persistent: set[str]                # WWPNs of vHBAs kept across restarts
    persistent_rows: list[dict[str, str]]
    multipath_settings: MultipathSettings   # sanbusd's drop-in, as read back
    multipath_effective: MultipathSettings  # multipath.conf with every drop-in, in order
    multipath_dropin: str                   # its path
    multipathd: str                         # how multipathd answers (Manager.Multipathd)


@dataclass
class NoHints:
    rescan_suggested: set[int] = field(default_factory=set)
    persistent: set[str] = field(default_factory=set)
    persistent_rows: list[dict[str, str]] = field(default_factory=list)
    multipath_settings: MultipathSettings = field(default_factory=MultipathSettings)
    multipath_effective: MultipathSettings = field(default_factory=MultipathSettings)
    multipath_dropin: str = ""
    multipathd: str = UNKNOWN


@dataclass
class RenderContext:
    """One inventory plus what rendering needs beyond a single record, computed once per pass."""
    inv: Inventory
    hints: Hints = field(default_factory=NoHints)

    @cached_property
    def luns_by_host(self) -> dict[int, list[Lun]]:
        out: dict[int, list[Lun]] = {}
        for lun in self.inv.luns.values():
            out.setdefault(lun.hctl.host, []).append(lun)
        return out

    @cached_property
    def rports_by_host(self) -> dict[int, list[RemotePort]]:
        out: dict[int, list[RemotePort]] = {}
        for r in sorted(self.inv.rports.values(), key=lambda r: r.name):
            out.setdefault(r.host, []).append(r)
        return out

    @cached_property
    def lun_by_block(self) -> dict[str, HCTL]:
        return {lun.block: lun.hctl for lun in self.inv.luns.values() if lun.block}


def render_manager(backend: str, hints: Hints) -> Objects:
    return {MANAGER_I: {"Version": __version__, "Backend": backend,
                        "MultipathConfig": render_multipath_config(
                            hints.multipath_settings, hints.multipath_effective,
                            hints.multipath_dropin),
                        "Multipathd": hints.multipathd, "PersistentVhbas": [
        {**{k: Variant("s", v) for k, v in row.items()},
         "Vhba": Variant("o", paths.vhba(row["WWPN"]) if row.get("Status") != "failed"
                         else paths.NO_OBJECT)}
        for row in hints.persistent_rows]}}


def render_multipath_config(s: MultipathSettings, effective: MultipathSettings,
                            dropin: str) -> dict[str, Variant]:
    """The names and policy in force (any file may set them); the WWID lists sanbusd keeps."""
    return {
        "UserFriendlyNames": Variant("b", DEFAULT_FRIENDLY if effective.user_friendly_names
                                     is None else effective.user_friendly_names),
        "FindMultipaths": Variant("s", effective.find_multipaths or DEFAULT_FIND),
        "IncludeWwids": Variant("as", list(s.include_wwids)),
        "ExcludeWwids": Variant("as", list(s.exclude_wwids)),
        "DropIn": Variant("s", dropin)}


def render_remote_port(r: RemotePort) -> dict[str, Variant]:
    # By name, not position: JavaScript and Ansible clients read port.WWPN, and keys can be
    # added later without breaking them.
    return {"Name": Variant("s", r.name), "WWPN": Variant("s", r.wwpn),
            "WWNN": Variant("s", r.wwnn), "PortId": Variant("s", r.port_id),
            "Roles": Variant("as", list(r.roles)), "PortState": Variant("s", r.port_state),
            "ScsiTargetId": Variant("i", r.scsi_target_id)}


def render_host(ctx: RenderContext, h: ScsiHost) -> Objects:
    inv = ctx.inv
    luns = ctx.luns_by_host.get(h.number, [])
    out: Objects = {HOST_I: {
        "Name": h.name, "Number": h.number, "Driver": h.driver, "Transport": h.transport,
        "State": h.state, "UniqueId": h.unique_id & 0xFFFFFFFF,
        "Luns": [paths.lun(lun.hctl) for lun in sorted(luns, key=lambda x: x.hctl)],
        "RescanSuggested": h.number in ctx.hints.rescan_suggested}}
    if h.fc is not None:
        fc = h.fc
        vport = inv.vports.get(h.vport) if h.vport else None
        out[FC_I] = {
            "WWNN": fc.wwnn, "WWPN": fc.wwpn,
            "FabricName": fc.fabric_name if fabric_known(fc.fabric_name) else "",
            "PortState": fc.port_state, "PortType": fc.port_type, "PortId": fc.port_id,
            "Speed": fc.speed, "NpivCapable": fc.npiv_capable,
            "MaxVports": fc.max_vports if fc.npiv_capable else 0,
            "VportsInUse": fc.vports_in_use if fc.npiv_capable else 0,
            "RemotePorts": [render_remote_port(r) for r in ctx.rports_by_host.get(h.number, [])],
            "Vhba": paths.vhba(vport.wwpn) if vport is not None and vport.wwpn else paths.NO_OBJECT,
        }
    return out


def render_lun(ctx: RenderContext, lun: Lun) -> Objects:
    m = ctx.inv.maps.get(lun.holder) if lun.holder else None
    return {LUN_I: {
        "HCTL": str(lun.hctl), "Host": paths.host(lun.hctl.host), "Lun": lun.hctl.lun,
        "Vendor": lun.vendor, "Model": lun.model, "Revision": lun.rev, "Type": lun.type,
        "WWID": lun.wwid, "Size": lun.size,
        "BlockDevice": f"/dev/{lun.block}" if lun.block else "", "State": lun.state,
        "TargetPortName": lun.target_wwpn,
        "MultipathMap": paths.multipath(m.wwid) if m is not None and m.wwid else paths.NO_OBJECT,
    }}


def render_vhba(ctx: RenderContext, v: Vport) -> Objects:
    return {VHBA_I: {
        "Name": v.name, "WWNN": v.wwnn, "WWPN": v.wwpn, "Parent": paths.host(v.parent),
        "Host": paths.host(v.host) if v.host is not None and v.host in ctx.inv.hosts
        else paths.NO_OBJECT,
        "State": v.state, "LastState": v.last_state,
        "Persistent": v.wwpn in ctx.hints.persistent}}


def render_session(ctx: RenderContext, s: IscsiSession) -> Objects:
    return {SESSION_I: {
        "Name": s.name,
        "Host": paths.host(s.host) if s.host is not None and s.host in ctx.inv.hosts
        else paths.NO_OBJECT,
        "TargetName": s.target_name, "State": s.state, "Tpgt": s.tpgt,
        "InitiatorName": s.initiator_name if s.initiator_name != "(null)" else "",
        "Portal": f"{s.address}:{s.port}" if s.address else "",
        "RecoveryTimeout": s.recovery_tmo}}


def render_map(ctx: RenderContext, m: MultipathMap) -> Objects:
    by_block = ctx.lun_by_block
    views = map_paths(ctx.inv, m, by_block)
    return {MAP_I: {
        "Name": m.name, "WWID": m.wwid, "DmDevice": f"/dev/{m.dm}", "Size": m.size,
        "Paths": [{"Lun": Variant("o", paths.lun(by_block[v.dev]) if v.dev in by_block
                                  else paths.NO_OBJECT),
                   "Device": Variant("s", v.dev), "DmState": Variant("s", v.dm_state),
                   "DeviceState": Variant("s", v.device_state),
                   "CheckerState": Variant("s", v.checker_state), "Up": Variant("b", v.up)}
                  for v in views],
        "ActivePaths": sum(v.up for v in views), "TotalPaths": len(views),
        "Features": m.features, "HwHandler": m.hwhandler, "Health": health(views)}}


def job_objects(job: Job) -> list[str]:
    return [paths.host(key) if kind == "host" else paths.lun(key)  # type: ignore[arg-type]
            for kind, key in job.objects]


def render_job(job: Job) -> Objects:
    return {JOB_I: {
        "Operation": job.operation, "Progress": float(job.progress),
        "Objects": job_objects(job), "StartedByUID": job.started_by_uid,
        "Cancelable": job.cancelable and not job.finished, "StartTime": job.start_time,
        "Finished": job.finished, "Success": job.success, "Message": job.message}}


def polkit_details(inv: Inventory, path: str) -> dict[str, str]:
    """What a polkit rule may look at for a call on `path` (host, hctl, wwpn, wwid)."""
    parsed = paths.parse(path)
    if parsed is None:
        return {}
    kind, key = parsed
    if kind == "host":
        h = inv.hosts.get(key)  # type: ignore[arg-type]
        d = {"host": f"host{key}"}
        if h is not None and h.fc is not None:
            d["wwpn"] = h.fc.wwpn
        return d
    if kind == "lun":
        lun = inv.luns.get(key)  # type: ignore[arg-type]
        d = {"host": f"host{key.host}", "hctl": str(key)}  # type: ignore[union-attr]
        if lun is not None:
            d["wwid"] = lun.wwid
        return d
    if kind == "vhba":
        return {"wwpn": str(key)}
    if kind == "multipath":
        m = next((m for m in inv.maps.values() if m.wwid == key), None)
        return {"wwid": str(key), **({"name": m.name} if m is not None else {})}
    return {}

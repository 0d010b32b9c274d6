"""The simulated SAN's description: a fabric file (TOML) parsed into dataclasses.

A fabric has SCSI hosts (FC HBAs with WWNN/WWPN, port state and NPIV limits; iSCSI, SAS and other
hosts with local disks) and storage arrays whose target ports sit on FC fabrics and whose LUNs are
masked per initiator WWPN, as on a real array. See data/fabrics/demo.toml for a commented example.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.ids import normalize_wwn, parse_size


class FabricError(ValueError):
    """The fabric file is wrong; the message names the entry."""


@dataclass(slots=True)
class DiskSpec:
    target: int
    lun: int
    vendor: str = "ATA"
    model: str = "VIRTUAL-DISK"
    rev: str = "1.0"
    size: int = 64 << 30
    wwid: str = ""
    type: int = 0
    # What multipath calls the disk (udev's ID_SERIAL), when it is not "3" + the NAA id: a
    # scsi_debug disk's is "1Linux_scsi_debug_2000" while its sysfs wwid is naa.3333….
    mpath_wwid: str = ""


@dataclass(slots=True)
class HostSpec:
    type: str                       # fc | iscsi | sas | other
    driver: str
    wwnn: str = ""
    wwpn: str = ""
    fabric: str = ""
    port_state: str = "Online"
    port_type: str = "NPort (fabric via point-to-point)"
    speed: str = "16 Gbit"
    max_npiv_vports: int = 0        # 0: the driver has no vport_create
    vports: list[tuple[str, str]] = field(default_factory=list)   # (wwpn, wwnn) existing at start
    port_id: str = ""               # the port's FC address ("0x%06x"); "" = the simulation picks one
    max_lun: int = 65535
    max_id: int = 256
    scan_delay: float | None = None
    disks: list[DiskSpec] = field(default_factory=list)
    # iSCSI (type "iscsi"): the session this host is, logged in to an array's portal
    # ("ADDRESS:PORT") as initiator IQN `initiator`; "" portal = a host with local disks only.
    initiator: str = ""
    portal: str = ""
    recovery_tmo: float = 120.0     # s: the session's recovery_tmo (iscsid's replacement_timeout;
                                    # sysfs shows whole seconds)


@dataclass(slots=True)
class LunSpec:
    lun: int
    size: int
    wwid: str
    masked_to: set[str]             # initiator WWPNs
    mpath_wwid: str = ""            # udev's ID_SERIAL when not derived from wwid (see DiskSpec)


@dataclass(slots=True)
class PortSpec:
    wwpn: str
    fabric: str
    port_id: str = ""               # "" = the simulation picks one
    # What the initiator's rport shows. A LIO tcm_fc port is "FCP Target, FCP Initiator".
    roles: tuple[str, ...] = ("FCP Target",)


@dataclass(slots=True)
class ArraySpec:
    name: str
    vendor: str
    model: str
    rev: str
    wwnn: str
    ports: list[PortSpec]
    luns: dict[int, LunSpec]
    iqn: str = ""                   # an iSCSI target: its name and its portals ("ADDRESS:PORT")
    portals: list[str] = field(default_factory=list)


@dataclass(slots=True)
class MpdOptions:
    """How the simulated multipathd behaves in time ([multipathd] in the fabric file)."""
    reconfigure_delay: float = 0.01 # s a reconfigure holds multipathd's lock
    checker_delay: float = 0.0      # s from a path's device failing to multipathd failing it
    create_delay: float = 0.0       # s from a new path to multipathd making/extending its map
    uxsock_timeout: float = 4.0     # s a command waits for the lock before "timeout"
    restart_delay: float = 0.5      # s multipathd is gone during a restart
    conf: str = ""                  # the multipath.conf laid out with the SAN ("" = the default)


@dataclass(slots=True)
class Fabric:
    hosts: list[HostSpec]
    arrays: list[ArraySpec]
    scan_delay: float = 0.05        # seconds a `scan` write blocks its host
    dev_loss_tmo: float = 1.0
    login_delay: float = 0.2        # seconds a new vport's fabric login (FDISC) takes
    fabric_npiv: dict[str, bool] = field(default_factory=dict)   # fabric -> switch allows NPIV
    # fabric -> the switch's WWN as fc_host/fabric_name shows it; 0 for no switch (FCoE VN2VN)
    fabric_wwn: dict[str, int] = field(default_factory=dict)
    multipathd: MpdOptions = field(default_factory=MpdOptions)


def generated_wwid(array_index: int, lun: int) -> str:
    """A stable NAA-6 identifier (32 hex digits) for LUN `lun` of the array."""
    return f"naa.6{0x001405:06x}{array_index:08x}{lun:017x}"


def _get(d: dict, key: str, typ: type, where: str, default: Any = None) -> Any:
    if key not in d:
        if default is None:
            raise FabricError(f"{where}: missing '{key}'")
        return default
    v = d[key]
    if typ is float and isinstance(v, int):
        v = float(v)
    if not isinstance(v, typ):
        raise FabricError(f"{where}: '{key}' must be {typ.__name__}")
    return v


def _tables(d: dict, key: str, where: str) -> list[dict]:
    """An array of tables ([[host]], [[array.lun]], ...); [] when absent."""
    v = d.get(key, [])
    if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
        section = re.sub(r"\[\d+\]", "", where) + key          # host[0]. -> host.
        raise FabricError(f"{where}{key}: must be an array of tables, [[{section}]]")
    return v


def _table(d: dict, key: str, where: str = "") -> dict:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise FabricError(f"{where}{key}: must be a table, [{key}]")
    return v


def _size(d: dict, where: str, default: str) -> int:
    try:
        return parse_size(d.get("size", default))
    except ValueError as e:
        raise FabricError(f"{where}: {e}") from None


def _wwn(d: dict, key: str, where: str) -> str:
    try:
        return normalize_wwn(_get(d, key, str, where))
    except ValueError as e:
        raise FabricError(f"{where}: {e}") from None


def _port_id(d: dict, where: str) -> str:
    """An FC address (24 bits) as the kernel prints it, "0x%06x"; "" when not given."""
    text = _get(d, "port_id", str, where, "")
    if not text:
        return ""
    try:
        value = int(text, 16)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFFFFFF:
        raise FabricError(f"{where}: port_id must be a 24-bit hex FC address such as 0x010200")
    return f"0x{value:06x}"


def _roles(d: dict, where: str) -> tuple[str, ...]:
    """An rport's roles as fc_remote_ports/roles lists them, e.g. ["FCP Target", "FCP Initiator"]."""
    roles = _get(d, "roles", list, where, ["FCP Target"])
    if not roles or not all(isinstance(r, str) and r for r in roles):
        raise FabricError(f"{where}: roles must be a list of names such as \"FCP Target\"")
    return tuple(roles)


def _mpath_wwid(d: dict, where: str) -> str:
    """An explicit multipath WWID (ID_SERIAL): one word multipathd can be given."""
    text = _get(d, "mpath_wwid", str, where, "")
    if text and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", text):
        raise FabricError(f"{where}: mpath_wwid must be one word of letters, digits and _.:-")
    return text


_IQN_RE = re.compile(r"(iqn\.\d{4}-\d{2}\.[^\s:]+(:\S+)?|eui\.[0-9A-Fa-f]{16})")


def is_iscsi_name(text: str) -> bool:
    """An iSCSI initiator or target name (iqn.YYYY-MM.reversed.domain[:id], or eui.<16 hex>)."""
    return isinstance(text, str) and _IQN_RE.fullmatch(text) is not None


def _initiator(text: object, where: str) -> str:
    """A LUN's masked_to entry: an FC initiator WWPN, or an iSCSI initiator name (IQN)."""
    if isinstance(text, str) and is_iscsi_name(text):
        return text
    return _wwn({"wwpn": text}, "wwpn", where)


def _iscsi_name(d: dict, key: str, where: str) -> str:
    text = _get(d, key, str, where)
    if not is_iscsi_name(text):
        raise FabricError(f"{where}: {key} must be an iSCSI name such as iqn.2003-01.org.example:tgt1")
    return text


def _portal(text: object, where: str) -> str:
    """An iSCSI portal, "ADDRESS:PORT" (port 3260 when left out)."""
    if not isinstance(text, str) or not text or any(c.isspace() for c in text):
        raise FabricError(f"{where}: a portal is \"ADDRESS:PORT\", e.g. \"192.168.77.1:3260\"")
    address, sep, port = text.rpartition(":")
    if not sep:
        address, port = text, "3260"
    if not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise FabricError(f"{where}: a portal is \"ADDRESS:PORT\", e.g. \"192.168.77.1:3260\"")
    return f"{address}:{int(port)}"


def _mpd_options(d: dict) -> MpdOptions:
    o = MpdOptions()
    for key in ("reconfigure_delay", "checker_delay", "create_delay", "uxsock_timeout",
                "restart_delay"):
        if key in d:
            value = _get(d, key, float, "multipathd")
            if value < 0:
                raise FabricError(f"multipathd: {key} must be 0 or more (seconds)")
            setattr(o, key, value)
    o.conf = _get(d, "conf", str, "multipathd", "")
    unknown = set(d) - set(MpdOptions.__dataclass_fields__)
    if unknown:
        raise FabricError(f"multipathd: unknown key(s) {', '.join(sorted(unknown))}")
    return o


def parse_fabric(data: dict) -> Fabric:
    defaults = _table(data, "defaults")
    fabric = Fabric(
        hosts=[], arrays=[],
        scan_delay=_get(defaults, "scan_delay", float, "defaults", 0.05),
        dev_loss_tmo=_get(defaults, "dev_loss_tmo", float, "defaults", 1.0),
        login_delay=_get(defaults, "login_delay", float, "defaults", 0.2))
    fabric.multipathd = _mpd_options(_table(data, "multipathd"))
    for name, sw in _table(data, "switch").items():
        if not isinstance(sw, dict):
            raise FabricError(f"switch.{name}: must be a table, [switch.{name}]")
        fabric.fabric_npiv[name] = bool(sw.get("npiv", True))
        if "wwn" in sw:
            try:
                fabric.fabric_wwn[name] = int(_get(sw, "wwn", str, f"switch.{name}"), 16)
            except ValueError:
                raise FabricError(f"switch.{name}: wwn must be hex digits (\"0\": no switch)") from None
    for i, h in enumerate(_tables(data, "host", "")):
        where = f"host[{i}]"
        typ = _get(h, "type", str, where)
        if typ not in ("fc", "iscsi", "sas", "other"):
            raise FabricError(f"{where}: type must be fc, iscsi, sas or other")
        spec = HostSpec(type=typ, driver=_get(h, "driver", str, where,
                                              {"fc": "lpfc", "iscsi": "iscsi_tcp",
                                               "sas": "mpt3sas", "other": "ahci"}[typ]))
        if typ == "fc":
            spec.wwnn = _wwn(h, "wwnn", where)
            spec.wwpn = _wwn(h, "wwpn", where)
            spec.fabric = _get(h, "fabric", str, where)
            spec.port_state = _get(h, "port_state", str, where, "Online")
            spec.speed = _get(h, "speed", str, where, "16 Gbit")
            spec.max_npiv_vports = _get(h, "max_npiv_vports", int, where, 0)
            for j, v in enumerate(_tables(h, "vport", f"{where}.")):
                spec.vports.append((_wwn(v, "wwpn", f"{where}.vport[{j}]"),
                                    _wwn(v, "wwnn", f"{where}.vport[{j}]")))
            if len(spec.vports) > spec.max_npiv_vports:
                raise FabricError(f"{where}: more vports than max_npiv_vports")
            spec.port_id = _port_id(h, where)
        if typ == "iscsi" and "portal" in h:
            spec.portal = _portal(h["portal"], where)
            spec.initiator = _iscsi_name(h, "initiator", where)
            spec.recovery_tmo = _get(h, "recovery_tmo", float, where, 120.0)
            if spec.recovery_tmo < 0:
                raise FabricError(f"{where}: recovery_tmo must be 0 or more (seconds)")
        spec.max_lun = _get(h, "max_lun", int, where, 65535)
        spec.max_id = _get(h, "max_id", int, where, 256)
        if "scan_delay" in h:
            spec.scan_delay = _get(h, "scan_delay", float, where)
        for j, dsk in enumerate(_tables(h, "disk", f"{where}.")):
            dw = f"{where}.disk[{j}]"
            spec.disks.append(DiskSpec(
                target=_get(dsk, "target", int, dw, 0), lun=_get(dsk, "lun", int, dw, 0),
                vendor=_get(dsk, "vendor", str, dw, "ATA"),
                model=_get(dsk, "model", str, dw, "VIRTUAL-DISK"),
                rev=_get(dsk, "rev", str, dw, "1.0"),
                size=_size(dsk, dw, "64G"),
                wwid=_get(dsk, "wwid", str, dw, ""), type=_get(dsk, "type", int, dw, 0),
                mpath_wwid=_mpath_wwid(dsk, dw)))
        fabric.hosts.append(spec)
    for i, a in enumerate(_tables(data, "array", "")):
        where = f"array[{i}]"
        ports = [PortSpec(wwpn=_wwn(p, "wwpn", f"{where}.port[{j}]"),
                          fabric=_get(p, "fabric", str, f"{where}.port[{j}]"),
                          port_id=_port_id(p, f"{where}.port[{j}]"),
                          roles=_roles(p, f"{where}.port[{j}]"))
                 for j, p in enumerate(_tables(a, "port", f"{where}."))]
        luns: dict[int, LunSpec] = {}
        for j, lu in enumerate(_tables(a, "lun", f"{where}.")):
            lw = f"{where}.lun[{j}]"
            n = _get(lu, "lun", int, lw)
            if n in luns:
                raise FabricError(f"{lw}: LUN {n} defined twice")
            masked = {_initiator(w, f"{lw}.masked_to") for w in _get(lu, "masked_to", list, lw, [])}
            # No "wwid": a generated NAA id. wwid = "": the LUN has no VPD page 0x83 (a LIO
            # RAM disk: its device/wwid read fails with ENXIO), so it publishes no WWID.
            wwid = _get(lu, "wwid", str, lw) if "wwid" in lu else generated_wwid(i, n)
            luns[n] = LunSpec(lun=n, size=_size(lu, lw, "10G"), wwid=wwid,
                              masked_to=masked, mpath_wwid=_mpath_wwid(lu, lw))
        iqn = _iscsi_name(a, "iqn", where) if "iqn" in a else ""
        portals = [_portal(p, f"{where}.portals") for p in _get(a, "portals", list, where, [])]
        if portals and not iqn:
            raise FabricError(f"{where}: portals need the target's iqn")
        fabric.arrays.append(ArraySpec(
            name=_get(a, "name", str, where, f"array{i}"),
            vendor=_get(a, "vendor", str, where, "SANSIM"),
            model=_get(a, "model", str, where, "VDISK"), rev=_get(a, "rev", str, where, "0001"),
            # an iSCSI-only array (no FC ports) needs no WWNN
            wwnn=_wwn(a, "wwnn", where) if "wwnn" in a or not iqn else "", ports=ports, luns=luns,
            iqn=iqn, portals=portals))
    known = {p for a in fabric.arrays for p in a.portals}
    for i, h in enumerate(fabric.hosts):
        if h.portal and h.portal not in known:
            raise FabricError(f"host[{i}]: portal {h.portal} is no array's (portals: "
                              f"{', '.join(sorted(known)) or 'none'})")
    seen: dict[str, str] = {}
    for i, h in enumerate(fabric.hosts):
        if h.wwpn:
            if h.wwpn in seen:
                raise FabricError(f"host[{i}]: WWPN {h.wwpn} already used by {seen[h.wwpn]}")
            seen[h.wwpn] = f"host[{i}]"
    return fabric


def load_fabric(path: str | Path) -> Fabric:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise FabricError(f"{path}: {e}") from None
    except OSError as e:
        raise FabricError(f"{path}: {e.strerror}") from None
    try:
        return parse_fabric(data)
    except FabricError:
        raise
    except (TypeError, AttributeError, ValueError) as e:
        # A shape the checks above did not foresee: still one line, naming the file.
        raise FabricError(f"{path}: not a fabric file the simulation understands ({e})") from None

"""sanbusd's object tree as plain data: compare it with sysfs and lsscsi, normalize it for conformance.

Standard library only: the guest uses it to decide when the daemon has caught up with the kernel,
the host-side tests to assert on what the guest recorded and to compare the kernel's tree with the
simulated SAN's. An *object tree* is GetManagedObjects with the variants unpacked:
``{path: {interface: {property: value}}}`` (see guestsan.plain and plain_busctl).
"""

from __future__ import annotations

import re
from typing import Any

ROOT = "/org/example/SanStorage"
IFACE = "org.example.SanStorage."
HOST_I, FC_I, LUN_I, MANAGER_I, VHBA_I = (IFACE + n for n in ("ScsiHost", "FcHost", "Lun", "Manager", "Vhba"))
MAP_I, SESSION_I = IFACE + "MultipathMap", IFACE + "IscsiSession"
NO_OBJECT = "/"

Tree = dict[str, dict[str, dict[str, Any]]]


def host_path(name: str) -> str:
    return f"{ROOT}/hosts/{name}"


def lun_path(hctl: str) -> str:
    return f"{ROOT}/luns/{hctl.replace(':', '_')}"


def vhba_path(wwpn: str) -> str:
    """A vHBA's object: its WWPN as the API spells it (16 lower-case hex digits)."""
    return f"{ROOT}/vhbas/{wwn(wwpn)}"


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def map_path(wwid: str) -> str:
    """A multipath map's object: its WWID (multipath's, udev's ID_SERIAL) as one path element,
    [A-Za-z0-9] kept and every other byte _XX (as udisks escapes)."""
    element = "".join(chr(b) if chr(b) in _SAFE else f"_{b:02x}" for b in wwid.encode()) or "_"
    return f"{ROOT}/multipath/{element}"


def session_path(name: str) -> str:
    return f"{ROOT}/iscsi/{name}"


def hctl_key(hctl: str) -> tuple[int, ...]:
    return tuple(int(part) for part in hctl.split(":"))


def wwn(sysfs_value: str | None) -> str:
    """The kernel's "0x%llx" WWN as the API spells it: 16 lower-case hex digits, no 0x."""
    if not sysfs_value:
        return ""
    return sysfs_value.lower().removeprefix("0x").zfill(16)


def _unvariant(value):
    """busctl prints a variant as {"type": …, "data": …}, also inside a{sv} values."""
    if isinstance(value, dict):
        if value.keys() == {"type", "data"}:
            return _unvariant(value["data"])
        return {k: _unvariant(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unvariant(v) for v in value]
    return value


def plain_busctl(document: dict) -> Tree:
    """``busctl --json=short call … GetManagedObjects`` output -> an object tree."""
    (objects,) = document["data"]
    return {path: {iface: {name: _unvariant(prop["data"]) for name, prop in props.items()}
                   for iface, props in ifaces.items()}
            for path, ifaces in objects.items()}


# --------------------------------------------------------------------------------------------
# Objects vs sysfs (guestlib.sysfs_snapshot)


def expected_from_sysfs(sysfs: dict) -> Tree:
    """What sanbusd must publish for the hosts, FC ports, LUNs and NPIV vports in a sysfs snapshot.

    Written from the API contract (data/org.example.SanStorage.xml) and the raw sysfs values,
    independently of sanbusd's reader and publisher. A Vhba's Persistent is sanbusd's own record,
    not the kernel's: it is not compared here.
    """
    tree: Tree = {}
    vports = sysfs.get("vports", {})
    luns_by_host: dict[str, list[str]] = {}
    for hctl in sorted(sysfs["luns"], key=hctl_key):
        luns_by_host.setdefault(f"host{hctl.split(':')[0]}", []).append(lun_path(hctl))
    for name, h in sysfs["hosts"].items():
        number = int(name.removeprefix("host"))
        obj = {HOST_I: {
            "Name": name, "Number": number, "Driver": h["proc_name"], "Transport": h["transport"],
            "State": h["state"], "UniqueId": int(h["unique_id"] or 0),
            "Luns": luns_by_host.get(name, []),
        }}
        if h["transport"] == "fc":
            fc = h["fc"]
            capable = bool(fc["vport_create"])
            rports = sorted((r for r in sysfs["rports"].items() if r[0].startswith(f"rport-{number}:")),
                            key=lambda item: _rport_key(item[0]))
            obj[FC_I] = {
                "WWNN": wwn(fc["node_name"]), "WWPN": wwn(fc["port_name"]),
                "FabricName": _fabric_name(fc["fabric_name"]),
                "PortState": fc["port_state"] or "", "PortType": fc["port_type"] or "",
                "PortId": fc["port_id"] or "", "Speed": fc["speed"] or "",
                "NpivCapable": capable,
                "MaxVports": int(fc["max_npiv_vports"]) if capable else 0,
                "VportsInUse": int(fc["npiv_vports_inuse"]) if capable else 0,
                "RemotePorts": [{"Name": rname, "WWPN": wwn(r["port_name"]),
                                 "WWNN": wwn(r["node_name"]), "PortId": r["port_id"] or "",
                                 "Roles": [role.strip() for role in (r["roles"] or "").split(",")
                                           if role.strip()],
                                 "PortState": r["port_state"] or "",
                                 "ScsiTargetId": int(r["scsi_target_id"])}
                                for rname, r in rports],
                "Vhba": _vhba_of_host(vports, fc.get("vport")),
            }
        tree[host_path(name)] = obj
    for vname, v in vports.items():
        if not wwn(v["port_name"]):
            continue  # not readable (yet): sanbusd has no path for it
        host = v["host"]
        tree[vhba_path(v["port_name"])] = {VHBA_I: {
            "Name": vname, "WWNN": wwn(v["node_name"]), "WWPN": wwn(v["port_name"]),
            "Parent": host_path(f"host{v['parent']}"),
            "Host": host_path(f"host{host}") if host is not None and f"host{host}" in sysfs["hosts"]
            else NO_OBJECT,
            "State": v["vport_state"] or "", "LastState": v["vport_last_state"] or "",
        }}
    maps = sysfs.get("maps", {})
    block_lun = {d["block"]: hctl for hctl, d in sysfs["luns"].items() if d["block"]}
    for dm, m in maps.items():
        wwid = m["uuid"].removeprefix("mpath-")
        tree[map_path(wwid)] = {MAP_I: {
            "Name": m["name"] or "", "WWID": wwid, "DmDevice": f"/dev/{dm}", "Size": m["size_bytes"] or 0,
            "TotalPaths": len(m["slaves"]),
            # multipathd's verdicts (DmState, CheckerState, Up, Health) are not in sysfs
            "Paths": map_paths_projection([
                {"Device": sd, "Lun": lun_path(block_lun[sd]) if sd in block_lun else NO_OBJECT,
                 "DeviceState": (sysfs["luns"][block_lun[sd]]["state"] or "unknown") if sd in block_lun
                 else "unknown"} for sd in m["slaves"]]),
        }}
    for name, s in sysfs.get("sessions", {}).items():
        host = s["host"]
        address = s["address"] if s["address"] not in (None, "(null)") else ""
        tree[session_path(name)] = {SESSION_I: {
            "Name": name, "Host": host_path(f"host{host}") if host is not None and f"host{host}" in sysfs["hosts"]
            else NO_OBJECT,
            "TargetName": s["targetname"] or "", "State": s["state"] or "", "Tpgt": int(s.get("tpgt") or 0),
            "InitiatorName": s.get("initiatorname") if s.get("initiatorname") not in (None, "(null)") else "",
            "Portal": f"{address}:{s['port']}" if address else "",
            "RecoveryTimeout": int(s["recovery_tmo"] or 0),
        }}
    for hctl, d in sysfs["luns"].items():
        rport = sysfs["rports"].get(d["rport"] or "")
        tree[lun_path(hctl)] = {LUN_I: {
            "HCTL": hctl, "Host": host_path(f"host{hctl.split(':')[0]}"), "Lun": hctl_key(hctl)[3],
            "Vendor": d["vendor"] or "", "Model": d["model"] or "", "Revision": d["rev"] or "",
            "Type": d["type"] if d["type"] is not None else -1,
            "WWID": d["wwid"] or "",  # None: the attribute is missing or unreadable (ENXIO)
            "Size": d["size_bytes"] or 0,
            "BlockDevice": f"/dev/{d['block']}" if d["block"] else "",
            "State": d["state"] or "",
            "TargetPortName": wwn(rport["port_name"]) if rport else "",
            "MultipathMap": next((map_path(maps[h]["uuid"].removeprefix("mpath-"))
                                  for h in d.get("holders") or [] if h in maps), NO_OBJECT),
        }}
    return tree


def map_paths_projection(paths: list[dict]) -> list[dict]:
    """A map's Paths as far as sysfs tells them (device, its LUN, the kernel's device state),
    ordered by device."""
    return sorted(({k: p.get(k) for k in ("Device", "Lun", "DeviceState")} for p in paths),
                  key=lambda p: p["Device"])


def _vhba_of_host(vports: dict, vport: str | None) -> str:
    v = vports.get(vport or "")
    return vhba_path(v["port_name"]) if v and wwn(v["port_name"]) else NO_OBJECT


def _fabric_name(sysfs_value: str | None) -> str:
    """0x0 and 0xffffffffffffffff mean "no fabric" (link down, or no switch as in VN2VN): ""."""
    name = wwn(sysfs_value)
    return "" if name in ("0" * 16, "f" * 16) else name


def _rport_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def sysfs_differences(objects: Tree, sysfs: dict) -> list[str]:
    """Where the published hosts, LUNs and vHBAs differ from sysfs; [] when they match exactly."""
    expected = expected_from_sysfs(sysfs)
    published = {p: o for p, o in objects.items()
                 if p.startswith((f"{ROOT}/hosts/", f"{ROOT}/luns/", f"{ROOT}/vhbas/", f"{ROOT}/multipath/",
                                  f"{ROOT}/iscsi/"))}
    diffs = [f"missing object {p}" for p in sorted(expected.keys() - published.keys())]
    diffs += [f"object not in sysfs {p}" for p in sorted(published.keys() - expected.keys())]
    for path in sorted(expected.keys() & published.keys()):
        want, got = expected[path], published[path]
        if set(want) != set(got):
            diffs.append(f"{path}: interfaces {sorted(got)}, sysfs says {sorted(want)}")
        for iface in want.keys() & got.keys():
            for prop, value in want[iface].items():
                have = got[iface].get(prop)
                if iface == MAP_I and prop == "Paths":
                    have = map_paths_projection(have or [])
                if have != value:
                    diffs.append(f"{path} {iface.removeprefix(IFACE)}.{prop} = {have!r}, "
                                 f"sysfs says {value!r}")
    return diffs


# --------------------------------------------------------------------------------------------
# lsscsi


def parse_lsscsi(text: str) -> dict[str, dict[str, str]]:
    """``lsscsi`` lines -> {hctl: {type, vendor, model, rev, device}}.

    The vendor (8), model (16) and revision (4) columns are fixed width and may contain spaces.
    """
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\[(\d+:\d+:\d+:\d+)\]\s+(\S+)\s+(.{8}) (.{16}) (.{4})\s+(\S+)\s*$", line)
        if m:
            hctl, kind, vendor, model, rev, device = m.groups()
            out[hctl] = {"type": kind, "vendor": vendor.strip(), "model": model.strip(),
                         "rev": rev.strip(), "device": device}
    return out


def parse_lsscsi_transport(text: str) -> dict[str, dict[str, str]]:
    """``lsscsi -t`` lines -> {hctl: {transport, device}}; FC shows ``fc:0x<target wwpn>,0x<port id>``."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\[(\d+:\d+:\d+:\d+)\]\s+(\S+)\s+(\S*)\s+(\S+)\s*$", line)
        if m:
            hctl, _kind, transport, device = m.groups()
            out[hctl] = {"transport": transport, "device": device}
    return out


def parse_lsscsi_hosts(text: str) -> dict[str, str]:
    """``lsscsi -H`` lines -> {"hostN": driver}."""
    return {f"host{n}": driver for n, driver in re.findall(r"^\[(\d+)\]\s+(\S+)", text, re.M)}


# --------------------------------------------------------------------------------------------
# Conformance: the part of a tree that the kernel and the simulated SAN must agree on


def normalize(tree: Tree, hosts: list[int]) -> Tree:
    """The objects of ``hosts`` (and their LUNs), renamed and trimmed to what both worlds model.

    Differences that are legitimate, and only those, are removed:

    * host numbers: the kernel numbers hosts in the order they were created, across every driver
      loaded in the boot (and the LIO target's own fcoe port takes one); the simulated SAN numbers
      the hosts of its fabric from 0. Host N becomes "host<rank of N in hosts>" everywhere (object
      paths, names, H:C:T:L, rport names, object references).
    * sdX names: they depend on the order in which sd probed the disks (asynchronous). Only
      whether a LUN has a block device is compared.
    * UniqueId: driver-specific (scsi_debug and fcoe leave it 0; lpfc and qla2xxx number their
      instances); the simulated SAN has no driver to ask and uses the host number.
    * the Manager object (Backend is "kernel" vs "simulated" by definition).
    * vport numbers (the N of vport-H:C-N): the kernel never reuses one, a refused create uses
      one up too, so they count the boot's history; the simulated SAN of a fabric file numbers
      its vports from 0. The vports of a parent are renumbered in order (and H as host numbers).

    * multipath map names (mpatha, …) and dm minors: the bindings file and device-mapper count
      the boot's history (the maps of scenarios before, the order maps were made in); a friendly
      Name becomes "mpathX" (a WWID as name stays), DmDevice "/dev/dm-N", its paths' Device "sdX"
      (probe order), and its Paths are ordered by their (renamed) LUN.
    * iSCSI session numbers count the boot's logins: sessionN becomes "session#<rank>".

    A Vhba object is kept when its Parent is one of ``hosts``; a MultipathMap when one of its paths
    is a LUN of ``hosts``; an IscsiSession when its Host is one of them.
    """
    rank = {n: i for i, n in enumerate(sorted(hosts))}
    vport_numbers: dict[int, list[int]] = {}
    for path, ifaces in tree.items():
        if VHBA_I in ifaces and (m := _VPORT_NAME.fullmatch(ifaces[VHBA_I]["Name"])):
            vport_numbers.setdefault(int(m[1]), []).append(int(m[3]))

    def vport_name(name: str) -> str:
        m = _VPORT_NAME.fullmatch(name)
        if not m:
            return name
        parent = int(m[1])
        return f"vport-{rank[parent]}:{m[2]}-{sorted(vport_numbers[parent]).index(int(m[3]))}"

    def host_ref(path: str) -> str:
        n = int(path.rsplit("host", 1)[1])
        return host_path(f"host{rank[n]}")

    def hctl_of(hctl: str) -> str:
        h, rest = hctl.split(":", 1)
        return f"{rank[int(h)]}:{rest}"

    def lun_ref(path: str) -> str:
        return lun_path(hctl_of(path.rsplit("/", 1)[1].replace("_", ":")))

    def in_scope(ref: str) -> bool:
        return ref.startswith(f"{ROOT}/luns/") and int(ref.rsplit("/", 1)[1].split("_")[0]) in rank

    maps = {p: o[MAP_I] for p, o in tree.items()
            if MAP_I in o and any(in_scope(x["Lun"]) for x in o[MAP_I]["Paths"])}
    sessions = {p: o[SESSION_I] for p, o in tree.items()
                if SESSION_I in o and o[SESSION_I]["Host"] != NO_OBJECT
                and int(o[SESSION_I]["Host"].rsplit("host", 1)[1]) in rank}
    session_rank = {name: i for i, name in enumerate(sorted((s["Name"] for s in sessions.values()),
                                                            key=lambda n: (len(n), n)))}

    out: Tree = {}
    for path, m in maps.items():
        out[path] = {MAP_I: {
            **m, "Name": re.sub(r"^mpath[a-z]+$", "mpathX", m["Name"]), "DmDevice": "/dev/dm-N",
            "Paths": sorted(({**x, "Lun": lun_ref(x["Lun"]) if in_scope(x["Lun"]) else x["Lun"], "Device": "sdX"}
                             for x in m["Paths"]), key=lambda x: x["Lun"])}}
    for path, sess in sessions.items():
        name = f"session#{session_rank[sess['Name']]}"
        out[session_path(name)] = {SESSION_I: {**sess, "Name": name, "Host": host_ref(sess["Host"])}}
    for path, ifaces in tree.items():
        if path.startswith(f"{ROOT}/hosts/host"):
            n = int(path.rsplit("host", 1)[1])
            if n not in rank:
                continue
            host = dict(ifaces[HOST_I])
            del host["UniqueId"]
            host["Name"], host["Number"] = f"host{rank[n]}", rank[n]
            host["Luns"] = [lun_ref(p) for p in host["Luns"]]
            obj = {HOST_I: host}
            if FC_I in ifaces:
                fc = dict(ifaces[FC_I])
                fc["RemotePorts"] = [{**r, "Name": re.sub(r"^rport-\d+:", f"rport-{rank[n]}:",
                                                          r["Name"])}
                                     for r in fc["RemotePorts"]]
                obj[FC_I] = fc
            out[host_ref(path)] = obj
        elif path.startswith(f"{ROOT}/luns/"):
            lun = dict(ifaces[LUN_I])
            if int(lun["HCTL"].split(":")[0]) not in rank:
                continue
            lun["HCTL"] = hctl_of(lun["HCTL"])
            lun["Host"] = host_ref(lun["Host"])
            lun["BlockDevice"] = bool(lun["BlockDevice"])
            out[lun_ref(path)] = {LUN_I: lun}
        elif path.startswith(f"{ROOT}/vhbas/"):
            vhba = dict(ifaces[VHBA_I])
            if int(vhba["Parent"].rsplit("host", 1)[1]) not in rank:
                continue
            vhba["Name"] = vport_name(vhba["Name"])
            vhba["Parent"] = host_ref(vhba["Parent"])
            if vhba["Host"] != NO_OBJECT:
                vhba["Host"] = host_ref(vhba["Host"])
            out[path] = {**ifaces, VHBA_I: vhba}
    return out


_VPORT_NAME = re.compile(r"vport-(\d+):(\d+)-(\d+)")


def tree_differences(kernel: Tree, simulated: Tree) -> list[str]:
    """Human-readable differences between two normalized trees; [] when they are the same."""
    diffs = [f"only on the kernel: {p}" for p in sorted(kernel.keys() - simulated.keys())]
    diffs += [f"only in the simulation: {p}" for p in sorted(simulated.keys() - kernel.keys())]
    for path in sorted(kernel.keys() & simulated.keys()):
        k, s = kernel[path], simulated[path]
        if set(k) != set(s):
            diffs.append(f"{path}: interfaces kernel {sorted(k)}, simulation {sorted(s)}")
        for iface in sorted(k.keys() & s.keys()):
            for prop in sorted(k[iface].keys() | s[iface].keys()):
                kv, sv = k[iface].get(prop), s[iface].get(prop)
                if kv != sv:
                    diffs.append(f"{path} {iface.removeprefix(IFACE)}.{prop}: kernel {kv!r}, "
                                 f"simulation {sv!r}")
    return diffs


def normalize_refs(data: Any, hosts: list[int]) -> Any:
    """Recorded story data (ScanAll answers, error messages, sanctl output) with the same renaming
    as ``normalize``: host N -> its rank in ``hosts`` in object paths, hostN names, H:C:T:L and
    rport names; vport-H:C-N -> vport-<rank>:C-N (vport numbers count the boot's history, see
    ``normalize``); /dev/sdX -> /dev/sdX (probe order); runs of blanks -> one (table widths)."""
    rank = {n: i for i, n in enumerate(sorted(hosts))}

    def host(m: re.Match) -> str:
        n = int(m[2])
        return f"{m[1]}{rank.get(n, n)}{m[3]}"

    def text(value: str) -> str:
        value = re.sub(r"(/hosts/host|\bhost|\brport-)(\d+)(\b)", host, value)
        value = re.sub(r"(/luns/)(\d+)(_\d+_\d+_\d+)", host, value)
        value = re.sub(r"(\b)(\d+)(:\d+:\d+:\d+\b)", host, value)
        value = re.sub(r"\bvport-(\d+):(\d+)-\d+\b", lambda m: f"vport-{rank.get(int(m[1]), m[1])}:{m[2]}-N",
                       value)
        value = re.sub(r"/dev/sd[a-z]+", "/dev/sdX", value)
        value = re.sub(r"\bmpath[a-z]+\b", "mpathX", value)  # friendly names count the boot's maps
        value = re.sub(r"\bdm-\d+\b", "dm-N", value)
        return re.sub(r"[ \t]+", " ", value)

    if isinstance(data, str):
        return text(data)
    if isinstance(data, dict):
        return {normalize_refs(k, hosts): normalize_refs(v, hosts) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [normalize_refs(v, hosts) for v in data]
    return data

"""sanctl: the command-line client of org.example.SanStorage."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from dbus_fast import Message, MessageType, Variant

from .. import BUS_NAME, client
from ..client import IFACE as IF, ROOT, ClientError, plain

OM = client.OM_IFACE


class CliError(Exception):
    pass


async def connect(bus: str):
    try:
        return await client.connect(bus)
    except Exception as e:  # noqa: BLE001
        raise CliError(f"cannot connect to the {bus} bus: {e}") from None


async def call(bus, path: str, iface: str, member: str, sig: str = "",
               body: list | None = None, timeout: float | None = None) -> list:
    try:
        return await client.call(bus, path, iface, member, sig, body, timeout)
    except ClientError as e:
        raise CliError(str(e)) from None


async def managed_objects(bus) -> dict[str, dict[str, dict[str, object]]]:
    (objs,) = await call(bus, ROOT, OM, "GetManagedObjects")
    return objs


def human_size(n: int) -> str:
    if n <= 0:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return str(n)


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _hctl_key(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(":"))


def render_status(objs: dict) -> str:
    hosts = sorted((o for o in objs.values() if IF + "ScsiHost" in o),
                   key=lambda o: o[IF + "ScsiHost"]["Number"])
    luns = sorted((o[IF + "Lun"] for o in objs.values() if IF + "Lun" in o),
                  key=lambda lun: _hctl_key(lun["HCTL"]))
    vhbas = [o[IF + "Vhba"] for o in objs.values() if IF + "Vhba" in o]
    maps = [o[IF + "MultipathMap"] for o in objs.values() if IF + "MultipathMap" in o]
    mgr = objs.get(ROOT + "/Manager", {}).get(IF + "Manager", {})
    out = [f"sanbusd {mgr.get('Version', '?')} ({mgr.get('Backend', '?')} backend): "
           f"{len(hosts)} hosts, {len(luns)} LUN paths, {len(vhbas)} vHBAs, "
           f"{len(maps)} multipath maps", ""]
    rows = []
    for o in hosts:
        h, fc = o[IF + "ScsiHost"], o.get(IF + "FcHost")
        npiv = (f"{fc['VportsInUse']}/{fc['MaxVports']}" if fc and fc["NpivCapable"] else "-")
        rows.append([h["Name"], h["Driver"], h["Transport"], h["State"],
                     fc["WWPN"] if fc else "-", fc["PortState"] if fc else "-",
                     fc["Speed"] if fc else "-", npiv, str(len(h["Luns"]))])
    out.append("SCSI hosts")
    out.append(table(rows, ["HOST", "DRIVER", "TRANSPORT", "STATE", "WWPN", "PORT", "SPEED",
                            "NPIV", "LUNS"]))
    rports = []
    for o in hosts:
        fc = o.get(IF + "FcHost")
        for r in (fc or {}).get("RemotePorts", []):
            rports.append([o[IF + "ScsiHost"]["Name"], r["Name"], r["WWPN"], r["WWNN"],
                           r["PortId"], ", ".join(r["Roles"]), r["PortState"],
                           str(r["ScsiTargetId"])])
    if rports:
        out += ["", "FC remote ports"]
        out.append(table(rports, ["HOST", "RPORT", "WWPN", "WWNN", "PORT ID", "ROLES", "STATE",
                                  "TARGET"]))
    sessions = sorted((o[IF + "IscsiSession"] for o in objs.values() if IF + "IscsiSession" in o),
                      key=lambda s: int(s["Name"].removeprefix("session") or 0))
    if sessions:
        out += ["", "iSCSI sessions"]
        out.append(table([[s["Name"], s["Host"].rsplit("/", 1)[-1] if s["Host"] != "/" else "-",
                           s["TargetName"], s["Portal"] or "-", s["State"]] for s in sessions],
                         ["SESSION", "HOST", "TARGET", "PORTAL", "STATE"]))
    if vhbas:
        out += ["", "NPIV vHBAs"]
        out.append(table([[v["Name"], v["WWPN"], v["WWNN"], v["Parent"].rsplit("/", 1)[-1],
                           v["Host"].rsplit("/", 1)[-1] if v["Host"] != "/" else "-", v["State"]]
                          for v in vhbas], ["VPORT", "WWPN", "WWNN", "PARENT", "HOST", "STATE"]))
    out += ["", "LUN paths"]
    out.append(table([[lun["HCTL"], f"{lun['Vendor']} {lun['Model']}".strip(),
                       human_size(lun["Size"]), lun["BlockDevice"] or "-", lun["State"],
                       lun["TargetPortName"] or "-", lun["WWID"] or "-"] for lun in luns],
                     ["HCTL", "VENDOR/MODEL", "SIZE", "DEVICE", "STATE", "TARGET PORT", "WWID"]))
    if maps:
        out += ["", "Multipath maps"]
        out.append(table(map_rows(maps), MAP_HEADERS))
    return "\n".join(out)


MAP_HEADERS = ["NAME", "WWID", "DEVICE", "SIZE", "HEALTH", "PATHS"]


def map_rows(maps: list[dict]) -> list[list[str]]:
    return [[m["Name"], m["WWID"], m["DmDevice"], human_size(m["Size"]), m["Health"],
             f"{m['ActivePaths']}/{m['TotalPaths']}"]
            for m in sorted(maps, key=lambda m: m["Name"])]


def render_maps(objs: dict) -> str:
    maps = [o[IF + "MultipathMap"] for o in objs.values() if IF + "MultipathMap" in o]
    mgr = objs.get(ROOT + "/Manager", {}).get(IF + "Manager", {})
    out = []
    if mgr.get("Multipathd", "running") != "running":
        out.append(f"multipathd: {mgr['Multipathd']} (path states are unknown)")
    if not maps:
        return "\n".join(out + ["no multipath maps"])
    for m in sorted(maps, key=lambda m: m["Name"]):
        out.append(f"{m['Name']} ({m['WWID']}) {m['DmDevice']} {human_size(m['Size'])} "
                   f"{m['Health']}, {m['ActivePaths']}/{m['TotalPaths']} paths up"
                   + (f", features '{m['Features']}'" if m["Features"] else "")
                   + (f", hwhandler '{m['HwHandler']}'" if m["HwHandler"] else ""))
        rows = []
        for p in m["Paths"]:
            lun = objs.get(p["Lun"], {}).get(IF + "Lun", {})
            rows.append(["  " + lun.get("HCTL", "-"), p["Device"], p["DmState"],
                         p["DeviceState"], p["CheckerState"], "up" if p["Up"] else "DOWN"])
        out.append(table(rows, ["  HCTL", "DEVICE", "DM", "DEVICE STATE", "CHECKER", ""]))
    return "\n".join(out)


async def cmd_status(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    objs = await managed_objects(bus)
    if args.json:
        print(json.dumps(objs, indent=2, sort_keys=True))
    else:
        print(render_status(objs))
    bus.disconnect()
    return 0


def describe(path: str, ifaces: dict) -> str:
    if IF + "Lun" in ifaces:
        lun = ifaces[IF + "Lun"]
        return (f"LUN {lun['HCTL']} {lun['Vendor']} {lun['Model']} {human_size(lun['Size'])} "
                f"{lun['BlockDevice'] or '-'} {lun['WWID'] or ''}").rstrip()
    if IF + "ScsiHost" in ifaces:
        h = ifaces[IF + "ScsiHost"]
        fc = ifaces.get(IF + "FcHost")
        return f"host {h['Name']} {h['Driver']} {h['Transport']}" + (
            f" WWPN {fc['WWPN']} {fc['PortState']}" if fc else "")
    if IF + "Vhba" in ifaces:
        v = ifaces[IF + "Vhba"]
        return f"vHBA {v['Name']} WWPN {v['WWPN']} {v['State']}"
    if IF + "MultipathMap" in ifaces:
        m = ifaces[IF + "MultipathMap"]
        return (f"multipath {m['Name']} {m['WWID']} {m['DmDevice']} {m['Health']} "
                f"{m['ActivePaths']}/{m['TotalPaths']} paths")
    return ", ".join(i.rsplit(".", 1)[-1] for i in ifaces)


def _short(v: Any) -> str:
    if isinstance(v, list) and v and all(isinstance(x, dict) and "Name" in x for x in v):
        # remote ports: the facts that change, not every key
        v = [" ".join(str(x[k]) for k in ("Name", "WWPN", "PortState") if k in x) for x in v]
    elif isinstance(v, list) and v and all(isinstance(x, dict) and "Device" in x for x in v):
        # a map's paths: which is up
        v = [f"{x['Device']}:{'up' if x.get('Up') else 'down'}({x.get('DeviceState')}/"
             f"{x.get('DmState')}/{x.get('CheckerState')})" for x in v]
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s if len(s) <= 120 else s[:117] + "..."


async def cmd_monitor(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    for rule in (*client.SIGNAL_RULES,
                 f"type='signal',sender='{BUS_NAME}',path_namespace='{ROOT}',"
                 f"interface='{IF}Manager'"):
        await client.add_match(bus, rule)
    done = asyncio.get_running_loop().create_future()

    def emit(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    def on_msg(msg: Message):
        if msg.message_type != MessageType.SIGNAL or not (msg.path or "").startswith(ROOT):
            return None
        body = plain(msg.body)
        if msg.member == "InterfacesAdded":
            emit(f"+ {body[0]}  {describe(body[0], body[1])}")
        elif msg.member == "InterfacesRemoved":
            emit(f"- {body[0]}  ({', '.join(i.rsplit('.', 1)[-1] for i in body[1])})")
        elif msg.member == "PropertiesChanged":
            changes = " ".join(f"{k}={_short(v)}" for k, v in sorted(body[1].items()))
            emit(f"~ {msg.path}  {body[0].rsplit('.', 1)[-1]}: {changes}")
        else:
            emit(f"! {msg.path}  {msg.member} {_short(body)}")
        return None

    bus.add_message_handler(on_msg)
    # An ObjectManager client: this starts sanbusd if it is not running (bus activation) and
    # keeps it from exiting while idle for as long as the monitor runs (signals alone would not).
    try:
        await client.call(bus, ROOT, OM, "GetManagedObjects", timeout=60)
    except ClientError as e:
        print(f"sanctl: {BUS_NAME} does not answer ({e}); waiting for it", file=sys.stderr)
    emit(f"monitoring {BUS_NAME} (Ctrl-C to stop)")
    try:
        await done
    finally:
        bus.disconnect()
    return 0


def _host_path(text: str) -> str:
    t = text.strip()
    if t.startswith("/"):
        return t
    if t.startswith("host"):
        t = t[4:]
    if not t.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a host (give hostN, N or an object "
                                         "path)")
    return f"{ROOT}/hosts/host{int(t)}"


def _lun_list(text: str) -> list[int]:
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of LUN numbers (e.g. "
                                         "27,28,29,53 or 27-29)") from None
    if any(n < 0 for n in out):
        raise argparse.ArgumentTypeError("LUN numbers are not negative")
    return out


async def cmd_scan(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    options: dict[str, Variant] = {"timeout": Variant("u", args.timeout)}
    if args.lun:
        options["luns"] = Variant("at", sorted({n for chunk in args.lun for n in chunk}))
    if args.host:
        options["hosts"] = Variant("ao", sorted(set(args.host)))
    if args.no_user_interaction:
        options["auth.no_user_interaction"] = Variant("b", True)
    for rule in (client.SIGNAL_RULES[0], client.SIGNAL_RULES[2]):
        await client.add_match(bus, rule)
    tty = sys.stderr.isatty()

    def progress(value: float) -> None:
        text = f"scanning: {value * 100:3.0f}% of hosts done"
        print(("\r" + text) if tty else text, end="" if tty else "\n", file=sys.stderr,
              flush=True)

    def on_msg(msg: Message):
        if msg.message_type != MessageType.SIGNAL:
            return None
        body = plain(msg.body)
        if msg.member == "InterfacesAdded" and f"{IF}Job" in body[1]:
            progress(body[1][f"{IF}Job"]["Progress"])
        elif (msg.member == "PropertiesChanged" and (msg.path or "").startswith(ROOT + "/jobs/")
              and "Progress" in body[1]):
            progress(body[1]["Progress"])
        return None

    bus.add_message_handler(on_msg)
    what = ("LUNs " + ",".join(str(n) for n in options["luns"].value)) if args.lun else \
        "all LUNs"
    where = ", ".join(p.rsplit("/", 1)[-1] for p in args.host) if args.host else "all hosts"
    print(f"scanning {where} for {what} ...", file=sys.stderr, flush=True)
    try:
        (added,) = await call(bus, ROOT + "/Manager", IF + "Manager", "ScanAll", "a{sv}",
                              [options], timeout=args.timeout + 60)
    finally:
        if tty:
            print(file=sys.stderr)
    objs = await managed_objects(bus)
    bus.disconnect()
    luns = [objs[p][IF + "Lun"] for p in added if p in objs]
    wwids = {lun["WWID"] or lun["HCTL"] for lun in luns}
    print(f"{len(wwids)} new LUNs, {len(luns)} paths")
    if luns:
        print(table([[lun["HCTL"], str(lun["Lun"]), lun["BlockDevice"] or "-",
                      human_size(lun["Size"]), lun["WWID"] or "-", lun["TargetPortName"] or "-"]
                     for lun in sorted(luns, key=lambda x: (x["Lun"], _hctl_key(x["HCTL"])))],
                    ["HCTL", "LUN", "DEVICE", "SIZE", "WWID", "TARGET PORT"]))
    return 0


def vhba_rows(objs: dict) -> list[list[str]]:
    rows = []
    for path, o in sorted(objs.items()):
        v = o.get(IF + "Vhba")
        if v is None:
            continue
        host = objs.get(v["Host"], {}).get(IF + "ScsiHost", {})
        rows.append([v["WWPN"], v["WWNN"], v["Parent"].rsplit("/", 1)[-1],
                     host.get("Name", "-"), v["State"], "yes" if v["Persistent"] else "no",
                     str(len(host.get("Luns", [])))])
    return rows


VHBA_HEADERS = ["WWPN", "WWNN", "PARENT", "HOST", "STATE", "PERSISTENT", "LUNS"]


async def cmd_vhba_list(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    objs = await managed_objects(bus)
    bus.disconnect()
    rows = vhba_rows(objs)
    print(table(rows, VHBA_HEADERS) if rows else "no vHBAs")
    mgr = objs.get(ROOT + "/Manager", {}).get(IF + "Manager", {})
    problems = [r for r in mgr.get("PersistentVhbas", []) if r["Status"] == "failed"]
    for r in problems:
        print(f"persistent vHBA {r['WWPN']} could not be re-created: {r['Message']}")
    return 0


def _opt(options: dict, key: str, sig: str, value) -> None:
    if value is not None:
        options[key] = Variant(sig, value)


async def cmd_vhba_create(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    options: dict[str, Variant] = {}
    if args.parent and "/" in args.parent.strip("/") and not args.parent.startswith("/"):
        wwnn, _, wwpn = args.parent.partition("/")
        _opt(options, "parent_wwnn", "s", wwnn)
        _opt(options, "parent_wwpn", "s", wwpn)
    elif args.parent:
        try:
            _opt(options, "parent", "o", _host_path(args.parent))
        except argparse.ArgumentTypeError as e:
            raise CliError(f"--parent: {e}; or give PARENT_WWNN/PARENT_WWPN") from None
    _opt(options, "fabric_wwn", "s", args.fabric)
    _opt(options, "wwpn", "s", args.wwpn)
    _opt(options, "wwnn", "s", args.wwnn)
    _opt(options, "wait", "u", args.wait)
    if args.persistent:
        options["persistent"] = Variant("b", True)
    if args.no_wait_luns:
        options["wait_luns"] = Variant("b", False)
    if args.keep_failed:
        options["keep_failed"] = Variant("b", True)
    if args.no_user_interaction:
        options["auth.no_user_interaction"] = Variant("b", True)
    for rule in (client.SIGNAL_RULES[0], client.SIGNAL_RULES[2]):
        await client.add_match(bus, rule)

    def on_msg(msg: Message):
        if msg.message_type == MessageType.SIGNAL and msg.member == "InterfacesAdded":
            body = plain(msg.body)
            if IF + "Vhba" in body[1]:
                v = body[1][IF + "Vhba"]
                print(f"vHBA {v['WWPN']} created on {v['Parent'].rsplit('/', 1)[-1]}: "
                      f"{v['State']} (waiting for the fabric login ...)", file=sys.stderr,
                      flush=True)
        return None

    bus.add_message_handler(on_msg)
    (path,) = await call(bus, ROOT + "/Manager", IF + "Manager", "CreateVhba", "a{sv}",
                         [options], timeout=(args.wait or 30) + 120)
    objs = await managed_objects(bus)
    bus.disconnect()
    rows = [r for r in vhba_rows(objs) if path.endswith(r[0])]
    print(table(rows, VHBA_HEADERS))
    v = objs[path][IF + "Vhba"]
    host = objs.get(v["Host"], {}).get(IF + "ScsiHost", {})
    luns = [objs[p][IF + "Lun"] for p in host.get("Luns", []) if p in objs]
    if luns:
        print(f"\n{len(luns)} LUN paths behind it")
        print(table([[lun["HCTL"], lun["BlockDevice"] or "-", human_size(lun["Size"]),
                      lun["WWID"] or "-"] for lun in luns], ["HCTL", "DEVICE", "SIZE", "WWID"]))
    return 0


def _vhba_path(text: str) -> str:
    t = text.strip()
    return t if t.startswith("/") else f"{ROOT}/vhbas/{t.lower().replace(':', '').removeprefix('0x')}"


async def cmd_vhba_delete(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    options: dict[str, Variant] = {}
    if args.force:
        options["force"] = Variant("b", True)
    if args.no_user_interaction:
        options["auth.no_user_interaction"] = Variant("b", True)
    await call(bus, _vhba_path(args.vhba), IF + "Vhba", "Delete", "a{sv}", [options],
               timeout=120)
    bus.disconnect()
    print(f"vHBA {args.vhba} deleted")
    return 0


async def cmd_vhba_persist(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    await call(bus, _vhba_path(args.vhba), IF + "Vhba", "SetPersistent", "ba{sv}",
               [args.value == "on", {}], timeout=120)
    bus.disconnect()
    print(f"vHBA {args.vhba}: persistent {args.value}")
    return 0


async def _find_map(bus, text: str) -> str:
    t = text.strip()
    if t.startswith(ROOT + "/"):
        return t
    name = t.removeprefix("/dev/mapper/")
    objs = await managed_objects(bus)
    for path, o in objs.items():
        m = o.get(IF + "MultipathMap")
        if m is not None and name in (m["Name"], m["WWID"], m["DmDevice"],
                                      m["DmDevice"].removeprefix("/dev/")):
            return path
    raise CliError(f"no multipath map {text!r}; `sanctl multipath list` shows them")


async def cmd_mpath_list(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    objs = await managed_objects(bus)
    bus.disconnect()
    print(render_maps(objs))
    return 0


async def cmd_mpath_create_all(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    options = client.options(wwids=args.wwid, all_eligible=args.all_eligible or None,
                             timeout=args.timeout,
                             auth_no_user_interaction=args.no_user_interaction or None)
    (made,) = await call(bus, ROOT + "/Manager", IF + "Manager", "CreateAllMultipathMaps",
                         "a{sv}", [options], timeout=(args.timeout or 60) + 120)
    objs = await managed_objects(bus)
    bus.disconnect()
    maps = [objs[p][IF + "MultipathMap"] for p in made if p in objs]
    print(f"{len(maps)} multipath maps ready")
    if maps:
        print(table(map_rows(maps), MAP_HEADERS))
    return 0


async def cmd_mpath_flush(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    path = await _find_map(bus, args.map)
    options = client.options(deferred=args.deferred or None,
                             remove_paths=args.remove_paths or None,
                             auth_no_user_interaction=args.no_user_interaction or None)
    await call(bus, path, IF + "MultipathMap", "Flush", "a{sv}", [options], timeout=180)
    bus.disconnect()
    print(f"map {args.map} flushed" + (" (or removed when its last user closes it)"
                                       if args.deferred else "")
          + (", and its paths removed" if args.remove_paths else ""))
    return 0


def _on_off(text: str) -> bool:
    t = text.strip().lower()
    if t in ("on", "yes", "true", "1"):
        return True
    if t in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: give on or off")


def _wwid_list(text: str) -> list[str]:
    return [w for w in (x.strip() for x in text.split(",")) if w]


async def cmd_mpath_config(args: argparse.Namespace) -> int:
    bus = await connect(args.bus)
    config: dict[str, Variant] = {}
    if args.friendly_names is not None:
        config["user_friendly_names"] = Variant("b", args.friendly_names)
    _opt(config, "find_multipaths", "s", args.find_multipaths)
    if args.include is not None:
        config["include_wwids"] = Variant("as", args.include)
    if args.exclude is not None:
        config["exclude_wwids"] = Variant("as", args.exclude)
    if config:
        await call(bus, ROOT + "/Manager", IF + "Manager", "SetMultipathConfig", "a{sv}a{sv}",
                   [config, {}], timeout=180)
    (mgr,) = await call(bus, ROOT + "/Manager", "org.freedesktop.DBus.Properties", "GetAll",
                        "s", [IF + "Manager"])
    bus.disconnect()
    c = plain(mgr)["MultipathConfig"]
    print(f"friendly names   {'on' if c['UserFriendlyNames'] else 'off'}")
    print(f"find_multipaths  {c['FindMultipaths']}")
    print(f"include WWIDs    {', '.join(c['IncludeWwids']) or '(all)'}")
    print(f"exclude WWIDs    {', '.join(c['ExcludeWwids']) or '(none)'}")
    print(f"drop-in          {c['DropIn']}")
    print(f"multipathd       {plain(mgr)['Multipathd']}")
    return 0


def _no_user_interaction(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-user-interaction", action="store_true",
                   help="fail instead of asking for authentication")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sanctl", description="Show and manage SAN storage through sanbusd "
        "(org.example.SanStorage on the system bus).")
    p.add_argument("--bus", default="system", metavar="system|session|ADDRESS",
                   help="bus to use (default: system; honours DBUS_SYSTEM_BUS_ADDRESS)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("status", help="hosts, FC ports, remote ports, vHBAs, LUNs and maps")
    s.add_argument("--json", action="store_true", help="print GetManagedObjects as JSON")
    s.set_defaults(func=cmd_status)
    m = sub.add_parser("monitor", help="print devices appearing and going, and property "
                       "changes, as they happen")
    m.set_defaults(func=cmd_monitor)
    sc = sub.add_parser("scan", help="rescan SCSI hosts and list the LUNs that appeared",
                        description="Rescan SCSI hosts for new SAN storage and print the LUN "
                        "paths that appeared. With --lun only those LUN numbers are scanned "
                        "(no wildcard is written, so LUNs nobody asked for stay away).")
    sc.add_argument("--host", action="append", type=_host_path, metavar="H",
                    help="scan only this host (hostN, N or object path); repeat for more "
                         "(default: all hosts)")
    sc.add_argument("--lun", action="append", type=_lun_list, metavar="LIST",
                    help="only these LUN numbers, e.g. 27,28,29,53 or 27-29")
    sc.add_argument("--timeout", type=int, default=60, metavar="S",
                    help="seconds to wait for each host (default 60)")
    _no_user_interaction(sc)
    sc.set_defaults(func=cmd_scan)

    vh = sub.add_parser("vhba", help="NPIV virtual HBAs: list, create, delete, keep",
                        description="NPIV virtual HBAs (vports): one physical FC port logs in "
                        "under another WWPN, so storage can be zoned to it alone.")
    vsub = vh.add_subparsers(dest="vhba_command", required=True, metavar="ACTION")
    v = vsub.add_parser("list", help="the vHBAs, their state, parent and LUNs")
    v.set_defaults(func=cmd_vhba_list)
    v = vsub.add_parser("create", help="create a vHBA; prints it and its LUNs once they are "
                        "there")
    v.add_argument("--parent", metavar="HOST|WWNN/WWPN",
                   help="the physical FC port: hostN, or its WWNN/WWPN (default: the first "
                        "Online NPIV-capable port with room)")
    v.add_argument("--fabric", metavar="WWN", help="a port on this fabric")
    v.add_argument("--wwpn", help="the vHBA's WWPN (default: generated)")
    v.add_argument("--wwnn", help="the vHBA's WWNN (default: generated)")
    v.add_argument("--persistent", action="store_true",
                   help="re-create it whenever sanbusd starts")
    v.add_argument("--wait", type=int, metavar="S",
                   help="seconds to wait for the fabric login (default 30)")
    v.add_argument("--no-wait-luns", action="store_true",
                   help="return after the login, without waiting for its LUNs")
    v.add_argument("--keep-failed", action="store_true",
                   help="keep a vHBA that does not log in (to look at it)")
    _no_user_interaction(v)
    v.set_defaults(func=cmd_vhba_create)
    v = vsub.add_parser("delete", help="delete a vHBA (its LUNs go with it)")
    v.add_argument("vhba", help="its WWPN or object path")
    v.add_argument("--force", action="store_true",
                   help="delete it even if a multipath map uses its LUNs")
    _no_user_interaction(v)
    v.set_defaults(func=cmd_vhba_delete)
    v = vsub.add_parser("persist", help="keep a vHBA across restarts (on), or stop (off)")
    v.add_argument("vhba", help="its WWPN or object path")
    v.add_argument("value", choices=("on", "off"))
    v.set_defaults(func=cmd_vhba_persist)

    mp = sub.add_parser("multipath", help="multipath maps: list, create all, flush, configure",
                        description="dm-multipath maps through multipathd: a VM gets the map "
                        "(/dev/mapper/NAME), never one path.")
    msub = mp.add_subparsers(dest="mpath_command", required=True, metavar="ACTION")
    v = msub.add_parser("list", help="every map with its health and each path's states")
    v.set_defaults(func=cmd_mpath_list)
    v = msub.add_parser("create-all", help="make a map for every WWID with two or more paths; "
                        "prints them once they are ready for I/O")
    v.add_argument("--wwid", action="append", metavar="WWID",
                   help="only this WWID (naa.6001405… or 36001405…); repeat for more")
    v.add_argument("--all-eligible", action="store_true",
                   help="also WWIDs with a single path")
    v.add_argument("--timeout", type=int, metavar="S",
                   help="seconds to wait for the maps to be ready (default 60)")
    _no_user_interaction(v)
    v.set_defaults(func=cmd_mpath_create_all)
    v = msub.add_parser("flush", help="remove a map through multipathd (its paths stay)")
    v.add_argument("map", help="its name (mpatha), WWID, /dev/mapper/NAME or object path")
    v.add_argument("--deferred", action="store_true",
                   help="if it is in use, remove it when its last user closes it")
    v.add_argument("--remove-paths", action="store_true",
                   help="then delete its SCSI paths too (retiring the LUN)")
    _no_user_interaction(v)
    v.set_defaults(func=cmd_mpath_flush)
    v = msub.add_parser("config", help="show or change the multipath settings sanbusd manages "
                        "(a drop-in under /etc/multipath/conf.d)")
    v.add_argument("--friendly-names", type=_on_off, metavar="on|off",
                   help="names like mpatha instead of the WWID")
    v.add_argument("--find-multipaths", choices=("strict", "no", "yes", "greedy", "smart"),
                   help="which paths multipathd maps by itself")
    v.add_argument("--include", type=_wwid_list, metavar="WWID,…",
                   help="only these WWIDs get maps (empty string: all)")
    v.add_argument("--exclude", type=_wwid_list, metavar="WWID,…",
                   help="these WWIDs never get maps (empty string: none)")
    v.set_defaults(func=cmd_mpath_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(args.func(args))
    except CliError as e:
        print(f"sanctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""sanbusd-sim: play the SAN admin for a daemon running on the simulated SAN, lay out a fabric's
sysfs tree without a daemon, or generate a large fabric file.

Every mistake is one line on stderr and a non-zero exit, never a traceback: arguments are checked
here before anything is sent, and the daemon's control socket checks them again.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from ..config import default_sim_dir
from ..model.ids import normalize_wwn, parse_hctl, parse_size
from ..sim.fabric import FabricError, is_iscsi_name
from ..sim.generate import generate
from ..sim.san import SimulatedSan

PROG = "sanbusd-sim"
TIMEOUT = 60.0      # seconds to wait for the daemon's answer (a provision of thousands of LUNs)


def request(sim_dir: str, req: dict) -> dict:
    """Send one request to the simulated SAN's control socket; SystemExit with the daemon's
    one-line answer if it refuses."""
    path = os.path.join(sim_dir, "control")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        try:
            s.connect(path)
        except OSError as e:
            raise SystemExit(f"{PROG}: no simulated SAN at {path} ({e.strerror}); is "
                             "`sanbusd --simulate FABRIC --sim-dir DIR` running?") from None
        try:
            s.sendall(json.dumps(req).encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        except socket.timeout:
            raise SystemExit(f"{PROG}: the simulated SAN at {path} did not answer within "
                             f"{TIMEOUT:g} s") from None
        except OSError as e:
            raise SystemExit(f"{PROG}: talking to {path} failed: {e.strerror or e}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise SystemExit(f"{PROG}: the simulated SAN at {path} gave no answer (did the daemon "
                         "stop?)") from None
    if not answer.get("ok"):
        raise SystemExit(f"{PROG}: {answer.get('error', 'failed')}")
    return answer


# -- argument types: a wrong value is argparse's one-line error, before anything is sent -------

def _wwpn(text: str) -> str:
    try:
        return normalize_wwn(text, "WWPN")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _wwpns(text: str) -> list[str]:
    """Initiators: FC WWPNs or iSCSI initiator names (iqn.…), comma separated."""
    out = [w.strip() if is_iscsi_name(w.strip()) else _wwpn(w) for w in text.split(",") if w.strip()]
    if not out:
        raise argparse.ArgumentTypeError("give one or more WWPNs (or iSCSI IQNs), comma separated")
    return out


def _address(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not an address; give the portal's, e.g. "
                                         "192.168.77.1")
    return text.strip()


def _luns(text: str) -> list[int]:
    out = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                if int(a) > int(b):
                    raise ValueError
                out.extend(range(int(a), int(b) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of LUN numbers; give e.g. "
                                         "27,28,29,53 or 27-29") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of LUN numbers (0 or more)")
    return out


def _lun(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a LUN number (0 or more)")
    return n


def _size(text: str) -> str:
    try:
        parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _wwid(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a WWID; give the LUN's WWID as "
                                         "sysfs shows it (naa.6001405...) or as multipath "
                                         "does (36001405...)")
    return text.strip()


def _hctl(text: str) -> str:
    if parse_hctl(text.strip()) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not H:C:T:L, e.g. 1:0:0:2")
    return text.strip()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Act as the SAN admin of a simulated SAN that sanbusd "
        "runs on (sanbusd --simulate FABRIC), lay out a fabric's sysfs tree, or generate a "
        "large fabric.")
    p.add_argument("--dir", default=default_sim_dir(),
                   help="the simulated SAN's directory (sanbusd --sim-dir; default %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("port-down", help="a target port leaves the fabric (its LUNs go after "
                       "dev_loss_tmo)")
    s.add_argument("wwpn", type=_wwpn)
    s = sub.add_parser("port-up", help="a target port (re)joins the fabric; initiators log in "
                       "and see its LUNs")
    s.add_argument("wwpn", type=_wwpn)
    s = sub.add_parser("portal-down", help="an iSCSI portal goes silent: its sessions fail, "
                       "their disks block, then go transport-offline after recovery_tmo (their "
                       "multipath paths fail)")
    s.add_argument("address", type=_address, help="the portal's address, e.g. 192.168.77.1")
    s = sub.add_parser("portal-up", help="the iSCSI portal answers again: its sessions log in "
                       "again, their disks and paths come back")
    s.add_argument("address", type=_address)
    s = sub.add_parser("hold-open", help="a process on the host holds a disk or a multipath map "
                       "open (e.g. a VM): sanbusd must not remove it")
    s.add_argument("block", help="the disk or map, e.g. sdc, dm-0 or mpatha")
    s.add_argument("--by", default="a process", help="who holds it (shown in Busy errors)")
    s = sub.add_parser("release", help="the process closes the disk or map again (a deferred "
                       "remove of the map happens then)")
    s.add_argument("block")
    s = sub.add_parser("multipathd", help="the host's multipathd: running, absent (its socket "
                       "refuses), hung (reads commands, never answers), garbage (answers what "
                       "is not multipathd's), or restart (absent a moment, state kept)")
    s.add_argument("mode", choices=["running", "absent", "hung", "garbage", "restart"])
    s = sub.add_parser("device-state", help="what `echo STATE > /sys/class/scsi_device/H:C:T:L/"
                       "device/state` does: offline fails its multipath path, running brings "
                       "it back")
    s.add_argument("hctl", type=_hctl, help="the LUN path, e.g. 1:0:0:2")
    s.add_argument("state", choices=["running", "offline"])
    s = sub.add_parser("fabric-down", help="a fabric's switch goes away: its ports lose their "
                       "link, their remote ports block, vHBAs on it go Linkdown")
    s.add_argument("fabric", help="the fabric's name in the fabric file")
    s = sub.add_parser("fabric-up", help="the fabric's switch is back: ports and vHBAs log in "
                       "again")
    s.add_argument("fabric")
    s = sub.add_parser("provision", help="mask LUNs to initiators (or a vHBA's WWPN) on an "
                       "array (hosts see them after a scan)")
    s.add_argument("--array", required=True)
    s.add_argument("--lun", required=True, type=_luns, help="e.g. 27,28,29,53 or 27-29")
    s.add_argument("--to", required=True, type=_wwpns,
                   help="initiator WWPNs or iSCSI initiator names (iqn.…), comma separated")
    s.add_argument("--size", default="10G", type=_size)
    s = sub.add_parser("unprovision", help="unmask LUNs (hosts keep stale paths until deleted)")
    s.add_argument("--array", required=True)
    s.add_argument("--lun", required=True, type=_luns)
    s.add_argument("--from", dest="initiators", type=_wwpns,
                   help="initiator WWPNs (default: all)")
    s = sub.add_parser("resize", help="grow a LUN on the array (hosts see it after a rescan "
                       "of the device)")
    s.add_argument("--array", required=True)
    s.add_argument("--lun", required=True, type=_lun)
    s.add_argument("--size", required=True, type=_size)
    s = sub.add_parser("mpath-create", help="make a multipath map (dm-N, mpatha...) over every "
                       "path of a LUN, as `multipath WWID` would")
    s.add_argument("--wwid", required=True, type=_wwid,
                   help="the LUN's WWID: naa.6001... (sysfs) or 36001... (multipath)")
    s = sub.add_parser("mpath-remove", help="flush the multipath map of a LUN (multipath -f); "
                       "its paths stay")
    s.add_argument("--wwid", required=True, type=_wwid)
    sub.add_parser("writes", help="print every write the daemon made to the simulated sysfs")
    sub.add_parser("status", help="print the disks, multipath maps, what is held open and "
                   "multipathd's state")
    s = sub.add_parser("layout", help="lay out FABRIC's sysfs tree in DIR afresh (no daemon), "
                       "e.g. for lsscsi --sysfsroot DIR/sys or sanbusd --sysfs-root DIR/sys")
    s.add_argument("fabric")
    s.add_argument("target_dir")
    s = sub.add_parser("generate", help="print a large fabric (TOML)")
    s.add_argument("--hosts", type=int, default=8)
    s.add_argument("--paths", type=int, default=4, help="paths per LUN")
    s.add_argument("--targets", type=int, default=1, help="array ports per host group")
    s.add_argument("--wwids", type=int, default=4096, help="distinct LUNs (WWIDs)")
    s.add_argument("--scan-delay", type=float, default=0.05)
    return p


def print_status(st: dict) -> None:
    opened = st.get("opened", {})
    print(f"hosts {' '.join(f'host{h}' for h in st['hosts'])}; {st['luns']} LUN paths; "
          f"arrays {', '.join(st['arrays'])}")
    for hctl, sd in st.get("disks", {}).items():
        print(f"  {hctl:<12} {sd}" + (f"  held open by {opened[sd]}" if sd in opened else ""))
    mp = st.get("multipath", {})
    conf = mp.get("config", {})
    print(f"multipathd {mp.get('mode', '?')}: find_multipaths {conf.get('find_multipaths')}, "
          f"user_friendly_names {'yes' if conf.get('user_friendly_names') else 'no'}")
    for name, s in st.get("sessions", {}).items():
        print(f"  {name} host{s['host']} {s['portal']} {s['state']}")
    for m in st["maps"]:
        failed = set(m.get("failed", []))
        paths = " ".join(sd + (" (failed)" if sd in failed else "") for sd in m["slaves"])
        held = f"  held open by {opened[m['dm']]}" if m["dm"] in opened else ""
        print(f"  {m['name']} ({m['dm']}) {m['wwid']}: {paths or 'no paths'}{held}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    if args.command == "generate":
        try:
            print(generate(args.hosts, args.paths, args.targets, args.wwids, args.scan_delay))
        except ValueError as e:
            raise SystemExit(f"{PROG}: {e}") from None
        return 0
    if args.command == "layout":
        try:
            sim = SimulatedSan.open(args.fabric, args.target_dir, fresh=True)
        except (FabricError, OSError) as e:
            raise SystemExit(f"{PROG}: {e}") from None
        sim.close()
        print(f"{len(sim.hosts)} hosts, {len(sim.rports)} remote ports, {len(sim.luns)} LUN "
              f"paths in {args.target_dir}/sys")
        return 0
    if args.command in ("port-down", "port-up"):
        request(args.dir, {"command": args.command, "wwpn": args.wwpn})
    elif args.command in ("portal-down", "portal-up"):
        request(args.dir, {"command": args.command, "address": args.address})
    elif args.command == "hold-open":
        request(args.dir, {"command": "hold-open", "block": args.block, "by": args.by})
    elif args.command == "release":
        request(args.dir, {"command": "release", "block": args.block})
    elif args.command == "multipathd":
        request(args.dir, {"command": "multipathd", "mode": args.mode})
    elif args.command == "device-state":
        request(args.dir, {"command": "device-state", "hctl": args.hctl, "state": args.state})
    elif args.command in ("fabric-down", "fabric-up"):
        request(args.dir, {"command": args.command, "fabric": args.fabric})
    elif args.command == "provision":
        request(args.dir, {"command": "provision", "array": args.array, "luns": args.lun,
                           "initiators": args.to, "size": args.size})
    elif args.command == "unprovision":
        request(args.dir, {"command": "unprovision", "array": args.array, "luns": args.lun,
                           "initiators": args.initiators})
    elif args.command == "resize":
        request(args.dir, {"command": "resize", "array": args.array, "lun": args.lun,
                           "size": args.size})
    elif args.command == "mpath-create":
        m = request(args.dir, {"command": "mpath-create", "wwid": args.wwid})["map"]
        print(f"{m['name']} ({m['dm']}) WWID {m['wwid']}: {len(m['slaves'])} paths, "
              f"{' '.join(m['slaves'])}")
    elif args.command == "mpath-remove":
        request(args.dir, {"command": "mpath-remove", "wwid": args.wwid})
    elif args.command == "status":
        print_status(request(args.dir, {"command": "status"}))
    elif args.command == "writes":
        for w in request(args.dir, {"command": "writes"})["writes"]:
            print(f"{w['path']}\t{w['data']!r}\t{w['result']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

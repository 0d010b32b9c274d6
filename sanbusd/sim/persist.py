"""The simulated SAN's state on disk (DIR/state.json), so it outlives the daemon as a real SAN and
kernel do: a LUN deleted stays deleted and a LUN the SAN admin provisioned is still there to be
scanned after sanbusd restarts.

The tree under DIR/sys is what the reader sees; state.json holds what the tree does not show: the
fabric model with the SAN admin's changes and the kernel's bookkeeping (devices, target id
bindings, free sd names, the next host number). It is rewritten whole shortly after every change
(a temporary file renamed over the old one, so a reader or a crash never sees half of it). The
record of writes is DIR/writes.jsonl, appended to as each write is made.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model.ids import HCTL
from .devices import SimHost, SimMap, SimRport, SimVport, WriteRecord
from .fabric import ArraySpec, DiskSpec, Fabric, HostSpec, LunSpec, MpdOptions, PortSpec

if TYPE_CHECKING:
    from .core import SanCore

STATE_FILE = "state.json"
WRITES_FILE = "writes.jsonl"
VERSION = 1


class StateError(ValueError):
    """The saved state cannot be used (another version, damaged); the message says why."""


def digest(fabric_file: str | os.PathLike) -> str:
    """What identifies a fabric file: its content (the same file moved is the same fabric)."""
    with open(fabric_file, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def save(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, separators=(",", ":"))
    os.replace(tmp, path)


def load(path: Path) -> dict:
    try:
        with open(path) as f:
            state = json.load(f)
    except ValueError as e:
        raise StateError(f"{path} is damaged ({e})") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise StateError(f"{path} is not version {VERSION} of the simulated SAN's state")
    return state


class WriteLog:
    """The record of writes, one JSON line per write appended as it happens: it only grows, so
    rewriting it whole with the state would make a burst of writes quadratic."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def append(self, w: WriteRecord) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, (json.dumps(asdict(w), separators=(",", ":")) + "\n").encode())

    def read(self) -> list[WriteRecord]:
        out = []
        try:
            with open(self.path) as f:
                for line in f:
                    try:
                        out.append(WriteRecord(**json.loads(line)))
                    except (ValueError, TypeError):
                        pass        # a line cut short when the process died mid-write
        except FileNotFoundError:
            pass
        return out

    def clear(self) -> None:
        self.close()
        with open(self.path, "w"):
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- the fabric model ------------------------------------------------------------------------

def fabric_to_json(f: Fabric) -> dict:
    # By hand, not dataclasses.asdict: that deep-copies, and an array may have thousands of LUNs.
    return {
        "hosts": [{**{k: getattr(h, k) for k in _HOST_FIELDS},
                   "vports": [list(v) for v in h.vports],
                   "disks": [asdict(x) for x in h.disks]} for h in f.hosts],
        "arrays": [{"name": a.name, "vendor": a.vendor, "model": a.model, "rev": a.rev,
                    "wwnn": a.wwnn, "iqn": a.iqn, "portals": list(a.portals),
                    "ports": [{"wwpn": p.wwpn, "fabric": p.fabric, "port_id": p.port_id,
                               "roles": list(p.roles)} for p in a.ports],
                    "luns": {str(n): {"lun": lu.lun, "size": lu.size, "wwid": lu.wwid,
                                      "masked_to": sorted(lu.masked_to),
                                      "mpath_wwid": lu.mpath_wwid}
                             for n, lu in a.luns.items()}} for a in f.arrays],
        "scan_delay": f.scan_delay, "dev_loss_tmo": f.dev_loss_tmo, "login_delay": f.login_delay,
        "fabric_npiv": dict(f.fabric_npiv), "fabric_wwn": dict(f.fabric_wwn),
        "multipathd": asdict(f.multipathd)}


_HOST_FIELDS = tuple(n for n in HostSpec.__dataclass_fields__ if n not in ("vports", "disks"))


def fabric_from_json(d: dict) -> Fabric:
    hosts = [HostSpec(**{**h, "vports": [tuple(v) for v in h["vports"]],
                         "disks": [DiskSpec(**x) for x in h["disks"]]}) for h in d["hosts"]]
    arrays = [ArraySpec(**{
        **a, "ports": [PortSpec(**{**p, "roles": tuple(p["roles"])}) for p in a["ports"]],
        "luns": {int(n): LunSpec(**{**lu, "masked_to": set(lu["masked_to"])})
                 for n, lu in a["luns"].items()}}) for a in d["arrays"]]
    return Fabric(**{**d, "hosts": hosts, "arrays": arrays,
                     "multipathd": MpdOptions(**d.get("multipathd", {}))})


# -- the whole state ---------------------------------------------------------------------------

def snapshot(san: SanCore) -> dict[str, Any]:
    """Everything needed to carry on where `san` is (called with its lock held). Shares nothing
    mutable with `san`: it is written out after the lock is released."""
    spec_index = {id(s): i for i, s in enumerate(san.fabric.hosts)}
    return {
        "version": VERSION,
        "origin": dict(san.origin),
        "fabric": fabric_to_json(san.fabric),
        "hosts": [{"number": h.number, "devdir": h.devdir, "spec": spec_index[id(h.spec)],
                   "wwpn": h.wwpn, "wwnn": h.wwnn, "fabric": h.fabric, "vport": h.vport,
                   "rport_next": h.rport_next, "vport_next": h.vport_next,
                   "session": h.session, "session_state": h.session_state,
                   "target_ids": [[a, w, t] for (a, w), t in h.target_ids.items()]}
                  for h in san.hosts.values()],
        "rports": [{"name": r.name, "host": r.host, "number": r.number, "array": r.array,
                    "port": r.port.wwpn, "target_id": r.target_id, "state": r.state}
                   for r in san.rports.values()],
        "luns": [[*hctl, ddir] for hctl, ddir in san.luns.items()],
        "blocks": [[*hctl, sd] for hctl, sd in san.blocks.items()],
        "vports": [asdict(v) for v in san.vports.values()],
        "maps": [asdict(m) for m in san.maps.values()],
        "opened": dict(san.opened),
        # multipathd's memory (the wwids and bindings files are on disk beside, in DIR/etc)
        "multipath": {"flushed": sorted(san.flushed),
                      "dev_states": [[*hctl, st] for hctl, st in san.dev_states.items()],
                      "wwids": list(san.wwids), "bindings": dict(san.bindings)},
        "counters": {"next_block": san._next_block, "free_blocks": list(san._free_blocks),
                     "next_host": san._next_host, "pci_slot": san._pci_slot,
                     "next_session": san._next_session},
    }


def restore(san: SanCore, state: dict) -> None:
    """Put `san` where `state` (from snapshot) left it. Raises StateError if it does not fit."""
    try:
        fabric = fabric_from_json(state["fabric"])
        hosts = {}
        for h in state["hosts"]:
            hosts[h["number"]] = SimHost(
                number=h["number"], devdir=h["devdir"], spec=fabric.hosts[h["spec"]],
                wwpn=h["wwpn"], wwnn=h["wwnn"], fabric=h["fabric"], vport=h["vport"],
                rport_next=h["rport_next"], vport_next=h["vport_next"],
                session=int(h.get("session", 0)), session_state=str(h.get("session_state", "")),
                target_ids={(a, w): t for a, w, t in h["target_ids"]})
        rports = {}
        for r in state["rports"]:
            port = next(p for p in fabric.arrays[r["array"]].ports if p.wwpn == r["port"])
            rports[r["name"]] = SimRport(name=r["name"], host=r["host"], number=r["number"],
                                         array=r["array"], port=port,
                                         target_id=r["target_id"], state=r["state"])
        luns = {HCTL(*row[:4]): row[4] for row in state["luns"]}
        blocks = {HCTL(*row[:4]): row[4] for row in state["blocks"]}
        vports = {v["name"]: SimVport(**v) for v in state["vports"]}
        maps = {m["dm"]: SimMap(**m) for m in state["maps"]}
        opened = {str(k): str(v) for k, v in state.get("opened", {}).items()}
        mp = state.get("multipath", {})
        flushed = {str(w) for w in mp.get("flushed", [])}
        dev_states = {HCTL(*row[:4]): str(row[4]) for row in mp.get("dev_states", [])}
        c = state["counters"]
        counters = (int(c["next_block"]), [int(i) for i in c["free_blocks"]],
                    int(c["next_host"]), int(c["pci_slot"]))
        origin = dict(state["origin"])
    except (KeyError, TypeError, ValueError, IndexError, StopIteration) as e:
        raise StateError(f"the saved state does not fit ({type(e).__name__}: {e})") from None
    san.fabric, san.hosts, san.rports, san.luns, san.blocks = fabric, hosts, rports, luns, blocks
    san.vports, san.maps, san.origin, san.opened = vports, maps, origin, opened
    san.flushed, san.dev_states = flushed, dev_states
    # The files in DIR/etc/multipath are the truth (an admin may edit them, as on a host);
    # these are read when there are no files.
    san.wwids = [str(w) for w in mp.get("wwids", [])]
    san.bindings = {str(k): str(v) for k, v in mp.get("bindings", {}).items()}
    if san.write_log is not None:
        san.writes = san.write_log.read()
    san._next_block, san._free_blocks, san._next_host, san._pci_slot = counters
    san._next_session = int(state["counters"].get("next_session", 1))

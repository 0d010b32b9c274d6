"""The simulated SAN's control socket: how `sanbusd-sim` acts as the SAN admin while the daemon
runs (target ports going down and up, LUNs masked to or from initiators, multipath maps made and
flushed, disks and maps held open, a device set offline, multipathd gone, hung or answering
garbage), and how tests read the record of every write the daemon made to the simulated sysfs.

One JSON request per connection, one JSON answer: {"ok": true, ...} or {"ok": false, "error":
"<one line>"}. The socket is 0600: only root (the one who started the daemon) plays SAN admin.
Requests are checked here, field by field, before anything is changed: a wrong request is an
answer that says what is wrong, never an exception in the daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import asdict
from typing import Any

from ..model.ids import normalize_wwn, parse_hctl, parse_size
from .core import SanAdminError
from .fabric import is_iscsi_name
from .multipathd import MODES
from .san import SimulatedSan

log = logging.getLogger(__name__)

MAX_REQUEST = 16 << 20          # bytes; provisioning thousands of LUNs is well below
REQUEST_TIMEOUT = 30.0          # seconds a client may take to send its request


class BadRequest(ValueError):
    pass


_MISSING = object()


def _field(req: dict, key: str, typ: type | tuple[type, ...], default: Any = _MISSING) -> Any:
    if req.get(key) is None:
        if default is _MISSING:
            raise BadRequest(f"{req['command']}: missing {key!r}")
        return default
    value = req[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise BadRequest(f"{req['command']}: {key!r} must be "
                         f"{' or '.join(t.__name__ for t in types)}")
    return value


def _initiator(text: object) -> str:
    """An FC initiator's WWPN, or an iSCSI initiator's name (iqn.…) as it is."""
    if isinstance(text, str) and is_iscsi_name(text):
        return text
    return _wwpn(text)


def _wwpn(text: object) -> str:
    try:
        return normalize_wwn(text, "WWPN")  # type: ignore[arg-type]
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _wwpns(req: dict, key: str, required: bool = True) -> set[str] | None:
    values = _field(req, key, list, _MISSING if required else None)
    if values is None:
        return None
    if not values:
        raise BadRequest(f"{req['command']}: {key!r} is empty; give initiator WWPNs (or IQNs)")
    return {_initiator(w) for w in values}


def _lun(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise BadRequest(f"LUN {value!r} is not a LUN number (0 or more)")
    return value


def _luns(req: dict) -> list[int]:
    values = _field(req, "luns", list)
    if not values:
        raise BadRequest(f"{req['command']}: 'luns' is empty")
    return [_lun(v) for v in values]


def _size(value: object) -> int:
    try:
        return parse_size(value)  # type: ignore[arg-type]
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _address(req: dict) -> str:
    text = _field(req, "address", str).strip()
    if not text or any(c.isspace() for c in text) or len(text) > 255:
        raise BadRequest(f"{req['command']}: 'address' must be a portal's address, e.g. 192.168.77.1")
    return text


def handle(sim: SimulatedSan, req: object) -> dict:
    """Answer one request. Raises BadRequest or SanAdminError (both ValueError) when it cannot
    be done; nothing has changed then."""
    if not isinstance(req, dict) or not isinstance(req.get("command"), str):
        raise BadRequest('a request is a JSON object with a "command"')
    cmd = req["command"]
    if cmd == "writes":
        with sim._lock:
            return {"ok": True, "writes": [asdict(w) for w in sim.writes]}
    if cmd == "status":
        with sim._lock:
            return {"ok": True, "hosts": sorted(sim.hosts), "luns": len(sim.luns),
                    "arrays": [a.name for a in sim.fabric.arrays],
                    "maps": [asdict(m) for m in sim.maps.values()],
                    "disks": {str(h): sd for h, sd in sorted(sim.blocks.items())},
                    "opened": dict(sim.opened), "multipath": sim.multipath_state(),
                    "sessions": sim.iscsi_sessions()}
    if cmd == "port-down":
        sim.port_down(_wwpn(_field(req, "wwpn", str)))
    elif cmd == "port-up":
        sim.port_up(_wwpn(_field(req, "wwpn", str)))
    elif cmd == "portal-down":
        sim.portal_down(_address(req))
    elif cmd == "portal-up":
        sim.portal_up(_address(req))
    elif cmd == "hold-open":
        sim.hold_open(_field(req, "block", str), _field(req, "by", str, "a process"))
    elif cmd == "release":
        sim.release(_field(req, "block", str))
    elif cmd == "fabric-down":
        sim.fabric_down(_field(req, "fabric", str))
    elif cmd == "fabric-up":
        sim.fabric_up(_field(req, "fabric", str))
    elif cmd == "provision":
        array, luns = _field(req, "array", str), _luns(req)
        size = _size(_field(req, "size", (str, int), "10G"))
        initiators = _wwpns(req, "initiators")
        for lun in luns:
            sim.provision(array, lun, size, initiators)  # type: ignore[arg-type]
    elif cmd == "unprovision":
        array, luns = _field(req, "array", str), _luns(req)
        initiators = _wwpns(req, "initiators", required=False)
        for lun in luns:                # all or nothing: check every LUN first
            sim.array_lun(array, lun)
        for lun in luns:
            sim.unprovision(array, lun, initiators)
    elif cmd == "resize":
        sim.resize(_field(req, "array", str), _lun(_field(req, "lun", int)),
                   _size(_field(req, "size", (str, int))))
    elif cmd == "mpath-create":
        m = sim.mpath_create(_field(req, "wwid", str))
        return {"ok": True, "map": asdict(m)}
    elif cmd == "mpath-remove":
        sim.mpath_remove(_field(req, "wwid", str))
    elif cmd == "multipathd":
        mode = _field(req, "mode", str)
        if mode not in (*MODES, "restart"):
            raise BadRequest(f"multipathd: mode must be one of {', '.join(MODES)} or restart")
        if sim.multipathd is None:
            raise BadRequest("no simulated multipathd runs here")
        sim.multipathd.set_mode(mode)
    elif cmd == "device-state":
        hctl = parse_hctl(_field(req, "hctl", str))
        if hctl is None:
            raise BadRequest("device-state: 'hctl' must be H:C:T:L, e.g. 1:0:0:2")
        try:
            sim.device_state(hctl, _field(req, "state", str))
        except OSError as e:
            raise BadRequest(f"device-state {hctl}: {os.strerror(e.errno or 0)} ({e})") from None
    else:
        raise BadRequest(f"unknown command {cmd!r}")
    return {"ok": True}


def answer(sim: SimulatedSan, data: bytes) -> dict:
    try:
        req = json.loads(data)
    except ValueError:
        return {"ok": False, "error": "the request is not JSON"}
    try:
        return handle(sim, req)
    except ValueError as e:             # BadRequest, SanAdminError
        return {"ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - the admin console must not kill the daemon
        log.exception("sim control request failed")
        return {"ok": False, "error": f"internal error: {e}"}


async def serve(sim: SimulatedSan, path: str) -> asyncio.AbstractServer:
    async def read_request(reader: asyncio.StreamReader) -> bytes | None:
        data = b""
        while chunk := await reader.read(1 << 16):
            data += chunk
            if len(data) > MAX_REQUEST:
                return None
        return data

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await asyncio.wait_for(read_request(reader), REQUEST_TIMEOUT)
            if data is None:
                reply = {"ok": False, "error": f"the request is larger than {MAX_REQUEST} bytes"}
            else:
                # Off the loop: a change waits for the SAN's lock, which a scan may hold.
                reply = await asyncio.to_thread(answer, sim, data)
            writer.write(json.dumps(reply).encode())
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError) as e:
            log.warning("sim control client went wrong: %s", e.__class__.__name__)
        finally:
            writer.close()

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(client, path)
    finally:
        os.umask(old)
    return server


__all__ = ["BadRequest", "SanAdminError", "answer", "handle", "serve"]

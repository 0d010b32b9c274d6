"""The simulated SAN's control socket: how `sanbusd-sim` acts as the SAN admin while the daemon
runs (target ports going down and up, LUNs masked to or from initiators), and how tests read the
record of every write the daemon made to the simulated sysfs.

One JSON request per connection, one JSON answer. The socket is 0600: only root (the one who
started the daemon) plays SAN admin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import asdict

from .formats import normalize_wwn, parse_size
from .sim import SimulatedSan

log = logging.getLogger(__name__)


def handle(sim: SimulatedSan, req: dict) -> dict:
    cmd = req.get("command")
    if cmd == "port-down":
        sim.port_down(normalize_wwn(req["wwpn"]))
    elif cmd == "port-up":
        sim.port_up(normalize_wwn(req["wwpn"]))
    elif cmd == "provision":
        for lun in req["luns"]:
            sim.provision(req["array"], int(lun), parse_size(req.get("size", "10G")),
                          {normalize_wwn(w) for w in req["initiators"]})
    elif cmd == "unprovision":
        ini = req.get("initiators")
        for lun in req["luns"]:
            sim.unprovision(req["array"], int(lun),
                            {normalize_wwn(w) for w in ini} if ini else None)
    elif cmd == "resize":
        sim.resize(req["array"], int(req["lun"]), parse_size(req["size"]))
    elif cmd == "writes":
        with sim._lock:
            return {"ok": True, "writes": [asdict(w) for w in sim.writes]}
    elif cmd == "status":
        return {"ok": True, "hosts": sorted(sim.hosts), "luns": len(sim.luns),
                "arrays": [a.name for a in sim.fabric.arrays]}
    else:
        return {"ok": False, "error": f"unknown command {cmd!r}"}
    return {"ok": True}


async def serve(sim: SimulatedSan, path: str) -> asyncio.AbstractServer:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = json.loads(await reader.read(1 << 20))
            answer = handle(sim, req)
        except (KeyError, ValueError, TypeError) as e:
            answer = {"ok": False, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - the admin console must not kill the daemon
            log.exception("sim control request failed")
            answer = {"ok": False, "error": f"internal error: {e}"}
        writer.write(json.dumps(answer).encode())
        await writer.drain()
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

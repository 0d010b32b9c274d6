"""Multipath at SAN scale on the simulated SAN, against the simulated multipathd as the peer.

    .venv/bin/python bench/multipath.py [--wwids 4096 --paths 4 --big-wwids 8192]

1. A fabric of 4 FC hosts and --wwids WWIDs with --paths paths each (4,096 x 4 = 16,384 LUN
   paths). `CreateAllMultipathMaps` makes every map (reported: the time until the call returns
   with every map on the bus and ready).
2. All maps read by a client: GetManagedObjects (median of 5; target <= 1 s), against the same
   facts from the peer, `show maps json` on the simulated multipathd's socket.
3. One path failing (`sanbusd-sim device-state H:C:T:L offline`, as `echo offline >
   device/state`): the time until its map's PropertiesChanged reaches a client (median of 10,
   alternating offline/running; target <= 100 ms), and how many PropertiesChanged the map sent
   for it (target: 1).
4. --big-wwids maps over 4 paths (8,192 x 4 = 32,768 LUN paths): GetManagedObjects' reply size
   (target < 32 MiB, the system bus's message limit) and time, and the ratio against `show maps
   json` from the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from dbus_fast import Message, MessageType, Variant  # noqa: E402
from dbus_fast._private.marshaller import Marshaller  # noqa: E402

from sanbusd import client  # noqa: E402
from sanbusd.cli.sim import request as sim_request  # noqa: E402
from sanbusd.devbus import PrivateBus  # noqa: E402
from simdaemon import start  # noqa: E402
from sanbusd.sim.generate import generate  # noqa: E402

ROOT = "/org/example/SanStorage"
MAP_I = "org.example.SanStorage.MultipathMap"
_LEN = struct.Struct("@N")


def mpathd(sock: str, cmd: str) -> tuple[float, int]:
    """One command to the (simulated) multipathd, as its own client sends it: time and size."""
    t = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect(sock)
        data = cmd.encode() + b"\0"
        s.sendall(_LEN.pack(len(data)) + data)
        (n,) = _LEN.unpack(s.recv(_LEN.size, socket.MSG_WAITALL))
        got = 0
        while got < n:
            chunk = s.recv(min(1 << 20, n - got))
            if not chunk:
                break
            got += len(chunk)
    return time.perf_counter() - t, got


async def create_all(address: str) -> tuple[float, int]:
    bus = await client.connect(address)
    t = time.perf_counter()
    (maps,) = await client.call(bus, ROOT + "/Manager", "org.example.SanStorage.Manager",
                                "CreateAllMultipathMaps", "a{sv}",
                                [{"timeout": Variant("u", 600)}], timeout=900)
    took = time.perf_counter() - t
    bus.disconnect()
    return took, len(maps)


async def gmo(address: str, runs: int) -> tuple[list[float], int, int, dict]:
    bus = await client.connect(address)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        reply = await bus.call(Message(
            destination="org.example.SanStorage", path=ROOT,
            interface="org.freedesktop.DBus.ObjectManager", member="GetManagedObjects"))
        times.append(time.perf_counter() - t)
    size = len(Marshaller(reply.signature, reply.body).marshall())
    objs = reply.body[0]
    maps = {p: o[MAP_I] for p, o in objs.items() if MAP_I in o}
    bus.disconnect()
    return times, size, len(maps), maps


async def path_failures(address: str, sim_dir: str, maps: dict, rounds: int
                        ) -> tuple[list[float], list[int]]:
    """Fail and restore one path of a map, `rounds` times: latency to its PropertiesChanged
    and the number of PropertiesChanged that map sent per change."""
    path, m = next(iter(sorted(maps.items())))
    lun_path = m["Paths"].value[0]["Lun"].value
    hctl = lun_path.rsplit("/", 1)[1].replace("_", ":")
    bus = await client.connect(address)
    await client.add_match(bus, f"type='signal',path='{path}',"
                                "interface='org.freedesktop.DBus.Properties'")
    got: list[tuple[float, dict]] = []
    event = asyncio.Event()

    def on(msg):
        if msg.message_type == MessageType.SIGNAL and msg.path == path and \
                msg.member == "PropertiesChanged" and msg.body[0] == MAP_I:
            got.append((time.perf_counter(), msg.body[1]))
            event.set()
    bus.add_message_handler(on)
    latencies, counts = [], []
    for i in range(rounds):
        state = "offline" if i % 2 == 0 else "running"
        want = "degraded" if state == "offline" else "healthy"
        got.clear()
        event.clear()
        t = time.perf_counter()
        await asyncio.to_thread(sim_request, sim_dir, {"command": "device-state", "hctl": hctl,
                                                       "state": state})
        deadline = t + 10
        while not any(c.get("Health") and c["Health"].value == want for _, c in got):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise SystemExit(f"no PropertiesChanged with Health {want} within 10 s")
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        first = next(ts for ts, c in got if c.get("Health") and c["Health"].value == want)
        latencies.append(first - t)
        await asyncio.sleep(0.5)            # anything else this change sends arrives by now
        counts.append(len(got))
    bus.disconnect()
    return latencies, counts


def run_scale(bus: PrivateBus, work: Path, wwids: int, paths: int, runs: int,
              failures: int) -> dict:
    fabric = work / f"f{wwids}.toml"
    fabric.write_text(generate(hosts=4, paths=paths, targets=1, wwids=wwids, delay=0.0))
    sim_dir = work / f"sim{wwids}"
    p, started = start(bus, fabric, sim_dir)
    try:
        took, n = asyncio.run(create_all(bus.address))
        times, size, count, maps = asyncio.run(gmo(bus.address, runs))
        sock = str(sim_dir / "multipathd.sock")
        peer = [mpathd(sock, "show maps json") for _ in range(runs)]
        out = {"wwids": wwids, "paths": wwids * paths, "start": started, "create_all": took,
               "maps": n, "gmo": statistics.median(times), "gmo_size": size, "gmo_maps": count,
               "peer": statistics.median(t for t, _ in peer), "peer_size": peer[0][1]}
        if failures:
            lat, counts = asyncio.run(path_failures(bus.address, str(sim_dir), maps, failures))
            out["fail_median"] = statistics.median(lat)
            out["fail_max"] = max(lat)
            out["fail_signals"] = sorted(set(counts))
        return out
    finally:
        p.terminate()
        p.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wwids", type=int, default=4096)
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--big-wwids", type=int, default=8192)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--failures", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sanbusd-bench-mpath."))
    work.chmod(0o755)
    bus = PrivateBus(str(work / "bus")).start()
    try:
        a = run_scale(bus, work, args.wwids, args.paths, args.runs, args.failures)
        print(f"{a['wwids']} WWIDs x {args.paths} paths = {a['paths']} LUN paths "
              f"(started in {a['start']:.2f} s)")
        print(f"  CreateAllMultipathMaps: {a['maps']} maps ready in {a['create_all']:.1f} s")
        print(f"  GetManagedObjects (all {a['gmo_maps']} maps and their paths): median "
              f"{a['gmo']:.2f} s, {a['gmo_size'] / 2**20:.1f} MiB   [target <= 1 s]")
        print(f"  peer: `show maps json` on the simulated multipathd: median {a['peer']:.2f} s, "
              f"{a['peer_size'] / 2**20:.1f} MiB; ratio GetManagedObjects/peer "
              f"{a['gmo'] / a['peer']:.2f}")
        print(f"  one path failing -> its map's PropertiesChanged at a client: median "
              f"{a['fail_median'] * 1000:.0f} ms, max {a['fail_max'] * 1000:.0f} ms   "
              f"[target <= 100 ms]; PropertiesChanged per change: {a['fail_signals']}   "
              "[target: [1]]")
        b = run_scale(bus, work, args.big_wwids, 4, args.runs, 0)
        print(f"{b['wwids']} WWIDs x 4 paths = {b['paths']} LUN paths")
        print(f"  CreateAllMultipathMaps: {b['maps']} maps ready in {b['create_all']:.1f} s")
        print(f"  GetManagedObjects: {b['gmo_size'] / 2**20:.1f} MiB (limit 32 MiB), median "
              f"{b['gmo']:.2f} s; peer `show maps json` {b['peer_size'] / 2**20:.1f} MiB in "
              f"{b['peer']:.2f} s; ratio {b['gmo'] / b['peer']:.2f}")
        return 0
    finally:
        bus.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Scans: parallel hosts, and a burst of thousands of new LUN paths reaching a client.

    .venv/bin/python bench/scan.py [--hosts 8 --delay 2 --burst 1024,4096]

1. 8 FC hosts whose simulated `scan` write blocks 2 s each: Manager.ScanAll wall time against a
   sequential ScsiHost.Scan of the same hosts, in the same run (target: <= 1.2 x 2 s).
2. One scan that adds N LUN paths (N = 1,024 and 4,096): the time from the end of the kernel work
   (the simulated scan write returning) until a client has every InterfacesAdded (target <= 2 s),
   and the daemon's CPU time for the burst, to show it grows linearly. The simulated SAN runs in
   the daemon's process, so its share (laying out N LUNs) is measured alone and subtracted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from dbus_fast import Message, MessageType, Variant  # noqa: E402
from sanbusd.client import connect  # noqa: E402

from sanbusd.cli.sim import request  # noqa: E402
from sanbusd.devbus import PrivateBus  # noqa: E402
from sanbusd.sim.fabric import parse_fabric  # noqa: E402
from sanbusd.sim.generate import small_fc_fabric_toml  # noqa: E402
from sanbusd.sim.san import SimulatedSan  # noqa: E402

import tomllib  # noqa: E402

ROOT = "/org/example/SanStorage"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# The one FC port of the burst fabric (small_fc_fabric_toml's first host) and its array.
INITIATOR = "1000000000000001"
ARRAY = "arr"


def sim_request(sim_dir: Path, req: dict) -> dict:
    return request(str(sim_dir), req)


class Daemon:
    def __init__(self, work: Path, fabric: str) -> None:
        self.work = work
        work.mkdir(parents=True)
        work.chmod(0o755)
        (work / "fabric.toml").write_text(fabric)
        self.bus = PrivateBus(str(work / "bus")).start()
        self.sim_dir = work / "sim"
        r, w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sanbusd", "--simulate", str(work / "fabric.toml"),
             "--sim-dir", str(self.sim_dir), "--bus", self.bus.address, "--ready-fd", str(w)],
            pass_fds=(w,), env=self.bus.env(), stderr=open(work / "sanbusd.log", "wb"))
        os.close(w)
        if os.read(r, 16) != b"ready\n":
            raise SystemExit("sanbusd did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.bus.stop()


async def call(bus, path, iface, member, options):
    reply = await bus.call(Message(destination="org.example.SanStorage", path=path,
                                   interface=iface, member=member, signature="a{sv}",
                                   body=[options]))
    if reply.message_type == MessageType.ERROR:
        raise SystemExit(f"{member}: {reply.error_name}: {reply.body}")
    return reply.body[0]


async def parallel_vs_sequential(d: Daemon, hosts: int) -> tuple[float, float]:
    bus = await connect(d.bus.address)
    t = time.perf_counter()
    await call(bus, f"{ROOT}/Manager", "org.example.SanStorage.Manager", "ScanAll", {})
    parallel = time.perf_counter() - t
    t = time.perf_counter()
    for n in range(hosts):
        await call(bus, f"{ROOT}/hosts/host{n}", "org.example.SanStorage.ScsiHost", "Scan", {})
    sequential = time.perf_counter() - t
    bus.disconnect()
    return parallel, sequential


async def burst(d: Daemon, n: int) -> dict:
    bus = await connect(d.bus.address)
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                           body=[f"type='signal',path='{ROOT}',member='InterfacesAdded'"]))
    arrivals: list[float] = []

    def on(msg):
        if msg.member == "InterfacesAdded" and "/luns/" in msg.body[0]:
            arrivals.append(time.time())
    bus.add_message_handler(on)
    sim_request(d.sim_dir, {"command": "provision", "array": ARRAY, "luns": list(range(n)),
                            "initiators": [INITIATOR]})
    cpu0 = cpu_seconds(d.proc.pid)
    added = await call(bus, f"{ROOT}/Manager", "org.example.SanStorage.Manager", "ScanAll",
                       {"timeout": Variant("u", 600)})
    deadline = time.time() + 30
    while len(arrivals) < n and time.time() < deadline:
        await asyncio.sleep(0.01)
    cpu1 = cpu_seconds(d.proc.pid)
    writes = sim_request(d.sim_dir, {"command": "writes"})["writes"]
    kernel_end = max(w["end"] for w in writes if w["path"].endswith("/scan"))
    bus.disconnect()
    return {"added": len(added), "signals": len(arrivals),
            "last_signal_after_kernel_s": max(arrivals) - kernel_end,
            "cpu_total_s": cpu1 - cpu0}


def sim_share(n: int, base: Path) -> float:
    """CPU time the simulated SAN alone takes to attach n LUNs (it runs inside the daemon)."""
    sim = SimulatedSan(parse_fabric(tomllib.loads(small_fc_fabric_toml())),
                       base / f"simonly{n}" / "sys")
    sim.build()
    for lun in range(n):
        sim.provision(ARRAY, lun, 1 << 30, {INITIATOR})
    t = time.process_time()
    sim.scan_host(0, None, None, None)
    spent = time.process_time() - t
    sim.close()
    return spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--delay", type=float, default=2.0)
    ap.add_argument("--burst", default="1024,4096")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sanbusd-bench.",
                                 dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    base.chmod(0o755)
    try:
        d = Daemon(base / "parallel", small_fc_fabric_toml(hosts=args.hosts,
                                                           scan_delay=args.delay))
        try:
            parallel, sequential = asyncio.run(parallel_vs_sequential(d, args.hosts))
        finally:
            d.stop()
        print(f"{args.hosts} hosts, each scan blocking {args.delay:g} s:")
        print(f"  ScanAll (parallel)          {parallel:6.2f} s   target <= "
              f"{1.2 * args.delay:.1f} s (1.2 x {args.delay:g} s)")
        print(f"  Scan host by host           {sequential:6.2f} s")
        print(f"  ratio parallel / sequential {parallel / sequential:6.2f}")
        rows = []
        for n in (int(x) for x in args.burst.split(",")):
            d = Daemon(base / f"burst{n}", small_fc_fabric_toml())
            try:
                r = asyncio.run(burst(d, n))
            finally:
                d.stop()
            r["cpu_sim_s"] = sim_share(n, base)
            r["cpu_daemon_s"] = max(0.0, r["cpu_total_s"] - r["cpu_sim_s"])
            rows.append((n, r))
        print("one scan adding N LUN paths:")
        print("       N  added  signals  last signal after kernel work  daemon CPU  "
              "(process total - simulated SAN's share)")
        for n, r in rows:
            print(f"  {n:6d}  {r['added']:5d}  {r['signals']:7d}  "
                  f"{r['last_signal_after_kernel_s']:25.2f} s  {r['cpu_daemon_s']:8.2f} s  "
                  f"({r['cpu_total_s']:.2f} - {r['cpu_sim_s']:.2f})")
        if len(rows) >= 2:
            (n1, r1), (n2, r2) = rows[0], rows[-1]
            print(f"  growth {n1} -> {n2} paths (x{n2 / n1:g}): daemon CPU "
                  f"x{r2['cpu_daemon_s'] / max(r1['cpu_daemon_s'], 1e-9):.2f}, delivery "
                  f"x{r2['last_signal_after_kernel_s'] / max(r1['last_signal_after_kernel_s'], 1e-9):.2f}"
                  "  (linear: about the same factor)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

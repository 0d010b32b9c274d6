"""Inventory at SAN scale: start-up, GetManagedObjects, reply size and RSS, against lsscsi.

A generated fabric (default: 8 FC hosts, 4,096 WWIDs, 4 paths each = 16,384 LUN paths) is laid
out as a sysfs tree by the simulated SAN; sanbusd reads it with --sysfs-root (the real kernel
adapter, read-only), and `lsscsi --sysfsroot DIR -t -i` lists the same tree in the same run.

    .venv/bin/python bench/inventory_scale.py [--hosts 8 --paths 4 --wwids 4096 --runs 5]

Targets (issue 2): start to name owned <= 3 s; GetManagedObjects <= 1 s and no slower than
lsscsi; reply < 32 MiB (the system bus's message limit); daemon RSS <= 200 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from dbus_fast import Message  # noqa: E402
from dbus_fast._private.marshaller import Marshaller  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

from sanbusd.cli.sim import generate  # noqa: E402
from sanbusd.devbus import PrivateBus  # noqa: E402
from sanbusd.kernel.fabric import parse_fabric  # noqa: E402
from sanbusd.kernel.sim import SimulatedSan  # noqa: E402

import tomllib  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def get_managed_objects(address: str, runs: int) -> tuple[list[float], int, int]:
    bus = await MessageBus(bus_address=address).connect()
    times = []
    size = count = 0
    for _ in range(runs):
        t = time.perf_counter()
        reply = await bus.call(Message(
            destination="org.example.SanStorage", path="/org/example/SanStorage",
            interface="org.freedesktop.DBus.ObjectManager", member="GetManagedObjects"))
        times.append(time.perf_counter() - t)
        count = len(reply.body[0])
    size = len(Marshaller(reply.signature, reply.body).marshall())
    bus.disconnect()
    return times, size, count


def timed(cmd: list[str], runs: int, env: dict | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       env=env)
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--wwids", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="also write the numbers here")
    args = ap.parse_args()

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    work = Path(tempfile.mkdtemp(prefix="sanbusd-bench.", dir=base))
    work.chmod(0o755)
    results: dict[str, float | int | str] = {}
    bus = daemon = None
    try:
        fabric = parse_fabric(tomllib.loads(generate(args.hosts, args.paths, 1, args.wwids, 0)))
        t = time.perf_counter()
        sim = SimulatedSan(fabric, work / "sys")
        sim.build()
        results["layout_s"] = time.perf_counter() - t
        results["lun_paths"] = len(sim.luns)
        tree = str(work / "sys")

        bus = PrivateBus(str(work / "bus")).start()
        r, w = os.pipe()
        t = time.perf_counter()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sanbusd", "--sysfs-root", tree, "--bus", bus.address,
             "--ready-fd", str(w)], pass_fds=(w,), env=bus.env(), stderr=subprocess.DEVNULL)
        os.close(w)
        if os.read(r, 16) != b"ready\n":
            raise SystemExit("sanbusd did not start")
        results["start_to_name_s"] = time.perf_counter() - t
        results["rss_after_start_mib"] = rss_mib(daemon.pid)

        gmo, size, count = asyncio.run(get_managed_objects(bus.address, args.runs))
        results["objects"] = count
        results["gmo_dbus_fast_median_s"] = statistics.median(gmo)
        results["gmo_dbus_fast_max_s"] = max(gmo)
        results["gmo_reply_bytes"] = size
        results["gmo_busctl_median_s"] = statistics.median(timed(
            ["busctl", f"--address={bus.address}", "call", "org.example.SanStorage",
             "/org/example/SanStorage", "org.freedesktop.DBus.ObjectManager",
             "GetManagedObjects"], args.runs))
        results["rss_after_gmo_mib"] = rss_mib(daemon.pid)
        results["lsscsi_median_s"] = statistics.median(timed(
            ["lsscsi", f"--sysfsroot={tree}", "-t", "-i"], args.runs))
        results["gmo_to_lsscsi_ratio"] = (results["gmo_dbus_fast_median_s"]
                                          / results["lsscsi_median_s"])
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
        if bus is not None:
            bus.stop()
        shutil.rmtree(work, ignore_errors=True)

    mib = results["gmo_reply_bytes"] / (1 << 20)
    print(f"sanbusd inventory at scale: {results['lun_paths']} LUN paths over {args.hosts} FC "
          f"hosts ({args.wwids} WWIDs x {args.paths} paths); {results['objects']} objects")
    rows = [
        ("simulated SAN layout (setup, not a target)", f"{results['layout_s']:.2f} s", ""),
        ("start to name owned", f"{results['start_to_name_s']:.2f} s", "target <= 3 s"),
        ("GetManagedObjects, dbus-fast client (median)",
         f"{results['gmo_dbus_fast_median_s']:.3f} s",
         f"target <= 1 s (max {results['gmo_dbus_fast_max_s']:.3f} s)"),
        ("GetManagedObjects, busctl (median)", f"{results['gmo_busctl_median_s']:.3f} s", ""),
        ("lsscsi --sysfsroot DIR -t -i (median)", f"{results['lsscsi_median_s']:.3f} s",
         "the peer"),
        ("ratio GetManagedObjects / lsscsi", f"{results['gmo_to_lsscsi_ratio']:.2f}",
         "target <= 1.0"),
        ("GetManagedObjects reply", f"{mib:.1f} MiB", "limit 32 MiB"),
        ("daemon RSS after start / after GetManagedObjects",
         f"{results['rss_after_start_mib']:.0f} / {results['rss_after_gmo_mib']:.0f} MiB",
         "target <= 200 MiB"),
    ]
    for name, value, note in rows:
        print(f"  {name:<50} {value:>14}  {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""NPIV vHBAs on the simulated SAN: create latency, a burst of creates, start-up with records.

    .venv/bin/python bench/vhba.py [--delay 1.0]

1. CreateVhba with a fabric login delay D and a LUN zoned to the new WWPN: time until the call
   returns with the vHBA and its LUN on the bus (target: <= D + 0.5 s), median of 5.
2. 64 concurrent CreateVhba on one parent with room for 48: how many succeed, how many answer
   NoSpace, how many vports exist afterwards (target: 48, 16, 48: nothing leaked), and the time.
3. Start-up with 256 persistent vHBAs to re-create (4 parents x 64, the SAN laid out afresh as
   after a reboot): time from exec to the bus name owned (target: <= 3 s + D).
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

from dbus_fast import Variant  # noqa: E402

from sanbusd import client  # noqa: E402
from sanbusd.devbus import PrivateBus  # noqa: E402
from simdaemon import start  # noqa: E402
from sanbusd.sim.generate import small_fc_fabric_toml  # noqa: E402

ROOT = "/org/example/SanStorage"
MGR = ROOT + "/Manager"


def fabric(parents: int, max_vports: int, delay: float, zoned: list[str]) -> str:
    """`parents` NPIV-capable ports (WWPN 10000000000000NN) and LUN 1 zoned to `zoned`."""
    return small_fc_fabric_toml(hosts=parents, scan_delay=0.01, max_npiv_vports=max_vports,
                                switch_npiv=True, login_delay=delay,
                                zoned={1: zoned} if zoned else None)


def stop(p: subprocess.Popen) -> None:
    p.terminate()
    p.wait(30)


async def create(bus, **opts) -> tuple[str | None, str]:
    try:
        (path,) = await client.call(bus, MGR, "org.example.SanStorage.Manager", "CreateVhba",
                                    "a{sv}", [opts], timeout=300)
        return path, ""
    except client.ClientError as e:
        return None, e.name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delay", type=float, default=1.0, help="fabric login delay D (s)")
    args = ap.parse_args()
    D = args.delay
    work = Path(tempfile.mkdtemp(prefix="sanbusd-bench-vhba."))
    bus = PrivateBus().start()
    bus.start_polkitd()
    try:
        # 1. latency with a zoned LUN
        wwpns = [f"5001a4a0000001{i:02x}" for i in range(5)]
        f = work / "one.toml"
        f.write_text(fabric(1, 64, D, wwpns))
        p, _ = start(bus, f, work / "one")

        async def latency() -> list[float]:
            bus_ = await client.connect(bus.address)
            out = []
            for w in wwpns:
                t = time.monotonic()
                path, err = await create(bus_, wwpn=Variant("s", w))
                took = time.monotonic() - t
                objs = await client.managed_objects(bus_)
                host = objs[path]["org.example.SanStorage.Vhba"]["Host"]
                assert objs[host]["org.example.SanStorage.ScsiHost"]["Luns"], "no LUN"
                out.append(took)
            bus_.disconnect()
            return out
        times = asyncio.run(latency())
        stop(p)
        print(f"CreateVhba with login delay D = {D:g} s and a zoned LUN: median "
              f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
              f"target <= D + 0.5 = {D + 0.5:.2f} s")

        # 2. 64 concurrent creates, room for 48
        f = work / "burst.toml"
        f.write_text(fabric(1, 48, D, []))
        p, _ = start(bus, f, work / "burst")

        async def burst():
            bus_ = await client.connect(bus.address)
            t = time.monotonic()
            res = await asyncio.gather(*(create(bus_, parent=Variant("o", f"{ROOT}/hosts/host0"),
                                                wait_luns=Variant("b", False))
                                         for _ in range(64)))
            took = time.monotonic() - t
            objs = await client.managed_objects(bus_)
            bus_.disconnect()
            return res, took, objs
        res, took, objs = asyncio.run(burst())
        stop(p)
        ok = sum(1 for path, _ in res if path)
        nospace = sum(1 for _, e in res if e.endswith(".NoSpace"))
        other = [e for path, e in res if not path and not e.endswith(".NoSpace")]
        left = len(os.listdir(work / "burst" / "sys" / "class" / "fc_vports"))
        on_bus = len([x for x in objs if "/vhbas/" in x])
        print(f"64 concurrent CreateVhba, room for 48: {ok} created, {nospace} NoSpace, "
              f"{len(other)} other {other[:3]}; {left} vports in sysfs, {on_bus} on the bus; "
              f"{took:.2f} s")

        # 3. start-up with 256 persistent vHBAs to re-create
        f = work / "many.toml"
        f.write_text(fabric(4, 64, D, []))
        state = work / "many" / "state"
        state.mkdir(parents=True)
        records = [{"wwpn": f"5001a4a00002{n:04x}", "wwnn": f"5001a4a00003{n:04x}",
                    "parent_wwnn": f"20000000000000{n // 64 + 1:02x}",
                    "parent_wwpn": f"10000000000000{n // 64 + 1:02x}"} for n in range(256)]
        (state / "vhbas.json").write_text(json.dumps({"vhbas": records}))
        p, took = start(bus, f, work / "many", "--sim-fresh")

        async def check():
            bus_ = await client.connect(bus.address)
            objs = await client.managed_objects(bus_)
            bus_.disconnect()
            return objs
        objs = asyncio.run(check())
        stop(p)
        rows = objs[MGR]["org.example.SanStorage.Manager"]["PersistentVhbas"]
        recreated = sum(1 for r in rows if r["Status"] == "re-created")
        print(f"start-up re-creating 256 persistent vHBAs: name owned after {took:.2f} s "
              f"({recreated} re-created); target <= 3 + D = {3 + D:.2f} s")
    finally:
        bus.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

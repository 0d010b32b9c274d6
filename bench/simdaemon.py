"""sanbusd on a simulated SAN for the benchmarks, timed from exec to its name owned."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sanbusd.devbus import PrivateBus


def start(bus: PrivateBus, fabric: Path, sim_dir: Path, *extra: str
          ) -> tuple[subprocess.Popen, float]:
    """The daemon (log: sim_dir/../sanbusd.log, appended, so restarts keep one log) and the
    seconds it took to be ready."""
    r, w = os.pipe()
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "sanbusd", "--simulate", str(fabric),
                          "--sim-dir", str(sim_dir), "--bus", bus.address, "--ready-fd", str(w),
                          *extra], env=bus.env(), pass_fds=(w,),
                         stdout=open(sim_dir.parent / "sanbusd.log", "ab"),
                         stderr=subprocess.STDOUT)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        if f.readline() != b"ready\n":
            raise SystemExit(f"sanbusd did not start; see {sim_dir.parent / 'sanbusd.log'}")
    return p, time.monotonic() - t0

"""Helpers shared by the test layers: sanbusd on a simulated SAN, and real bus clients.

The bus loads the project's own policy file (data/org.example.SanStorage.conf) and the daemon is
started the way an admin would start it (python -m sanbusd), as root, on that bus.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sanbusd.cli.sim import request as sim_request
from sanbusd.devbus import PrivateBus

TOP = Path(__file__).resolve().parents[1]
DEMO_FABRIC = TOP / "data" / "fabrics" / "demo.toml"
BUS_NAME = "org.example.SanStorage"
ROOT = "/org/example/SanStorage"


@dataclass
class RunningDaemon:
    bus: PrivateBus
    sim_dir: Path
    process: subprocess.Popen
    log_path: Path
    env: dict = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sim(self, req: dict) -> dict:
        """Act as the SAN admin (the same control socket sanbusd-sim uses)."""
        return sim_request(str(self.sim_dir), req)

    def writes(self) -> list[dict]:
        return self.sim({"command": "writes"})["writes"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_daemon(bus: PrivateBus, tmp: Path, fabric: Path = DEMO_FABRIC,
                 extra: list[str] | None = None, env: dict | None = None) -> RunningDaemon:
    tmp.mkdir(parents=True, exist_ok=True)
    sim_dir = tmp / "sim"
    log_path = tmp / "sanbusd.log"
    r, w = os.pipe()
    penv = bus.env(**(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sanbusd", "--simulate", str(fabric), "--sim-dir", str(sim_dir),
         "--bus", bus.address, "--ready-fd", str(w), *(extra or [])],
        env=penv, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, pass_fds=(w,))
    os.close(w)
    with os.fdopen(r, "rb") as ready:
        line = ready.readline()
    if line != b"ready\n":
        proc.wait(5)
        raise AssertionError(f"sanbusd did not start: {log_path.read_text()}")
    return RunningDaemon(bus, sim_dir, proc, log_path, penv)


def run(*args: str, env: dict | None = None, check: bool = True, user: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = list(args)
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def busctl(d: RunningDaemon, *args: str, **kw) -> subprocess.CompletedProcess:
    return run("busctl", f"--address={d.bus.address}", *args, env=d.env, **kw)


def gdbus(d: RunningDaemon, *args: str, **kw) -> subprocess.CompletedProcess:
    return run("gdbus", *args[:1], "--address", d.bus.address, *args[1:], env=d.env, **kw)


def sanctl(d: RunningDaemon, *args: str, **kw) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "sanbusd.cli.sanctl", "--bus", d.bus.address, *args,
               env=d.env, **kw)


def wait_until(pred, timeout: float = 10, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def fc_fabric(path: Path, *, hosts: int = 1, scan_delay: float = 0.0,
              host_delays: dict[int, float] | None = None, luns: tuple[int, ...] = ()) -> Path:
    """A small fabric file: `hosts` FC ports (WWPN 100000000000000N) zoned to one array port
    (5000000000000011) whose `luns` are masked to all of them."""
    wwpns = [f"10000000000000{n + 1:02x}" for n in range(hosts)]
    out = [f"[defaults]\nscan_delay = {scan_delay}"]
    for n, wwpn in enumerate(wwpns):
        out.append(f'[[host]]\ntype = "fc"\nwwnn = "2{wwpn[1:]}"\nwwpn = "{wwpn}"\n'
                   'fabric = "A"')
        if host_delays and n in host_delays:
            out.append(f"scan_delay = {host_delays[n]}")
    out.append('[[array]]\nname = "arr"\nwwnn = "5000000000000001"\n[[array.port]]\n'
               'wwpn = "5000000000000011"\nfabric = "A"')
    masked = ", ".join(f'"{w}"' for w in wwpns)
    for lun in luns:
        out.append(f"[[array.lun]]\nlun = {lun}\nmasked_to = [{masked}]")
    path.write_text("\n".join(out) + "\n")
    return path

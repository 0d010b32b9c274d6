"""Helpers shared by the test layers: sanbusd on a simulated SAN, and real bus clients.

The bus loads the project's own policy file (data/org.example.SanStorage.conf) and the daemon is
started the way an admin would start it (python -m sanbusd), as root, on that bus.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sanbusd import client
from sanbusd.cli.sim import request as sim_request
from sanbusd.devbus import PrivateBus
from sanbusd.sim.generate import small_fc_fabric

TOP = Path(__file__).resolve().parents[1]
DEMO_FABRIC = TOP / "data" / "fabrics" / "demo.toml"
BUS_NAME = "org.example.SanStorage"
ROOT = "/org/example/SanStorage"
READY_TIMEOUT = 60          # s for sanbusd to own its name (it takes well under 2 s)


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
                 extra: list[str] | None = None, env: dict | None = None,
                 python: str = sys.executable) -> RunningDaemon:
    """sanbusd on the simulated SAN `fabric`, on `bus`; run by `python` (another interpreter,
    e.g. Debian's /usr/bin/python3 with its own dbus-fast, needs PYTHONPATH in `env`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    sim_dir = tmp / "sim"
    log_path = tmp / "sanbusd.log"
    r, w = os.pipe()
    penv = bus.env(**(env or {}))
    proc = subprocess.Popen(
        [python, "-m", "sanbusd", "--simulate", str(fabric), "--sim-dir", str(sim_dir),
         "--bus", bus.address, "--ready-fd", str(w), *(extra or [])],
        env=penv, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, pass_fds=(w,))
    os.close(w)
    with os.fdopen(r, "rb") as ready:
        # Bounded: a daemon that hangs before it is ready must fail the test, not hang it.
        answered = select.select([ready], [], [], READY_TIMEOUT)[0]
        line = ready.readline() if answered else b""
    if line != b"ready\n":
        if not answered:
            proc.kill()
        try:
            rc = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        why = f"exited with {rc}" if answered else f"was not ready within {READY_TIMEOUT} s"
        raise AssertionError(f"sanbusd {why}: {log_path.read_text()}")
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


def wait_until(pred, timeout: float = 10, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        time.sleep(interval)


class LineReader:
    """The lines a child process prints, read with a deadline (a bare readline() on its pipe
    blocks forever if the child goes quiet, and returns "" forever once it has exited)."""

    def __init__(self, stream) -> None:
        self._lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []

        def pump() -> None:
            for line in stream:
                self._lines.put(line)
            self._lines.put(None)                   # EOF
        threading.Thread(target=pump, daemon=True).start()

    def until(self, pred, timeout: float = 20, what: str = "the expected output") -> list[str]:
        """Read lines until pred(lines read so far) holds; every line read, in order."""
        deadline = time.monotonic() + timeout
        while not pred(self.seen):
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(f"no {what} within {timeout:g} s; got: "
                                     f"{''.join(self.seen)[-2000:]!r}") from None
            if line is None:
                raise AssertionError(f"the process ended before {what}; got: "
                                     f"{''.join(self.seen)[-2000:]!r}")
            self.seen.append(line)
        return self.seen

    def drain(self, seconds: float) -> list[str]:
        """Keep reading for `seconds` (e.g. to see a duplicate that would come right behind)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return self.seen


class Signals:
    """sanbusd's signals as a client sees them (dbus-fast; use inside asyncio.run):

        sigs = await Signals.connect(address)
        ...
        await sigs.wait_for(lambda seen: [m for m in seen if ...], what="...")
    """

    def __init__(self, bus) -> None:
        self.bus = bus
        self.seen: list = []
        self._arrived = asyncio.Event()

    @classmethod
    async def connect(cls, address: str, rules=client.SIGNAL_RULES) -> "Signals":
        bus = await client.connect(address)
        self = cls(bus)
        for rule in rules:
            await client.add_match(bus, rule)

        def on_message(msg):
            if msg.message_type.name == "SIGNAL":
                self.seen.append(msg)
                self._arrived.set()
        bus.add_message_handler(on_message)
        return self

    async def wait_for(self, pred, timeout: float = 20, what: str = "the signal"):
        """Until pred(signals seen so far) is truthy; returns its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (value := pred(self.seen)):
            self._arrived.clear()
            left = deadline - loop.time()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(0.0, left))
            except asyncio.TimeoutError:
                raise AssertionError(f"no {what} within {timeout:g} s; saw "
                                     f"{[(m.path, m.member) for m in self.seen][-20:]}") from None
        return value

    def close(self) -> None:
        self.bus.disconnect()


def fc_fabric(path: Path, **kw) -> Path:
    """A small fabric file (sanbusd.sim.generate.small_fc_fabric, also what `sanbusd-sim`
    and the benchmarks use): `hosts` FC ports (WWPN 100000000000000N) zoned to `array_ports`
    ports of one array (50000000000000N1) whose `luns` are masked to all of them."""
    return small_fc_fabric(path, **kw)


# A CSS url(), quoted either way or bare.
CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^'")\s]*))\s*\)""")


def css_references(root: Path) -> dict[str, set[str]]:
    """Every url() of every CSS file under root (the Cockpit page as built or as shipped),
    resolved to a path relative to root (absolute when it leads outside), per CSS file. An
    absolute URL fails: Cockpit's Content-Security-Policy would block it."""
    refs: dict[str, set[str]] = {}
    for css in sorted(root.rglob("*.css")):
        rel = str(css.relative_to(root))
        refs[rel] = set()
        for m in CSS_URL.finditer(css.read_text(encoding="utf-8")):
            url = next(g for g in m.groups() if g is not None)
            if url.startswith(("data:", "#")):       # inline data; an element of the document
                continue
            assert not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:|/", url), f"{rel}: absolute url({url})"
            target = (css.parent / re.split(r"[?#]", url)[0]).resolve()
            inside = target.is_relative_to(root.resolve())
            refs[rel].add(str(target.relative_to(root.resolve())) if inside else str(target))
    return refs

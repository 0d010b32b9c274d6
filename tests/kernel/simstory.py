"""On the host: a scenario's story (``Scenario.simulate``) replayed on the simulated SAN.

``replay(scenario, bus, tmp)`` starts sanbusd on the scenario's ``fabric(INITIAL)`` (or the
checkpoint its ``story_start`` names, where the kernel's exercise starts the story; as
tests/conftest.py's fixtures do: private system bus, real polkitd) and runs the story with a
``SimContext``: sanscenario.Context's interface (client, step, check, record, checkpoint,
scsi_devices, sanctl) on the simulated SAN, plus ``admin()``, the SAN admin's commands through the
simulated SAN's control socket (what ``sanbusd-sim provision`` sends). conftest.py's
``story_replay`` fixture runs each story once; test_conformance.py compares it with the kernel's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sanbus_testing import RunningDaemon, sanctl, start_daemon  # tests/ is on sys.path (tests/conftest.py)

import sanview
from sanscenario import INITIAL, Scenario, to_toml


class SimContext:
    """sanscenario.Context's interface on the simulated SAN, for ``Scenario.simulate``."""

    world = "simulated"

    def __init__(self, daemon: RunningDaemon) -> None:
        from guestsan import SanClient  # the guest's dbus-fast client works on the host as well

        self.daemon = daemon
        self.client = SanClient(daemon.bus.address)
        self.data: dict[str, Any] = {}
        self.failed: list[str] = []
        self.trees: dict[str, sanview.Tree] = {}
        self.writes: list[dict] = []  # every write sanbusd made to the simulated sysfs, at the end

    def admin(self, request: dict) -> dict:
        """The SAN admin: the simulated SAN's control socket (as ``sanbusd-sim`` uses it)."""
        return self.daemon.sim(request)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        yield

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        if not ok:
            self.failed.append(f"{name}: {detail}")
        return ok

    def check_equal(self, name: str, actual: Any, expected: Any) -> bool:
        return self.check(name, actual == expected, f"expected {expected!r}, got {actual!r}")

    def record(self, key: str, value: Any) -> None:
        self.data[key] = value

    def checkpoint(self, name: str) -> None:
        """The tree once it stops changing (the simulated SAN's events are asynchronous too)."""
        tree = self.client.managed_objects()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.3)
            again = self.client.managed_objects()
            if again == tree:
                break
            tree = again
        self.trees[name] = tree

    def hosts(self, checkpoint: str) -> list[int]:
        return [o[sanview.HOST_I]["Number"] for p, o in self.trees[checkpoint].items() if "/hosts/" in p]

    def scsi_devices(self, host: int) -> list[str]:
        names = [p.name for p in (self.daemon.sim_dir / "sys" / "class" / "scsi_device").iterdir()]
        return sorted((n for n in names if n.split(":")[0] == str(host)), key=sanview.hctl_key)

    def sanctl(self, *args: str) -> dict[str, Any]:
        start = time.monotonic()
        r = sanctl(self.daemon, *args, check=False, timeout=120)
        return {"argv": ["sanctl", *args], "rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr,
                "seconds": round(time.monotonic() - start, 2)}


def replay(scenario: Scenario, bus: Any, tmp: Path) -> SimContext:
    """Run ``scenario``'s story on sanbusd started on its ``fabric(INITIAL)`` (or of its
    ``story_start`` checkpoint); sanbusd must stop cleanly with no traceback in its log."""
    path = tmp / "fabric.toml"
    path.write_text(to_toml(scenario.fabric(getattr(scenario, "story_start", INITIAL))))
    daemon = start_daemon(bus, tmp, path)
    sim = SimContext(daemon)
    try:
        scenario.simulate(sim)
        sim.writes = daemon.writes()
    finally:
        sim.client.close()
        rc = daemon.stop()
    log = daemon.log()
    assert rc == 0 and "Traceback" not in log, log
    return sim

"""Kernel scenarios for sanbusd: one description, run on the real kernel AND on the simulated SAN.

A scenario (see scenarios/scsi_debug.py, scenarios/fcoe.py) is a small dataclass:

* ``setup(ctx)`` runs in the guest before sanbusd starts and builds kernel state (scsi_debug hosts,
  an FCoE initiator with a LIO target); it tells ``ctx.set_hosts`` which SCSI hosts are its own.
* ``exercise(ctx)`` runs in the guest with sanbusd up and drives changes (add a host, delete a LUN,
  map a LUN and scan), waiting for the D-Bus signals they must cause; ``ctx.checkpoint(name)``
  records the whole object tree, sysfs and lsscsi at that point.
* ``fabric(checkpoint)`` describes the same state for the simulated SAN (data/fabrics/*.toml as a
  dict); test_conformance.py runs sanbusd on it and compares the two trees (sanview.normalize).

Scenarios are grouped into boots (``scenarios.GROUPS``): one QEMU boot sets up every scenario of a
group, starts one sanbusd, then exercises them in turn. The host-side tests (test_<scenario>.py)
assert on a ``ScenarioRun``: the scenario's part of the report the boot wrote.

This module is imported on the host and in the guest; it needs only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import sanview

if TYPE_CHECKING:  # guest-only modules
    import guestlib
    import guestsan

INITIAL = "initial"  # the checkpoint taken right after sanbusd started (its cold-plug read)


class Scenario:
    """Base class; subclasses are frozen dataclasses with their parameters as fields."""

    name: ClassVar[str]
    nics: ClassVar[int] = 0  # lab.boot(nics=...): FCoE needs 2 (initiator + LIO target port)
    libvirtd: ClassVar[bool] = False  # the group's stack also starts libvirtd (guestsan.Libvirtd)
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL,)  # the states compared with the simulated SAN
    # Exercises run in group order, lowest exercise_order first (setups always in group order):
    # "multipath" is set up before "iscsi_multipath" (scsi_debug gets the low host numbers) but
    # exercised after it.
    exercise_order: ClassVar[int] = 0

    def setup(self, ctx: Context) -> None:
        raise NotImplementedError

    def exercise(self, ctx: Context) -> None:
        pass

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        """The simulated SAN's fabric (the TOML of data/fabrics/demo.toml, as a dict) for a checkpoint."""
        raise NotImplementedError

    # Optional: the exercise as a *story* that also runs on the simulated SAN. test_conformance.py
    # starts sanbusd on fabric(INITIAL), calls simulate(sim) with a test_conformance.SimContext
    # (the same interface as Context: client, step, check, record, checkpoint, scsi_devices,
    # sanctl; world == "simulated"; the SAN admin through sim.admin(), the sim's control socket),
    # and compares the trees at the story's checkpoints and the records named in story_records.
    story_records: ClassVar[tuple[str, ...]] = ()
    # The checkpoints the story takes (compared tree by tree with the replay); by default every
    # checkpoint but INITIAL. A scenario whose exercise does more than its story (npiv: what
    # only a real kernel, a daemon restart or libvirt can show) names the story's own.
    story_checkpoints: ClassVar[tuple[str, ...] | None] = None

    # The checkpoints a fabric file can describe (test_conformance.py lays each out and compares
    # the trees); by default all. A state only a story reaches (a path offline, a portal cut) is
    # compared by the story's replay instead.
    fabric_checkpoints: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def laid_out_checkpoints(cls) -> tuple[str, ...]:
        return cls.checkpoints if cls.fabric_checkpoints is None else cls.fabric_checkpoints

    @classmethod
    def replayed_checkpoints(cls) -> tuple[str, ...]:
        if cls.story_checkpoints is not None:
            return cls.story_checkpoints
        return tuple(cp for cp in cls.checkpoints if cp != INITIAL)

    def simulate(self, sim: Any) -> None:
        raise NotImplementedError

    @classmethod
    def has_story(cls) -> bool:
        return cls.simulate is not Scenario.simulate


# --------------------------------------------------------------------------------------------
# In the guest


class Context:
    """What a scenario gets in the guest: the report, its own hosts, the client, checkpoints."""

    world = "kernel"  # test_conformance.SimContext, the same interface on the simulated SAN: "simulated"

    def __init__(self, scenario: Scenario, run: GroupRunner) -> None:
        self.scenario = scenario
        self.name = scenario.name
        self._run = run
        self.hosts: list[int] = []
        self.data: dict[str, Any] = {}
        self.hosts_at: dict[str, list[int]] = {}
        self.timings: dict[str, float] = {}
        self.failed = False

    @property
    def report(self) -> guestlib.Report:
        return self._run.report

    @property
    def client(self) -> guestsan.SanClient:
        assert self._run.client is not None, "the client exists only in exercise()"
        return self._run.client

    @property
    def stack(self) -> guestsan.SanStack:
        assert self._run.stack is not None
        return self._run.stack

    @property
    def libvirtd(self) -> guestsan.Libvirtd:
        """The group's libvirtd (a scenario with ``libvirtd = True`` asks for it); call its
        ``ready()`` before use."""
        assert self._run.stack is not None and self._run.stack.libvirtd is not None, \
            "set libvirtd = True on the scenario"
        return self._run.stack.libvirtd

    def set_hosts(self, hosts: list[int]) -> None:
        """The SCSI hosts this scenario owns (compared with the simulated SAN's hosts, in order)."""
        self.hosts = sorted(hosts)

    def step(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.report.step(f"{self.name}: {name}")

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        return self.report.check(f"{self.name}: {name}", ok, detail)

    def check_equal(self, name: str, actual: Any, expected: Any) -> bool:
        return self.report.check_equal(f"{self.name}: {name}", actual, expected)

    def record(self, key: str, value: Any) -> None:
        self.data[key] = value

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[key] = round(time.monotonic() - start, 2)

    def checkpoint(self, name: str) -> dict[str, Any]:
        """Record the whole tree, sysfs and lsscsi once the daemon has caught up with the kernel."""
        key = name if name == INITIAL else f"{self.name}:{name}"
        self.hosts_at[name] = list(self.hosts)
        return self._run.snapshot(key)

    def wait_converged(self, timeout: float = 60) -> float:
        return self._run.wait_converged(timeout)

    def scsi_devices(self, host: int) -> list[str]:
        """H:C:T:L under /sys/class/scsi_device for one host: what the kernel has attached."""
        import guestlib as g

        return g.scsi_devices(host)

    def sanctl(self, *args: str) -> dict[str, Any]:
        """Run ``sanctl --bus ADDRESS ARGS`` (as root, like an admin); its output and exit code."""
        import subprocess
        import sys

        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "sanbusd.cli.sanctl", "--bus", self.stack.address, *args],
                              capture_output=True, text=True, timeout=300)
        return {"argv": ["sanctl", *args], "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                "seconds": round(time.monotonic() - start, 2)}

    def as_dict(self) -> dict[str, Any]:
        return {"hosts": self.hosts, "hosts_at": self.hosts_at, "timings": self.timings, "data": self.data}


class GroupRunner:
    """One boot: udevd, every scenario's setup, bus + polkitd + sanbusd, a client, the exercises."""

    def __init__(self, scenarios: list[Scenario], report: guestlib.Report) -> None:
        self.scenarios = scenarios
        self.report = report
        self.contexts = [Context(s, self) for s in scenarios]
        self.stack: guestsan.SanStack | None = None
        self.client: guestsan.SanClient | None = None
        self.udev: guestsan.UdevLog | None = None
        self.checkpoints: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._last_pair: tuple[dict, dict] = ({}, {"hosts": {}, "rports": {}, "luns": {}})
        report.record("group", [s.name for s in scenarios])
        import sanbusd  # which checkout the guest runs (the 9p share is the whole host root)

        report.record("sanbusd_module", sanbusd.__file__)
        import guestlib as g

        g.log(f"sanbusd from {sanbusd.__file__}")

    def run(self) -> None:
        import guestlib as g
        import guestsan

        try:
            with self.report.step("start systemd-udevd"):
                g.start_udevd()  # before any device exists: it sees the kernel's own events
            for ctx in self.contexts:
                try:
                    with ctx.timed("setup"), ctx.step("setup"):
                        ctx.scenario.setup(ctx)
                except Exception:  # noqa: BLE001 - recorded as a failed check; the others still run
                    ctx.failed = True
            with self.report.step("udev settle after setup"):
                self.timings["settle"] = round(g.settle(timeout=180), 2)
            start = time.monotonic()
            libvirtd = any(s.libvirtd for s in self.scenarios)
            with self.report.step("start private system bus, polkitd and sanbusd"
                                  + (", and libvirtd" if libvirtd else "")):
                self.stack = guestsan.SanStack(libvirtd=libvirtd)
                self.stack.start()
                self.client = guestsan.SanClient(self.stack.address)
                self.udev = guestsan.UdevLog()
            self.timings.update({f"start {k}": v for k, v in self.stack.timings.items()})
            self.timings["start total"] = round(time.monotonic() - start, 2)
            self.report.record("daemon_owner", self.client.owner)
            self.report.record("manager", self.client.call(
                f"{sanview.ROOT}/Manager", "org.freedesktop.DBus.Properties", "GetAll", "s",
                [sanview.MANAGER_I])[0])
            for ctx in self.contexts:
                ctx.hosts_at[INITIAL] = list(ctx.hosts)
            self.snapshot(INITIAL)
            for ctx in sorted(self.contexts, key=lambda c: c.scenario.exercise_order):
                if ctx.failed:
                    continue
                try:
                    with ctx.timed("exercise"), ctx.step("exercise"):
                        ctx.scenario.exercise(ctx)
                except Exception:  # noqa: BLE001 - recorded; go on with the next scenario
                    ctx.failed = True
        finally:
            self.finish()

    def finish(self) -> None:
        if self.udev is not None:
            self.report.record("udev_events", self.udev.stop())
        if self.client is not None:
            self.report.record("signals", self.client.signals)
            self.client.close()
        if self.stack is not None and self.stack.libvirtd is not None:
            self.report.record("libvirtd", {"ready_seconds": self.stack.libvirtd.ready_seconds,
                                            "error": self.stack.libvirtd.error})
        if self.stack is not None:
            rc = self.stack.stop_daemon()
            log = self.stack.log()
            self.report.record("daemon_exit_code", rc)
            self.report.check_equal("sanbusd stops cleanly on SIGTERM", rc, 0)
            self.report.check("no traceback in sanbusd's log", "Traceback" not in log,
                              log[-3000:] if "Traceback" in log else "")
            self.stack.stop()
        self.report.record("checkpoints", self.checkpoints)
        self.report.record("scenarios", {ctx.name: ctx.as_dict() for ctx in self.contexts})
        self.report.record("timings", self.timings)

    # -- snapshots ------------------------------------------------------------------------------

    def wait_converged(self, timeout: float) -> float:
        """Wait until the published tree matches sysfs exactly (udev done, daemon's burst published)."""
        start = time.monotonic()
        self._converge(timeout)
        return round(time.monotonic() - start, 2)

    def _converge(self, timeout: float) -> tuple[dict, dict]:
        """The first (objects, sysfs) pair that match, read after ``udevadm settle``; TimeoutError
        (with the last pair in ``self._last_pair``) if they still differ after ``timeout``."""
        import guestlib as g

        start = time.monotonic()
        g.settle(timeout=timeout)
        while True:
            pair = self.client.managed_objects(), g.sysfs_snapshot()
            self._last_pair = pair
            diffs = sanview.sysfs_differences(*pair)
            if not diffs:
                return pair
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"sanbusd's objects still differ from sysfs after {timeout:.0f}s: "
                                   f"{diffs[:20]}")
            time.sleep(0.2)

    def snapshot(self, key: str) -> dict[str, Any]:
        """Record a checkpoint. If the daemon never catches up, the check fails and the last,
        differing pair is recorded anyway, for the host-side tests to show what differs."""
        import guestlib as g

        assert self.client is not None and self.stack is not None
        start = time.monotonic()
        try:
            with self.report.step(f"checkpoint {key}: objects match sysfs"):
                self._converge(60)
        finally:
            objects, sysfs = self._last_pair
            self.checkpoints[key] = {
                "converged_seconds": round(time.monotonic() - start, 2),
                "objects": objects,
                "sysfs": sysfs,
                "busctl_objects": sanview.plain_busctl(json.loads(self.stack.busctl(
                    "--json=short", "call", "org.example.SanStorage", sanview.ROOT,
                    "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"))),
                "busctl_tree": self.stack.busctl("--list", "tree", "org.example.SanStorage"),
                "lsscsi": g.run(["lsscsi"]).stdout,
                "lsscsi_t": g.run(["lsscsi", "-t"]).stdout,
                "lsscsi_H": g.run(["lsscsi", "-H"]).stdout,
                "hosts": {ctx.name: ctx.hosts_at.get(key.split(":")[-1], ctx.hosts) for ctx in self.contexts
                          if key == INITIAL or key.startswith(f"{ctx.name}:")},
            }
        return self.checkpoints[key]


# --------------------------------------------------------------------------------------------
# On the host


def completed_report(result: Any) -> dict[str, Any]:
    """A group boot's report (``result``: lab.GuestResult); fail the test loudly, console tail
    included, if the guest never got as far as recording its scenarios."""
    report = result.report
    if result.exit_code is None or report is None or "scenarios" not in report.get("data", {}):
        import pytest

        pytest.fail(f"the guest did not complete the scenarios\n{result.describe()}", pytrace=False)
    return report


@dataclass
class ScenarioRun:
    """One scenario's part of a group boot's report (``result`` is the boot's lab.GuestResult)."""

    name: str
    report: dict[str, Any]
    result: Any = None
    info: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.info = self.report["data"]["scenarios"][self.name]

    def describe(self) -> str:
        """For assertion messages: failed checks and the console tail."""
        return self.result.describe() if self.result is not None else json.dumps(self.failed_checks)

    @property
    def data(self) -> dict[str, Any]:
        return self.info["data"]

    @property
    def failed_checks(self) -> list[dict]:
        return [c for c in self.report["checks"] if not c["ok"] and c["name"].startswith(f"{self.name}: ")]

    @property
    def checks(self) -> list[dict]:
        return [c for c in self.report["checks"] if c["name"].startswith(f"{self.name}: ")]

    def snapshot(self, checkpoint: str) -> dict[str, Any]:
        key = checkpoint if checkpoint == INITIAL else f"{self.name}:{checkpoint}"
        return self.report["data"]["checkpoints"][key]

    def hosts(self, checkpoint: str) -> list[int]:
        return self.info["hosts_at"][checkpoint]

    def udev_events(self, action: str, device: str) -> list[dict]:
        """Events ``udevadm monitor --udev`` saw for ``device`` ("host4", "4:0:0:1") or anything
        below it (its block device, its scsi_device class device); t is CLOCK_MONOTONIC, as in
        the signal record."""
        return [e for e in self.report["data"].get("udev_events", [])
                if e["action"] == action and device in e["devpath"].split("/")]

    def assert_udev_first(self, action: str, device: str, signal: dict, after: float) -> None:
        """After ``after`` (when the step began), udev announced ``action`` of ``device`` (or of
        something below it) before sanbusd sent ``signal``: the daemon heard it from udev."""
        events = [e for e in self.udev_events(action, device) if e["t"] >= after]
        assert events, f"udev never announced {action} of {device} after t={after}"
        assert min(e["t"] for e in events) <= signal["t"], (events[:3], signal)


def to_toml(data: dict[str, Any]) -> str:
    """The fabric dicts scenarios build, as TOML (tables, arrays of tables, scalars, lists of scalars)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a valid TOML basic string
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    def table(prefix: str, d: dict[str, Any], array: bool) -> None:
        if prefix:
            lines.append(f"[[{prefix}]]" if array else f"[{prefix}]")
        nested = []
        for k, v in d.items():
            if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
                nested.append((k, v))
            else:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in nested:
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                table(name, v, False)
            else:
                for item in v:
                    table(name, item, True)

    table("", data, False)
    return "\n".join(lines) + "\n"

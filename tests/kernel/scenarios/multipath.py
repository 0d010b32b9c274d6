"""Multipath on scsi_debug: every map created, a path offline and back, maps flushed (unused,
held open, deferred, with their paths).

Kernel side: ``scsi_debug`` with two hosts, one target, LUNs 0-2, ``vpd_use_hostno=0`` (the same
WWIDs on both hosts: ``1Linux_scsi_debug_2000``..``2002`` as udev's ID_SERIAL says), udevd, and
multipathd with ``find_multipaths strict`` (no map until sanbusd asks), ``user_friendly_names
yes`` and ``polling_interval 1`` (guestlib.shared_multipathd).

The story (``_story``), in both worlds:

* ``Manager.CreateAllMultipathMaps({})`` answers one map per WWID (three), each on the bus with
  two paths (its two LUN objects), Health "healthy", and each Lun.MultipathMap points back; asked
  again it answers the same (checkpoint ``created``);
* ``echo offline > device/state`` of one path: its DeviceState "offline" (DmState "failed") and
  its map's Health "degraded" reach a D-Bus client (checkpoint ``offline``); ``running`` brings
  the map back to "healthy";
* ``Flush`` of an unused map: its object goes, its two Lun objects stay with MultipathMap "/";
* a process (``sleep``) holds another map open: ``Flush`` answers Busy naming it and nothing
  changes; ``Flush deferred=true`` returns with the map still there; it goes once the process
  exits;
* ``Flush remove_paths=true`` of the last map: the map goes, then its two LUN paths
  (checkpoint ``final``).

Simulated side: "other" hosts (driver scsi_debug) whose disks carry ``mpath_wwid``, and the
guest's multipath.conf as the simulated multipathd's; the SAN admin's ``device-state`` and
``hold-open``/``release``. Assertions: test_multipath.py; conformance: test_conformance.py.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import sanview
from sanscenario import INITIAL, Context

from .iscsi_multipath import LUN_I, MAP_I, MGR, MGR_I
from .scsi_debug import ScsiDebug

CREATED, OFFLINE, FINAL = "created", "offline", "final"
ERR = "org.example.SanStorage.Error."
SIM_HOLDER = "sleep (pid 4242)"  # the simulated SAN's holder (hold-open --by)
LAB_CONF = "defaults {\n    user_friendly_names yes\n    find_multipaths strict\n    polling_interval 1\n}\n"


@dataclass(frozen=True)
class Multipath(ScsiDebug):
    name: ClassVar[str] = "multipath"
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, CREATED, OFFLINE, FINAL)
    fabric_checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, CREATED, FINAL)  # "offline": the replay
    # iscsi_multipath's story runs first: it retires its LUNs, so that CreateAllMultipathMaps({})
    # here sees only scsi_debug's (the two are set up in group order: scsi_debug's hosts first).
    exercise_order: ClassVar[int] = 1
    story_records: ClassVar[tuple[str, ...]] = ("created", "again", "offline", "running", "flush",
                                                "busy", "deferred", "retire")

    targets: int = 1
    luns: int = 3
    added_hosts: int = 0
    offline: tuple[int, int] = (0, 0)  # (host index, LUN) set offline and back
    flushed: int = 1  # LUN whose map is flushed while unused
    held: int = 2  # LUN whose map is held open: Busy, then a deferred flush
    retired: int = 0  # LUN whose map is flushed with remove_paths=true
    wait: float = 60.0

    def mpath_wwid(self, target: int, lun: int) -> str:
        """udev's ID_SERIAL of a scsi_debug LUN (its T10 vendor designator), multipath's WWID."""
        return f"1Linux_scsi_debug_{2000 + 1000 * target + lun}"

    # -- the simulated SAN -------------------------------------------------------------------

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        gone = {(i, 0, self.retired) for i in range(self.hosts)} if checkpoint == FINAL else set()
        # A fabric file cannot say which WWIDs multipathd has mapped; at "created" every one is:
        # the same multipathd with find_multipaths no maps them all as it starts.
        conf = LAB_CONF.replace("strict", "no") if checkpoint == CREATED else LAB_CONF
        return {
            "multipathd": {"conf": conf},
            "host": [{"type": "other", "driver": "scsi_debug", "disk": [
                {"target": t, "lun": n, "vendor": self.vendor, "model": self.model, "rev": self.rev,
                 "size": f"{self.dev_size_mb}M", "wwid": self.wwid(t, n), "mpath_wwid": self.mpath_wwid(t, n)}
                for t, n in self.lun_ids() if (i, t, n) not in gone]} for i in range(self.hosts)]}

    def simulate(self, sim: Any) -> None:
        held: list[str] = []

        def hold(node: str) -> str:
            sim.admin({"command": "hold-open", "block": os.path.basename(node), "by": SIM_HOLDER})
            held.append(os.path.basename(node))
            return SIM_HOLDER

        def release() -> None:
            for block in held:
                sim.admin({"command": "release", "block": block})

        self._story(sim, set_state=lambda hctl, state: sim.admin(
            {"command": "device-state", "hctl": hctl, "state": state}),
            hold=hold, release=release, settle=lambda: None)

    # -- the real kernel -----------------------------------------------------------------------

    def setup(self, ctx: Context) -> None:
        import guestlib as g

        super().setup(ctx)
        blocks = {h: g.wait_for_block(h) for host in ctx.hosts for h in g.scsi_devices(host)}
        g.settle(60)
        ctx.check_equal("udev's ID_SERIAL (multipath's WWID) as described",
                        {h: g.udev_property(b, "ID_SERIAL") for h, b in blocks.items()},
                        {h: self.mpath_wwid(*sanview.hctl_key(h)[2:]) for h in blocks})
        g.shared_multipathd()

    def exercise(self, ctx: Context) -> None:
        import subprocess

        import guestlib as g

        holder: dict[str, Any] = {}

        def hold(node: str) -> str:
            fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
            try:  # only sleep holds it: ours is closed right after the fork
                proc = subprocess.Popen(["sleep", "600"], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            finally:
                os.close(fd)
            holder["proc"] = proc
            return f"{g.read_attr(f'/proc/{proc.pid}/comm')} (pid {proc.pid})"

        def release() -> None:
            proc = holder.get("proc")
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

        try:
            self._story(ctx, set_state=g.set_device_state, hold=hold, release=release,
                        settle=lambda: g.settle(60))
        finally:
            release()

    # -- the story, in either world ------------------------------------------------------------

    def _story(self, w: Any, set_state: Callable[[str, str], Any], hold: Callable[[str], str],
               release: Callable[[], None], settle: Callable[[], None]) -> None:
        from dbus_fast import Variant

        client = w.client
        objects = client.managed_objects()
        hosts = sorted(o[sanview.HOST_I]["Number"] for o in objects.values()
                       if o.get(sanview.HOST_I, {}).get("Driver") == "scsi_debug")
        if w.world == "kernel":
            w.check_equal("the story's scsi_debug hosts are the scenario's", hosts, w.hosts)
        wwids = [self.mpath_wwid(t, n) for t, n in self.lun_ids()]
        maps = {n: sanview.map_path(self.mpath_wwid(0, n)) for n in range(self.luns)}

        def luns_of(n: int) -> list[str]:
            return sorted(sanview.lun_path(f"{h}:0:0:{n}") for h in hosts)

        def call(path: str, iface: str, member: str, **options: Any) -> dict[str, Any]:
            return client.call_reply(path, iface, member, "a{sv}", [options])

        def view(objs: dict, path: str) -> dict[str, Any] | None:
            m = objs.get(path, {}).get(MAP_I)
            if m is None:
                return None
            return {"WWID": m["WWID"], "Size": m["Size"], "Health": m["Health"], "ActivePaths": m["ActivePaths"],
                    "TotalPaths": m["TotalPaths"], "Features": m["Features"], "HwHandler": m["HwHandler"],
                    "Paths": sorted(({k: p[k] for k in ("Lun", "DmState", "DeviceState", "CheckerState", "Up")}
                                     for p in m["Paths"]), key=lambda p: p["Lun"])}

        def health(objs: dict, path: str) -> str | None:
            return objs.get(path, {}).get(MAP_I, {}).get("Health")

        def poll(predicate: Callable[[dict], bool], what: str) -> tuple[dict, float | None]:
            start = time.monotonic()
            while True:
                objs = client.managed_objects()
                if predicate(objs):
                    return objs, round(time.monotonic() - start, 2)
                if time.monotonic() - start > self.wait:
                    w.check(f"within {self.wait:.0f} s: {what}", False, {p: view(objs, p) for p in maps.values()})
                    return objs, None
                time.sleep(0.2)

        def backrefs(objs: dict) -> dict[str, str | None]:
            return {p: objs[p][LUN_I]["MultipathMap"] if p in objs else None
                    for n in range(self.luns) for p in luns_of(n)}

        def same(message: str | None, name: str) -> str | None:
            """A message as compared with the other world: the map's name and a pid differ."""
            if not message:
                return message
            return re.sub(r"\(pid \d+\)", "(pid N)", message.replace(name, "<map>"))

        # 1. Every WWID with two paths gets its map.
        with w.step("CreateAllMultipathMaps({}): one map per WWID"):
            settle()
            reply = call(MGR, MGR_I, "CreateAllMultipathMaps")
            answered = sorted(reply.get("body", [[]])[0]) if reply["ok"] else []
            objs, seconds = poll(lambda o: all(health(o, p) == "healthy" for p in maps.values()),
                                 "every map healthy")
        w.record("created", {"ok": reply["ok"], "error": reply.get("error"), "message": reply.get("message"),
                             "maps": answered, "views": {p: view(objs, p) for p in sorted(maps.values())},
                             "backrefs": backrefs(objs)})
        w.record("created_seconds", {"call": reply["seconds"], "healthy": seconds})
        w.check_equal("it answers one map per WWID", answered, sorted(maps.values()))
        w.check_equal("each map's paths are the WWID's two LUNs",
                      {p: [x["Lun"] for x in (view(objs, p) or {}).get("Paths", [])] for p in maps.values()},
                      {maps[n]: luns_of(n) for n in maps})
        w.check_equal("each Lun.MultipathMap points back", backrefs(objs),
                      {p: maps[n] for n in maps for p in luns_of(n)})
        again = call(MGR, MGR_I, "CreateAllMultipathMaps")
        w.record("again", {"ok": again["ok"], "maps": sorted(again.get("body", [[]])[0]) if again["ok"] else again})
        w.check_equal("asked again, it answers the same maps (idempotent)",
                      sorted(again.get("body", [[]])[0]) if again["ok"] else again, answered)
        w.record("wwids", wwids)
        w.checkpoint(CREATED)

        # 2. A path offline: its DeviceState and its map's Health reach a client; running heals.
        i, n = self.offline
        victim = f"{hosts[i]}:0:0:{n}"
        vpath, mpath = sanview.lun_path(victim), maps[n]
        mark = client.mark()
        start = time.monotonic()
        with w.step(f"echo offline > {victim}/device/state: the map degrades"):
            set_state(victim, "offline")
            client.wait_signals(lambda s: any(x["member"] == "PropertiesChanged" and x["object"] == mpath
                                              and x["changed"].get("Health") == "degraded" for x in s),
                                since=mark, timeout=self.wait, what=f"{mpath} Health degraded")
            seen = round(time.monotonic() - start, 2)
            objs, _ = poll(lambda o: any(p["Lun"] == vpath and p["DeviceState"] == "offline"
                                         and p["DmState"] == "failed" for p in o[mpath][MAP_I]["Paths"]),
                           "the path offline and failed")
        w.record("offline", {"map": view(objs, mpath), "lun_state": objs[vpath][LUN_I]["State"],
                             "health_changes": [x["changed"]["Health"] for x in client.since(mark)
                                                if x["member"] == "PropertiesChanged" and x["object"] == mpath
                                                and "Health" in x["changed"]]})
        w.record("offline_seconds", seen)
        w.checkpoint(OFFLINE)
        mark = client.mark()
        with w.step(f"echo running > {victim}/device/state: healthy again"):
            set_state(victim, "running")
            client.wait_signals(lambda s: any(x["member"] == "PropertiesChanged" and x["object"] == mpath
                                              and x["changed"].get("Health") == "healthy" for x in s),
                                since=mark, timeout=self.wait, what=f"{mpath} Health healthy")
            objs, seconds = poll(lambda o: health(o, mpath) == "healthy"
                                 and o[vpath][LUN_I]["State"] == "running", "the path running again")
        w.record("running", {"map": view(objs, mpath), "lun_state": objs[vpath][LUN_I]["State"]})
        w.record("running_seconds", seconds)

        # 3. Flush of an unused map: it goes, its LUNs stay without a map.
        path = maps[self.flushed]
        with w.step(f"Flush of the unused map {path}"):
            settle()
            mark = client.mark()
            reply = call(path, MAP_I, "Flush")
            objs = client.managed_objects()
        w.record("flush", {"ok": reply["ok"], "error": reply.get("error"), "message": reply.get("message"),
                           "on_bus": path in objs, "luns": {p: objs[p][LUN_I]["MultipathMap"] if p in objs else None
                                                            for p in luns_of(self.flushed)},
                           "removed": [x["object"] for x in client.since(mark, "InterfacesRemoved")]})
        w.check("Flush of an unused map works: it goes, its LUNs stay with MultipathMap /",
                reply["ok"] and path not in objs and all(objs.get(p, {}).get(LUN_I, {}).get("MultipathMap")
                                                         == sanview.NO_OBJECT for p in luns_of(self.flushed)),
                reply)

        # 4. A map held open: Busy naming the holder, nothing changes; deferred: goes on close.
        path = maps[self.held]
        name = client.get(path, MAP_I, "Name")
        node = f"/dev/mapper/{name}"
        with w.step(f"a process holds {node} open"):
            who = hold(node)
        try:
            with w.step(f"Flush of {name} while {who} holds it: Busy, nothing changes"):
                mark = client.mark()
                busy = call(path, MAP_I, "Flush")
                objs = client.managed_objects()
            w.record("busy", {"ok": busy["ok"], "error": busy.get("error"), "message": same(busy.get("message"), name),
                              "on_bus": path in objs, "map": view(objs, path),
                              "removed": [x["object"] for x in client.since(mark, "InterfacesRemoved")]})
            w.record("busy_message", busy.get("message"))
            w.check_equal("Flush of a map held open answers Busy", busy.get("error"), ERR + "Busy")
            w.check("its message names the holder", who in (busy.get("message") or ""), busy)
            w.check("and the map is still there", path in objs, busy)
            with w.step(f"Flush deferred=true of {name}: returns, the map stays while held"):
                deferred = call(path, MAP_I, "Flush", deferred=Variant("b", True))
                still = path in client.managed_objects()
            mark = client.mark()
        finally:
            with w.step(f"{who} exits"):
                release()
        try:
            client.wait_signals(lambda s: any(x["member"] == "InterfacesRemoved" and x["object"] == path for x in s),
                                since=mark, timeout=self.wait, what=f"{path} removed after its holder exited")
            gone = True
        except TimeoutError:
            gone = False
        objs = client.managed_objects()
        w.record("deferred", {"ok": deferred["ok"], "error": deferred.get("error"),
                              "message": same(deferred.get("message"), name), "on_bus_while_held": still,
                              "gone_after_release": gone, "on_bus": path in objs,
                              "luns": {p: objs[p][LUN_I]["MultipathMap"] if p in objs else None
                                       for p in luns_of(self.held)}})
        w.check("deferred=true returns, the map stays while held, then goes",
                deferred["ok"] and still and gone, deferred)

        # 5. Retire a LUN: its map flushed, then its paths deleted.
        path = maps[self.retired]
        with w.step(f"Flush remove_paths=true of {path}"):
            settle()
            mark = client.mark()
            reply = call(path, MAP_I, "Flush", remove_paths=Variant("b", True))
            objs = client.managed_objects()
        removed = [x["object"] for x in client.since(mark, "InterfacesRemoved")]
        w.record("retire", {"ok": reply["ok"], "error": reply.get("error"), "message": reply.get("message"),
                            "on_bus": [p for p in [path, *luns_of(self.retired)] if p in objs],
                            "removed": sorted(removed), "map_first": removed[:1] == [path],
                            "in_sysfs": [h for h in hosts for d in w.scsi_devices(h)
                                         if d == f"{h}:0:0:{self.retired}"]})
        w.check("remove_paths=true: the map goes first, then its LUN paths",
                reply["ok"] and removed[:1] == [path] and sorted(removed[1:]) == luns_of(self.retired), removed)
        w.checkpoint(FINAL)


SCENARIO = Multipath()

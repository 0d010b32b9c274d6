"""iSCSI multipath: a LIO target on two portals, a new LUN mapped and scanned, one map, a portal cut.

Kernel side (README "multipath and iSCSI"): LIO's iSCSI target on 127.0.0.1 and 192.168.77.1 (a
dummy NIC), RAM-disk LUN 0 mapped into the initiator's ACL and LUN 4 exported (its
``vpd_unit_serial`` set before the export: a LUN without one has no WWID) but not mapped;
open-iscsi's iscsid, discovery and a login to each portal in turn (two ``iscsi_tcp`` hosts, the
first portal's the lower number, with the same WWIDs); multipathd (``find_multipaths strict``,
``user_friendly_names yes``, ``polling_interval 1``: no map until sanbusd asks, quick path checks).
The node settings make a silent portal fail quickly (noop-out 2 s / 2 s, replacement_timeout 5).

The story (``_story``), in both worlds:

* the IscsiSession objects: target name, state LOGGED_IN, portal, tpgt, initiator name, recovery
  timeout, their hosts;
* the SAN admin maps LUN 4; ``Manager.ScanAll luns=[4]`` attaches it on both sessions and nothing
  else; ``CreateAllMultipathMaps wwids=[its WWID]`` answers one map with two paths, healthy;
  then ``wwids=[LUN 0's]`` too, so every path of the sessions is in a map (checkpoint ``mapped``);
* a tc filter drops the traffic to 192.168.77.1: its session FAILED, then FREE after the
  recovery timeout, its devices blocked then transport-offline, multipathd fails the paths: both
  maps "degraded", the cut paths' DmState "failed" (checkpoint ``cut``); the filter goes: the
  session LOGGED_IN again, the paths reinstated, the maps "healthy" (checkpoint ``healed``);
* both maps flushed with ``remove_paths=true``: maps, then their LUN paths, gone (the sessions stay).

Simulated side: two iSCSI hosts logged in to an array's two portals (``[[host]] type = "iscsi"``
with ``portal`` and ``initiator``), LUN 4 masked to nobody at first; the SAN admin's map is
``provision``, the cut ``portal-down 192.168.77.1``, the heal ``portal-up``. Assertions:
test_iscsi_multipath.py; conformance: test_conformance.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import sanview
from sanscenario import INITIAL, Context, Scenario

MAPPED, CUT, HEALED = "mapped", "cut", "healed"

MGR = f"{sanview.ROOT}/Manager"
MGR_I = "org.example.SanStorage.Manager"
MAP_I, SESSION_I, LUN_I = sanview.MAP_I, sanview.SESSION_I, sanview.LUN_I
TARGET_IQN = "iqn.2003-01.org.linux-iscsi.klab:tgt1"  # guestlib.ISCSI_TARGET_IQN
INITIATOR_IQN = "iqn.2004-10.com.example:klab-initiator"  # guestlib.ISCSI_INITIATOR_IQN


def serial(lun: int) -> str:
    """guestlib.IscsiLio.serial: the LUN's vpd_unit_serial."""
    return f"{lun:08x}-1111-2222-3333-444455556666"


def sysfs_wwid(lun: int) -> str:
    """LIO's NAA designator: naa.6001405 + the first 25 hex digits of the serial."""
    return "naa.6001405" + serial(lun).replace("-", "")[:25]


def mpath_wwid(lun: int) -> str:
    """multipath's WWID (udev's ID_SERIAL): "3" + the NAA digits (guestlib.IscsiLio.wwid)."""
    return "3" + sysfs_wwid(lun).removeprefix("naa.")


@dataclass(frozen=True)
class IscsiMultipath(Scenario):
    name: ClassVar[str] = "iscsi_multipath"
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, MAPPED, CUT, HEALED)
    fabric_checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, MAPPED, HEALED)  # "cut": the replay
    story_records: ClassVar[tuple[str, ...]] = ("sessions", "scan", "create", "create_more", "cut",
                                                "healed", "retire")

    portals: tuple[str, ...] = ("127.0.0.1", "192.168.77.1")  # logged in to in this order
    cut_portal: str = "192.168.77.1"
    luns: tuple[int, ...] = (0,)  # mapped at login
    new_lun: int = 4  # exported at setup, mapped by the SAN admin in the story
    lun_mb: int = 8
    recovery_tmo: int = 5  # node.session.timeo.replacement_timeout (guestlib.ISCSI_FAST_NODE)
    vendor: str = "LIO-ORG"
    model: str = "RAMDISK-MCP"
    rev: str = "4.0"
    wait: float = 90.0  # any one wait (the cut path fails in ~10-11 s on TCG)

    # -- the simulated SAN -------------------------------------------------------------------

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        mapped = set(self.luns) | ({self.new_lun} if checkpoint != INITIAL else set())
        # A fabric file cannot say which WWIDs multipathd has mapped; after "mapped" every one is:
        # the same multipathd with find_multipaths no maps them all as it starts.
        policy = "strict" if checkpoint == INITIAL else "no"
        return {
            "multipathd": {"conf": "defaults {\n    user_friendly_names yes\n"
                                   f"    find_multipaths {policy}\n    polling_interval 1\n}}\n"},
            "array": [{
                "name": "lio", "vendor": self.vendor, "model": self.model, "rev": self.rev,
                "iqn": TARGET_IQN, "portals": [f"{p}:3260" for p in self.portals],
                "lun": [{"lun": n, "size": f"{self.lun_mb}M", "wwid": sysfs_wwid(n),
                         "masked_to": [INITIATOR_IQN] if n in mapped else []}
                        for n in sorted({*self.luns, self.new_lun})]}],
            "host": [{"type": "iscsi", "driver": "iscsi_tcp", "initiator": INITIATOR_IQN,
                      "portal": f"{p}:3260", "recovery_tmo": self.recovery_tmo} for p in self.portals],
        }

    def simulate(self, sim: Any) -> None:
        self._story(
            sim,
            provision=lambda n: sim.admin({"command": "provision", "array": "lio", "luns": [n],
                                           "size": f"{self.lun_mb}M", "initiators": [INITIATOR_IQN]}),
            io=None,
            cut=lambda: sim.admin({"command": "portal-down", "address": self.cut_portal}),
            heal=lambda: sim.admin({"command": "portal-up", "address": self.cut_portal}),
            settle=lambda: None)

    # -- the real kernel -----------------------------------------------------------------------

    def setup(self, ctx: Context) -> None:
        import guestlib as g

        target = g.setup_iscsi_target(luns=self.luns, exported=(self.new_lun,), portals=self.portals)
        g.start_iscsid()
        hosts = g.iscsi_login(target, one_by_one=True)
        ctx.set_hosts(hosts)
        sessions = g.iscsi_sessions()
        ctx.check_equal("one session per portal, the first portal's on the lower host",
                        [s["address"] for s in sorted(sessions.values(), key=lambda s: s["host"])],
                        list(self.portals))
        devices = [g.scsi_device_info(h) for host in hosts for h in g.scsi_devices(host)]
        ctx.check_equal("INQUIRY data as described", sorted({(d.vendor, d.model, d.rev) for d in devices}),
                        [(self.vendor, self.model, self.rev)])
        ctx.check_equal("WWIDs as described", {d.hctl: d.wwid for d in devices},
                        {f"{h}:0:0:{n}": sysfs_wwid(n) for h in hosts for n in self.luns})
        blocks = {d.hctl: g.wait_for_block(d.hctl) for d in devices}
        g.settle(60)
        ctx.check_equal("udev's ID_SERIAL (multipath's WWID) as described",
                        {h: g.udev_property(b, "ID_SERIAL") for h, b in blocks.items()},
                        {f"{h}:0:0:{n}": mpath_wwid(n) for h in hosts for n in self.luns})
        g.shared_multipathd()

    def exercise(self, ctx: Context) -> None:
        import guestlib as g

        target = g.setup_iscsi_target()  # the one setup() made
        self._story(ctx, provision=lambda n: target.map_lun(n, self.lun_mb), io=g.send_tur,
                    cut=lambda: g.cut_portal(self.cut_portal), heal=g.restore_portals,
                    settle=lambda: g.settle(60))

    # -- the story, in either world ------------------------------------------------------------

    def _story(self, w: Any, provision: Callable[[int], None], io: Callable[[str], Any] | None,
               cut: Callable[[], None], heal: Callable[[], None], settle: Callable[[], None]) -> None:
        from dbus_fast import Variant

        client = w.client
        objects = client.managed_objects()
        sessions = {o[SESSION_I]["Portal"]: o[SESSION_I] for o in objects.values()
                    if SESSION_I in o and o[SESSION_I]["TargetName"] == TARGET_IQN}
        host_of = {portal.rsplit(":", 1)[0]: int(s["Host"].rsplit("host", 1)[1]) for portal, s in sessions.items()}
        hosts = sorted(host_of.values())
        cut_host = host_of.get(self.cut_portal)
        new_wwid, old_wwid = mpath_wwid(self.new_lun), mpath_wwid(self.luns[0])
        new_map, old_map = sanview.map_path(new_wwid), sanview.map_path(old_wwid)

        def lun(host: int, n: int) -> str:
            return sanview.lun_path(f"{host}:0:0:{n}")

        def attached() -> list[str]:
            return sorted((d for h in hosts for d in w.scsi_devices(h)), key=sanview.hctl_key)

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

        def session_view(objs: dict) -> list[dict[str, Any]]:
            return sorted(({k: v for k, v in o[SESSION_I].items() if k != "Name"}
                           for o in objs.values() if SESSION_I in o and o[SESSION_I]["TargetName"] == TARGET_IQN),
                          key=lambda s: s["Host"])

        def poll(predicate: Callable[[dict], bool], what: str) -> tuple[dict, float | None]:
            """GetManagedObjects until ``predicate`` holds (bounded); the last tree and when."""
            start = time.monotonic()
            while True:
                objs = client.managed_objects()
                if predicate(objs):
                    return objs, round(time.monotonic() - start, 2)
                if time.monotonic() - start > self.wait:
                    w.check(f"within {self.wait:.0f} s: {what}", False, {p: view(objs, p) for p in (new_map, old_map)}
                            | {"sessions": session_view(objs)})
                    return objs, None
                time.sleep(0.3)

        def health(objs: dict, path: str) -> str | None:
            return objs.get(path, {}).get(MAP_I, {}).get("Health")

        def map_luns(objs: dict, path: str) -> list[str]:
            return sorted(p["Lun"] for p in objs.get(path, {}).get(MAP_I, {}).get("Paths", []))

        # 0. The sessions, one per portal, logged in.
        w.check_equal("one IscsiSession per portal", sorted(host_of), sorted(self.portals))
        w.record("sessions", session_view(objects))
        w.check("every session LOGGED_IN", all(s["State"] == "LOGGED_IN" for s in sessions.values()), sessions)

        # 1. The SAN admin maps a LUN; a targeted ScanAll finds it on both sessions, and only it.
        #    LIO queues REPORTED LUNS DATA HAS CHANGED on LUN 0 once per ACL (the initiator's
        #    name), not per session: on the kernel the next command through either session takes
        #    it (a TEST UNIT READY to LUN 0 of the first session here, before the scan: any
        #    command after the scan would raise RescanSuggested again); the simulated SAN sends
        #    it with the provision, to the initiator's first session.
        before = attached()
        host_paths = [sanview.host_path(f"host{h}") for h in hosts]
        with w.step(f"the SAN admin maps LUN {self.new_lun}; its unit attention raises RescanSuggested"):
            mark = client.mark()
            provision(self.new_lun)
            if io is not None:
                for h in hosts:
                    io(f"{h}:0:0:{self.luns[0]}")
            try:
                client.wait_signals(lambda s: any(x["member"] == "PropertiesChanged" and x["object"] == host_paths[0]
                                                  and x["changed"].get("RescanSuggested") for x in s),
                                    since=mark, timeout=30, what="RescanSuggested on the first session's host")
            except TimeoutError:
                pass  # recorded below
            time.sleep(0.5)  # nothing more comes (the other session's LUN 0 has no UA left)
        w.record("suggested", [client.get(p, sanview.HOST_I, "RescanSuggested") for p in host_paths])
        with w.step(f"ScanAll luns=[{self.new_lun}]"):
            reply = call(MGR, MGR_I, "ScanAll", luns=Variant("at", [self.new_lun]))
        found = sorted(reply.get("body", [[]])[0]) if reply["ok"] else []
        w.record("scan", {"ok": reply["ok"], "error": reply.get("error"), "paths": found,
                          "new": sorted(set(attached()) - set(before), key=sanview.hctl_key),
                          "suggested": [client.get(p, sanview.HOST_I, "RescanSuggested") for p in host_paths]})
        w.check_equal("ScanAll answers LUN 4 on both sessions, nothing else", found,
                      sorted(lun(h, self.new_lun) for h in hosts))

        # 2. One map for the new LUN's WWID, two paths, healthy and ready.
        with w.step(f"CreateAllMultipathMaps wwids=[{new_wwid}]"):
            settle()
            reply = call(MGR, MGR_I, "CreateAllMultipathMaps", wwids=Variant("as", [new_wwid]))
            objs, seconds = poll(lambda o: health(o, new_map) == "healthy", "the new map healthy")
        w.record("create", {"ok": reply["ok"], "error": reply.get("error"), "message": reply.get("message"),
                            "maps": reply.get("body", [[]])[0] if reply["ok"] else [], "map": view(objs, new_map),
                            "multipath_map": {p: objs[p][LUN_I]["MultipathMap"] for p in
                                              (lun(h, self.new_lun) for h in hosts) if p in objs}})
        w.record("create_seconds", seconds)
        w.check_equal("it answers the one map", reply.get("body", [[]])[0] if reply["ok"] else reply, [new_map])
        w.check_equal("with the new LUN's two paths", map_luns(objs, new_map),
                      sorted(lun(h, self.new_lun) for h in hosts))

        # 3. LUN 0's map too: every path of the sessions is in a map (multipathd fails a mapped
        #    path and dm says so; a path in no map changes state without any event).
        with w.step(f"CreateAllMultipathMaps wwids=[{old_wwid}]"):
            reply = call(MGR, MGR_I, "CreateAllMultipathMaps", wwids=Variant("as", [old_wwid]))
            objs, seconds = poll(lambda o: health(o, old_map) == "healthy", "LUN 0's map healthy")
        w.record("create_more", {"ok": reply["ok"], "maps": reply.get("body", [[]])[0] if reply["ok"] else reply,
                                 "map": view(objs, old_map), "new_map": view(objs, new_map)})
        w.checkpoint(MAPPED)

        # 4. One portal's traffic dropped: its session fails, its paths fail, both maps degrade.
        mark = client.mark()
        start = time.monotonic()
        with w.step(f"cut the traffic to {self.cut_portal}: its paths fail, the maps degrade"):
            cut()
            objs, seconds = poll(
                lambda o: health(o, new_map) == health(o, old_map) == "degraded"
                and all(s["State"] == "FREE" for s in session_view(o) if s["Host"] == sanview.host_path(f"host{cut_host}")),
                "both maps degraded and the cut session FREE")
        w.record("cut", {"maps": {p: view(objs, p) for p in (new_map, old_map)}, "sessions": session_view(objs),
                         "luns": {p: objs[p][LUN_I]["State"] for p in sorted(objs) if "/luns/" in p
                                  and int(p.rsplit("/", 1)[1].split("_")[0]) in hosts}})
        w.record("cut_seconds", seconds)
        w.record("cut_health_changes", {p: [s["changed"]["Health"] for s in client.since(mark)
                                            if s["member"] == "PropertiesChanged" and s["object"] == p
                                            and "Health" in s["changed"]] for p in (new_map, old_map)})
        w.record("cut_t", round(time.monotonic() - start, 2))
        w.checkpoint(CUT)

        # 5. The filter goes: the session logs in again, the paths are reinstated.
        with w.step(f"let the traffic to {self.cut_portal} through again: healthy"):
            heal()
            objs, seconds = poll(
                lambda o: health(o, new_map) == health(o, old_map) == "healthy"
                and all(s["State"] == "LOGGED_IN" for s in session_view(o))
                and all(o[p][LUN_I]["State"] == "running" for p in o if "/luns/" in p
                        and int(p.rsplit("/", 1)[1].split("_")[0]) in hosts),
                "both maps healthy, every session LOGGED_IN")
        w.record("healed", {"maps": {p: view(objs, p) for p in (new_map, old_map)}, "sessions": session_view(objs)})
        w.record("healed_seconds", seconds)
        w.checkpoint(HEALED)

        # 6. Retire both LUNs: each map flushed, then its paths deleted (the sessions stay).
        retire: dict[str, Any] = {}
        with w.step("Flush remove_paths=true of both maps"):
            settle()
            for path in (new_map, old_map):
                luns = map_luns(client.managed_objects(), path)
                mark = client.mark()
                reply = call(path, MAP_I, "Flush", remove_paths=Variant("b", True))
                objs = client.managed_objects()
                removed = [s["object"] for s in client.since(mark, "InterfacesRemoved")]
                retire[path] = {"ok": reply["ok"], "error": reply.get("error"), "message": reply.get("message"),
                                "on_bus": [p for p in [path, *luns] if p in objs], "removed": sorted(removed),
                                "map_first": bool(removed) and removed[0] == path}
        w.record("retire", {"flushes": retire, "attached": attached(), "sessions": session_view(client.managed_objects())})
        w.check("both maps and their paths are gone", all(r["ok"] and r["on_bus"] == [] for r in retire.values()),
                retire)


SCENARIO = IscsiMultipath()

"""Discover new SAN storage on FC: the SAN admin maps LUNs after boot, the VM admin scans for them.

The story (README "Discovering new SAN storage"): with sanbusd up, the SAN admin maps LUNs 27, 28,
29 and 53 into the initiator's ACL on the LIO target, and also LUN 30, which nobody mentions. The
VM admin calls ``Manager.ScanAll({"luns": [27, 28, 29, 53]})`` as root (through the real polkitd)
and gets back exactly those LUNs' objects, ready to use (BlockDevice set); LUN 30 stays away from
the kernel and the bus. Bad input before that is refused with a named error and attaches nothing.
The four LUNs are deleted again (``Lun.Delete``) and ``sanctl scan --lun 27,28,29,53`` brings them
back and prints them; a wildcard ``ScanAll({})`` then attaches LUN 30.

Along the way: does the kernel raise the unit attention REPORTED LUNS DATA HAS CHANGED (a udev
``change`` with ``SDEV_UA``) when the ACL changes, and does the host's ``RescanSuggested`` follow
it? On this kernel LIO queues the UA on the LUNs the initiator already has, and the initiator
hears it with the next command to one of them: the story records a quiet period without I/O,
then sends LUN 0 a TEST UNIT READY, as multipathd's path checker (or any I/O) would.

The same story (``_story``) runs on the simulated SAN (``simulate``, by test_conformance.py): the
fabric's array has the LUNs, masked to nobody; ``sanbusd-sim provision`` maps them. Kernel side:
the FCoE VN2VN initiator + LIO tcm_fc target of scenarios/fcoe.py (one path per LUN: one initiator
port, one target port). Host-side assertions: test_fc_discover.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import sanview
from sanscenario import INITIAL, Context

from .fcoe import Fcoe

TARGETED = "targeted"  # after ScanAll luns=[27, 28, 29, 53] (then Delete and sanctl scan)
WILDCARD = "wildcard"  # after ScanAll without luns

MGR = f"{sanview.ROOT}/Manager"
MGR_I = "org.example.SanStorage.Manager"
HOST_I = sanview.HOST_I
LUN_I = sanview.LUN_I


@dataclass(frozen=True)
class FcDiscover(Fcoe):
    name: ClassVar[str] = "fc_discover"
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, TARGETED, WILDCARD)
    # Compared with the same story on the simulated SAN (after sanview.normalize_refs).
    story_records: ClassVar[tuple[str, ...]] = (
        "bad_input", "targeted", "delete", "sanctl", "wildcard")

    asked: tuple[int, ...] = (27, 28, 29, 53)  # "the LUNs are 27, 28, 29 and 53"
    decoy: int = 30  # provisioned too, but nobody mentions it
    quiet_seconds: float = 3.0  # how long to watch for a unit attention before any I/O
    ua_timeout: float = 30.0

    @property
    def provisioned(self) -> list[int]:
        return [*self.asked, self.decoy]  # mapped in this order: the decoy last

    # -- the simulated SAN -------------------------------------------------------------------

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        """The array has every volume from the start; the checkpoint says which are mapped (and
        so attached: a fabric file cannot say "mapped but not scanned", the story can)."""
        mapped = {INITIAL: set(), TARGETED: set(self.asked), WILDCARD: set(self.provisioned)}[checkpoint]
        return self.fabric_with({n: n in self.luns or n in mapped for n in (*self.luns, *self.provisioned)})

    def simulate(self, sim: Any) -> None:
        def provision(luns: list[int]) -> None:
            sim.admin({"command": "provision", "array": "lio", "luns": luns,
                       "initiators": [self.initiator_wwpn]})

        self._story(sim, provision, io=None)

    # -- the real kernel -----------------------------------------------------------------------

    def exercise(self, ctx: Context) -> None:
        import guestlib as g

        fc = self._fc

        def provision(luns: list[int]) -> None:
            for n in luns:  # the SAN admin maps each LUN into the initiator's ACL
                fc.map_lun(n, self.lun_mb)

        self._story(ctx, provision, io=g.send_tur)

    # -- the story, in either world ------------------------------------------------------------

    def _story(self, w: Any, provision: Callable[[list[int]], None],
               io: Callable[[str], None] | None) -> None:
        client = w.client
        objects = client.managed_objects()
        (host_path,) = [p for p, o in objects.items()
                        if o.get(sanview.FC_I, {}).get("WWPN") == self.initiator_wwpn]
        host = objects[host_path][HOST_I]["Number"]
        (target_id,) = [r["ScsiTargetId"] for r in objects[host_path][sanview.FC_I]["RemotePorts"]
                        if r["WWPN"] == self.target_wwpn]

        def hctl(n: int) -> str:
            return f"{host}:0:{target_id}:{n}"

        def path(n: int) -> str:
            return sanview.lun_path(hctl(n))

        def suggested() -> bool:
            return client.get(host_path, HOST_I, "RescanSuggested")

        def scan_all(**options: Any) -> dict[str, Any]:
            return client.call_reply(MGR, MGR_I, "ScanAll", "a{sv}", [options])

        from dbus_fast import Variant

        w.record("story", {"host": host, "host_path": host_path, "target_id": target_id,
                           "asked": list(self.asked), "decoy": self.decoy})
        mark = client.mark()
        start = time.monotonic()

        # 1. The SAN admin maps the LUNs. Then: is the unit attention heard without I/O? With it?
        with w.step(f"the SAN admin maps LUNs {self.provisioned} to the initiator"):
            before = w.scsi_devices(host)
            provision(self.provisioned)
            mapped_at = time.monotonic()
        time.sleep(self.quiet_seconds if w.world == "kernel" else 0.5)
        ua: dict[str, Any] = {"t_mapped": mapped_at, "suggested_without_io": suggested(),
                              "luns_without_scan": w.scsi_devices(host)}
        if io is not None:
            with w.step(f"TEST UNIT READY to {hctl(0)} (a command carries the pending unit attention)"):
                ua["t_io"] = time.monotonic()
                io(hctl(0))
        try:
            client.wait_signals(lambda s: any(c["value"] for c in _changes(s, host_path)), since=mark,
                                timeout=self.ua_timeout, what="RescanSuggested to turn true")
        except TimeoutError:
            pass  # recorded below: test_fc_discover.py says what the kernel did
        ua["suggested_after_io"] = suggested()
        ua["signals"] = _changes(client.since(mark), host_path)
        w.record("unit_attention", ua)
        w.check_equal("nothing is attached before a scan", w.scsi_devices(host), before)

        # 2. Bad input: a named error, and nothing attached (a scan would attach mapped LUNs). The
        #    last one reaches the kernel, which refuses it; a refused scan is no scan: the host
        #    still suggests one.
        bad = [
            ("a LUN out of range", {"luns": Variant("at", [27, 70000])}),
            ("no LUNs", {"luns": Variant("at", [])}),
            ("LUNs of the wrong type", {"luns": Variant("as", ["27"])}),
            ("an unknown option", {"lun": Variant("at", [27])}),
            ("a host that does not exist", {"hosts": Variant("ao", [sanview.host_path("host99")])}),
            ("a timeout out of range", {"luns": Variant("at", [27]), "timeout": Variant("u", 0)}),
            # well-formed, but the kernel refuses "3 - -" (channel > max_channel): EINVAL
            ("a channel the kernel refuses", {"channel": Variant("u", 3), "hosts": Variant("ao", [host_path])}),
        ]
        answers = []
        with w.step("bad input is refused and attaches nothing"):
            for what, options in bad:
                reply = scan_all(**options)
                answers.append({"what": what, "ok": reply["ok"], "error": reply.get("error"),
                                "message": reply.get("message")})
            after = w.scsi_devices(host)
        w.record("bad_input", {"answers": answers, "attached": sorted(set(after) - set(before), key=sanview.hctl_key),
                               "suggested": suggested()})
        w.check_equal("bad input attached nothing", after, before)

        # 3. The VM admin's scan: exactly the LUNs asked for, ready to use.
        mark_scan = client.mark()
        t0 = time.monotonic()
        with w.step(f"ScanAll luns={list(self.asked)}: exactly those LUNs, with block devices"):
            reply = scan_all(luns=Variant("at", list(self.asked)))
            now = client.managed_objects()  # right after the answer: the objects must be usable
            ready = {p: {"BlockDevice": now[p][LUN_I]["BlockDevice"], "Size": now[p][LUN_I]["Size"],
                         "Vendor": now[p][LUN_I]["Vendor"], "TargetPortName": now[p][LUN_I]["TargetPortName"]}
                     for p in reply.get("body", [[]])[0] if p in now}
            # has udev finished each new disk (by-id links made) when the answer comes?
            udev = {p: _udev_done(r["BlockDevice"]) for p, r in ready.items()} if w.world == "kernel" else {}
            attached = w.scsi_devices(host)
        w.record("targeted", {
            "ok": reply["ok"], "added": reply.get("body", [None])[0], "error": reply.get("error"),
            "message": reply.get("message"), "ready": ready,
            "attached": attached, "decoy_attached": hctl(self.decoy) in attached,
            "decoy_on_bus": path(self.decoy) in now, "suggested": suggested(),
        })
        w.record("targeted_kernel", {"t0": t0, "seconds": reply["seconds"], "udev_done": udev,
                                     "suggested_changes": _changes(client.since(mark_scan), host_path)})
        w.check_equal("ScanAll answers exactly the LUNs asked for", reply.get("body", [None])[0],
                      [path(n) for n in self.asked])
        w.check("LUN 30 is neither attached nor on the bus",
                hctl(self.decoy) not in attached and path(self.decoy) not in now, attached)

        # 4. Lun.Delete, then sanctl scan --lun brings them back and says so.
        with w.step(f"Lun.Delete of {[hctl(n) for n in self.asked]}"):
            deleted = {}
            for n in self.asked:
                r = client.call_reply(path(n), LUN_I, "Delete", "a{sv}", [{}])
                deleted[path(n)] = {"ok": r["ok"], "error": r.get("error"), "seconds": r["seconds"]}
            left = w.scsi_devices(host)
            on_bus = [p for p in client.managed_objects() if p in deleted]
        w.record("delete", {"answers": {p: {"ok": a["ok"], "error": a["error"]} for p, a in deleted.items()},
                            "attached": left, "on_bus": on_bus})
        w.record("delete_seconds", {p: a["seconds"] for p, a in deleted.items()})
        with w.step("sanctl scan --lun 27,28,29,53 brings them back"):
            out = w.sanctl("scan", "--lun", ",".join(str(n) for n in self.asked))
            attached = w.scsi_devices(host)
        w.record("sanctl", {"rc": out["rc"], "stdout": out["stdout"], "attached": attached})
        w.record("sanctl_run", {"stderr": out["stderr"], "seconds": out["seconds"]})
        w.checkpoint(TARGETED)

        # 5. A wildcard scan attaches the decoy.
        with w.step("ScanAll without luns: LUN 30 appears"):
            reply = scan_all()
            attached = w.scsi_devices(host)
        w.record("wildcard", {"ok": reply["ok"], "added": reply.get("body", [None])[0],
                              "error": reply.get("error"), "attached": attached, "suggested": suggested()})
        w.record("wildcard_seconds", reply["seconds"])
        w.check_equal("the wildcard scan attaches LUN 30", reply.get("body", [None])[0], [path(self.decoy)])
        w.record("story_seconds", round(time.monotonic() - start, 2))
        w.checkpoint(WILDCARD)


def _changes(signals: list[dict], host_path: str) -> list[dict]:
    """RescanSuggested changes of the host, with when they were sent (client clock)."""
    return [{"t": s["t"], "value": s["changed"]["RescanSuggested"]} for s in signals
            if s["member"] == "PropertiesChanged" and s["object"] == host_path
            and "RescanSuggested" in s["changed"]]




SCENARIO = FcDiscover()


def _udev_done(block: str) -> bool:
    import guestlib  # in the guest only: the story also runs on the simulated SAN

    return guestlib.udev_done(block)

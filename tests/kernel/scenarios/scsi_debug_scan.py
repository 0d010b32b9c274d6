"""scsi_debug: targeted and wildcard scans, Lun.Rescan after a capacity change, Lun.Delete, bad input.

Kernel side: ``scsi_debug`` 2 hosts x 2 targets x LUNs 0-3 (as scenarios/scsi_debug.py, in its own
boot). With sanbusd up, ``max_luns`` is raised to 8: LUNs 4-7 now exist on every target, but the
kernel does not attach them by itself. scsi_debug (SPC-4) queues the unit attention REPORTED LUNS
DATA HAS CHANGED on every LUN it has; a TEST UNIT READY to LUN 0 of each target delivers it (as
multipathd's path checker would), and every host's RescanSuggested turns true. Then, through sanbusd, as root:

* bad input (a LUN out of range) and a scan string the kernel refuses (channel 3: EINVAL) give
  their named errors and attach nothing; the refused host still suggests a rescan;
* ``ScanAll({"luns": [5]})`` attaches exactly LUN 5 on every target of every scsi_debug host (one
  "0 T 5" per known target) and clears RescanSuggested;
* ``ScsiHost.Scan({})`` of the second host attaches its LUNs 4, 6 and 7, and nothing on the first;
* ``Lun.Delete`` of one path removes its object and its /sys entry;
* ``virtual_gb`` makes every LUN 1 GiB in the target; the kernel re-reads a capacity only on a
  rescan: ``Lun.Rescan`` of one LUN updates its Size before the call returns, the others keep theirs.

Simulated side: "other" hosts (driver scsi_debug) with the disks of each checkpoint (the simulated
SAN has no admin command that adds disks behind a non-FC host, so there is no story replay).
Host-side assertions: test_scsi_debug_scan.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import sanview
from sanscenario import INITIAL, Context

from .scsi_debug import ScsiDebug

TARGETED = "targeted"  # after ScanAll luns=[5]
FINAL = "final"  # after the host's wildcard scan, a Delete and a Rescan

MGR = f"{sanview.ROOT}/Manager"
MGR_I = "org.example.SanStorage.Manager"


@dataclass(frozen=True)
class ScsiDebugScan(ScsiDebug):
    name: ClassVar[str] = "scsi_debug_scan"
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, TARGETED, FINAL)

    added_hosts: int = 0  # (ScsiDebug's add_host step is not part of this scenario)
    max_luns: int = 8  # echo 8 > /sys/bus/pseudo/drivers/scsi_debug/max_luns
    asked: int = 5  # ScanAll luns=[5]
    wildcard_host: int = 1  # index of the host scanned with ScsiHost.Scan({})
    deleted: tuple[int, int, int] = (1, 1, 7)  # (host index, target, LUN): Lun.Delete
    resized: tuple[int, int, int] = (1, 0, 2)  # (host index, target, LUN): Lun.Rescan
    virtual_gb: int = 1  # echo 1 > .../virtual_gb: every LUN reports 1 GiB

    def disks(self, checkpoint: str) -> dict[int, dict[tuple[int, int], int]]:
        """host index -> {(target, LUN): size in bytes} attached at a checkpoint."""
        small = self.dev_size_mb << 20
        out = {}
        for i in range(self.hosts):
            luns = set(range(self.luns))
            if checkpoint in (TARGETED, FINAL):
                luns.add(self.asked)
            if checkpoint == FINAL and i == self.wildcard_host:
                luns |= set(range(self.max_luns))
            disks = {(t, n): small for t in range(self.targets) for n in luns}
            if checkpoint == FINAL:
                if i == self.deleted[0]:
                    del disks[self.deleted[1:]]
                if i == self.resized[0]:
                    disks[self.resized[1:]] = self.virtual_gb << 30
            out[i] = disks
        return out

    # -- the simulated SAN -------------------------------------------------------------------

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        return {"host": [
            {"type": "other", "driver": "scsi_debug", "disk": [
                {"target": t, "lun": n, "vendor": self.vendor, "model": self.model, "rev": self.rev,
                 "size": f"{size}", "wwid": self.wwid(t, n)}
                for (t, n), size in sorted(disks.items())]}
            for i, disks in sorted(self.disks(checkpoint).items())]}

    # -- the real kernel -----------------------------------------------------------------------

    def exercise(self, ctx: Context) -> None:
        import guestlib as g
        from dbus_fast import Variant
        from guestsan import property_changes

        client = ctx.client
        hosts = list(ctx.hosts)
        host_paths = [sanview.host_path(f"host{h}") for h in hosts]

        def attached() -> list[str]:
            return sorted((d for h in hosts for d in ctx.scsi_devices(h)), key=sanview.hctl_key)

        def suggested() -> list[bool]:
            return [client.get(p, sanview.HOST_I, "RescanSuggested") for p in host_paths]

        def scan_all(**options: Any) -> dict[str, Any]:
            return client.call_reply(MGR, MGR_I, "ScanAll", "a{sv}", [options])

        def changes(mark: int) -> dict[str, list[bool]]:
            signals = client.since(mark)
            return {p: property_changes(signals, p, "RescanSuggested") for p in host_paths}

        # 1. More LUNs behind every target; the kernel attaches none by itself. A TEST UNIT READY
        #    to LUN 0 of each target delivers scsi_debug's unit attention: RescanSuggested on every
        #    host. (Not a read: with vpd_use_hostno=0 scsi_debug puts the ports of host N in ALUA
        #    state N % 3, and scsi_dh_alua fails reads on a standby path with EIO.)
        before = attached()
        mark = client.mark()
        with ctx.step(f"max_luns {self.luns} -> {self.max_luns}, then TEST UNIT READY to LUN 0 of every target"):
            g.write_attr(g.SCSI_DEBUG / "max_luns", str(self.max_luns))
            time.sleep(1)
            quiet = {"attached": attached(), "suggested": suggested()}
            for h in hosts:
                for t in range(self.targets):
                    g.send_tur(f"{h}:0:{t}:0")
            try:
                client.wait_signals(lambda s: all(True in property_changes(s, p, "RescanSuggested")
                                                  for p in host_paths),
                                    since=mark, timeout=30, what="RescanSuggested on every host")
            except TimeoutError:
                pass  # recorded: test_scsi_debug_scan.py says what was expected
        ctx.record("raise", {"before": before, "without_io": quiet, "suggested": suggested(),
                             "changes": changes(mark)})

        # 2. Bad input, and a scan string the kernel refuses: named errors, nothing attached.
        first = sanview.host_path(f"host{hosts[0]}")
        answers = {}
        with ctx.step("bad input and a refused scan attach nothing"):
            answers["lun out of range"] = scan_all(luns=Variant("at", [self.asked, 70000]))
            answers["unknown option"] = scan_all(lun=Variant("at", [self.asked]))
            answers["channel the kernel refuses"] = scan_all(channel=Variant("u", 3),
                                                             hosts=Variant("ao", [first]))
        ctx.record("bad_input", {"answers": answers, "attached": attached(), "suggested": suggested()})

        # 3. Exactly LUN 5 on every target of every host.
        mark = client.mark()
        with ctx.step(f"ScanAll luns=[{self.asked}]: LUN {self.asked} on every target of every host"):
            reply = scan_all(luns=Variant("at", [self.asked]))
            now = client.managed_objects()
        ctx.record("targeted", {
            "reply": reply, "attached": attached(), "suggested": suggested(), "changes": changes(mark),
            "ready": {p: now[p][sanview.LUN_I]["BlockDevice"] for p in reply.get("body", [[]])[0] if p in now}})
        ctx.checkpoint(TARGETED)

        # 4. A wildcard scan of one host: the rest of its LUNs, nothing elsewhere.
        host = hosts[self.wildcard_host]
        with ctx.step(f"ScsiHost.Scan of host{host}: its other LUNs"):
            reply = client.call_reply(sanview.host_path(f"host{host}"), sanview.HOST_I, "Scan", "a{sv}", [{}])
            now = client.managed_objects()
            # udev has finished every new disk when the answer comes (sanbusd waits for it)
            udev = {p: g.udev_done(now[p][sanview.LUN_I]["BlockDevice"])
                    for p in reply.get("body", [[]])[0] if p in now}
        ctx.record("host_scan", {"host": host, "reply": reply, "attached": attached(), "udev_done": udev})

        # 5. Lun.Delete of one path.
        i, t, n = self.deleted
        victim = f"{hosts[i]}:0:{t}:{n}"
        with ctx.step(f"Lun.Delete of {victim}"):
            reply = client.call_reply(sanview.lun_path(victim), sanview.LUN_I, "Delete", "a{sv}", [{}])
            objects = client.managed_objects()
        ctx.record("delete", {"hctl": victim, "reply": reply, "on_bus": sanview.lun_path(victim) in objects,
                              "in_sysfs": victim in ctx.scsi_devices(hosts[i]), "attached": attached()})

        # 6. The LUNs grow; Lun.Rescan of one re-reads its capacity.
        i, t, n = self.resized
        grown = f"{hosts[i]}:0:{t}:{n}"
        path = sanview.lun_path(grown)
        mark = client.mark()
        with ctx.step(f"virtual_gb={self.virtual_gb}, then Lun.Rescan of {grown}"):
            g.write_attr(g.SCSI_DEBUG / "virtual_gb", str(self.virtual_gb))
            size_before = client.get(path, sanview.LUN_I, "Size")
            reply = client.call_reply(path, sanview.LUN_I, "Rescan", "a{sv}", [{}])
            size_after = client.get(path, sanview.LUN_I, "Size")  # "updated before the call returns"
        sizes = {o[sanview.LUN_I]["HCTL"]: o[sanview.LUN_I]["Size"] for p, o in client.managed_objects().items()
                 if "/luns/" in p and int(o[sanview.LUN_I]["HCTL"].split(":")[0]) in hosts}
        ctx.record("rescan", {"hctl": grown, "reply": reply, "size_before": size_before, "size_after": size_after,
                              "sysfs_size": g.scsi_device_info(grown).size_bytes, "sizes": sizes,
                              "size_changes": property_changes(client.since(mark), path, "Size")})
        ctx.checkpoint(FINAL)


SCENARIO = ScsiDebugScan()

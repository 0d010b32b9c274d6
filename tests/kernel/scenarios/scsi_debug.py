"""scsi_debug: hosts x targets x LUNs, the same WWIDs on every host; a host added, a LUN deleted.

Kernel side: ``modprobe scsi_debug add_host=2 num_tgts=2 max_luns=4 vpd_use_hostno=0`` (udevd
already running); with sanbusd up, ``add_host`` (a new HBA appears) and ``device/delete`` of one
LUN. Each must reach a D-Bus client as InterfacesAdded/InterfacesRemoved, driven by the real udev
events. Simulated side: the same hosts as "other" hosts with [[host.disk]] entries.
Host-side assertions: test_scsi_debug.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import sanview
from sanscenario import INITIAL, Context, Scenario

FINAL = "final"


@dataclass(frozen=True)
class ScsiDebug(Scenario):
    name: ClassVar[str] = "scsi_debug"
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, FINAL)

    hosts: int = 2
    targets: int = 2
    luns: int = 4
    dev_size_mb: int = 8
    added_hosts: int = 1  # exercise: echo N > /sys/bus/pseudo/drivers/scsi_debug/add_host
    deleted: tuple[int, int, int] = (0, 0, 1)  # exercise: (host index, target, LUN) deleted
    # INQUIRY data of scsi_debug in Debian 12's kernel (6.1): SDEBUG_VERSION "0191". A newer
    # kernel changing it fails the "INQUIRY data" check in setup(), which says so.
    vendor: str = "Linux"
    model: str = "scsi_debug"
    rev: str = "0191"

    def wwid(self, target: int, lun: int) -> str:
        """scsi_debug's NAA-3 LU id with vpd_use_hostno=0: 0x3333333 then 2000 + 1000*target + lun."""
        return f"naa.3333333{2000 + 1000 * target + lun:09x}"

    def lun_ids(self) -> list[tuple[int, int]]:
        return [(t, lun) for t in range(self.targets) for lun in range(self.luns)]

    # -- the simulated SAN -------------------------------------------------------------------

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        hosts = self.hosts + (self.added_hosts if checkpoint == FINAL else 0)
        deleted = {self.deleted} if checkpoint == FINAL else set()
        return {"host": [
            {"type": "other", "driver": "scsi_debug", "disk": [
                {"target": t, "lun": lun, "vendor": self.vendor, "model": self.model, "rev": self.rev,
                 "size": f"{self.dev_size_mb}M", "wwid": self.wwid(t, lun)}
                for t, lun in self.lun_ids() if (i, t, lun) not in deleted]}
            for i in range(hosts)]}

    # -- the real kernel -----------------------------------------------------------------------

    def setup(self, ctx: Context) -> None:
        import guestlib as g

        hosts = g.load_scsi_debug(add_host=self.hosts, num_tgts=self.targets, max_luns=self.luns,
                                  dev_size_mb=self.dev_size_mb, vpd_use_hostno=0)
        ctx.set_hosts(hosts)
        devices = [g.scsi_device_info(h) for host in hosts for h in g.scsi_devices(host)]
        ctx.check_equal("INQUIRY data (vendor, model, rev) as described",
                        sorted({(d.vendor, d.model, d.rev) for d in devices}),
                        [(self.vendor, self.model, self.rev)])
        ctx.check_equal("WWIDs as described (vpd_use_hostno=0: one per T:L, the same on every host)",
                        {d.hctl: d.wwid for d in devices},
                        {f"{h}:0:{t}:{lun}": self.wwid(t, lun) for h in hosts for t, lun in self.lun_ids()})

    def exercise(self, ctx: Context) -> None:
        import guestlib as g
        from guestsan import objects_added, objects_removed

        client = ctx.client
        first = list(ctx.hosts)

        # A new HBA: its host and all its LUNs appear as objects.
        mark = client.mark()
        start = time.monotonic()
        with ctx.step("add_host: host and LUN objects appear"):
            new = g.add_host(self.added_hosts)
            wanted = {sanview.host_path(f"host{n}") for n in new} | {
                sanview.lun_path(f"{n}:0:{t}:{lun}") for n in new for t, lun in self.lun_ids()}
            signals = client.wait_signals(lambda s: objects_added(s, wanted), since=mark, timeout=60,
                                          what="InterfacesAdded for the new host and its LUNs")
        latency = max(s["t"] for s in signals if s.get("object") in wanted) - start
        ctx.set_hosts(first + new)
        converged = ctx.wait_converged()
        ctx.record("add_host", {"hosts": new, "wanted": sorted(wanted), "t0": start, "seconds": round(latency, 2),
                                "converged_seconds": converged, "signals": client.since(mark)})

        # Real /dev nodes and udev's links resolve to the LUN objects.
        ctx.record("resolve", self._resolve(ctx))

        # One LUN deleted: its object goes.
        host, target, lun = self.deleted
        victim = f"{first[host]}:0:{target}:{lun}"
        mark = client.mark()
        start = time.monotonic()
        with ctx.step(f"device/delete of {victim}: its object goes"):
            g.delete_lun(victim)
            signals = client.wait_signals(lambda s: objects_removed(s, {sanview.lun_path(victim)}),
                                          since=mark, timeout=60, what=f"InterfacesRemoved for {victim}")
        latency = next(s["t"] for s in signals if s["member"] == "InterfacesRemoved"
                       and s["object"] == sanview.lun_path(victim)) - start
        converged = ctx.wait_converged()
        ctx.record("delete", {"hctl": victim, "path": sanview.lun_path(victim), "t0": start,
                              "seconds": round(latency, 2),
                              "converged_seconds": converged, "signals": client.since(mark)})
        ctx.checkpoint(FINAL)

    def _resolve(self, ctx: Context) -> dict[str, Any]:
        """Manager.ResolveDevice with a /dev/sdX node, a udev by-id link and a WWID."""
        import os

        import guestlib as g
        from dbus_fast import Variant

        def resolve(**spec: str) -> list[str]:
            devspec = {k: Variant("s", v) for k, v in spec.items()}
            return ctx.client.call(f"{sanview.ROOT}/Manager", "org.example.SanStorage.Manager",
                                   "ResolveDevice", "a{sv}a{sv}", [devspec, {}])[0]

        hctl = f"{ctx.hosts[0]}:0:0:0"
        info = g.scsi_device_info(hctl)
        by_id = f"/dev/disk/by-id/wwn-0x{info.wwid.removeprefix('naa.')}"  # udev's 60-persistent-storage
        return {
            "hctl": hctl, "block": info.block, "wwid": info.wwid, "by_id": by_id,
            "by_id_target": os.path.realpath(by_id) if os.path.exists(by_id) else None,
            "by_dev": resolve(path=f"/dev/{info.block}"),
            "by_link": resolve(path=by_id),
            "by_wwid": resolve(wwid=info.wwid),
        }


SCENARIO = ScsiDebug()

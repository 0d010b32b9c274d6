"""FC: an FCoE VN2VN initiator port logged in to a LIO tcm_fc target port serving RAM-disk LUNs.

Kernel side (two NICs on one QEMU hub): guestlib.setup_fcoe_vn2vn. The initiator's fc_host has
the WWNs libfcoe derives from its MAC, port id 0x00000a (VN2VN takes it from the MAC), NPIV limits;
its remote port is the LIO port (roles "FCP Target, FCP Initiator"), LUN 0 behind it. With sanbusd
up, the "SAN admin" maps LUN 1 and the host scans: a new LUN object; then LUN 1 is unmapped and
deleted: it goes, and a new scan does not bring it back.

Simulated side: one fc host (driver fcoe) on fabric "vn2vn" and one array with the LIO port and
LUNs. The LIO target port is also an fcoe fc_host of this guest (it logs in to the initiator as
an "FCP Initiator" rport); it is on the bus like every host, but it is a lab artefact (on a real
SAN the target port is in the array), so it is not one of this scenario's hosts.
Host-side assertions: test_fcoe.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import sanview
from sanscenario import INITIAL, Context, Scenario

FINAL = "final"
INITIATOR_MAC = "52:54:00:00:00:0a"  # lab.nic_mac(0) = guestlib.INITIATOR_MAC
TARGET_MAC = "52:54:00:00:00:0b"  # lab.nic_mac(1) = guestlib.TARGET_MAC


def mac_wwn(mac: str, prefix: str) -> str:
    """libfcoe's WWNs from a MAC (fcoe_wwn_from_mac): 1000<MAC> node, 2000<MAC> port."""
    return prefix + mac.replace(":", "").lower()


def vn2vn_port_id(mac: str) -> str:
    """A VN2VN port's FC address: the low 24 bits of its MAC (fcoe_ctlr_vn_start)."""
    return f"0x{int(mac.replace(':', ''), 16) & 0xFFFFFF:06x}"


@dataclass(frozen=True)
class Fcoe(Scenario):
    name: ClassVar[str] = "fcoe"
    nics: ClassVar[int] = 2
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, FINAL)

    luns: tuple[int, ...] = (0,)  # mapped to the initiator before it logs in
    mapped_later: int = 1  # exercise: mapped, found by a scan; then unmapped and deleted
    lun_mb: int = 8
    # What LIO answers for an rd_mcp backstore (target_core_spc.c); no VPD page 0x83 WWID (the
    # kernel's device/wwid read fails with ENXIO).
    vendor: str = "LIO-ORG"
    model: str = "RAMDISK-MCP"
    rev: str = "4.0"
    target_roles: tuple[str, ...] = ("FCP Target", "FCP Initiator")  # tcm_fc's port does both
    # libfcoe/fcoe facts (checked against sysfs by test_fcoe.py)
    max_npiv_vports: int = 65535
    speed: str = "unknown"

    @property
    def initiator_wwpn(self) -> str:
        return mac_wwn(INITIATOR_MAC, "2000")

    @property
    def initiator_wwnn(self) -> str:
        return mac_wwn(INITIATOR_MAC, "1000")

    @property
    def target_wwpn(self) -> str:
        return mac_wwn(TARGET_MAC, "2000")

    @property
    def target_wwnn(self) -> str:
        return mac_wwn(TARGET_MAC, "1000")

    # -- the simulated SAN -------------------------------------------------------------------

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        luns = sorted({*self.luns, *((self.mapped_later,) if checkpoint == FINAL else ())})
        return self.fabric_with({n: True for n in luns})

    def fabric_with(self, luns: dict[int, bool]) -> dict[str, Any]:
        """The initiator, the LIO port as an array port, and LUNs: LUN n exists on the array and
        is masked to the initiator if luns[n] (a LUN masked to nobody is a volume the SAN admin
        has not mapped yet: ``sanbusd-sim provision`` maps it)."""
        return {
            # VN2VN has no switch: fabric_name reads 0x0.
            "switch": {"vn2vn": {"npiv": True, "wwn": "0"}},
            "host": [{
                "type": "fc", "driver": "fcoe", "wwnn": self.initiator_wwnn, "wwpn": self.initiator_wwpn,
                "fabric": "vn2vn", "port_id": vn2vn_port_id(INITIATOR_MAC), "speed": self.speed,
                "max_npiv_vports": self.max_npiv_vports,
            }],
            "array": [{
                "name": "lio", "vendor": self.vendor, "model": self.model, "rev": self.rev,
                "wwnn": self.target_wwnn,
                "port": [{"wwpn": self.target_wwpn, "fabric": "vn2vn", "port_id": vn2vn_port_id(TARGET_MAC),
                          "roles": list(self.target_roles)}],
                "lun": [{"lun": n, "size": f"{self.lun_mb}M", "wwid": "",
                         "masked_to": [self.initiator_wwpn] if masked else []}
                        for n, masked in sorted(luns.items())],
            }],
        }

    # -- the real kernel -----------------------------------------------------------------------

    def setup(self, ctx: Context) -> None:
        import guestlib as g

        fc = g.setup_fcoe_vn2vn(luns=self.luns)
        fc.lun_mb = self.lun_mb
        ctx.set_hosts([fc.initiator_host])
        ctx.record("fcoe", {"initiator_host": fc.initiator_host, "target_host": fc.target_host,
                            "initiator_wwpn": fc.initiator_wwpn, "target_wwpn": fc.target_wwpn,
                            "initiator_ifname": fc.initiator_ifname, "target_ifname": fc.target_ifname})
        ctx.check_equal("initiator WWPN as described", fc.initiator_wwpn, "0x" + self.initiator_wwpn)
        object.__setattr__(self, "_fc", fc)  # the live handle, for exercise() (not a field)

    def exercise(self, ctx: Context) -> None:
        import guestlib as g
        from guestsan import objects_added, objects_removed

        fc = self._fc
        client = ctx.client
        host = fc.initiator_host
        (rport,) = [r for r in g.fc_rports(host).values() if r["port_name"] == "0x" + self.target_wwpn]
        lun = f"{host}:0:{rport['scsi_target_id']}:{self.mapped_later}"
        path = sanview.lun_path(lun)

        # The SAN admin maps a LUN; the host scans; the LUN object appears.
        mark = client.mark()
        start = time.monotonic()
        with ctx.step(f"map LUN {self.mapped_later}, scan '- - -': {lun} appears"):
            fc.map_lun(self.mapped_later, self.lun_mb)
            g.scan_host(host)
            signals = client.wait_signals(lambda s: objects_added(s, {path}), since=mark, timeout=60,
                                          what=f"InterfacesAdded for {lun}")
        latency = max(s["t"] for s in signals if s.get("object") == path) - start
        converged = ctx.wait_converged()
        ctx.record("map_scan", {"hctl": lun, "path": path, "host": host, "t0": start, "seconds": round(latency, 2),
                                "converged_seconds": converged, "signals": client.since(mark)})
        ctx.checkpoint(FINAL)

        # Unmapped and deleted, it goes; the next scan does not bring it back.
        mark = client.mark()
        start = time.monotonic()
        with ctx.step(f"unmap LUN {self.mapped_later}, delete {lun}: its object goes"):
            fc.unmap_lun(self.mapped_later)
            g.delete_lun(lun)
            client.wait_signals(lambda s: objects_removed(s, {path}), since=mark, timeout=60,
                                what=f"InterfacesRemoved for {lun}")
        scanned = client.mark()
        with ctx.step("scan '- - -' again: nothing new"):
            g.scan_host(host)
            ctx.wait_converged()
        ctx.record("unmap_delete_scan", {"hctl": lun, "path": path, "t0": start, "signals": client.since(mark),
                                         "after_scan": client.since(scanned),
                                         "luns": g.scsi_devices(host)})


SCENARIO = Fcoe()

"""In-guest scenario: a real fc_host and rport through FCoE VN2VN, LUNs served by LIO (tcm_fc).

Needs two NICs (lab.boot(..., nics=2)). Records the initiator's fc_host attributes, its rport to
the target and LUN 0; then the "SAN admin" maps LUN 1, a wildcard scan must find it; unmapping it
and deleting the device must keep it away on the next scan.
Host side: tests/kernel/test_lab_smoke.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # guestlib, when run by hand

import guestlib as g  # noqa: E402


def body(report: g.Report) -> None:
    with report.step("FCoE VN2VN initiator + LIO target up"):
        fc = g.setup_fcoe_vn2vn(luns=(0,))
    host = fc.initiator_host
    report.record("fcoe", {
        "initiator_host": host, "initiator_wwpn": fc.initiator_wwpn, "initiator_wwnn": fc.initiator_wwnn,
        "target_host": fc.target_host, "target_wwpn": fc.target_wwpn,
        "initiator_ifname": fc.initiator_ifname, "target_ifname": fc.target_ifname,
    })

    attrs = g.fc_host_attrs(host)
    report.record("fc_host", attrs)
    report.check_equal("fc_host port_state", attrs["port_state"], "Online")
    report.check_equal("fc_host port_name", attrs["port_name"], fc.initiator_wwpn)
    report.check_equal("fc_host node_name", attrs["node_name"], fc.initiator_wwnn)
    report.check("fc_host supports NPIV", int(attrs["max_npiv_vports"] or 0) > 0, attrs["max_npiv_vports"])
    report.check_equal("fc_host npiv_vports_inuse", attrs["npiv_vports_inuse"], "0")

    rports = g.fc_rports(host)
    report.record("rports", rports)
    to_target = [r for r in rports.values() if r["port_name"] == fc.target_wwpn]
    report.check_equal("one rport to the target", len(to_target), 1)
    if not to_target:
        return
    rport = to_target[0]
    report.check("rport has the FCP Target role", "FCP Target" in (rport["roles"] or ""), rport["roles"])
    report.check_equal("rport port_state", rport["port_state"], "Online")
    target_id = rport["scsi_target_id"]
    report.check("rport has a SCSI target id", target_id is not None and int(target_id) >= 0, target_id)

    lun0, lun1 = f"{host}:0:{target_id}:0", f"{host}:0:{target_id}:1"
    report.record("luns_before", [vars(g.scsi_device_info(h)) for h in g.scsi_devices(host)])
    report.check_equal("LUNs before mapping LUN 1", g.scsi_devices(host), [lun0])

    with report.step("map LUN 1 and scan '- - -'"):
        fc.map_lun(1)
        g.scan_host(host)
    report.check_equal("LUNs after mapping LUN 1", g.scsi_devices(host), [lun0, lun1])
    if lun1 in g.scsi_devices(host):
        with report.step("LUN 1 gets a block device"):
            g.wait_for_block(lun1)
    report.record("luns_after_map", [vars(g.scsi_device_info(h)) for h in g.scsi_devices(host)])

    with report.step("unmap LUN 1, delete it, scan again"):
        fc.unmap_lun(1)
        g.delete_lun(lun1)
        g.scan_host(host)
    report.check_equal("LUNs after unmapping LUN 1", g.scsi_devices(host), [lun0])


if __name__ == "__main__":
    g.run_scenario("smoke_fcoe", body)

"""In-guest scenario: the SCSI midlayer with scsi_debug (2 hosts x 2 targets x 4 LUNs).

Records what the kernel shows -- /sys/class/scsi_host, every scsi_device (H:C:T:L, WWID, block
device, size) and `lsscsi -t -i` -- then exercises guestlib's add_host/delete_lun.
Host side: tests/kernel/test_lab_smoke.py.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # guestlib, when run by hand

import guestlib as g  # noqa: E402

HOSTS, TARGETS, LUNS = 2, 2, 4


def body(report: g.Report) -> None:
    with report.step("start udevd"):
        g.start_udevd()
    with report.step("load scsi_debug"):
        hosts = g.load_scsi_debug(add_host=HOSTS, num_tgts=TARGETS, max_luns=LUNS)
    with report.step("udev settle"):
        g.settle(timeout=120)

    report.record("scsi_debug_hosts", hosts)
    report.record("scsi_hosts", {f"host{h}": g.scsi_host_info(h) for h in g.scsi_hosts()})
    devices = [g.scsi_device_info(hctl) for hctl in g.scsi_devices()]
    report.record("scsi_devices", [vars(d) for d in devices])
    # The -i column comes from /dev/disk/by-id links, which the two paths of a LUN compete for,
    # so it legitimately varies between boots: record it, don't compare it.
    report.record("lsscsi", g.run(["lsscsi", "-t", "-i"]).stdout)

    report.check_equal("scsi_debug host count", len(hosts), HOSTS)
    report.check_equal("scsi_device count", len(devices), HOSTS * TARGETS * LUNS)
    report.check("every LUN has a block device",
                 all(d.block and d.size_bytes for d in devices),
                 [d.hctl for d in devices if not (d.block and d.size_bytes)])
    check_paths_share_wwids(report, devices)

    with report.step("add_host adds a host with all its LUNs"):
        (new_host,) = g.add_host()
        report.record("added_host", new_host)
        report.check_equal("LUNs on the added host", len(g.scsi_devices(new_host)), TARGETS * LUNS)

    victim = f"{hosts[0]}:0:0:1"
    with report.step(f"delete_lun {victim}"):
        g.delete_lun(victim)
    report.check(f"{victim} is gone", victim not in g.scsi_devices())


def check_paths_share_wwids(report: g.Report, devices: list[g.ScsiDevice]) -> None:
    """With vpd_use_hostno=0, H:C:T:L on each host is one more path to the same LUN."""
    wwids_by_lun: dict[tuple[int, int], set[str | None]] = defaultdict(set)
    for d in devices:
        _, _, target, lun = g.hctl_key(d.hctl)
        wwids_by_lun[(target, lun)].add(d.wwid)
    report.check("same WWID for T:L on every host",
                 all(len(w) == 1 and None not in w for w in wwids_by_lun.values()),
                 {f"{t}:{lun}": sorted(map(str, w)) for (t, lun), w in wwids_by_lun.items()})
    distinct = {next(iter(w)) for w in wwids_by_lun.values()}
    report.check_equal("distinct WWIDs", len(distinct), TARGETS * LUNS)


if __name__ == "__main__":
    g.run_scenario("smoke_scsi_debug", body)

"""The kernel scenarios (see sanscenario.py) and how they are grouped into boots.

Adding a scenario: write ``scenarios/<name>.py`` with a ``SCENARIO`` (a sanscenario.Scenario
dataclass: setup, exercise, fabric), add it to ``ALL`` and to a group below, and write
``test_<name>.py`` with the assertions. Scenarios in one group share one boot, and so the kernel:
scsi_debug can be loaded by only one of them, and the object tree holds every scenario's hosts
(each scenario knows its own). A scenario that needs a clean kernel gets a group of its own, at
the price of a boot (about 10 s of host time plus Python and sanbusd start-up in the guest).
"""

from __future__ import annotations

from sanscenario import Scenario

from . import fc_discover, fcoe, iscsi_multipath, multipath, npiv, scsi_debug, scsi_debug_scan

ALL: dict[str, Scenario] = {s.name: s for s in (scsi_debug.SCENARIO, fcoe.SCENARIO, npiv.SCENARIO,
                                                 fc_discover.SCENARIO, scsi_debug_scan.SCENARIO,
                                                 multipath.SCENARIO, iscsi_multipath.SCENARIO)}

# group name -> scenario names, set up in this order and exercised in this order
GROUPS: dict[str, tuple[str, ...]] = {
    # npiv shares fcoe's FCoE initiator and LIO target (guestlib sets them up once) and runs
    # last: its vHBAs come and go on the initiator after fcoe's LUN story is done, and its second
    # sanbusd and libvirtd (the group starts libvirtd for it) touch nothing of the others.
    "san": ("scsi_debug", "fcoe", "npiv"),
    # "Discover new SAN storage" needs a kernel whose LUNs only the story attaches: FCoE + LIO and
    # scsi_debug can be set up once per boot, and a wildcard scan would bring back what "san"
    # deleted. fc_discover runs first: its wildcard ScanAll also scans the scsi_debug hosts, which
    # must have nothing new until scsi_debug_scan raises max_luns.
    "discover": ("fc_discover", "scsi_debug_scan"),
    # dm-multipath with multipathd (one for the boot, guestlib.shared_multipathd): scsi_debug's
    # two hosts are set up first (host0/host1: ALUA active states; host 2 would be standby), then
    # LIO iSCSI on two portals. iscsi_multipath is exercised first (exercise_order) and retires
    # its LUNs at its end, so multipath's CreateAllMultipathMaps({}) sees scsi_debug's only.
    "mpath": ("multipath", "iscsi_multipath"),
}


def group_of(scenario: str) -> str:
    return next(group for group, names in GROUPS.items() if scenario in names)


def group_nics(group: str) -> int:
    return max(ALL[name].nics for name in GROUPS[group])

"""Which records a uevent makes stale, and what happens when udev events are lost."""

import errno

from sanbusd.model.ids import HCTL
from sanbusd.backend.udev import UdevMonitor
from sanbusd.backend.uevent import UEvent, dirty_from_event

DEV = "/devices/pci0000:00/0000:05:00.0/host1"


def test_events_name_the_records_they_touch():
    lun = f"{DEV}/rport-1:0-0/target1:0:0/1:0:0:5"
    assert dirty_from_event(UEvent("add", "scsi", lun, "scsi_device")).luns == {HCTL(1, 0, 0, 5)}
    assert dirty_from_event(UEvent("add", "scsi_host", f"{DEV}/scsi_host/host1")).hosts == {1}
    d = dirty_from_event(UEvent("add", "fc_vports", f"{DEV}/vport-1:0-0/fc_vports/vport-1:0-0"))
    assert d.vports == {"vport-1:0-0"} and d.hosts == {1}
    assert dirty_from_event(UEvent("change", "fc_remote_ports",
                                   f"{DEV}/rport-1:0-0/fc_remote_ports/rport-1:0-0")).rports == {
        "rport-1:0-0"}
    # a block device's remove event still names its LUN through the devpath
    d = dirty_from_event(UEvent("remove", "block", f"{lun}/block/sdc", "disk"))
    assert d.luns == {HCTL(1, 0, 0, 5)}
    assert dirty_from_event(UEvent("change", "block", "/devices/virtual/block/dm-3",
                                   "disk")).maps == {"dm-3"}
    # partitions and targets change nothing we publish
    assert not dirty_from_event(UEvent("add", "block", f"{lun}/block/sdc/sdc1", "partition")).luns
    assert not dirty_from_event(UEvent("add", "scsi", f"{DEV}/rport-1:0-0/target1:0:0",
                                       "scsi_target"))


class FakeMonitor:
    def __init__(self, items):
        self.items = list(items)

    def poll(self, timeout=None):
        item = self.items.pop(0) if self.items else None
        if isinstance(item, Exception):
            raise item
        return item


def test_a_netlink_overflow_asks_for_a_full_reconcile():
    calls = {"events": [], "overflow": 0}
    mon = UdevMonitor.__new__(UdevMonitor)
    mon.on_events = calls["events"].append
    mon.on_overflow = lambda: calls.__setitem__("overflow", calls["overflow"] + 1)
    mon.monitor = FakeMonitor([OSError(errno.ENOBUFS, "No buffer space available")])
    mon._readable()
    assert calls["overflow"] == 1 and calls["events"] == []

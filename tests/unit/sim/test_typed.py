"""The simulated SAN's typed calls (the Backend's) refuse what the kernel refuses, with its errno,
and are recorded as the sysfs writes the kernel adapter makes for them."""

import errno

import pytest

from sanbusd.backend.sysfs import SysfsReader
from sanbusd.kinds import read_all
from sanbusd.model.ids import HCTL
from sanbusd.sim.fabric import load_fabric, parse_fabric
from sanbusd.sim.san import SimulatedSan

from sanbus_testing import DEMO_FABRIC

A1 = "10000090fa1b2c01"


def records(sim):
    return [(w.path, w.data, w.result) for w in sim.writes]


def errno_of(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def test_a_scan_is_recorded_as_the_write_the_kernel_adapter_makes(sim):
    sim.provision("netapp1", 27, 1 << 30, {A1})
    sim.scan_host(1, 0, 0, 27)
    sim.scan_host(1, None, None, None)
    assert records(sim) == [("class/scsi_host/host1/scan", "0 0 27", "ok"),
                            ("class/scsi_host/host1/scan", "- - -", "ok")]
    assert HCTL(1, 0, 0, 27) in read_all(SysfsReader(sim.root)).luns


@pytest.mark.parametrize("ctl", [(3, 0, 0), (0, 256, 0), (0, 0, 65536), (0, -1, 0), (-1, 0, 0)])
def test_scan_values_out_of_range_are_einval(sim, ctl):
    assert errno_of(sim.scan_host, 1, *ctl) == errno.EINVAL
    path, data, result = records(sim)[-1]
    assert (path, result) == ("class/scsi_host/host1/scan", "EINVAL")
    assert data == " ".join(str(v) for v in ctl)


def test_the_highest_lun_and_target_are_allowed_as_the_kernel_allows_them(sim):
    sim.scan_host(1, 0, 255, 65535)             # FC: lun == max_lun is fine (fc_user_scan)
    sim.scan_host(0, 0, 255, 65534)             # SAS: lun < max_lun
    assert errno_of(sim.scan_host, 0, 0, 0, 65535) == errno.EINVAL
    assert [w.result for w in sim.writes] == ["ok", "ok", "EINVAL"]


def test_typed_and_raw_writes_agree(sim, tmp_path):
    raw = SimulatedSan(load_fabric(DEMO_FABRIC), tmp_path / "raw" / "sys")
    raw.fabric.scan_delay = 0
    raw.build()
    for ctl, text in (((0, 0, 27), "0 0 27"), ((None, 0, None), "- 0 -"), ((1, 0, 0), "1 0 0")):
        for s, call in ((sim, lambda: sim.scan_host(1, *ctl)),
                        (raw, lambda: raw.write("class/scsi_host/host1/scan", text))):
            try:
                call()
            except OSError:
                pass
    assert records(sim) == records(raw)


def test_a_host_that_is_not_there_is_enoent(sim):
    assert errno_of(sim.scan_host, 99, None, None, None) == errno.ENOENT
    assert records(sim) == [("class/scsi_host/host99/scan", "- - -", "ENOENT")]


def test_delete_and_rescan(sim):
    sim.delete_lun(HCTL(1, 0, 0, 2))
    assert errno_of(sim.delete_lun, HCTL(1, 0, 0, 2)) == errno.ENOENT
    assert errno_of(sim.rescan_lun, HCTL(1, 0, 0, 2)) == errno.ENOENT
    sim.resize("netapp1", 1, 300 << 30)
    sim.rescan_lun(HCTL(1, 0, 0, 1))
    assert records(sim) == [("class/scsi_device/1:0:0:2/device/delete", "1", "ok"),
                            ("class/scsi_device/1:0:0:2/device/delete", "1", "ENOENT"),
                            ("class/scsi_device/1:0:0:2/device/rescan", "1", "ENOENT"),
                            ("class/scsi_device/1:0:0:1/device/rescan", "1", "ok")]
    inv = read_all(SysfsReader(sim.root))
    assert HCTL(1, 0, 0, 2) not in inv.luns and inv.luns[HCTL(1, 0, 0, 1)].size == 300 << 30


def test_vport_calls_follow_the_kernel(sim):
    assert errno_of(sim.vport_create, 1, "2000000000000011", "zz") == errno.EINVAL
    assert errno_of(sim.vport_create, 1, A1, "2000000000000014") == errno.EINVAL  # its own WWPN
    assert errno_of(sim.vport_create, 3, "2000000000000011",
                    "2000000000000012") == errno.ENOENT                        # iSCSI: no NPIV
    assert errno_of(sim.vport_create, 4, "2000000000000011",
                    "2000000000000012") == errno.ENOENT                        # a vport's host
    sim.vport_create(1, "2000000000000011", "2000000000000012")
    assert errno_of(sim.vport_delete, 1, "2000000000000099",
                    "2000000000000098") == errno.ENODEV
    assert records(sim)[-2] == ("class/fc_host/host1/vport_create",
                                "2000000000000011:2000000000000012", "ok")
    assert records(sim)[-1] == ("class/fc_host/host1/vport_delete",
                                "2000000000000099:2000000000000098", "ENODEV")


def test_vport_limit_is_enospc(tmp_path):
    fab = parse_fabric({"host": [{"type": "fc", "wwnn": "2000000000000001",
                                  "wwpn": "1000000000000001", "fabric": "A",
                                  "max_npiv_vports": 1}]})
    sim = SimulatedSan(fab, tmp_path / "sys")
    sim.build()
    sim.vport_create(0, "2000000000000011", "2000000000000012")
    assert errno_of(sim.vport_create, 0, "2000000000000021", "2000000000000022") == errno.ENOSPC
    sim.close()

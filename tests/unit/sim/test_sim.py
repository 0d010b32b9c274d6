"""The simulated SAN keeps the kernel's semantics, for raw sysfs writes too."""

import errno
import threading
import time

import pytest

from sanbusd.sim.fabric import FabricError, load_fabric, parse_fabric
from sanbusd.model.ids import HCTL
from sanbusd.sim.san import SimulatedSan
from sanbusd.backend.sysfs import SysfsReader
from sanbusd.kinds import read_all


SCAN = "class/scsi_host/host1/scan"


def luns(sim):
    return set(read_all(SysfsReader(sim.root)).luns)


def test_new_lun_behind_known_port_needs_a_scan_and_sends_a_unit_attention(sim):
    before = luns(sim)
    sim.provision("netapp1", 27, 10 << 30, {"10000090fa1b2c01"})
    assert luns(sim) == before                           # the kernel does not rescan by itself
    ua = [e for e in sim.events if e.properties.get("SDEV_UA") == "REPORTED_LUNS_DATA_HAS_CHANGED"]
    assert {e.sys_name for e in ua} == {"1:0:0:0", "1:0:0:1", "1:0:0:2"}
    sim.write(SCAN, "0 0 27")
    assert luns(sim) - before == {HCTL(1, 0, 0, 27)}


def test_targeted_scan_attaches_only_what_was_asked(sim):
    sim.provision("netapp1", 27, 1 << 30, {"10000090fa1b2c01"})
    sim.provision("netapp1", 30, 1 << 30, {"10000090fa1b2c01"})
    before = luns(sim)
    sim.write(SCAN, "- - 27")
    assert luns(sim) - before == {HCTL(1, 0, 0, 27)}
    sim.write(SCAN, "- - -")
    assert luns(sim) - before == {HCTL(1, 0, 0, 27), HCTL(1, 0, 0, 30)}


def test_scan_syntax_errors_are_einval_and_recorded(sim):
    for bad in ("1 2", "0 0 0 0", "x - -", "0 0 -1", "1 0 0", "0 0 99999"):
        with pytest.raises(OSError) as e:
            sim.write(SCAN, bad)
        assert e.value.errno == errno.EINVAL
    assert [w.result for w in sim.writes] == ["EINVAL"] * 6
    sim.write(SCAN, "0 5 0")                             # no such target: success, nothing found
    assert sim.writes[-1].result == "ok"


def test_scan_writes_block_their_host_one_at_a_time(sim):
    sim.fabric.scan_delay = 0.2
    t0 = time.monotonic()
    threads = [threading.Thread(target=sim.write, args=(SCAN, "- - -")) for _ in range(2)]
    threads.append(threading.Thread(target=sim.write, args=("class/scsi_host/host2/scan",
                                                            "- - -")))
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    ends = {}
    for w in sim.writes:
        ends.setdefault(w.path, []).append(w.end - (time.time() - time.monotonic()) - t0)
    first, second = sorted(ends[SCAN])
    assert second - first >= 0.19                        # host1's two scans one after the other
    (other,) = ends["class/scsi_host/host2/scan"]
    assert other < second - 0.1                          # host2's ran alongside, not behind them


def test_vport_create_follows_the_kernel(sim):
    fc = "class/fc_host/host1/"
    for bad in ("bad", "0x2000000000000021:0x2000000000000022", "2000000000000021"):
        with pytest.raises(OSError) as e:
            sim.write(fc + "vport_create", bad)
        assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:                    # the physical port's own WWPN
        sim.write(fc + "vport_create", "10000090fa1b2c01:2000000000000014")
    assert e.value.errno == errno.EINVAL
    sim.write(fc + "vport_create", "2000000000000011:2000000000000012")
    inv = read_all(SysfsReader(sim.root))
    v = inv.vports["vport-1:0-1"]                        # vport-1:0-0 is the demo's own
    assert v.wwpn == "2000000000000011"
    assert v.state == "Initializing" and v.host in inv.hosts
    assert inv.hosts[v.host].fc.port_type == "NPIV VPORT"
    assert inv.hosts[1].fc.vports_in_use == 2
    with pytest.raises(OSError) as e:                    # duplicate WWPN, other WWNN
        sim.write(fc + "vport_create", "2000000000000011:2000000000000013")
    assert e.value.errno == errno.EINVAL
    deadline = time.monotonic() + 5                      # fabric login completes after the write
    while read_all(SysfsReader(sim.root)).vports["vport-1:0-1"].state == "Initializing":
        assert time.monotonic() < deadline, "the vport never logged in"
        time.sleep(0.02)
    inv = read_all(SysfsReader(sim.root))
    assert inv.vports["vport-1:0-1"].state == "Active"
    with pytest.raises(OSError) as e:
        sim.write(fc + "vport_delete", "2000000000000099:2000000000000098")
    assert e.value.errno == errno.ENODEV
    sim.write(fc + "vport_delete", "2000000000000011:2000000000000012")
    inv = read_all(SysfsReader(sim.root))
    assert list(inv.vports) == ["vport-1:0-0"] and v.host not in inv.hosts
    assert inv.hosts[1].fc.vports_in_use == 1
    with pytest.raises(OSError) as e:                    # no NPIV on a non-FC host
        sim.write("class/fc_host/host3/vport_create", "2000000000000011:2000000000000012")
    assert e.value.errno in (errno.ENOENT, errno.EACCES)


def test_vport_limit_is_enospc(tmp_path):
    fab = parse_fabric({"host": [{"type": "fc", "wwnn": "2000000000000001",
                                  "wwpn": "1000000000000001", "fabric": "A",
                                  "max_npiv_vports": 1}]})
    sim = SimulatedSan(fab, tmp_path / "sys")
    sim.build()
    sim.write("class/fc_host/host0/vport_create", "2000000000000011:2000000000000012")
    with pytest.raises(OSError) as e:
        sim.write("class/fc_host/host0/vport_create", "2000000000000021:2000000000000022")
    assert e.value.errno == errno.ENOSPC


def test_port_down_removes_its_luns_after_dev_loss_and_port_up_brings_them_back(sim):
    sim.fabric.dev_loss_tmo = 0.1
    before = luns(sim)
    sim.port_down("500a098101a1b2c3")
    inv = read_all(SysfsReader(sim.root))
    assert inv.rports["rport-1:0-0"].port_state == "Blocked" and luns(sim) == before
    deadline = time.monotonic() + 5                      # dev_loss_tmo, then they go
    while [h for h in luns(sim) if h.host == 1]:
        assert time.monotonic() < deadline, "host1's LUNs stayed after dev_loss_tmo"
        time.sleep(0.02)
    sim.port_up("500a098101a1b2c3")
    inv = read_all(SysfsReader(sim.root))
    assert inv.rports["rport-1:0-0"].scsi_target_id == 0        # the binding is kept
    assert luns(sim) == before


def test_bad_fabric_files_name_the_entry(tmp_path):
    with pytest.raises(FabricError, match=r"host\[0\]: missing 'wwnn'"):
        parse_fabric({"host": [{"type": "fc"}]})
    with pytest.raises(FabricError, match="WWPN .* already used"):
        parse_fabric({"host": [{"type": "fc", "wwnn": "2000000000000001",
                                "wwpn": "1000000000000001", "fabric": "A"}] * 2})
    bad = tmp_path / "bad.toml"
    bad.write_text("[[host]\n")
    with pytest.raises(FabricError):
        load_fabric(bad)

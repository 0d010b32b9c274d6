"""The one reader, on the simulated SAN's tree and on damaged trees."""

import logging
import os
import shutil
import subprocess

import pytest

from sanbusd.sim.fabric import load_fabric
from sanbusd.model.ids import HCTL
from sanbusd.sim.san import SimulatedSan
from sanbusd.backend.sysfs import SysfsReader
from sanbusd.kinds import read_all, refresh
from sanbusd.model.records import Dirty

from sanbus_testing import DEMO_FABRIC


@pytest.fixture
def sim(tmp_path):
    s = SimulatedSan(load_fabric(DEMO_FABRIC), tmp_path / "sys")
    s.build()
    return s


def test_reads_the_demo_san(sim):
    inv = read_all(SysfsReader(sim.root))
    assert sorted(inv.hosts) == [0, 1, 2, 3, 4]
    assert {h.transport for h in inv.hosts.values()} == {"sas", "fc", "iscsi"}
    # host4 is the NPIV vport the demo fabric starts with, a child of host1
    (v,) = inv.vports.values()
    assert (v.name, v.parent, v.host, v.state) == ("vport-1:0-0", 1, 4, "Active")
    assert inv.hosts[4].vport == "vport-1:0-0" and inv.hosts[4].fc.port_type == "NPIV VPORT"
    assert not inv.hosts[4].fc.npiv_capable                # a vHBA has no vport_create
    fc = inv.hosts[1].fc
    assert fc.wwpn == "10000090fa1b2c01" and fc.wwnn == "20000090fa1b2c01"
    assert fc.port_state == "Online" and fc.npiv_capable and fc.max_vports == 64
    assert inv.rports["rport-1:0-0"].roles == ("FCP Target",)
    assert inv.rports["rport-1:0-0"].scsi_target_id == 0
    # LUNs 0-2 masked to both HBAs: 2 paths each; LUN 9 masked to someone else: never seen.
    fc_luns = [h for h in inv.luns if h.host in (1, 2)]
    assert sorted(h.lun for h in fc_luns) == [0, 0, 1, 1, 2, 2]
    lun = inv.luns[HCTL(1, 0, 0, 1)]
    assert lun.vendor == "NETAPP" and lun.size == 200 << 30 and lun.block
    assert lun.target_wwpn == "500a098101a1b2c3"
    assert lun.wwid == inv.luns[HCTL(2, 0, 0, 1)].wwid   # one LUN, two paths, one WWID


def test_lsscsi_reads_the_same_tree(sim):
    out = subprocess.run(["lsscsi", f"--sysfsroot={sim.root}"], capture_output=True, text=True,
                         check=True).stdout
    listed = sorted(line.split("]")[0].strip("[") for line in out.splitlines())
    assert listed == sorted(str(h) for h in read_all(SysfsReader(sim.root)).luns)


def test_missing_and_unreadable_attributes_publish_what_was_read(sim, caplog):
    root = sim.root
    os.unlink(root / "class/fc_host/host1/port_state")
    lun_dir = os.path.realpath(root / "class/scsi_device/1:0:0:0/device")
    os.unlink(os.path.join(lun_dir, "vendor"))
    os.mkdir(os.path.join(lun_dir, "vendor"))           # a read that fails (EISDIR)
    os.unlink(os.path.join(lun_dir, "model"))
    with caplog.at_level(logging.WARNING):
        reader = SysfsReader(root)
        inv = read_all(reader)
        read_all(reader)
    assert inv.hosts[1].fc.port_state == "" and inv.hosts[1].fc.wwpn == "10000090fa1b2c01"
    lun = inv.luns[HCTL(1, 0, 0, 0)]
    assert lun.vendor == "" and lun.model == "" and lun.size == 100 << 30
    gaps = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(gaps) == 3, gaps                          # each gap logged once, not per read


def test_odd_names_are_ignored(sim):
    root = sim.root
    for d in ("class/scsi_host/hostX", "class/scsi_device/1:0:0", "class/fc_remote_ports/rport-",
              "class/fc_vports/vport-a:b-c"):
        os.makedirs(root / d)
    inv = read_all(SysfsReader(root))
    assert sorted(inv.hosts) == [0, 1, 2, 3, 4] and len(inv.luns) == 7 and len(inv.vports) == 1


def test_a_lun_deleted_while_it_is_read_counts_as_gone_not_as_a_gap(sim, caplog):
    """The kernel drops a device's scsi_device entry first, then its attributes: a read in
    between must not publish an empty LUN or log gaps."""
    root = sim.root
    os.unlink(root / "class/scsi_device/1:0:0:2")
    lun_dir = os.path.realpath(root / "bus/scsi/devices/1:0:0:2")
    for attr in ("vendor", "model", "state"):
        os.unlink(os.path.join(lun_dir, attr))
    with caplog.at_level(logging.WARNING):
        assert SysfsReader(root).read_lun(HCTL(1, 0, 0, 2)) is None
    assert not [r for r in caplog.records if "cannot read" in r.getMessage()]


def test_a_host_that_vanishes_mid_read_is_dropped_with_its_luns(sim):
    root = sim.root
    reader = SysfsReader(root)
    inv = read_all(reader)
    # The host goes between listing and reading (as when a driver unloads during a scan).
    host_dir = os.path.realpath(root / "class/scsi_host/host2/device")
    shutil.rmtree(host_dir)
    for link in ("class/scsi_host/host2", "class/fc_host/host2"):
        os.unlink(root / link)
    assert reader.read_host(2) is None
    assert reader.read_lun(HCTL(2, 0, 0, 0)) is None     # dangling class link
    new, _ = refresh(reader, inv, Dirty.of(hosts={2}))
    assert 2 not in new.hosts
    assert not [h for h in new.luns if h.host == 2]
    assert not [r for r in new.rports.values() if r.host == 2]


def test_a_multipath_map_is_linked_to_its_paths_through_holders(sim):
    """dm-N with dm/uuid mpath-<wwid> holding two sdX: one map whose paths are those LUNs
    (linked through holders/slaves, never by comparing WWID strings)."""
    from sanbusd.publish.render import RenderContext, render_lun, render_map
    root = sim.root
    reader = SysfsReader(root)
    inv = read_all(reader)
    a, b = inv.luns[HCTL(1, 0, 0, 1)], inv.luns[HCTL(2, 0, 0, 1)]
    dm = root / "devices/virtual/block/dm-3"
    (dm / "dm").mkdir(parents=True)
    (dm / "dm/uuid").write_text("mpath-1Linux_scsi_debug_2000\n")   # not the sysfs wwid
    (dm / "dm/name").write_text("mpatha\n")
    (dm / "size").write_text(str((200 << 30) // 512) + "\n")
    (dm / "slaves").mkdir()
    os.symlink(dm, root / "class/block/dm-3")
    for lun in (a, b):
        bdir = os.path.realpath(root / "class/block" / lun.block)
        os.symlink(dm, os.path.join(bdir, "holders", "dm-3"))
        os.symlink(bdir, dm / "slaves" / lun.block)
    new, _ = refresh(reader, inv, Dirty.of(luns={a.hctl, b.hctl}))
    m = new.maps["dm-3"]
    assert (m.name, m.wwid, m.size) == ("mpatha", "1Linux_scsi_debug_2000", 200 << 30)
    assert sorted(m.slaves) == sorted([a.block, b.block])
    ctx = RenderContext(new)
    paths = render_map(ctx, m)["org.example.SanStorage.MultipathMap"]["Paths"]
    assert [p["Lun"].value for p in paths] == ["/org/example/SanStorage/luns/1_0_0_1",
                                               "/org/example/SanStorage/luns/2_0_0_1"]
    lun = render_lun(ctx, new.luns[a.hctl])["org.example.SanStorage.Lun"]
    assert lun["MultipathMap"] == "/org/example/SanStorage/multipath/1Linux_5fscsi_5fdebug_5f2000"
    assert render_lun(ctx, new.luns[HCTL(1, 0, 0, 0)])["org.example.SanStorage.Lun"][
        "MultipathMap"] == "/"


def test_a_map_event_alone_links_its_paths_and_unlinks_them_when_it_goes(sim):
    """On the kernel a new map sends events for dm-N only, not for its sdX: re-reading the map
    must re-read the LUNs whose holder it changed (Lun.Delete's Busy rule reads the holder)."""
    root = sim.root
    reader = SysfsReader(root)
    inv = read_all(reader)
    a, b = inv.luns[HCTL(1, 0, 0, 1)], inv.luns[HCTL(2, 0, 0, 1)]
    dm = root / "devices/virtual/block/dm-3"
    (dm / "dm").mkdir(parents=True)
    (dm / "dm/uuid").write_text("mpath-36001\n")
    (dm / "dm/name").write_text("mpatha\n")
    (dm / "size").write_text("8\n")
    (dm / "slaves").mkdir()
    os.symlink(dm, root / "class/block/dm-3")
    for lun in (a, b):
        bdir = os.path.realpath(root / "class/block" / lun.block)
        os.symlink(dm, os.path.join(bdir, "holders", "dm-3"))
        os.symlink(bdir, dm / "slaves" / lun.block)
    new, looked = refresh(reader, inv, Dirty.of(maps={"dm-3"}))
    assert new.luns[a.hctl].holder == new.luns[b.hctl].holder == "dm-3"
    assert {a.hctl, b.hctl} <= looked["luns"]            # so their objects are published again
    for lun in (a, b):
        os.unlink(os.path.join(os.path.realpath(root / "class/block" / lun.block),
                               "holders", "dm-3"))
    os.unlink(root / "class/block/dm-3")
    gone, _ = refresh(reader, new, Dirty.of(maps={"dm-3"}))
    assert "dm-3" not in gone.maps
    assert gone.luns[a.hctl].holder == gone.luns[b.hctl].holder == ""

"""Multipath maps on the simulated SAN: what device-mapper and multipathd leave in sysfs, read by
the daemon's own reader, reached through the daemon's own event filter (no changes there)."""

import os

import pytest

from sanbusd.backend.sysfs import SysfsReader
from sanbusd.backend.uevent import dirty_from_event
from sanbusd.kinds import read_all, refresh
from sanbusd.model.ids import HCTL
from sanbusd.model.records import Dirty
from sanbusd.publish.render import RenderContext, render_lun, render_map
from sanbusd.sim.core import SanAdminError
from sanbusd.sim.fabric import generated_wwid


LUN1 = generated_wwid(0, 1)                     # naa.6001405…: LUN 1 of netapp1, two paths
P1, P2 = HCTL(1, 0, 0, 1), HCTL(2, 0, 0, 1)
ROOT = "/org/example/SanStorage"


def follow(sim, inv):
    """What the daemon does with the events: the dirty keys, then a re-read of those only."""
    dirty = Dirty()
    for ev in sim.events:
        dirty.merge(dirty_from_event(ev))
    sim.events.clear()
    new, _ = refresh(SysfsReader(sim.root), inv, dirty)
    return new


def test_a_map_over_a_luns_paths_is_read_and_linked(sim):
    inv = read_all(SysfsReader(sim.root))
    m = sim.mpath_create(LUN1)
    assert (m.dm, m.name, m.wwid) == ("dm-0", "mpatha", "3" + LUN1[4:])
    dm = sim.root / "devices/virtual/block/dm-0"
    assert (dm / "dm/uuid").read_text().strip() == "mpath-36001405" + LUN1[11:]
    assert {(e.action, e.sys_name) for e in sim.events} >= {
        ("add", "dm-0"), ("change", "dm-0"), ("change", inv.luns[P1].block),
        ("change", inv.luns[P2].block)}
    assert all(e.subsystem == "block" and e.devtype == "disk" for e in sim.events)

    new = follow(sim, inv)
    assert new == read_all(SysfsReader(sim.root))               # events told it everything
    mp = new.maps["dm-0"]
    assert (mp.name, mp.wwid, mp.size) == ("mpatha", m.wwid, 200 << 30)
    assert sorted(mp.slaves) == sorted([new.luns[P1].block, new.luns[P2].block])
    assert new.luns[P1].holder == new.luns[P2].holder == "dm-0"
    ctx = RenderContext(new)
    paths = render_map(ctx, mp)["org.example.SanStorage.MultipathMap"]["Paths"]
    # Paths: each path's Lun object (alone, or in a dict of the path's states)
    assert [p["Lun"].value if isinstance(p, dict) else p for p in paths] == [
        f"{ROOT}/luns/1_0_0_1", f"{ROOT}/luns/2_0_0_1"]
    assert render_lun(ctx, new.luns[P1])["org.example.SanStorage.Lun"][
        "MultipathMap"] == f"{ROOT}/multipath/{m.wwid}"
    for link in ("class/block/dm-0", "block/dm-0",
                 f"class/block/{new.luns[P1].block}/holders/dm-0"):
        assert os.path.realpath(sim.root / link) == str(dm)

    sim.mpath_remove(m.wwid)                                    # the multipath form works too
    gone = follow(sim, new)
    assert gone.maps == {} and gone.luns[P1].holder == "" and gone.luns[P2].holder == ""
    assert not (sim.root / "class/block/dm-0").exists() and not dm.exists()


def test_a_deleted_path_leaves_its_map(sim):
    inv = read_all(SysfsReader(sim.root))
    sim.mpath_create(LUN1)
    inv = follow(sim, inv)
    sim.delete_lun(P1)
    inv = follow(sim, inv)
    assert P1 not in inv.luns
    assert inv.maps["dm-0"].slaves == (inv.luns[P2].block,)


def test_dm_numbers_are_the_lowest_free_and_names_are_bound(sim):
    """dm-N: the lowest free minor. Names: the bindings file keeps a WWID's name across a flush
    (as /etc/multipath/bindings does), so a new WWID gets the next free one."""
    a = sim.mpath_create(generated_wwid(0, 0))
    b = sim.mpath_create(generated_wwid(0, 1))
    sim.mpath_remove(a.wwid)
    c = sim.mpath_create(generated_wwid(0, 2))
    a2 = sim.mpath_create(generated_wwid(0, 0))
    assert [(m.dm, m.name) for m in (a, b, c, a2)] == [
        ("dm-0", "mpatha"), ("dm-1", "mpathb"), ("dm-0", "mpathc"), ("dm-2", "mpatha")]
    bindings = (sim.etc / "multipath/bindings").read_text()
    assert f"mpatha {a.wwid}\nmpathb {b.wwid}\nmpathc {c.wwid}\n" in bindings


def test_refusals_say_what_is_wrong(sim):
    with pytest.raises(SanAdminError, match="no LUN path with WWID"):
        sim.mpath_create(generated_wwid(0, 9))                  # masked to another host
    sim.mpath_create(LUN1)
    with pytest.raises(SanAdminError, match="already has a map: mpatha"):
        sim.mpath_create(LUN1)
    with pytest.raises(SanAdminError, match="no map for WWID"):
        sim.mpath_remove(generated_wwid(0, 2))

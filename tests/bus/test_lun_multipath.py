"""A LUN path that a multipath map holds: Lun.MultipathMap and the map's Paths say so, and
Lun.Delete answers Busy (naming the map, writing nothing) unless forced. The map is made on the
simulated SAN as multipathd makes one (sanbusd-sim mpath-create)."""

import asyncio
import sys

from dbus_fast import Message, MessageType, Variant

from sanbus_testing import ROOT, busctl, run, wait_until
from sanbusd.client import connect

LUN_I = "org.example.SanStorage.Lun"
MAP_I = "org.example.SanStorage.MultipathMap"
BUSY = "org.example.SanStorage.Error.Busy"
P1, P2 = f"{ROOT}/luns/1_0_0_1", f"{ROOT}/luns/2_0_0_1"   # LUN 1 of the demo array, two paths


def call(d, path, iface, member, sig="", body=None):
    async def go():
        bus = await connect(d.bus.address)
        try:
            return await asyncio.wait_for(bus.call(Message(
                destination="org.example.SanStorage", path=path, interface=iface, member=member,
                signature=sig, body=body or [])), 60)
        finally:
            bus.disconnect()
    return asyncio.run(go())


def prop(d, path, iface, name):
    reply = call(d, path, "org.freedesktop.DBus.Properties", "Get", "ss", [iface, name])
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    return reply.body[0].value


def delete(d, path, **options):
    return call(d, path, LUN_I, "Delete", "a{sv}",
                [{k: Variant("b", v) for k, v in options.items()}])


def sim_cli(d, *args):
    return run(sys.executable, "-m", "sanbusd.cli.sim", "--dir", str(d.sim_dir), *args,
               timeout=30).stdout


def test_a_path_of_a_map_is_busy_unless_forced(daemon):
    wwid = prop(daemon, P1, LUN_I, "WWID")                     # naa.6001405…, as sysfs has it
    out = sim_cli(daemon, "mpath-create", "--wwid", wwid)
    assert out.startswith("mpatha (dm-0)") and "2 paths" in out
    mpath = f"{ROOT}/multipath/3{wwid[4:]}"                    # the multipath form of the WWID
    wait_until(lambda: prop(daemon, P1, LUN_I, "MultipathMap") == mpath, timeout=10,
               what="the path's MultipathMap")
    assert prop(daemon, P2, LUN_I, "MultipathMap") == mpath
    assert prop(daemon, f"{ROOT}/luns/1_0_0_0", LUN_I, "MultipathMap") == "/"
    paths = prop(daemon, mpath, MAP_I, "Paths")                 # aa{sv}: one dict per path
    assert [p["Lun"].value for p in paths] == [P1, P2]
    assert [p["Up"].value for p in paths] == [True, True]
    assert prop(daemon, mpath, MAP_I, "Health") == "healthy"
    assert prop(daemon, mpath, MAP_I, "Name") == "mpatha"
    assert prop(daemon, mpath, MAP_I, "WWID") == "3" + wwid[4:]
    assert prop(daemon, mpath, MAP_I, "Size") == 200 << 30

    before = daemon.writes()
    reply = delete(daemon, P1)
    assert reply.message_type == MessageType.ERROR and reply.error_name == BUSY, reply.body
    assert "mpatha" in reply.body[0] and "force" in reply.body[0]
    assert daemon.writes() == before                            # nothing reached sysfs
    assert P1 in busctl(daemon, "tree", "org.example.SanStorage").stdout

    reply = delete(daemon, P1, force=True)
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    assert [(w["path"], w["data"], w["result"]) for w in daemon.writes()[len(before):]] == [
        ("class/scsi_device/1:0:0:1/device/delete", "1", "ok")]
    assert P1 not in busctl(daemon, "tree", "org.example.SanStorage").stdout
    wait_until(lambda: [p["Lun"].value for p in prop(daemon, mpath, MAP_I, "Paths")] == [P2],
               timeout=10, what="the map losing its deleted path")
    assert prop(daemon, P2, LUN_I, "MultipathMap") == mpath


def test_a_flushed_map_frees_its_paths(daemon):
    wwid = prop(daemon, P1, LUN_I, "WWID")
    sim_cli(daemon, "mpath-create", "--wwid", wwid)
    wait_until(lambda: prop(daemon, P2, LUN_I, "MultipathMap") != "/", timeout=10,
               what="the map")
    sim_cli(daemon, "mpath-remove", "--wwid", "3" + wwid[4:])
    wait_until(lambda: prop(daemon, P2, LUN_I, "MultipathMap") == "/", timeout=10,
               what="the map's removal")
    assert "/multipath/" not in busctl(daemon, "tree", "org.example.SanStorage").stdout
    reply = delete(daemon, P2)
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body

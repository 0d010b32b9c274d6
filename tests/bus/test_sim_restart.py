"""The simulated SAN outlives the daemon, as a real SAN and kernel do: restarting sanbusd on the
same --sim-dir finds the LUNs as they were (a deleted path stays deleted, a LUN the SAN admin
provisioned is there to be scanned) and the record of writes goes on; --sim-fresh, or another
fabric file, lays the SAN out again from the fabric file."""

import asyncio

from dbus_fast import Message, MessageType, Variant

from sanbus_testing import DEMO_FABRIC, ROOT, busctl, start_daemon
from sanbusd.client import connect

MGR = f"{ROOT}/Manager"
A1, A2 = "10000090fa1b2c01", "10000090fa1b2c02"     # the demo host's two HBA ports
STALE = f"{ROOT}/luns/1_0_0_2"
NEW = [f"{ROOT}/luns/1_0_0_27", f"{ROOT}/luns/2_0_0_27"]


def scan_lun_27(d):
    async def go():
        bus = await connect(d.bus.address)
        try:
            return await asyncio.wait_for(bus.call(Message(
                destination="org.example.SanStorage", path=MGR,
                interface="org.example.SanStorage.Manager", member="ScanAll", signature="a{sv}",
                body=[{"luns": Variant("at", [27])}])), 60)
        finally:
            bus.disconnect()
    reply = asyncio.run(go())
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    return reply.body[0]


def objects(d):
    return busctl(d, "tree", "org.example.SanStorage").stdout


def stopped(d):
    assert d.stop() == 0, d.log()
    assert "Traceback" not in d.log(), d.log()


def deletes(d):
    return [(w["path"], w["result"]) for w in d.writes() if w["path"].endswith("/delete")]


def test_a_restarted_daemon_finds_the_san_as_it_left_it(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path)
    try:
        d.sim({"command": "provision", "array": "netapp1", "luns": [27],
               "initiators": [A1, A2], "size": "5G"})
        busctl(d, "call", "org.example.SanStorage", STALE, "org.example.SanStorage.Lun",
               "Delete", "a{sv}", "0", timeout=60)
        assert STALE not in objects(d)
        writes = d.writes()
        assert deletes(d) == [("class/scsi_device/1:0:0:2/device/delete", "ok")]
    finally:
        stopped(d)

    d = start_daemon(system_bus, tmp_path)          # the same DIR (tmp_path/sim)
    try:
        assert STALE not in objects(d)              # deleted stays deleted
        assert d.writes() == writes                 # the record goes on ...
        assert scan_lun_27(d) == NEW                # ... and the array still masks LUN 27
        assert {(w["data"], w["result"]) for w in d.writes()[len(writes):]} == {("0 0 27", "ok")}
        assert "reusing the simulated SAN" in d.log()
    finally:
        stopped(d)

    d = start_daemon(system_bus, tmp_path, extra=["--sim-fresh"])
    try:
        assert STALE in objects(d) and NEW[0] not in objects(d)    # as the fabric file says
        assert d.writes() == []
        assert scan_lun_27(d) == []                 # LUN 27 was the SAN admin's, not the file's
        assert "afresh" in d.log()
    finally:
        stopped(d)


def test_another_fabric_file_lays_the_san_out_again_and_says_why(system_bus, tmp_path):
    fabric = tmp_path / "demo.toml"
    fabric.write_text(DEMO_FABRIC.read_text())
    d = start_daemon(system_bus, tmp_path, fabric)
    try:
        busctl(d, "call", "org.example.SanStorage", STALE, "org.example.SanStorage.Lun",
               "Delete", "a{sv}", "0", timeout=60)
    finally:
        stopped(d)
    fabric.write_text(fabric.read_text().replace('size = "50G"', 'size = "60G"'))
    d = start_daemon(system_bus, tmp_path, fabric)
    try:
        assert STALE in objects(d) and d.writes() == []
        assert "the fabric file differs" in d.log()
    finally:
        stopped(d)

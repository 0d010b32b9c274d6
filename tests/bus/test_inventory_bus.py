"""The inventory as users see it: busctl, gdbus, sanctl and a GDBus ObjectManager client."""

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from sanbus_testing import ROOT, LineReader, busctl, gdbus, sanctl

from sanbusd.bus.contract import data_dir

HERE = Path(__file__).parent
VHBA = f"{ROOT}/vhbas/5001a4a0aa000001"     # the demo fabric's NPIV vport on host1
LUN_PATHS = {f"{ROOT}/luns/{h}_0_0_{n}" for h in (1, 2) for n in (0, 1, 2)} | {
    f"{ROOT}/luns/0_0_0_0"}


def managed(d):
    out = busctl(d, "--json=short", "call", "org.example.SanStorage", ROOT,
                 "org.freedesktop.DBus.ObjectManager", "GetManagedObjects").stdout
    return json.loads(out)["data"][0]


def test_busctl_tree_shows_hosts_and_luns(daemon):
    out = busctl(daemon, "tree", "org.example.SanStorage").stdout
    for p in [f"{ROOT}/Manager", *(f"{ROOT}/hosts/host{n}" for n in range(4)), *LUN_PATHS]:
        assert p in out
    assert "luns/1_0_0_9" not in out        # masked to another initiator


def test_objects_carry_the_kernels_facts(daemon):
    objs = managed(daemon)
    fc = objs[f"{ROOT}/hosts/host1"]["org.example.SanStorage.FcHost"]
    assert fc["WWPN"]["data"] == "10000090fa1b2c01"
    assert fc["PortState"]["data"] == "Online"
    port = fc["RemotePorts"]["data"][0]
    assert port["WWPN"] == {"type": "s", "data": "500a098101a1b2c3"}
    assert port["Roles"]["data"] == ["FCP Target"] and port["PortState"]["data"] == "Online"
    assert "org.example.SanStorage.FcHost" not in objs[f"{ROOT}/hosts/host3"]
    lun = objs[f"{ROOT}/luns/2_0_0_1"]["org.example.SanStorage.Lun"]
    assert lun["Size"]["data"] == 200 << 30 and lun["TargetPortName"]["data"] == "500a098201a1b2c3"
    assert lun["Host"]["data"] == f"{ROOT}/hosts/host2"
    assert lun["WWID"]["data"] == objs[f"{ROOT}/luns/1_0_0_1"]["org.example.SanStorage.Lun"][
        "WWID"]["data"]
    host = objs[f"{ROOT}/hosts/host1"]["org.example.SanStorage.ScsiHost"]
    assert host["Luns"]["data"] == [f"{ROOT}/luns/1_0_0_{n}" for n in range(3)]


def test_an_npiv_vport_is_a_vhba_object_linked_to_both_hosts(daemon):
    objs = managed(daemon)
    v = {k: x["data"] for k, x in objs[VHBA]["org.example.SanStorage.Vhba"].items()}
    assert v == {"Name": "vport-1:0-0", "WWPN": "5001a4a0aa000001", "WWNN": "5001a4a0bb000001",
                 "Parent": f"{ROOT}/hosts/host1", "Host": f"{ROOT}/hosts/host4",
                 "State": "Active", "LastState": "Initializing", "Persistent": False}
    own = objs[f"{ROOT}/hosts/host4"]["org.example.SanStorage.FcHost"]
    assert own["Vhba"]["data"] == VHBA and own["PortType"]["data"] == "NPIV VPORT"
    assert own["NpivCapable"]["data"] is False
    parent = objs[f"{ROOT}/hosts/host1"]["org.example.SanStorage.FcHost"]
    assert parent["VportsInUse"]["data"] == 1 and parent["Vhba"]["data"] == "/"
    out = sanctl(daemon, "status").stdout
    assert "vport-1:0-0  5001a4a0aa000001" in out


def _xml_interfaces(xml: str) -> dict:
    out = {}
    for i in ET.fromstring(xml).findall("interface"):
        name = i.get("name")
        if not name.startswith("org.example.SanStorage."):
            continue
        out[name] = {
            "methods": {m.get("name"): [(a.get("direction", "in"), a.get("type"))
                                        for a in m.findall("arg")] for m in i.findall("method")},
            "properties": {p.get("name"): (p.get("type"), p.get("access"))
                           for p in i.findall("property")},
            "signals": {s.get("name"): [a.get("type") for a in s.findall("arg")]
                        for s in i.findall("signal")},
        }
    return out


def test_live_introspection_matches_the_documented_xml(daemon):
    documented = _xml_interfaces((data_dir() / "org.example.SanStorage.xml").read_text())
    objs = managed(daemon)
    seen = set()
    for path in (f"{ROOT}/Manager", f"{ROOT}/hosts/host1", f"{ROOT}/hosts/host0",
                 f"{ROOT}/luns/1_0_0_0", VHBA):
        live = _xml_interfaces(gdbus(daemon, "introspect", "--dest",
                                     "org.example.SanStorage", "--object-path", path,
                                     "--xml").stdout)
        assert set(live) == set(objs[path])
        for iface, spec in live.items():
            assert spec == documented[iface], iface
            # every documented property is served, with its documented type
            props = objs[path][iface]
            assert set(props) == set(spec["properties"])
            for name, value in props.items():
                assert value["type"] == spec["properties"][name][0], f"{iface}.{name}"
            seen.add(iface)
    # Every other published object too: one of each set of interfaces (an IscsiSession, when
    # the fabric has sessions).
    done = {frozenset(objs[p]) for p in (f"{ROOT}/Manager", f"{ROOT}/hosts/host1",
                                         f"{ROOT}/hosts/host0", f"{ROOT}/luns/1_0_0_0", VHBA)}
    for path, ifaces in sorted(objs.items()):
        if frozenset(ifaces) in done:
            continue
        done.add(frozenset(ifaces))
        live = _xml_interfaces(gdbus(daemon, "introspect", "--dest", "org.example.SanStorage",
                                     "--object-path", path, "--xml").stdout)
        assert set(live) == set(ifaces), path
        for iface, spec in live.items():
            assert spec == documented[iface], iface
            assert {n: v["type"] for n, v in ifaces[iface].items()} == {
                n: t for n, (t, _access) in spec["properties"].items()}, f"{path} {iface}"
            seen.add(iface)
    # MultipathMap and Job objects are checked where tests create them (test_multipath_bus.py).
    # The demo's iSCSI host has no session yet, so IscsiSession is checked only when the
    # simulated SAN logs one in; until then its documented interface must at least be
    # declared (a documented interface nobody can see is still a contract).
    optional = {"org.example.SanStorage.MultipathMap", "org.example.SanStorage.Job"}
    if not any("/iscsi/" in p for p in objs):
        optional.add("org.example.SanStorage.IscsiSession")
        assert documented["org.example.SanStorage.IscsiSession"]["properties"] == {
            "Name": ("s", "read"), "Host": ("o", "read"), "TargetName": ("s", "read"),
            "State": ("s", "read"), "Tpgt": ("u", "read"), "InitiatorName": ("s", "read"),
            "Portal": ("s", "read"), "RecoveryTimeout": ("u", "read")}
        assert documented["org.example.SanStorage.IscsiSession"]["methods"] == {}
    assert seen == set(documented) - optional


def test_sanctl_status_table_and_json(daemon):
    out = sanctl(daemon, "status").stdout
    assert "host1  lpfc" in out and "10000090fa1b2c01" in out
    assert "1:0:0:2" in out and "2:0:0:2" in out and "500a098201a1b2c3" in out
    assert "rport-1:0-0" in out
    objs = json.loads(sanctl(daemon, "status", "--json").stdout)
    assert set(p for p in objs if "/luns/" in p) == LUN_PATHS


def test_resolve_device(daemon):
    def resolve(*spec):
        out = busctl(daemon, "--json=short", "call", "org.example.SanStorage", f"{ROOT}/Manager",
                     "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}",
                     *spec, "0").stdout
        return json.loads(out)["data"][0]
    assert resolve("1", "hctl", "s", "2:0:0:1") == [f"{ROOT}/luns/2_0_0_1"]
    assert resolve("1", "wwpn", "s", "0x10000090FA1B2C01") == [f"{ROOT}/hosts/host1"]
    assert resolve("1", "wwpn", "s", "50:0a:09:81:01:a1:b2:c3") == [
        f"{ROOT}/luns/1_0_0_{n}" for n in range(3)]
    wwid = managed(daemon)[f"{ROOT}/luns/1_0_0_1"]["org.example.SanStorage.Lun"]["WWID"]["data"]
    assert resolve("1", "wwid", "s", wwid) == [f"{ROOT}/luns/1_0_0_1", f"{ROOT}/luns/2_0_0_1"]
    assert resolve("1", "wwid", "s", "3" + wwid[4:]) == [f"{ROOT}/luns/1_0_0_1",
                                                         f"{ROOT}/luns/2_0_0_1"]
    assert resolve("2", "wwid", "s", wwid, "hctl", "s", "2:0:0:1") == [f"{ROOT}/luns/2_0_0_1"]
    assert resolve("1", "path", "s", "/dev/sda") == [f"{ROOT}/luns/0_0_0_0"]
    assert resolve("1", "hctl", "s", "7:0:0:0") == []


def test_gdbus_object_manager_client_sees_objects_come_and_go(daemon):
    client = subprocess.Popen([sys.executable, str(HERE / "om_client.py"), daemon.bus.address,
                               "60"], stdout=subprocess.PIPE, text=True, env=daemon.env)
    gone = {f"{ROOT}/luns/1_0_0_{n}" for n in range(3)}

    def paths(event, lines):
        return {e["path"] for e in map(json.loads, lines) if e["event"] == event}
    try:
        out = LineReader(client.stdout)
        ready = json.loads(out.until(lambda lines: lines, what="the client's first objects")[0])
        assert ready["event"] == "ready" and LUN_PATHS <= set(ready["objects"])
        daemon.sim({"command": "port-down", "wwpn": "500a098101a1b2c3"})  # dev_loss_tmo = 2 s
        out.until(lambda lines: gone <= paths("removed", lines[1:]), what="3 LUNs removed")
        daemon.sim({"command": "port-up", "wwpn": "500a098101a1b2c3"})
        lines = out.until(lambda lines: gone <= paths("added", lines[1:]), what="3 LUNs added")
    finally:
        client.kill()
        client.wait(10)
    events = [json.loads(line) for line in lines[1:]]
    assert paths("removed", lines[1:]) == gone
    added = [e for e in events if e["event"] == "added"]
    assert sorted(e["path"] for e in added) == sorted(gone)
    assert all(e["interfaces"] == ["org.example.SanStorage.Lun"] for e in added)


def _monitor_signals(lines):
    msgs = [json.loads(line) for line in lines if line.strip()]
    return [m for m in msgs if m.get("type") == "signal"]


def test_one_interfaces_added_per_object_from_the_manager_path(daemon):
    mon = subprocess.Popen(["busctl", f"--address={daemon.bus.address}", "monitor",
                            "--json=short", "org.example.SanStorage"],
                           stdout=subprocess.PIPE, text=True, env=daemon.env)
    luns = [f"{ROOT}/luns/2_0_0_{n}" for n in range(3)]

    def count(member, lines):
        return len([s for s in _monitor_signals(lines) if s.get("member") == member])
    try:
        out = LineReader(mon.stdout)
        # Monitoring once a call to the daemon shows up (not after a sleep that may be short).
        deadline = time.monotonic() + 15
        while not out.seen:
            assert time.monotonic() < deadline, "busctl monitor shows no calls to sanbusd"
            busctl(daemon, "get-property", "org.example.SanStorage", f"{ROOT}/Manager",
                   "org.example.SanStorage.Manager", "Version")
            out.drain(0.3)
        start = len(out.seen)
        daemon.sim({"command": "port-down", "wwpn": "500a098201a1b2c3"})
        out.until(lambda lines: count("InterfacesRemoved", lines[start:]) >= 3, timeout=20,
                  what="the LUNs behind the port going away (dev_loss_tmo)")
        daemon.sim({"command": "port-up", "wwpn": "500a098201a1b2c3"})
        out.until(lambda lines: count("InterfacesAdded", lines[start:]) >= 3, timeout=20,
                  what="the LUNs coming back")
        out.drain(1.0)              # a duplicate would come right behind: read on a moment
    finally:
        mon.kill()
        mon.wait(10)
    sigs = _monitor_signals(out.seen[start:])
    om = [s for s in sigs if s["member"] in ("InterfacesAdded", "InterfacesRemoved")]
    assert om and all(s["path"] == ROOT for s in om)
    added = [s["payload"]["data"][0] for s in om if s["member"] == "InterfacesAdded"]
    assert sorted(added) == luns                                        # once each
    removed = [s["payload"]["data"][0] for s in om if s["member"] == "InterfacesRemoved"]
    assert sorted(removed) == luns
    changed = [s for s in sigs if s["member"] == "PropertiesChanged"]
    assert changed, "the port's state changes were not signalled"      # e.g. RemotePorts
    assert all(s["path"].startswith(ROOT + "/") for s in changed)


def test_sanctl_monitor_shows_devices_going_and_coming(daemon):
    mon = subprocess.Popen([sys.executable, "-m", "sanbusd.cli.sanctl", "--bus",
                            daemon.bus.address, "monitor"], stdout=subprocess.PIPE, text=True,
                           env=daemon.env)

    def shows(sign, path):
        return lambda lines: any(line.split()[1:3] == [sign, path] for line in lines)
    try:
        out = LineReader(mon.stdout)
        assert "monitoring" in out.until(lambda lines: lines, what="sanctl monitor to start")[0]
        daemon.sim({"command": "port-down", "wwpn": "500a098101a1b2c3"})
        out.until(shows("-", f"{ROOT}/luns/1_0_0_2"), what="1:0:0:2 removed")
        daemon.sim({"command": "port-up", "wwpn": "500a098101a1b2c3"})
        lines = out.until(shows("+", f"{ROOT}/luns/1_0_0_2"), what="1:0:0:2 added")
    finally:
        mon.kill()
        mon.wait(10)
    text = "".join(lines)
    assert "RemotePorts" in text and "Blocked" in text
    assert "LUN 1:0:0:2 NETAPP LUN C-Mode 50 GiB" in text

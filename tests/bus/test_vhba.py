"""NPIV vHBAs over D-Bus on the simulated SAN: create, see, keep, delete, and every refusal.

The simulated SAN follows the kernel: vport_create returns before the fabric login, the vport is
Initializing, then Active (or No Fabric Support on a switch without NPIV, Fabric Rejected WWN when
another port uses the WWPN); LUNs masked to the vHBA's WWPN show up after the login.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from dbus_fast import Variant

from sanbusd import client

from sanbus_testing import ROOT, busctl, fc_fabric, sanctl, start_daemon, wait_until

MGR = f"{ROOT}/Manager"
PARENT_WWPN = "1000000000000001"
PARENT_WWNN = "2000000000000001"


def npiv_fabric(path: Path, *, max_vports: int = 4, npiv: bool = True, luns: dict | None = None,
                login_delay: float | None = None) -> Path:
    """One NPIV-capable FC port (host0) and one without NPIV (host1) on fabric A, an array
    port on it, and LUNs masked to the WWPNs given ({lun: [wwpn, ...]})."""
    return fc_fabric(path, hosts=2, max_npiv_vports=[max_vports, 0], switch_npiv=npiv,
                     login_delay=login_delay, zoned=luns)


@dataclass
class Answer:
    returncode: int
    stdout: str                     # the object path
    stderr: str                     # "<error name>: <message>"


def create(d, *args: str, path: str = MGR, iface: str = "Manager", check=False) -> Answer:
    """CreateVhba with options given as busctl would (key, type, value, ...)."""
    opts = {}
    for key, sig, value in zip(args[::3], args[1::3], args[2::3]):
        opts[key] = Variant(sig, {"u": int, "b": lambda v: v == "true"}.get(sig, str)(value))

    async def go():
        bus = await client.connect(d.bus.address)
        try:
            (out,) = await client.call(bus, path, f"org.example.SanStorage.{iface}",
                                       "CreateVhba", "a{sv}", [opts], timeout=60)
            return Answer(0, f'o "{out}"', "")
        except client.ClientError as e:
            return Answer(1, "", f"{e.name}: {e.text}")
        finally:
            bus.disconnect()
    answer = asyncio.run(go())
    assert not check or answer.returncode == 0, answer.stderr
    return answer


def objects(d) -> dict:
    out = json.loads(busctl(d, "--json=short", "call", "org.example.SanStorage", ROOT,
                            "org.freedesktop.DBus.ObjectManager", "GetManagedObjects").stdout)
    return {p: {i: {k: v["data"] for k, v in props.items()} for i, props in ifs.items()}
            for p, ifs in out["data"][0].items()}


def vports(d) -> list[str]:
    return sorted(os.listdir(d.sim_dir / "sys" / "class" / "fc_vports"))


@pytest.fixture
def npiv(system_bus, tmp_path):
    fabric = npiv_fabric(tmp_path / "npiv.toml", luns={5: ["5001a4a000000021"]})
    d = start_daemon(system_bus, tmp_path, fabric)
    yield d
    assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_create_a_vhba_and_see_it_log_in_with_its_luns(npiv):
    d = npiv
    t0 = time.monotonic()
    r = create(d, "wwpn", "s", "0x50:01:A4:A0:00:00:00:21", "wwnn", "s", "5001a4a000000022",
               check=True)
    took = time.monotonic() - t0
    path = f"{ROOT}/vhbas/5001a4a000000021"
    assert r.stdout.strip() == f'o "{path}"'
    objs = objects(d)
    v = objs[path]["org.example.SanStorage.Vhba"]
    assert (v["WWPN"], v["WWNN"], v["State"], v["Persistent"]) == (
        "5001a4a000000021", "5001a4a000000022", "Active", False)
    assert v["Parent"] == f"{ROOT}/hosts/host0"
    host = objs[v["Host"]]
    assert host["org.example.SanStorage.FcHost"]["Vhba"] == path
    assert host["org.example.SanStorage.FcHost"]["PortType"] == "NPIV VPORT"
    # The LUN the SAN team zoned to the vHBA's WWPN is there when the call returns.
    (lun,) = host["org.example.SanStorage.ScsiHost"]["Luns"]
    assert objs[lun]["org.example.SanStorage.Lun"]["Lun"] == 5
    assert objs[lun]["org.example.SanStorage.Lun"]["BlockDevice"].startswith("/dev/sd")
    assert objs[f"{ROOT}/hosts/host0"]["org.example.SanStorage.FcHost"]["VportsInUse"] == 1
    assert [w for w in d.writes() if w["path"].endswith("vport_create")] == [
        {**[w for w in d.writes() if w["path"].endswith("vport_create")][0],
         "path": "class/fc_host/host0/vport_create",
         "data": "5001a4a000000021:5001a4a000000022", "result": "ok"}]
    assert took < 0.2 + 1.5, took          # the simulated login takes 0.2 s


def test_generated_wwns_and_sanctl(npiv):
    d = npiv
    out = sanctl(d, "vhba", "create").stdout
    (row,) = [line.split() for line in out.splitlines() if line.startswith("5")]
    wwpn, wwnn, parent, host, state = row[:5]
    assert wwpn.startswith("5001a4a") and len(wwpn) == 16 and wwnn.startswith("5001a4a")
    assert wwpn != wwnn and (parent, state) == ("host0", "Active")
    listed = sanctl(d, "vhba", "list").stdout
    assert wwpn in listed
    sanctl(d, "vhba", "delete", wwpn)
    assert wwpn not in sanctl(d, "vhba", "list").stdout
    assert vports(d) == []


@pytest.mark.parametrize("args, error, text", [
    (("wwpn", "s", "5001a4a00000002"), "InvalidArgument", "16 hex digits"),
    (("wwpn", "s", "zz01a4a000000021"), "InvalidArgument", "16 hex digits"),
    (("wwpn", "s", PARENT_WWPN), "AlreadyExists", "already a port here"),
    (("wwpn", "s", "5000000000000011"), "AlreadyExists", "already a port here"),
    (("parent", "o", f"{ROOT}/hosts/host1"), "InvalidArgument", "no NPIV"),
    (("parent", "o", f"{ROOT}/hosts/host01"), "NotFound", "no SCSI host"),
    (("parent_wwpn", "s", PARENT_WWPN), "InvalidArgument", "give both"),
    (("parent_wwnn", "s", PARENT_WWNN, "parent_wwpn", "s", "10000000000000ff"), "NotFound",
     "no FC port"),
    (("wait", "u", "0"), "InvalidArgument", "out of range"),
    (("wait", "u", "601"), "InvalidArgument", "out of range"),
    (("fabric_wwn", "s", "1000000000000fff"), "NotFound", "no Online NPIV-capable"),
])
def test_bad_input_is_refused_before_anything_is_written(npiv, args, error, text):
    r = create(npiv, *args)
    assert r.returncode != 0
    assert r.stderr.startswith(f"org.example.SanStorage.Error.{error}: "), r.stderr
    assert text in r.stderr, r.stderr
    assert not [w for w in npiv.writes() if "vport" in w["path"]]
    assert vports(npiv) == []


def test_fcHost_create_uses_its_own_host(npiv):
    create(npiv, "wwpn", "s", "5001a4a000000031", path=f"{ROOT}/hosts/host0", iface="FcHost",
           check=True)
    assert vports(npiv) == ["vport-0:0-0"]
    r = create(npiv, "parent_wwpn", "s", PARENT_WWPN, path=f"{ROOT}/hosts/host0",
               iface="FcHost")
    assert r.stderr.startswith("org.example.SanStorage.Error.InvalidArgument: ")
    assert "uses its own host" in r.stderr


def test_a_full_parent_answers_NoSpace(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path, npiv_fabric(tmp_path / "f.toml", max_vports=1))
    try:
        create(d, check=True)
        r = create(d, "parent", "o", f"{ROOT}/hosts/host0")
        assert r.stderr.startswith("org.example.SanStorage.Error.NoSpace: ")
        assert "max_npiv_vports" in r.stderr
        r = create(d)                       # no parent given: nobody has room
        assert r.stderr.startswith("org.example.SanStorage.Error.NoSpace: ")
        assert "max_npiv_vports" in r.stderr
        assert len(vports(d)) == 1
    finally:
        assert d.stop() == 0


def test_no_fabric_support_is_NotSupported_and_leaves_nothing_unless_kept(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path, npiv_fabric(tmp_path / "f.toml", npiv=False))
    try:
        r = create(d, "wwpn", "s", "5001a4a000000041")
        assert r.stderr.startswith("org.example.SanStorage.Error.NotSupported: ")
        assert "No Fabric Support" in r.stderr and "deleted again" in r.stderr
        assert vports(d) == []
        assert f"{ROOT}/vhbas/5001a4a000000041" not in objects(d)
        r = create(d, "wwpn", "s", "5001a4a000000041", "keep_failed", "b", "true", check=True)
        v = objects(d)[f"{ROOT}/vhbas/5001a4a000000041"]["org.example.SanStorage.Vhba"]
        assert v["State"] == "No Fabric Support"
        assert vports(d) == ["vport-0:0-1"]
    finally:
        assert d.stop() == 0


def test_a_wwpn_used_elsewhere_in_the_fabric_is_rejected(npiv):
    # 5000000000000011 is the array's port: the switch refuses a second login with it. sanbusd
    # sees it as a port here, so it refuses first; a WWPN used by a port sanbusd cannot see
    # is the fabric's to refuse (the simulated SAN knows every port in its fabric).
    r = create(npiv, "wwpn", "s", "5000000000000011")
    assert r.stderr.startswith("org.example.SanStorage.Error.AlreadyExists: ")
    assert "already a port here" in r.stderr


def test_persistent_vhba_comes_back_after_a_reboot(system_bus, tmp_path):
    fabric = npiv_fabric(tmp_path / "f.toml")
    d = start_daemon(system_bus, tmp_path, fabric)
    try:
        create(d, "wwpn", "s", "5001a4a000000051", "persistent", "b", "true", check=True)
        create(d, "wwpn", "s", "5001a4a000000052", check=True)
        records = json.loads((tmp_path / "sim" / "state" / "vhbas.json").read_text())
        assert [r["wwpn"] for r in records["vhbas"]] == ["5001a4a000000051"]
        assert records["vhbas"][0]["parent_wwpn"] == PARENT_WWPN
        assert oct((tmp_path / "sim" / "state" / "vhbas.json").stat().st_mode & 0o777) == "0o600"
    finally:
        assert d.stop() == 0
    # A reboot: the SAN is laid out afresh (no vports), the records remain.
    d = start_daemon(system_bus, tmp_path, fabric, extra=["--sim-fresh"])
    try:
        objs = objects(d)
        assert f"{ROOT}/vhbas/5001a4a000000051" in objs
        assert f"{ROOT}/vhbas/5001a4a000000052" not in objs
        v = objs[f"{ROOT}/vhbas/5001a4a000000051"]["org.example.SanStorage.Vhba"]
        assert v["Persistent"] is True and v["State"] == "Active"
        (row,) = objs[MGR]["org.example.SanStorage.Manager"]["PersistentVhbas"]
        assert row["Status"]["data"] == "re-created" and row["WWPN"]["data"] == "5001a4a000000051"
        busctl(d, "call", "org.example.SanStorage", f"{ROOT}/vhbas/5001a4a000000051",
               "org.example.SanStorage.Vhba", "SetPersistent", "ba{sv}", "false", "0")
        assert json.loads((tmp_path / "sim" / "state" / "vhbas.json").read_text()) == {"vhbas": []}
        v = objects(d)[f"{ROOT}/vhbas/5001a4a000000051"]["org.example.SanStorage.Vhba"]
        assert v["Persistent"] is False
    finally:
        assert d.stop() == 0


def test_a_record_that_cannot_be_recreated_is_reported(system_bus, tmp_path):
    state = tmp_path / "sim" / "state"
    state.mkdir(parents=True)
    (state / "vhbas.json").write_text(json.dumps({"vhbas": [
        {"wwpn": "5001a4a000000061", "wwnn": "5001a4a000000062",
         "parent_wwnn": "20000000000000ff", "parent_wwpn": "10000000000000ff"}]}))
    d = start_daemon(system_bus, tmp_path, npiv_fabric(tmp_path / "f.toml"))
    try:
        (row,) = objects(d)[MGR]["org.example.SanStorage.Manager"]["PersistentVhbas"]
        assert row["Status"]["data"] == "failed"
        assert "10000000000000ff" in row["Message"]["data"]
        assert "cannot re-create persistent vHBA 5001a4a000000061" in d.log()
        assert "5001a4a000000061" in sanctl(d, "vhba", "list").stdout
    finally:
        assert d.stop() == 0


def test_a_corrupt_record_file_is_never_overwritten(system_bus, tmp_path):
    state = tmp_path / "sim" / "state"
    state.mkdir(parents=True)
    (state / "vhbas.json").write_text('{"vhbas": [{"wwpn": ')
    d = start_daemon(system_bus, tmp_path, npiv_fabric(tmp_path / "f.toml"))
    try:
        assert "vhbas.json cannot be used" in d.log()
        r = create(d, "wwpn", "s", "5001a4a000000071", "persistent", "b", "true")
        assert r.stderr.startswith("org.example.SanStorage.Error.Failed: ")
        assert "cannot be used" in r.stderr
        assert (state / "vhbas.json").read_text() == '{"vhbas": [{"wwpn": '
        # Nothing was made that could not be recorded.
        assert not [w for w in d.writes() if w["path"].endswith("vport_create")]
        assert "5001a4a000000071" not in busctl(d, "tree", "org.example.SanStorage").stdout
    finally:
        assert d.stop() == 0


def test_a_persistent_vhba_that_cannot_be_recorded_is_not_left_behind(system_bus, tmp_path):
    """The state directory becomes unusable while sanbusd runs (a file where it should be):
    CreateVhba(persistent) answers Failed saying so, and the vHBA it made is deleted again."""
    state = tmp_path / "state"
    state.mkdir()
    d = start_daemon(system_bus, tmp_path, npiv_fabric(tmp_path / "f.toml"),
                     extra=["--state-dir", str(state / "sub")])
    try:
        state.rmdir()
        state.write_text("not a directory")
        r = create(d, "wwpn", "s", "5001a4a000000072", "persistent", "b", "true")
        assert r.stderr.startswith("org.example.SanStorage.Error.Failed: "), r
        assert "check the state directory" in r.stderr
        wait_until(lambda: "5001a4a000000072" not in busctl(
            d, "tree", "org.example.SanStorage").stdout, what="the vHBA deleted again")
        deletes = [w for w in d.writes() if w["path"].endswith("vport_delete")]
        assert deletes and "5001a4a000000072" in deletes[-1]["data"], deletes
        assert "Traceback" not in d.log()
    finally:
        assert d.stop() == 0


def test_delete_removes_the_vhba_its_host_and_luns(npiv):
    d = npiv
    create(d, "wwpn", "s", "5001a4a000000021", check=True)
    objs = objects(d)
    host = objs[f"{ROOT}/vhbas/5001a4a000000021"]["org.example.SanStorage.Vhba"]["Host"]
    luns = objs[host]["org.example.SanStorage.ScsiHost"]["Luns"]
    assert luns
    busctl(d, "call", "org.example.SanStorage", f"{ROOT}/vhbas/5001a4a000000021",
           "org.example.SanStorage.Vhba", "Delete", "a{sv}", "0")
    objs = objects(d)
    assert not {f"{ROOT}/vhbas/5001a4a000000021", host, *luns} & objs.keys()
    assert objs[f"{ROOT}/hosts/host0"]["org.example.SanStorage.FcHost"]["VportsInUse"] == 0
    assert vports(d) == []
    r = busctl(d, "call", "org.example.SanStorage", f"{ROOT}/vhbas/5001a4a000000021",
               "org.example.SanStorage.Vhba", "Delete", "a{sv}", "0", check=False)
    assert "no object at" in r.stderr


def test_an_unprivileged_user_cannot_create_or_delete(npiv):
    d = npiv
    r = busctl(d, "call", "org.example.SanStorage", MGR, "org.example.SanStorage.Manager",
               "CreateVhba", "a{sv}", "1", "auth.no_user_interaction", "b", "true",
               check=False, user="sanbob")
    assert r.returncode != 0 and "authentication" in r.stderr.lower(), r.stderr
    assert vports(d) == []
    r = busctl(d, "call", "org.example.SanStorage", MGR, "org.example.SanStorage.Manager",
               "CreateVhba", "a{sv}", "0", check=False, user="sanalice")
    assert r.returncode == 0, r.stderr
    assert len(vports(d)) == 1


def test_64_concurrent_creates_never_exceed_the_limit(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path, npiv_fabric(tmp_path / "f.toml", max_vports=48))

    async def go():
        bus = await client.connect(d.bus.address)

        async def one(i: int):
            try:
                return await client.call(bus, MGR, "org.example.SanStorage.Manager",
                                         "CreateVhba", "a{sv}",
                                         [{"parent": Variant("o", f"{ROOT}/hosts/host0"),
                                           "wait_luns": Variant("b", False)}], timeout=120)
            except client.ClientError as e:
                return e.name
        try:
            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(64))), 180)
        finally:
            bus.disconnect()
    try:
        results = asyncio.run(go())
        made = [r for r in results if isinstance(r, list)]
        refused = [r for r in results if not isinstance(r, list)]
        assert len(made) == 48, refused
        assert refused == ["org.example.SanStorage.Error.NoSpace"] * 16
        assert len(vports(d)) == 48
        objs = objects(d)
        assert len([p for p in objs if "/vhbas/" in p]) == 48
        assert objs[f"{ROOT}/hosts/host0"]["org.example.SanStorage.FcHost"]["VportsInUse"] == 48
    finally:
        assert d.stop() == 0


def test_a_fabric_going_down_and_back_shows_on_the_vhba(npiv):
    d = npiv
    create(d, "wwpn", "s", "5001a4a000000021", check=True)
    path = f"{ROOT}/vhbas/5001a4a000000021"
    d.sim({"command": "fabric-down", "fabric": "A"})

    def vhba_state():
        objs = objects(d)
        return (objs[path]["org.example.SanStorage.Vhba"]["State"],
                objs[f"{ROOT}/hosts/host0"]["org.example.SanStorage.FcHost"]["PortState"])
    wait_until(lambda: vhba_state() == ("Linkdown", "Linkdown"), timeout=10)
    d.sim({"command": "fabric-up", "fabric": "A"})
    wait_until(lambda: vhba_state() == ("Active", "Online"), timeout=10)
    v = objects(d)[path]["org.example.SanStorage.Vhba"]
    assert v["LastState"] == "Linkdown"
    with pytest.raises(SystemExit, match="no fabric named"):
        d.sim({"command": "fabric-down", "fabric": "nope"})


def test_login_delay_is_the_fabric_files(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path, npiv_fabric(tmp_path / "f.toml", login_delay=1.5))
    try:
        t0 = time.monotonic()
        create(d, "wwpn", "s", "5001a4a000000081", check=True)
        took = time.monotonic() - t0
        assert 1.5 <= took < 1.5 + 1.5, took
    finally:
        assert d.stop() == 0


def test_delete_is_busy_while_a_lun_behind_it_is_held_open(npiv):
    d = npiv
    create(d, "wwpn", "s", "5001a4a000000021", check=True)
    objs = objects(d)
    host = objs[f"{ROOT}/vhbas/5001a4a000000021"]["org.example.SanStorage.Vhba"]["Host"]
    (lun,) = objs[host]["org.example.SanStorage.ScsiHost"]["Luns"]
    block = objs[lun]["org.example.SanStorage.Lun"]["BlockDevice"].removeprefix("/dev/")
    d.sim({"command": "hold-open", "block": block, "by": "qemu-system-x86 (pid 4242)"})
    path = f"{ROOT}/vhbas/5001a4a000000021"
    r = busctl(d, "call", "org.example.SanStorage", path, "org.example.SanStorage.Vhba",
               "Delete", "a{sv}", "0", check=False)
    assert r.returncode != 0 and "qemu-system-x86 (pid 4242)" in r.stderr, r.stderr
    assert vports(d) == ["vport-0:0-0"]
    r = busctl(d, "call", "org.example.SanStorage", lun, "org.example.SanStorage.Lun",
               "Delete", "a{sv}", "0", check=False)
    assert r.returncode != 0 and "in use by qemu-system-x86" in r.stderr, r.stderr
    d.sim({"command": "release", "block": block})
    # a multipath map over its LUN holds it too
    wwid = objs[lun]["org.example.SanStorage.Lun"]["WWID"]
    d.sim({"command": "mpath-create", "wwid": wwid})
    wait_until(lambda: objects(d)[lun]["org.example.SanStorage.Lun"]["MultipathMap"] != "/",
               timeout=10)
    r = busctl(d, "call", "org.example.SanStorage", path, "org.example.SanStorage.Vhba",
               "Delete", "a{sv}", "0", check=False)
    assert r.returncode != 0 and "multipath map mpatha" in r.stderr, r.stderr
    assert vports(d) == ["vport-0:0-0"]
    busctl(d, "call", "org.example.SanStorage", path, "org.example.SanStorage.Vhba",
           "Delete", "a{sv}", "1", "force", "b", "true")
    assert vports(d) == []

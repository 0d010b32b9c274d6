"""Multipath as a user sees it, on the simulated SAN with the real dbus-daemon and polkitd:
CreateAllMultipathMaps, maps degrading and healing with their paths, Flush (unused, held open by
a VM, deferred, retiring the LUN), SetMultipathConfig (its drop-in, refused values), multipathd
absent / hung / answering garbage / restarting, and sanctl multipath.

The demo fabric: LUNs 0, 1 and 2 of the array are seen through two FC ports (1:0:0:N and
2:0:0:N), so CreateAllMultipathMaps makes mpatha, mpathb and mpathc with two paths each; the
SAS boot disk (0:0:0:0) has one path and gets no map.
"""

import asyncio
import sys
import time

import pytest
from dbus_fast import Message, MessageType, Variant

from sanbus_testing import (DEMO_FABRIC, ROOT, Signals, fc_fabric, gdbus, run, sanctl,
                            start_daemon, wait_until)
from sanbusd.bus.contract import data_dir
from sanbusd.client import connect, plain
from test_inventory_bus import _xml_interfaces

BUS_NAME = "org.example.SanStorage"
MGR = f"{ROOT}/Manager"
MGR_I = "org.example.SanStorage.Manager"
MAP_I = "org.example.SanStorage.MultipathMap"
LUN_I = "org.example.SanStorage.Lun"
JOB_I = "org.example.SanStorage.Job"
ERR = "org.example.SanStorage.Error."
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
CALL_TIMEOUT = 60           # s for one answer: a call left unanswered fails, it does not hang
FAULT_TIMEOUT = 20          # s for an answer while multipathd misbehaves (it is set to 2 s)
MPD_TIMEOUT = 2             # --multipathd-timeout of the daemons started here
MPD_POLL = 0.5              # --multipathd-poll: path states compared with multipathd's this often
PORT_A = "500a098101a1b2c3"     # the array's port on fabric A: paths 1:0:0:N go through it

# LUN N of the demo array: its sysfs WWID, multipath's WWID (ID_SERIAL), its map, its paths.
NAA = {n: f"naa.6001405000000000000000000000000{n}" for n in range(3)}
MPW = {n: "3" + NAA[n][4:] for n in range(3)}
MAP = {n: f"{ROOT}/multipath/{MPW[n]}" for n in range(3)}
PATHS = {n: [f"{ROOT}/luns/1_0_0_{n}", f"{ROOT}/luns/2_0_0_{n}"] for n in range(3)}
SIZE = {0: 100 << 30, 1: 200 << 30, 2: 50 << 30}
HOLDER = "qemu-system-x86 (pid 4242)"


# -- helpers --------------------------------------------------------------------------------------

async def acall(bus, path, iface, member, sig="", body=None, timeout=CALL_TIMEOUT):
    try:
        return await asyncio.wait_for(bus.call(Message(
            destination=BUS_NAME, path=path, interface=iface, member=member, signature=sig,
            body=body or [])), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"{member} on {path} got no answer within {timeout:g} s (an error "
                             "of multipathd must reach the caller as a named error, not "
                             "leave the call hanging)") from None


def call(d, path, iface, member, sig="", body=None, timeout=CALL_TIMEOUT):
    async def go():
        bus = await connect(d.bus.address)
        try:
            return await acall(bus, path, iface, member, sig, body, timeout)
        finally:
            bus.disconnect()
    return asyncio.run(go())


def ok(reply):
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return reply.body


def error(reply, *names):
    """The reply is one of these errors; its message."""
    assert reply.message_type == MessageType.ERROR, f"expected {names}, got {reply.body}"
    assert reply.error_name in names, (reply.error_name, reply.body)
    text = reply.body[0] if reply.body else ""
    assert "internal error" not in text and "Traceback" not in text, text
    return text


def opts(**kw):
    sigs = {"wwids": "as", "all_eligible": "b", "timeout": "u", "deferred": "b",
            "remove_paths": "b"}
    return {k: v if isinstance(v, Variant) else Variant(sigs[k], v) for k, v in kw.items()}


def create_all(d, wait=CALL_TIMEOUT, **kw):
    return call(d, MGR, MGR_I, "CreateAllMultipathMaps", "a{sv}", [opts(**kw)], wait)


def flush(d, path, wait=CALL_TIMEOUT, **kw):
    return call(d, path, MAP_I, "Flush", "a{sv}", [opts(**kw)], wait)


def set_config(d, wait=CALL_TIMEOUT, **config):
    types = {"user_friendly_names": "b", "find_multipaths": "s", "include_wwids": "as",
             "exclude_wwids": "as"}
    body = {k: v if isinstance(v, Variant) else Variant(types[k], v) for k, v in config.items()}
    return call(d, MGR, MGR_I, "SetMultipathConfig", "a{sv}a{sv}", [body, {}], wait)


def prop(d, path, iface, name, timeout=CALL_TIMEOUT):
    return plain(ok(call(d, path, "org.freedesktop.DBus.Properties", "Get", "ss",
                         [iface, name], timeout))[0])


def objects(d):
    return plain(ok(call(d, ROOT, "org.freedesktop.DBus.ObjectManager",
                         "GetManagedObjects"))[0])


def maps(d):
    """The map objects on the bus: path -> MultipathMap properties."""
    return {p: o[MAP_I] for p, o in objects(d).items() if MAP_I in o}


def sim_maps(d):
    """The maps as the simulated device-mapper has them: name -> (dm, wwid, map_loads)."""
    return {m["name"]: (m["dm"], m["wwid"], m["map_loads"])
            for m in d.sim({"command": "status"})["maps"]}


def sim_cli(d, *args, check=True):
    return run(sys.executable, "-m", "sanbusd.cli.sim", "--dir", str(d.sim_dir), *args,
               timeout=30, check=check)


def dropin(d):
    return d.sim_dir / "etc" / "multipath" / "conf.d" / "sanbusd.conf"


def dropin_bytes(d):
    p = dropin(d)
    return p.read_bytes() if p.exists() else None


def lun_paths(m):
    return [p["Lun"] for p in m["Paths"]]


def map_changes(seen, path):
    """The PropertiesChanged signals of the map at `path`, as dicts of what changed."""
    return [plain(m.body[1]) for m in seen if m.member == "PropertiesChanged"
            and m.path == path and m.body[0] == MAP_I]


def stop(d):
    rc = d.stop()
    log = d.log()
    assert rc == 0, f"sanbusd exited with {rc}:\n{log}"
    assert "Traceback" not in log, log


@pytest.fixture
def mp(system_bus, tmp_path):
    """sanbusd on the demo fabric, asking multipathd with a 2 s deadline and comparing path
    states every 0.5 s (defaults: 30 s and 5 s)."""
    d = start_daemon(system_bus, tmp_path, extra=[
        "--multipathd-timeout", str(MPD_TIMEOUT), "--multipathd-poll", str(MPD_POLL)])
    yield d
    d.sim({"command": "multipathd", "mode": "running"})     # let go of hung calls
    stop(d)


def demo_with(tmp_path, dev_loss_tmo):
    text = DEMO_FABRIC.read_text()
    assert "dev_loss_tmo = 2.0" in text
    path = tmp_path / "demo-devloss.toml"
    path.write_text(text.replace("dev_loss_tmo = 2.0", f"dev_loss_tmo = {dev_loss_tmo}"))
    return path


# -- CreateAllMultipathMaps -----------------------------------------------------------------------

def test_create_all_makes_a_map_per_wwid_with_two_paths_while_a_job_shows_it(mp):
    async def go():
        sigs = await Signals.connect(mp.bus.address, [f"type='signal',sender='{BUS_NAME}'"])
        try:
            # The call and the signals on one connection: what came before the reply is what
            # a client saw while the call ran.
            reply = await acall(sigs.bus, MGR, MGR_I, "CreateAllMultipathMaps", "a{sv}", [{}])
            before_reply = list(sigs.seen)
            objs = plain((await acall(sigs.bus, ROOT, "org.freedesktop.DBus.ObjectManager",
                                      "GetManagedObjects")).body[0])
            return reply, before_reply, objs
        finally:
            sigs.close()
    reply, seen, objs = asyncio.run(go())
    made = ok(reply)[0]
    assert made == [MAP[0], MAP[1], MAP[2]]
    # on the bus when the call returns, each with its two paths, healthy
    assert set(made) <= set(objs), "the call returned before its maps were on the bus"
    for n in range(3):
        m = objs[made[n]][MAP_I]
        assert m["Name"] == f"mpath{'abc'[n]}" and m["WWID"] == MPW[n]
        assert m["DmDevice"].startswith("/dev/dm-") and m["Size"] == SIZE[n]
        assert lun_paths(m) == PATHS[n]
        for p, lun in zip(m["Paths"], PATHS[n]):
            assert p == {"Lun": lun, "Device": objs[lun][LUN_I]["BlockDevice"][len("/dev/"):],
                         "DmState": "active", "DeviceState": "running",
                         "CheckerState": "ready", "Up": True}
            assert objs[lun][LUN_I]["MultipathMap"] == made[n]         # the back-link
        assert (m["ActivePaths"], m["TotalPaths"], m["Health"]) == (2, 2, "healthy")
    assert objs[f"{ROOT}/luns/0_0_0_0"][LUN_I]["MultipathMap"] == "/"     # one path: no map
    assert sorted(m[0] for m in sim_maps(mp).values()) == ["dm-0", "dm-1", "dm-2"]
    # the maps were announced, and a multipath-create job was published while the call ran
    added = {m.body[0]: plain(m.body[1]) for m in seen if m.member == "InterfacesAdded"}
    assert set(made) <= set(added)
    jobs = [(p, i[JOB_I]) for p, i in added.items() if JOB_I in i]
    assert len(jobs) == 1, jobs
    job_path, job = jobs[0]
    assert job_path.startswith(f"{ROOT}/jobs/")
    assert job["Operation"] == "multipath-create" and job["StartedByUID"] == 0
    assert job["Finished"] is False
    completed = [m.body for m in seen if m.member == "Completed" and m.path == job_path]
    assert [c[0] for c in completed] == [True], completed
    progress = [plain(m.body[1])["Progress"] for m in seen if m.member == "PropertiesChanged"
                and m.path == job_path and "Progress" in m.body[1]]
    assert progress == sorted(progress) and all(0 <= x <= 1 for x in progress)
    assert prop(mp, job_path, JOB_I, "Success") is True          # finished jobs stay readable
    # Map and Job objects serve the documented interfaces, with the documented types
    documented = _xml_interfaces((data_dir() / "org.example.SanStorage.xml").read_text())
    for path, iface in ((made[0], MAP_I), (job_path, JOB_I)):
        live = _xml_interfaces(gdbus(mp, "introspect", "--dest", BUS_NAME, "--object-path",
                                     path, "--xml").stdout)
        assert live == {iface: documented[iface]}, path
    typed = plain(ok(call(mp, made[0], "org.freedesktop.DBus.Properties", "GetAll", "s",
                          [MAP_I]))[0])
    assert set(typed) == set(documented[MAP_I]["properties"])


def test_create_all_is_idempotent(mp):
    first = ok(create_all(mp))[0]
    sim_cli(mp, "hold-open", "mpathb", "--by", HOLDER)          # a map in use: left alone too
    before_bus, before_sim = maps(mp), sim_maps(mp)

    async def again():
        sigs = await Signals.connect(mp.bus.address)
        try:
            reply = await acall(sigs.bus, MGR, MGR_I, "CreateAllMultipathMaps", "a{sv}", [{}])
            return reply, list(sigs.seen)
        finally:
            sigs.close()
    reply, seen = asyncio.run(again())
    assert ok(reply)[0] == first
    # no map made again, reloaded or renamed: same dm devices, no objects coming or going
    assert sim_maps(mp) == before_sim
    assert {p: m["DmDevice"] for p, m in maps(mp).items()} == {
        p: m["DmDevice"] for p, m in before_bus.items()}
    assert not [m for m in seen if m.member in ("InterfacesAdded", "InterfacesRemoved")
                and "/multipath/" in m.body[0]]


def test_create_all_for_given_wwids_in_either_form(mp):
    assert ok(create_all(mp, wwids=[NAA[1]]))[0] == [MAP[1]]              # sysfs form
    assert ok(create_all(mp, wwids=[MPW[2], NAA[2].upper().replace("NAA", "naa")]))[0] == [
        MAP[2]]                                                            # multipath form, twice
    assert sorted(maps(mp)) == [MAP[1], MAP[2]]                            # LUN 0: no map
    assert prop(mp, PATHS[0][0], LUN_I, "MultipathMap") == "/"


def test_all_eligible_also_maps_wwids_with_one_path(system_bus, tmp_path):
    # LUNs 0 and 1 masked to both HBA ports, LUN 2 to the first only: one path.
    fabric = fc_fabric(tmp_path / "f.toml", hosts=2, luns=(0, 1),
                       zoned={2: ["1000000000000001"]})
    d = start_daemon(system_bus, tmp_path, fabric)
    try:
        luns = {p: o[LUN_I] for p, o in objects(d).items() if LUN_I in o}
        single = [p for p, lun in luns.items() if lun["Lun"] == 2]
        assert len(single) == 1
        wwid2 = "3" + luns[single[0]]["WWID"][4:]
        two = ok(create_all(d))[0]
        assert len(two) == 2 and f"{ROOT}/multipath/{wwid2}" not in two
        assert sorted(maps(d)) == sorted(two)
        every = ok(create_all(d, all_eligible=True))[0]
        assert sorted(every) == sorted(two + [f"{ROOT}/multipath/{wwid2}"])
        m = maps(d)[f"{ROOT}/multipath/{wwid2}"]
        assert lun_paths(m) == single and (m["TotalPaths"], m["Health"]) == (1, "healthy")
        assert prop(d, single[0], LUN_I, "MultipathMap") == f"{ROOT}/multipath/{wwid2}"
    finally:
        stop(d)


def test_bad_input_to_create_all_is_refused_and_changes_nothing(mp):
    cases = [
        ({"wwids": ["naa.6001405g"]}, ERR + "InvalidArgument"),             # not hex
        ({"wwids": ["3600 1405"]}, ERR + "InvalidArgument"),                # a blank
        ({"wwids": [MPW[1], '36001405"; reboot']}, ERR + "InvalidArgument"),
        ({"wwids": []}, ERR + "InvalidArgument"),
        ({"wwids": ["naa.600140500000000000000000000000ff"]}, ERR + "NotFound"),
        ({"wwids": [MPW[1], "36001405ffffffffffffffffffffffff0"]}, ERR + "NotFound"),
        ({"wwids": [MPW[1]], "all_eligible": True}, ERR + "InvalidArgument"),
        ({"timeout": 0}, ERR + "InvalidArgument"),
        ({"timeout": 601}, ERR + "InvalidArgument"),
        ({"wwids": Variant("s", MPW[1])}, INVALID_ARGS),                     # wrong type
        ({"all_eligible": Variant("s", "yes")}, INVALID_ARGS),
        ({"deferred": True}, INVALID_ARGS),                                  # Flush's option
        ({"wwid": Variant("as", [MPW[1]])}, INVALID_ARGS),                   # unknown option
    ]
    for kw, want in cases:
        text = error(create_all(mp, **kw), want)
        if want == ERR + "NotFound":                    # names the WWID that is not here
            assert "3600140500000000000000000000000ff" in text or \
                "36001405ffffffffffffffffffffffff0" in text, text
    assert maps(mp) == {} and sim_maps(mp) == {}
    assert dropin_bytes(mp) is None and mp.writes() == []


# -- paths failing ---------------------------------------------------------------------------------

def test_a_port_going_down_degrades_each_map_with_one_signal(system_bus, tmp_path):
    # dev_loss_tmo 60 s: the port's paths stay (failed) instead of going after 2 s
    d = start_daemon(system_bus, tmp_path, demo_with(tmp_path, 60.0),
                     extra=["--multipathd-poll", str(MPD_POLL)])
    try:
        made = ok(create_all(d))[0]

        def health_is(value):
            return lambda seen: all(any(c.get("Health") == value for c in map_changes(seen, p))
                                    for p in made)

        async def go():
            sigs = await Signals.connect(d.bus.address)
            try:
                d.sim({"command": "port-down", "wwpn": PORT_A})
                await sigs.wait_for(health_is("degraded"), what="every map degraded")
                down = len(sigs.seen)
                # a second signal per map would come right behind the first (or with the
                # next comparison with multipathd, every 0.5 s): read on a moment
                await asyncio.sleep(2 * MPD_POLL + 0.5)
                between = list(sigs.seen)
                d.sim({"command": "port-up", "wwpn": PORT_A})
                await sigs.wait_for(lambda seen: health_is("healthy")(seen[len(between):]),
                                    what="every map healthy again")
                await asyncio.sleep(2 * MPD_POLL + 0.5)
                return between, list(sigs.seen), down
            finally:
                sigs.close()
        between, seen, down = asyncio.run(go())
        for n, path in enumerate(made):
            downs = map_changes(between, path)
            assert len(downs) == 1, (f"{path}: {len(downs)} PropertiesChanged for one port "
                                     f"going down (one per map expected): {downs}")
            c = downs[0]
            assert c["Health"] == "degraded" and c["ActivePaths"] == 1, c
            failed, alive = c["Paths"]
            assert failed["Lun"] == PATHS[n][0] and alive["Lun"] == PATHS[n][1]
            assert (failed["DmState"], failed["CheckerState"], failed["Up"]) == (
                "failed", "faulty", False), failed
            assert (alive["DmState"], alive["CheckerState"], alive["Up"]) == (
                "active", "ready", True), alive
            ups = map_changes(seen[len(between):], path)
            assert len(ups) == 1, f"{path}: {len(ups)} PropertiesChanged for the port's return"
            assert ups[0]["Health"] == "healthy" and ups[0]["ActivePaths"] == 2
            assert all(p["Up"] and p["CheckerState"] == "ready" for p in ups[0]["Paths"])
        assert down <= len(between)
        assert {p: m["Health"] for p, m in maps(d).items()} == dict.fromkeys(made, "healthy")
    finally:
        stop(d)


def test_a_path_set_offline_degrades_its_map(mp):
    ok(create_all(mp))
    sim_cli(mp, "device-state", "2:0:0:1", "offline")
    m = wait_until(lambda: (m := maps(mp)[MAP[1]])["Health"] == "degraded" and m,
                   what="mpathb degraded")
    assert m["ActivePaths"] == 1 and m["TotalPaths"] == 2
    off = next(p for p in m["Paths"] if p["Lun"] == PATHS[1][1])
    assert off["DeviceState"] == "offline" and off["Up"] is False
    assert maps(mp)[MAP[0]]["Health"] == maps(mp)[MAP[2]]["Health"] == "healthy"
    sim_cli(mp, "device-state", "2:0:0:1", "running")
    wait_until(lambda: maps(mp)[MAP[1]]["Health"] == "healthy", what="mpathb healthy again")


# -- Flush ----------------------------------------------------------------------------------------

def test_flush_of_an_unused_map(mp):
    ok(create_all(mp))
    ok(flush(mp, MAP[0]))
    # gone when the call returns; its paths stay, as plain LUNs
    assert sorted(maps(mp)) == [MAP[1], MAP[2]]
    objs = objects(mp)
    for lun in PATHS[0]:
        assert objs[lun][LUN_I]["MultipathMap"] == "/"
    assert "mpatha" not in sim_maps(mp)
    assert mp.writes() == []                       # through multipathd: nothing in sysfs
    # a map that is not there (any more)
    for path in (MAP[0], f"{ROOT}/multipath/36001405ffffffffffffffffffffffff0"):
        error(flush(mp, path), UNKNOWN_OBJECT, ERR + "NotFound")


def test_flush_of_a_map_held_open_is_busy_naming_the_holder(mp):
    ok(create_all(mp))
    sim_cli(mp, "hold-open", "mpatha", "--by", HOLDER)
    text = error(flush(mp, MAP[0]), ERR + "Busy")
    assert HOLDER in text and "mpatha" in text, text
    assert MAP[0] in maps(mp) and "mpatha" in sim_maps(mp)
    assert prop(mp, PATHS[0][0], LUN_I, "MultipathMap") == MAP[0]


def test_a_deferred_flush_removes_the_map_when_its_holder_lets_go(mp):
    ok(create_all(mp))
    sim_cli(mp, "hold-open", "mpatha", "--by", HOLDER)
    ok(flush(mp, MAP[0], deferred=True))
    assert MAP[0] in maps(mp) and "mpatha" in sim_maps(mp)       # still in use: still there
    status = {m["name"]: m for m in mp.sim({"command": "status"})["maps"]}
    assert status["mpatha"]["deferred"] is True
    sim_cli(mp, "release", "mpatha")
    wait_until(lambda: MAP[0] not in maps(mp), what="the map going once released")
    assert "mpatha" not in sim_maps(mp)
    assert prop(mp, PATHS[0][1], LUN_I, "MultipathMap") == "/"


def test_a_deferred_flush_with_remove_paths_does_not_drop_remove_paths(mp):
    """deferred and remove_paths together, on a map in use: the paths must go once the map
    goes, or the call must say it cannot do both; a success that leaves the LUN's paths in
    place is a retire that silently did not happen."""
    ok(create_all(mp))
    sim_cli(mp, "hold-open", "mpathc", "--by", HOLDER)
    reply = flush(mp, MAP[2], deferred=True, remove_paths=True)
    if reply.message_type == MessageType.ERROR:
        error(reply, ERR + "InvalidArgument", ERR + "Busy")
        assert MAP[2] in maps(mp) and set(PATHS[2]) <= set(objects(mp))
        return
    sim_cli(mp, "release", "mpathc")
    wait_until(lambda: MAP[2] not in maps(mp), what="the map going once released")
    try:
        wait_until(lambda: not set(PATHS[2]) & set(objects(mp)), timeout=10,
                   what="the paths going with it")
    except AssertionError:
        raise AssertionError(
            "Flush(deferred=true, remove_paths=true) of a map in use answered success, but "
            "its paths were never removed after the deferred remove (remove_paths is dropped "
            "on the deferred branch of MultipathOps.flush)") from None


def test_flush_with_remove_paths_retires_the_lun(mp):
    ok(create_all(mp))
    ok(flush(mp, MAP[2], remove_paths=True))
    objs = objects(mp)
    assert MAP[2] not in objs
    assert not set(PATHS[2]) & set(objs), "the map's paths are still on the bus"
    assert set(PATHS[1]) <= set(objs) and MAP[1] in objs
    deletes = [(w["path"], w["data"]) for w in mp.writes()]
    assert sorted(deletes) == [(f"class/scsi_device/{h}:0:0:2/device/delete", "1")
                               for h in (1, 2)]


# -- SetMultipathConfig ----------------------------------------------------------------------------

def test_friendly_names_off_names_maps_by_wwid_and_keeps_their_paths(mp):
    made = ok(create_all(mp))[0]
    ok(set_config(mp, user_friendly_names=False))
    config = prop(mp, MGR, MGR_I, "MultipathConfig")
    assert config["UserFriendlyNames"] is False
    assert config["DropIn"] == str(dropin(mp))
    text = dropin(mp).read_text()
    assert "user_friendly_names no" in text and "find_multipaths" not in text, text
    # the maps are renamed by multipathd's reconfigure; their objects stay where they were
    wait_until(lambda: {p: m["Name"] for p, m in maps(mp).items()} == {
        MAP[n]: MPW[n] for n in range(3)}, what="maps named by their WWIDs")
    assert sorted(maps(mp)) == made
    assert sorted(sim_maps(mp)) == sorted(MPW.values())
    ok(set_config(mp, user_friendly_names=True))
    wait_until(lambda: sorted(m["Name"] for m in maps(mp).values()) == [
        "mpatha", "mpathb", "mpathc"], what="friendly names again")


def test_invalid_settings_are_refused_and_nothing_is_written(mp):
    bad = [
        ({"find_multipaths": "bogus"}, ERR + "InvalidArgument"),
        ({"include_wwids": [MPW[1], NAA[1]]}, ERR + "InvalidArgument"),        # duplicate
        ({"exclude_wwids": [MPW[2], MPW[2]]}, ERR + "InvalidArgument"),
        ({"include_wwids": [NAA[1]], "exclude_wwids": [MPW[1]]}, ERR + "InvalidArgument"),
        ({"exclude_wwids": ["naa.6001405g"]}, ERR + "InvalidArgument"),       # malformed
        ({"include_wwids": ["36001405 0"]}, ERR + "InvalidArgument"),
        ({"user_friendly_names": Variant("s", "no")}, INVALID_ARGS),            # wrong type
        ({"find_multipaths": Variant("b", False)}, INVALID_ARGS),
        ({"polling_interval": Variant("u", 5)}, INVALID_ARGS),                  # unknown key
        ({"user_friendly_names": False, "UserFriendlyNames": Variant("b", False)},
         INVALID_ARGS),
        ({}, INVALID_ARGS),
    ]
    config = prop(mp, MGR, MGR_I, "MultipathConfig")
    for kw, want in bad:
        error(set_config(mp, **kw), want)
    assert dropin_bytes(mp) is None, "a refused setting wrote the drop-in"
    assert prop(mp, MGR, MGR_I, "MultipathConfig") == config
    # with a drop-in written: refused settings leave it byte for byte
    ok(set_config(mp, find_multipaths="greedy", exclude_wwids=[NAA[0]]))
    written = dropin_bytes(mp)
    config = prop(mp, MGR, MGR_I, "MultipathConfig")
    assert config["FindMultipaths"] == "greedy" and config["ExcludeWwids"] == [MPW[0]]
    for kw, want in bad:
        error(set_config(mp, **kw), want)
    assert dropin_bytes(mp) == written
    assert prop(mp, MGR, MGR_I, "MultipathConfig") == config


def test_create_all_for_an_excluded_wwid_says_it_is_excluded(mp):
    """An excluded (blacklisted) WWID has LUN paths here: asking for its map is multipathd
    refusing it (Failed, naming it and why), not NotFound ("no LUN path here")."""
    ok(set_config(mp, exclude_wwids=[NAA[0]]))
    reply = create_all(mp, wwids=[NAA[0]])
    assert not (reply.message_type == MessageType.ERROR and reply.error_name == ERR + "NotFound"), (
        "CreateAllMultipathMaps(wwids=[an excluded WWID]) answers NotFound 'no LUN path here "
        f"has WWID …' although its LUN has two paths: {reply.body}")
    text = error(reply, ERR + "Failed")
    assert MPW[0] in text and ("blacklist" in text or "exclude" in text), text
    assert MAP[0] not in maps(mp)


def test_excluding_the_wwid_of_a_map_in_use_is_busy(mp):
    ok(create_all(mp))
    sim_cli(mp, "hold-open", "mpathb", "--by", HOLDER)
    text = error(set_config(mp, exclude_wwids=[NAA[1]]), ERR + "Busy")
    assert HOLDER in text, text
    assert dropin_bytes(mp) is None
    text = error(set_config(mp, include_wwids=[MPW[0], MPW[2]]), ERR + "Busy")   # leaves it out
    assert dropin_bytes(mp) is None
    assert sorted(maps(mp)) == [MAP[0], MAP[1], MAP[2]]
    assert prop(mp, MGR, MGR_I, "MultipathConfig")["ExcludeWwids"] == []


# -- multipathd misbehaving ------------------------------------------------------------------------

def test_multipathd_absent(mp):
    ok(create_all(mp))
    mp.sim({"command": "multipathd", "mode": "absent"})
    text = error(create_all(mp, wait=FAULT_TIMEOUT), ERR + "NotSupported")
    assert "not running" in text, text
    wait_until(lambda: prop(mp, MGR, MGR_I, "Multipathd") == "absent", timeout=10,
               what="Manager.Multipathd absent")
    text = error(flush(mp, MAP[0], wait=FAULT_TIMEOUT), ERR + "NotSupported")
    assert "not running" in text, text
    assert MAP[0] in maps(mp)
    # the maps stay (device-mapper has them), their path states are unknown
    wait_until(lambda: all(m["Health"] == "unknown" and
                           {(p["CheckerState"], p["DmState"]) for p in m["Paths"]} == {
                               ("unknown", "unknown")}
                           for m in maps(mp).values()), timeout=10,
               what="path states unknown once multipathd is gone")
    # settings are written, and apply when multipathd is back (the answer says so)
    text = error(set_config(mp, wait=FAULT_TIMEOUT, find_multipaths="strict"),
                 ERR + "NotSupported")
    assert "not running" in text and str(dropin(mp)) in text, text
    assert "find_multipaths strict" in dropin(mp).read_text()
    # everything else is served
    assert len(maps(mp)) == 3 and f"{ROOT}/hosts/host1" in objects(mp)
    ok(call(mp, MGR, MGR_I, "ScanAll", "a{sv}", [{}]))
    mp.sim({"command": "multipathd", "mode": "running"})
    wait_until(lambda: prop(mp, MGR, MGR_I, "Multipathd") == "running", timeout=10,
               what="Manager.Multipathd running again")
    wait_until(lambda: all(m["Health"] == "healthy" for m in maps(mp).values()), timeout=10,
               what="maps healthy again")


def test_multipathd_hung_times_out_and_the_daemon_keeps_answering(mp):
    ok(create_all(mp))
    mp.sim({"command": "multipathd", "mode": "hung"})

    async def go():
        bus = await connect(mp.bus.address)
        other = await connect(mp.bus.address)
        try:
            start = time.monotonic()
            task = asyncio.ensure_future(acall(bus, MGR, MGR_I, "CreateAllMultipathMaps",
                                               "a{sv}", [{}], FAULT_TIMEOUT))
            gets = []
            while not task.done():
                t = time.monotonic()
                reply = await acall(other, MAP[1], "org.freedesktop.DBus.Properties", "Get",
                                    "ss", [MAP_I, "Name"], 5)
                gets.append(time.monotonic() - t)
                assert reply.message_type == MessageType.METHOD_RETURN, reply.body
                await asyncio.sleep(0.1)
            reply = await task
            return reply, time.monotonic() - start, gets
        finally:
            bus.disconnect()
            other.disconnect()
    reply, took, gets = asyncio.run(go())
    text = error(reply, ERR + "TimedOut")
    assert "multipathd" in text, text
    assert took < MPD_TIMEOUT + 3, f"TimedOut after {took:.1f} s (--multipathd-timeout 2)"
    assert len(gets) >= 3 and max(gets) < 1.0, f"Properties.Get took up to {max(gets):.2f} s"
    wait_until(lambda: prop(mp, MGR, MGR_I, "Multipathd") == "not-responding", timeout=10,
               what="Manager.Multipathd not-responding")
    text = error(flush(mp, MAP[0], wait=FAULT_TIMEOUT), ERR + "TimedOut")
    assert MAP[0] in maps(mp)
    mp.sim({"command": "multipathd", "mode": "running"})
    wait_until(lambda: prop(mp, MGR, MGR_I, "Multipathd") == "running", timeout=15,
               what="Manager.Multipathd running again")


def test_multipathd_answering_garbage_is_failed(mp):
    ok(create_all(mp))
    mp.sim({"command": "multipathd", "mode": "garbage"})
    text = error(create_all(mp, wait=FAULT_TIMEOUT), ERR + "Failed")
    # says that multipathd's answer could not be read (not only quoting what it said)
    own = text.replace("this is not multipathd's answer", "")
    assert "multipathd" in own and "answer" in own, text
    error(flush(mp, MAP[0], wait=FAULT_TIMEOUT), ERR + "Failed", ERR + "Busy")
    assert MAP[0] in maps(mp) and "mpatha" in sim_maps(mp)
    wait_until(lambda: prop(mp, MGR, MGR_I, "Multipathd") == "error", timeout=10,
               what="Manager.Multipathd error")
    ok(call(mp, MGR, MGR_I, "ScanAll", "a{sv}", [{}]))


def test_calls_work_again_after_multipathd_restarts(mp):
    made = ok(create_all(mp))[0]
    mp.sim({"command": "multipathd", "mode": "absent"})
    error(create_all(mp, wait=FAULT_TIMEOUT), ERR + "NotSupported")
    mp.sim({"command": "multipathd", "mode": "restart"})
    wait_until(lambda: mp.sim({"command": "status"})["multipath"]["mode"] == "running",
               timeout=10, what="the simulated multipathd back")
    assert ok(create_all(mp, timeout=30, wait=FAULT_TIMEOUT))[0] == made
    ok(flush(mp, MAP[0]))
    assert MAP[0] not in maps(mp)
    wait_until(lambda: prop(mp, MGR, MGR_I, "Multipathd") == "running", timeout=10,
               what="Manager.Multipathd running")


# -- sanctl multipath ------------------------------------------------------------------------------

def test_sanctl_multipath_end_to_end(mp):
    out = sanctl(mp, "multipath", "list").stdout
    assert "no multipath maps" in out
    out = sanctl(mp, "multipath", "create-all").stdout
    assert "3 multipath maps ready" in out
    for name in ("mpatha", "mpathb", "mpathc"):
        assert name in out
    mp.sim({"command": "device-state", "hctl": "2:0:0:1", "state": "offline"})
    wait_until(lambda: maps(mp)[MAP[1]]["Health"] == "degraded", what="mpathb degraded")
    out = sanctl(mp, "multipath", "list").stdout
    lines = out.splitlines()
    assert any(line.startswith(f"mpatha ({MPW[0]})") and "healthy" in line for line in lines)
    assert any(line.startswith(f"mpathb ({MPW[1]})") and "degraded" in line and
               "1/2 paths up" in line for line in lines), out
    assert any(line.split()[:1] == ["2:0:0:1"] and "offline" in line and "DOWN" in line
               for line in lines), out
    assert any(line.split()[:1] == ["1:0:0:1"] and "ready" in line for line in lines), out

    sim_cli(mp, "hold-open", "mpathc", "--by", HOLDER)
    r = sanctl(mp, "multipath", "flush", "mpathc", check=False)
    assert r.returncode == 1, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("sanctl: "), r.stderr
    assert HOLDER in r.stderr and "Traceback" not in r.stderr
    assert MAP[2] in maps(mp)

    out = sanctl(mp, "multipath", "flush", "mpatha").stdout
    assert "mpatha" in out and "flushed" in out
    assert MAP[0] not in maps(mp)

    out = sanctl(mp, "multipath", "config", "--friendly-names", "off").stdout
    assert "friendly names   off" in out and str(dropin(mp)) in out
    assert "user_friendly_names no" in dropin(mp).read_text()
    wait_until(lambda: maps(mp)[MAP[1]]["Name"] == MPW[1], what="mpathb named by its WWID")
    out = sanctl(mp, "multipath", "list").stdout
    assert f"{MPW[1]} ({MPW[1]})" in out

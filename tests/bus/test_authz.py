"""The security boundary with the real polkitd: every privileged method x {root, a user allowed
by the sanadmin rules.d rule, another user}, fail-closed declarations, the caller's identity under
concurrent load, the bus policy, and the uid-0 fallback when polkitd is absent."""

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sanbus_testing import ROOT, busctl, fc_fabric, run, start_daemon, wait_until

from sanbusd.authz.registry import check_registrations, declared
from sanbusd.daemon import API_CLASSES
from sanbusd.devbus import PrivateBus
from sanbusd.bus.contract import ACTION_ANNOTATION, data_dir, load_api

HERE = Path(__file__).parent
MGR = f"{ROOT}/Manager"
NOT_AUTHORIZED = {"org.example.SanStorage.Error.NotAuthorized",
                  "org.example.SanStorage.Error.NotAuthorizedCanObtain"}


def calls_as(d, user, calls, concurrency=1, address=None):
    r = run(sys.executable, str(HERE / "client_calls.py"), address or d.bus.address,
            json.dumps(calls), str(concurrency), user=None if user == "root" else user,
            env=d.env)
    return json.loads(r.stdout)


def v(sig, value):
    return {"$v": [sig, value]}


def documented_methods():
    root = ET.parse(data_dir() / "org.example.SanStorage.xml").getroot()
    for iface in root.findall("interface"):
        for m in iface.findall("method"):
            action = next((a.get("value") for a in m.findall("annotation")
                           if a.get("name") == ACTION_ANNOTATION), None)
            yield iface.get("name"), m.get("name"), action


def test_every_method_is_privileged_or_declared_read_only():
    """Walk the XML: each method names a polkit action or "none", and the code agrees."""
    registrations = check_registrations(load_api(), {
        key: spec for key, (_name, spec) in declared(*API_CLASSES).items()})
    policy = (data_dir() / "org.example.sanstorage.policy").read_text()
    seen = 0
    for iface, member, action in documented_methods():
        seen += 1
        assert action is not None, f"{iface}.{member} declares nothing"
        assert registrations[(iface, member)].action == (None if action == "none" else action)
        if action != "none":
            assert f'<action id="{action}">' in policy, f"{action} is not in the policy file"
    assert seen == len(registrations)


# The demo array's LUNs 0 and 2 (sysfs WWID naa.6001405…; multipath's is 3 + the digits). A map
# for LUN 2 is made before the matrix runs (as the SAN admin would, `multipath WWID`), so that
# Flush has something to flush.
WWID_LUN0 = "naa.60014050000000000000000000000000"
WWID_LUN2 = "naa.60014050000000000000000000000002"
MAP_LUN2 = f"{ROOT}/multipath/3{WWID_LUN2[4:]}"


# One harmless call per privileged method and per user (different LUNs for Delete).
def privileged_calls(user):
    lun = {"root": "1_0_0_0", "sanalice": "1_0_0_1", "sanbob": "1_0_0_2"}[user]
    n = {"root": 1, "sanalice": 2, "sanbob": 3}[user]
    vhba = f"{ROOT}/vhbas/5001a4a0aa000001"          # the demo fabric's vHBA
    # Allowed users ask for LUN 2's map, which exists (idempotent: nothing changes); the
    # denied user asks for LUN 0's, which does not, so a map made anyway would show.
    wwid = WWID_LUN0 if user == "sanbob" else WWID_LUN2
    return {
        ("org.example.SanStorage.Manager", "CreateAllMultipathMaps"):
            [MGR, "org.example.SanStorage.Manager", "CreateAllMultipathMaps", "a{sv}",
             [{"wwids": v("as", [wwid])}]],
        # find_multipaths as multipath.conf already has it: written, but changes nothing
        ("org.example.SanStorage.Manager", "SetMultipathConfig"):
            [MGR, "org.example.SanStorage.Manager", "SetMultipathConfig", "a{sv}a{sv}",
             [{"find_multipaths": v("s", "strict")}, {}]],
        # last of the multipath calls: the map is flushed after CreateAll found it
        ("org.example.SanStorage.MultipathMap", "Flush"):
            [MAP_LUN2, "org.example.SanStorage.MultipathMap", "Flush", "a{sv}", [{}]],
        ("org.example.SanStorage.Manager", "CreateVhba"):
            [MGR, "org.example.SanStorage.Manager", "CreateVhba", "a{sv}",
             [{"wwpn": v("s", f"5001a4a00000091{n}"), "wait_luns": v("b", False)}]],
        ("org.example.SanStorage.FcHost", "CreateVhba"):
            [f"{ROOT}/hosts/host2", "org.example.SanStorage.FcHost", "CreateVhba", "a{sv}",
             [{"wwpn": v("s", f"5001a4a00000092{n}"), "wait_luns": v("b", False)}]],
        ("org.example.SanStorage.Vhba", "SetPersistent"):
            [vhba, "org.example.SanStorage.Vhba", "SetPersistent", "ba{sv}", [True, {}]],
        ("org.example.SanStorage.Vhba", "Delete"):
            [vhba, "org.example.SanStorage.Vhba", "Delete", "a{sv}", [{}]],
        ("org.example.SanStorage.Manager", "ScanAll"):
            [MGR, "org.example.SanStorage.Manager", "ScanAll", "a{sv}",
             [{"luns": v("at", [9999])}]],
        ("org.example.SanStorage.ScsiHost", "Scan"):
            [f"{ROOT}/hosts/host1", "org.example.SanStorage.ScsiHost", "Scan", "a{sv}",
             [{"luns": v("at", [9999])}]],
        ("org.example.SanStorage.Lun", "Rescan"):
            [f"{ROOT}/luns/2_0_0_0", "org.example.SanStorage.Lun", "Rescan", "a{sv}", [{}]],
        ("org.example.SanStorage.Lun", "Delete"):
            [f"{ROOT}/luns/{lun}", "org.example.SanStorage.Lun", "Delete", "a{sv}", [{}]],
    }


JOB_METHODS = {("org.example.SanStorage.Job", "Cancel")}     # needs a running job: below
EXPECTED = {"root": None, "sanalice": None, "sanbob": "NotAuthorizedCanObtain"}


def test_the_matrix_covers_every_privileged_method():
    privileged = {(i, m) for i, m, a in documented_methods() if a != "none"}
    assert privileged == set(privileged_calls("root")) | JOB_METHODS


def map_objects(d):
    out = busctl(d, "--json=short", "call", "org.example.SanStorage", ROOT,
                 "org.freedesktop.DBus.ObjectManager", "GetManagedObjects").stdout
    return sorted(p for p in json.loads(out)["data"][0] if "/multipath/" in p)


def sim_maps(d):
    return sorted((m["dm"], m["name"], m["wwid"]) for m in d.sim({"command": "status"})["maps"])


@pytest.mark.parametrize("user", ["sanbob", "sanalice", "root"])
def test_matrix(daemon, user):
    lun2 = busctl(daemon, "get-property", "org.example.SanStorage", f"{ROOT}/luns/1_0_0_2",
                  "org.example.SanStorage.Lun", "WWID").stdout.split()[1].strip('"')
    assert lun2 == WWID_LUN2, "the demo fabric's WWIDs changed: update WWID_LUN0/WWID_LUN2"
    run(sys.executable, "-m", "sanbusd.cli.sim", "--dir", str(daemon.sim_dir), "mpath-create",
        "--wwid", WWID_LUN2)
    wait_until(lambda: map_objects(daemon) == [MAP_LUN2], what="LUN 2's map on the bus")
    dropin = daemon.sim_dir / "etc" / "multipath" / "conf.d" / "sanbusd.conf"
    assert not dropin.exists()
    maps_before = sim_maps(daemon)
    before = len(daemon.writes())
    calls = privileged_calls(user)
    results = calls_as(daemon, user, list(calls.values()))
    for (iface, member), res in zip(calls, results):
        want = EXPECTED[user]
        if want is None:
            assert res["error"] is None, (user, member, res)
        else:
            assert res["error"] == f"org.example.SanStorage.Error.{want}", (user, member, res)
            assert "needs authentication" in res["body"][0]
    if EXPECTED[user] is not None:
        assert len(daemon.writes()) == before            # denied calls wrote nothing
        busctl(daemon, "introspect", "org.example.SanStorage", f"{ROOT}/luns/1_0_0_2")
        assert not dropin.exists(), "a denied SetMultipathConfig wrote the drop-in"
        assert sim_maps(daemon) == maps_before, "a denied call made or flushed a map"
        assert map_objects(daemon) == [MAP_LUN2]
    else:
        # allowed: the drop-in says what was set, LUN 2's map is flushed, no other map made
        assert "find_multipaths strict" in dropin.read_text()
        assert sim_maps(daemon) == []
        wait_until(lambda: map_objects(daemon) == [], what="the flushed map leaving the bus")
    # reads need no authorization
    objs = calls_as(daemon, user, [[ROOT, "org.freedesktop.DBus.ObjectManager",
                                    "GetManagedObjects", "", []]])
    assert objs[0]["error"] is None and f"{ROOT}/hosts/host1" in objs[0]["body"][0]




@pytest.mark.parametrize("user,expected", [("sanbob", "NotAuthorizedCanObtain"),
                                           ("sanalice", None), ("root", None)])
def test_matrix_job_cancel_of_roots_job(system_bus, tmp_path, user, expected):
    fabric = fc_fabric(tmp_path / "slow.toml", scan_delay=3.0)
    d = start_daemon(system_bus, tmp_path, fabric)
    try:
        t = threading.Thread(target=lambda: busctl(d, "call", "org.example.SanStorage", MGR,
                                                   "org.example.SanStorage.Manager", "ScanAll",
                                                   "a{sv}", "0", check=False))
        t.start()
        job = wait_until(lambda: next((line.split("─")[-1] for line in busctl(
            d, "tree", "org.example.SanStorage").stdout.splitlines() if "/jobs/" in line), None))
        (res,) = calls_as(d, user, [[job, "org.example.SanStorage.Job", "Cancel", "a{sv}", [{}]]])
        if expected is None:
            assert res["error"] is None, res
        else:
            assert res["error"] == f"org.example.SanStorage.Error.{expected}", res
        t.join(10)
        assert not t.is_alive(), "the scan did not answer"
        cancelled = json.loads(busctl(d, "--json=short", "get-property", "org.example.SanStorage",
                                      job, "org.example.SanStorage.Job", "Success").stdout)
        assert cancelled["data"] is (expected is not None)   # denied cancel: the scan succeeded
    finally:
        assert d.stop() == 0


def test_a_user_may_cancel_their_own_job_without_authorization(system_bus, tmp_path):
    """The owner (sanalice, allowed by the rule) cancels her own job, with the real polkitd.
    The rule allows her cancel-job-other-user too, so this cannot tell the own-job exemption
    from the rule: test_polkit_verdicts.py tests the exemption with a polkit that says no."""
    fabric = fc_fabric(tmp_path / "slow.toml", scan_delay=3.0)
    d = start_daemon(system_bus, tmp_path, fabric)
    try:
        out = {}
        t = threading.Thread(target=lambda: out.update(r=calls_as(d, "sanalice", [[
            MGR, "org.example.SanStorage.Manager", "ScanAll", "a{sv}", [{}]]])))
        t.start()
        job = wait_until(lambda: next((line.split("─")[-1] for line in busctl(
            d, "tree", "org.example.SanStorage").stdout.splitlines() if "/jobs/" in line), None))
        uid = busctl(d, "get-property", "org.example.SanStorage", job,
                     "org.example.SanStorage.Job", "StartedByUID").stdout.split()[1]
        assert int(uid) == int(run("id", "-u", "sanalice").stdout)
        (res,) = calls_as(d, "sanalice", [[job, "org.example.SanStorage.Job", "Cancel", "a{sv}",
                                           [{}]]])
        assert res["error"] is None
        t.join(10)
        assert not t.is_alive(), "the cancelled scan did not answer"
        assert out["r"][0]["error"] == "org.example.SanStorage.Error.Cancelled"
    finally:
        assert d.stop() == 0


def test_each_of_50_concurrent_callers_is_authorized_as_themselves(daemon):
    """Three users call at once; the daemon must never mix up who is calling."""
    per_user = {"root": 17, "sanalice": 17, "sanbob": 16}
    call = [f"{ROOT}/luns/2_0_0_1", "org.example.SanStorage.Lun", "Rescan", "a{sv}", [{}]]
    procs = {}
    for user, n in per_user.items():
        cmd = [sys.executable, str(HERE / "client_calls.py"), daemon.bus.address,
               json.dumps([call] * n), str(n)]
        if user != "root":
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd]
        procs[user] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=daemon.env)
    results = {u: json.loads(p.communicate(timeout=120)[0]) for u, p in procs.items()}
    assert [r["error"] for r in results["root"]] == [None] * 17
    assert [r["error"] for r in results["sanalice"]] == [None] * 17
    assert {r["error"] for r in results["sanbob"]} == {
        "org.example.SanStorage.Error.NotAuthorizedCanObtain"}
    rescans = [w for w in daemon.writes() if w["path"].endswith("/rescan")]
    assert len(rescans) == 34


def test_only_root_may_own_the_name(system_bus):
    """data/org.example.SanStorage.conf: a non-root daemon cannot take the name."""
    work = Path(tempfile.mkdtemp(prefix="sanbusd-sanbob."))
    work.chmod(0o777)
    try:
        r = run(sys.executable, "-m", "sanbusd", "--simulate",
                str(data_dir() / "fabrics" / "demo.toml"), "--sim-dir", str(work / "sim"),
                "--bus", system_bus.address, user="sanbob", env=system_bus.env(), check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert r.returncode == 1 and "cannot own org.example.SanStorage" in r.stderr, r.stderr
    assert "not allowed to own" in r.stderr and "Traceback" not in r.stderr


def test_without_polkitd_only_root_is_allowed(tmp_path):
    bus = PrivateBus().start()          # in /tmp: the test users must reach its socket
    try:
        d = start_daemon(bus, tmp_path)
        try:
            call = [MGR, "org.example.SanStorage.Manager", "ScanAll", "a{sv}",
                    [{"luns": v("at", [9999])}]]
            assert calls_as(d, "root", [call])[0]["error"] is None
            res = calls_as(d, "sanalice", [call])[0]
            assert res["error"] == "org.example.SanStorage.Error.NotAuthorized"
            assert "polkit is not available" in res["body"][0]
        finally:
            assert d.stop() == 0
    finally:
        bus.stop()

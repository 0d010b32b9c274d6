"""iSCSI multipath (scenarios/iscsi_multipath.py): sessions, a new LUN scanned and mapped, a portal cut."""

from __future__ import annotations

import pytest

import sanview
from scenarios.iscsi_multipath import INITIATOR_IQN, SCENARIO as S, TARGET_IQN, mpath_wwid

pytestmark = pytest.mark.kernel_lab


@pytest.fixture(scope="module")
def run(scenario_run):
    return scenario_run(S.name)


def test_checks_pass(run):
    assert run.checks and not run.failed_checks, run.describe()


def test_sessions_are_objects_with_target_state_and_portal(run):
    sessions = run.data["sessions"]
    assert [s["Portal"] for s in sessions] == [f"{p}:3260" for p in S.portals], sessions
    for s in sessions:
        assert s["TargetName"] == TARGET_IQN and s["State"] == "LOGGED_IN" and s["Tpgt"] == 1, s
        assert s["InitiatorName"] == INITIATOR_IQN and s["RecoveryTimeout"] == S.recovery_tmo, s
    hosts = run.hosts("initial")
    assert sorted(s["Host"] for s in sessions) == [sanview.host_path(f"host{h}") for h in hosts]


def test_targeted_scan_finds_the_new_lun_on_both_sessions_only(run):
    scan = run.data["scan"]
    hosts = run.hosts("initial")
    assert scan["ok"] and scan["paths"] == sorted(sanview.lun_path(f"{h}:0:0:{S.new_lun}") for h in hosts), scan
    assert scan["new"] == [f"{h}:0:0:{S.new_lun}" for h in hosts]
    # LIO queues the unit attention once per ACL: the first session's TUR takes it
    assert run.data["suggested"] == [True, False] and scan["suggested"] == [False, False], scan


def test_one_map_with_two_paths(run):
    create = run.data["create"]
    path = sanview.map_path(mpath_wwid(S.new_lun))
    assert create["ok"] and create["maps"] == [path], create
    assert create["map"]["TotalPaths"] == 2 and create["map"]["Health"] == "healthy", create
    assert create["map"]["Features"] == "1 queue_if_no_path" and create["map"]["HwHandler"] == "1 alua"
    assert set(create["multipath_map"].values()) == {path}


def test_cutting_a_portal_fails_its_paths_and_degrades_the_maps(run):
    cut = run.data["cut"]
    hosts = run.hosts("initial")
    cut_host = sanview.host_path(f"host{hosts[S.portals.index(S.cut_portal)]}")
    for view in cut["maps"].values():
        assert view["Health"] == "degraded" and view["ActivePaths"] == 1, view
        down = [p for p in view["Paths"] if not p["Up"]]
        assert len(down) == 1 and down[0]["DmState"] == "failed" and down[0]["DeviceState"] != "running", view
        assert down[0]["Lun"].rsplit("/", 1)[1].split("_")[0] == cut_host.rsplit("host", 1)[1]
    states = {s["Host"]: s["State"] for s in cut["sessions"]}
    assert states[cut_host] in ("FAILED", "FREE") and list(states.values()).count("LOGGED_IN") == 1, states


def test_removing_the_filter_heals(run):
    healed = run.data["healed"]
    assert all(v["Health"] == "healthy" and v["ActivePaths"] == 2 for v in healed["maps"].values()), healed
    assert {s["State"] for s in healed["sessions"]} == {"LOGGED_IN"}


def test_retire_removes_maps_then_paths(run):
    retire = run.data["retire"]
    assert all(r["ok"] and r["map_first"] and len(r["removed"]) == 3 for r in retire["flushes"].values()), retire
    assert retire["attached"] == [] and len(retire["sessions"]) == 2

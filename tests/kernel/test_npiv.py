"""NPIV vHBAs on the real kernel: the FCoE VN2VN initiator's vports, by hand, through sanbusd,
across a restart and through libvirt (scenarios/npiv.py). That the objects (Vhba included) match
sysfs at every checkpoint is test_kernel_tree.py's job, that the simulated SAN tells the same
story test_conformance.py's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import sanview
from sanscenario import ScenarioRun
from scenarios.npiv import ERR, KEPT, SYSFS_VPORT
from scenarios.npiv import SCENARIO as S

kernel_lab = pytest.mark.kernel_lab  # every test but the fast sanview ones at the end boots the guest


@pytest.fixture(scope="module")
def run(scenario_run: Callable[[str], ScenarioRun]) -> ScenarioRun:
    return scenario_run(S.name)


@kernel_lab
def test_scenario_checks_pass(run: ScenarioRun) -> None:
    assert run.checks and not run.failed_checks, run.describe()


# -- what the kernel says (sysfs, no sanbusd call) ----------------------------------------------


@kernel_lab
def test_vport_create_on_vn2vn_ends_no_fabric_support(run: ScenarioRun) -> None:
    facts = run.data["sysfs"]
    assert facts["create"]["ok"], facts["create"]
    v = facts["vport"]
    assert facts["vport_name"].startswith(f"vport-{facts['parent']}:0-")
    assert (v["port_name"], v["node_name"]) == tuple("0x" + w for w in S.sysfs_wwns)
    assert v["vport_state"] == S.end_state
    assert v["vport_type"] == "NPIV VPORT" and v["roles"] == "FCP Initiator"
    assert facts["states"][-1]["vport_state"] == S.end_state
    assert int(facts["parent_after"]["npiv_vports_inuse"]) == int(facts["parent_before"]["npiv_vports_inuse"]) + 1


@kernel_lab
def test_the_vports_own_host_is_an_fc_host_without_npiv(run: ScenarioRun) -> None:
    facts = run.data["sysfs"]
    h = facts["vport_host"]
    assert h["transport"] == "fc" and h["scsi_host"]["proc_name"] == "fcoe"
    assert h["fc_host"]["port_name"] == "0x" + S.sysfs_wwns[0]
    assert h["fc_host"]["port_state"] == "Linkdown"  # no FDISC on VN2VN
    assert h["vport_create"] is False and h["fc_host"]["max_npiv_vports"] is None
    assert h["vport_of_host"] == facts["vport_name"]


@kernel_lab
def test_the_kernels_refusals(run: ScenarioRun) -> None:
    facts = run.data["sysfs"]
    for key in ("create_again", "create_same_wwpn_other_wwnn", "create_parent_wwpn"):
        assert facts[key]["errno"] == "EINVAL", (key, facts[key])
    assert facts["delete_unknown"]["errno"] == "ENODEV"
    assert facts["vports_after_refusals"] == [facts["vport_name"]]  # nothing new
    assert facts["delete"]["ok"] and facts["delete_again"]["errno"] == "ENODEV"
    assert facts["vports_after_delete"] == {} and facts["host_after_delete"] is False
    assert facts["parent_inuse_after_delete"] == facts["parent_before"]["npiv_vports_inuse"]


@kernel_lab
def test_sanbusd_publishes_a_vport_made_behind_its_back(run: ScenarioRun) -> None:
    snap = run.snapshot(SYSFS_VPORT)
    facts = run.data["sysfs"]
    vhba = snap["objects"][sanview.vhba_path(S.sysfs_wwns[0])][sanview.VHBA_I]
    host = facts["vport"]["host"]
    assert vhba["Name"] == facts["vport_name"] and vhba["State"] == S.end_state
    assert vhba["Parent"] == sanview.host_path(f"host{facts['parent']}")
    assert vhba["Host"] == sanview.host_path(f"host{host}")
    assert vhba["Persistent"] is False
    fc = snap["objects"][sanview.host_path(f"host{host}")][sanview.FC_I]
    assert fc["Vhba"] == sanview.vhba_path(S.sysfs_wwns[0]) and fc["PortState"] == "Linkdown"
    assert fc["NpivCapable"] is False
    parent = snap["objects"][sanview.host_path(f"host{facts['parent']}")][sanview.FC_I]
    assert parent["VportsInUse"] == 1 and parent["Vhba"] == "/"
    # and it went with vport_delete: InterfacesRemoved for the Vhba and the host
    removed = {s["object"] for s in facts["signals"] if s["member"] == "InterfacesRemoved"}
    assert {sanview.vhba_path(S.sysfs_wwns[0]), sanview.host_path(f"host{host}")} <= removed


# -- the story (sanbusd) --------------------------------------------------------------------------


@kernel_lab
def test_create_keep_failed_answers_a_vhba_in_the_kernels_state(run: ScenarioRun) -> None:
    r = run.data["create_kept"]
    assert r["ok"] and r["body"] == [sanview.vhba_path(S.kept_wwns[0])], r
    assert r["vhba"]["State"] == S.end_state and (r["vhba"]["WWPN"], r["vhba"]["WWNN"]) == S.kept_wwns
    assert r["has_host"] and r["host_on_bus"] and r["host_fc_vhba"] == sanview.vhba_path(S.kept_wwns[0])
    sysfs = run.data["create_kept_sysfs"]
    assert sysfs["vport"]["vport_state"] == S.end_state and sysfs["host"]["port_state"] == "Linkdown"
    assert run.snapshot(KEPT)["objects"][sanview.vhba_path(S.kept_wwns[0])][sanview.VHBA_I]["State"] == S.end_state


@kernel_lab
def test_the_same_wwpn_again_is_refused(run: ScenarioRun) -> None:
    r = run.data["duplicate"]
    assert not r["ok"] and r["error"] in (ERR + "InvalidArgument", ERR + "AlreadyExists"), r
    assert r["vhbas"] == [sanview.vhba_path(S.kept_wwns[0])]


@kernel_lab
def test_without_keep_failed_not_supported_and_no_vport_left(run: ScenarioRun) -> None:
    r = run.data["not_supported"]
    assert not r["ok"] and r["error"] == ERR + "NotSupported", r
    assert S.end_state in r["message"]
    assert run.data["not_supported_sysfs"]["vport"] is None


@kernel_lab
def test_delete_removes_the_vport_its_host_and_objects(run: ScenarioRun) -> None:
    r = run.data["delete"]
    assert r["ok"] and not r["vhba_on_bus"] and not r["host_on_bus"] and r["parent_vports_in_use"] == 0, r
    d = run.data["delete_sysfs"]
    assert d["vport"] is None and d["vports"] == {} and d["host_exists"] is False


# -- persistent, across a restart (sanbusd "b") ---------------------------------------------------


@kernel_lab
def test_a_persistent_vhba_is_recorded(run: ScenarioRun) -> None:
    p = run.data["persistent"]
    assert p["create"]["ok"] and p["vhba"]["Persistent"] is True, p["create"]
    wwpn, wwnn = S.persistent_wwns
    assert p["records_file"] == {"vhbas": [{"wwpn": wwpn, "wwnn": wwnn, "parent_wwnn": S.initiator_wwnn,
                                            "parent_wwpn": S.initiator_wwpn}]}
    assert [(r["WWPN"], r["Status"]) for r in p["persistent_vhbas"]] == [(wwpn, "present")]


@kernel_lab
def test_a_persistent_vhba_deleted_behind_the_daemons_back_comes_back(run: ScenarioRun) -> None:
    p = run.data["persistent"]
    assert p["stop_rc"] == 0 and p["deleted_behind"]["ok"]
    assert p["vport_after_restart"]["vport_state"] == S.end_state
    (row,) = p["persistent_vhbas_after_restart"]
    assert (row["WWPN"], row["Status"], row["Message"]) == (S.persistent_wwns[0], "re-created", "")
    assert p["vhba_after_restart"]["Persistent"] is True and p["b_differences"] == []


@kernel_lab
def test_deleting_it_drops_the_record(run: ScenarioRun) -> None:
    p = run.data["persistent"]
    assert p["delete"]["ok"] and p["vport_after_delete"] is None
    assert p["persistent_vhbas_after_delete"] == [] and p["records_file_after_delete"] == {"vhbas": []}


# -- libvirt ------------------------------------------------------------------------------------


@kernel_lab
def test_libvirt_lists_the_vhba_and_delete_removes_it(run: ScenarioRun) -> None:
    lv = run.data["libvirt"]
    assert not lv["libvirtd_error"], lv["libvirtd_error"]
    assert lv["create"]["ok"], lv["create"]
    host = lv["vport"]["host"]
    assert f"scsi_host{host}" not in lv["fc_hosts_before"]
    assert f"scsi_host{host}" in lv["fc_hosts_after_create"]
    assert f"<wwpn>{S.libvirt_wwns[0]}</wwpn>" in lv["dumpxml"]["stdout"]
    assert lv["delete"]["ok"] and lv["vport_after_delete"] is None
    assert f"scsi_host{host}" not in lv["fc_hosts_after_delete"]


@kernel_lab
def test_daemon_b_stopped_cleanly(run: ScenarioRun) -> None:
    b = run.data["daemon_b"]
    assert b["stop_rc"] == 0 and b["log_problems"] == []


# -- sanview's vHBA rules, without a boot ----------------------------------------------------------


def _sysfs(vport_host: int | None = 5) -> dict:
    fc = {"node_name": "0x1000525400000a", "port_name": "0x2000525400000a", "fabric_name": "0x0",
          "port_state": "Online", "port_type": "NPort (fabric via point-to-point)", "port_id": "0x00000a",
          "speed": "unknown", "max_npiv_vports": "65535", "npiv_vports_inuse": "1", "vport_create": True,
          "vport": None}
    hosts = {"host3": {"proc_name": "fcoe", "state": "running", "unique_id": "0", "transport": "fc", "fc": fc}}
    if vport_host is not None:
        hosts[f"host{vport_host}"] = {"proc_name": "fcoe", "state": "running", "unique_id": "0", "transport": "fc",
                                      "fc": {**fc, "node_name": "0x2000000000000012", "port_name": "0x2000000000000011",
                                             "port_state": "Linkdown", "port_id": "0xffffffff",
                                             "max_npiv_vports": None, "npiv_vports_inuse": None,
                                             "vport_create": False, "vport": "vport-3:0-7"}}
    return {"hosts": hosts, "rports": {}, "luns": {},
            "vports": {"vport-3:0-7": {"node_name": "0x2000000000000012", "port_name": "0x2000000000000011",
                                       "roles": "FCP Initiator", "vport_state": "No Fabric Support",
                                       "vport_last_state": "Linkdown", "vport_type": "NPIV VPORT",
                                       "symbolic_name": "", "parent": 3, "host": vport_host}}}


def test_sysfs_says_which_vhba_objects_and_references_sanbusd_must_publish() -> None:
    tree = sanview.expected_from_sysfs(_sysfs())
    vhba = tree[sanview.vhba_path("2000000000000011")][sanview.VHBA_I]
    assert vhba == {"Name": "vport-3:0-7", "WWNN": "2000000000000012", "WWPN": "2000000000000011",
                    "Parent": sanview.host_path("host3"), "Host": sanview.host_path("host5"),
                    "State": "No Fabric Support", "LastState": "Linkdown"}
    assert tree[sanview.host_path("host5")][sanview.FC_I]["Vhba"] == sanview.vhba_path("2000000000000011")
    assert tree[sanview.host_path("host5")][sanview.FC_I]["NpivCapable"] is False
    assert tree[sanview.host_path("host3")][sanview.FC_I]["Vhba"] == "/"
    # a vport whose host is gone (or not there yet): Host "/"
    assert sanview.expected_from_sysfs(_sysfs(None))[sanview.vhba_path("2000000000000011")][sanview.VHBA_I][
        "Host"] == "/"
    # a Vhba sanbusd does not publish, or one sysfs does not have, is a difference
    published = {p: o for p, o in tree.items() if "/vhbas/" not in p}
    assert sanview.sysfs_differences(published, _sysfs()) == [
        f"missing object {sanview.vhba_path('2000000000000011')}"]
    extra = {**tree, sanview.vhba_path("2000000000000099"): {sanview.VHBA_I: {}}}
    assert sanview.sysfs_differences(extra, _sysfs()) == [
        f"object not in sysfs {sanview.vhba_path('2000000000000099')}"]


def test_normalize_renumbers_hosts_and_vports_of_the_hosts_compared() -> None:
    tree = sanview.expected_from_sysfs(_sysfs())
    tree[sanview.vhba_path("2000000000000011")][sanview.VHBA_I]["Persistent"] = False
    out = sanview.normalize(tree, [3, 5])
    vhba = out[sanview.vhba_path("2000000000000011")][sanview.VHBA_I]
    assert (vhba["Name"], vhba["Parent"], vhba["Host"]) == (
        "vport-0:0-0", sanview.host_path("host0"), sanview.host_path("host1"))
    assert sanview.normalize(tree, [7]) == {}  # not a compared host: neither it nor its vHBAs
    assert sanview.normalize_refs("vHBA vport-3:0-7 on host3", [3]) == "vHBA vport-0:0-N on host0"

"""FC on the real kernel, through sanbusd: FCoE VN2VN initiator + LIO tcm_fc target (scenarios/fcoe.py).

That the objects match sysfs and lsscsi at every checkpoint is test_kernel_tree.py's job; here:
the FC host object carries the kernel's WWNN, WWPN, port state, port id and NPIV limits, its remote
port and roles, the LUN behind it, and a LUN mapped by the "SAN admin" appears after a scan.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import lab
import sanview
from sanscenario import ScenarioRun
from scenarios.fcoe import SCENARIO as S

pytestmark = pytest.mark.kernel_lab


@pytest.fixture(scope="module")
def run(scenario_run: Callable[[str], ScenarioRun]) -> ScenarioRun:
    return scenario_run(S.name)


def test_scenario_checks_pass(run: ScenarioRun) -> None:
    assert run.checks and not run.failed_checks, run.describe()


def test_fc_host_shows_the_kernels_port(run: ScenarioRun) -> None:
    snap = run.snapshot("initial")
    (host,) = run.hosts("initial")
    obj = snap["objects"][sanview.host_path(f"host{host}")]
    assert obj[sanview.HOST_I]["Driver"] == "fcoe" and obj[sanview.HOST_I]["Transport"] == "fc"
    fc = obj[sanview.FC_I]
    sysfs = snap["sysfs"]["hosts"][f"host{host}"]["fc"]
    mac = lab.nic_mac(0).replace(":", "")  # libfcoe derives the WWNs from the initiator NIC's MAC
    assert (fc["WWNN"], fc["WWPN"]) == ("1000" + mac, "2000" + mac) == (
        sanview.wwn(sysfs["node_name"]), sanview.wwn(sysfs["port_name"]))
    assert fc["PortState"] == sysfs["port_state"] == "Online"
    assert fc["PortId"] == sysfs["port_id"] == "0x00000a"  # VN2VN: from the MAC
    assert fc["PortType"] == sysfs["port_type"] == "NPort (fabric via point-to-point)"
    assert fc["FabricName"] == "" and sysfs["fabric_name"] == "0x0"  # no switch in VN2VN
    assert fc["Speed"] == sysfs["speed"] == S.speed
    assert fc["NpivCapable"] is True and sysfs["vport_create"]
    assert fc["MaxVports"] == int(sysfs["max_npiv_vports"]) == S.max_npiv_vports
    assert fc["VportsInUse"] == int(sysfs["npiv_vports_inuse"]) == 0
    assert fc["Vhba"] == "/"


def test_remote_port_with_its_roles(run: ScenarioRun) -> None:
    snap = run.snapshot("initial")
    (host,) = run.hosts("initial")
    fc = snap["objects"][sanview.host_path(f"host{host}")][sanview.FC_I]
    ((name, wwpn, wwnn, port_id, roles, state, target_id),) = [
        [r[k] for k in ("Name", "WWPN", "WWNN", "PortId", "Roles", "PortState", "ScsiTargetId")]
        for r in fc["RemotePorts"]]
    rport = snap["sysfs"]["rports"][name]
    assert name.startswith(f"rport-{host}:0-")
    assert (wwpn, wwnn) == (S.target_wwpn, S.target_wwnn) == (
        sanview.wwn(rport["port_name"]), sanview.wwn(rport["node_name"]))
    assert port_id == rport["port_id"] == "0x00000b"
    assert roles == list(S.target_roles) and rport["roles"] == ", ".join(S.target_roles)
    assert state == rport["port_state"] == "Online"
    assert target_id == int(rport["scsi_target_id"]) >= 0


def test_lun_behind_the_remote_port(run: ScenarioRun) -> None:
    snap = run.snapshot("initial")
    (host,) = run.hosts("initial")
    fc = snap["objects"][sanview.host_path(f"host{host}")][sanview.FC_I]
    target_id = fc["RemotePorts"][0]["ScsiTargetId"]
    hctl = f"{host}:0:{target_id}:0"
    assert snap["objects"][sanview.host_path(f"host{host}")][sanview.HOST_I]["Luns"] == [sanview.lun_path(hctl)]
    lun = snap["objects"][sanview.lun_path(hctl)][sanview.LUN_I]
    assert (lun["HCTL"], lun["Vendor"], lun["Model"], lun["Revision"], lun["Type"], lun["State"]) == (
        hctl, S.vendor, S.model, S.rev, 0, "running")
    assert lun["WWID"] == "" and snap["sysfs"]["luns"][hctl]["wwid"] is None  # ENXIO: no VPD 0x83
    assert lun["Size"] == S.lun_mb << 20 and lun["BlockDevice"].startswith("/dev/sd")
    assert lun["TargetPortName"] == S.target_wwpn
    transport = sanview.parse_lsscsi_transport(snap["lsscsi_t"])[hctl]
    assert transport == {"transport": f"fcoe:0x{S.target_wwpn},0x00000b", "device": lun["BlockDevice"]}


def test_lio_target_port_is_a_host_too(run: ScenarioRun) -> None:
    """The LIO side is an fcoe fc_host of the same guest: published, with the initiator as its rport."""
    snap = run.snapshot("initial")
    target_host = run.data["fcoe"]["target_host"]
    obj = snap["objects"][sanview.host_path(f"host{target_host}")]
    assert obj[sanview.HOST_I]["Luns"] == []
    assert obj[sanview.FC_I]["WWPN"] == S.target_wwpn
    ((wwpn, roles, state, target_id),) = [
        [r[k] for k in ("WWPN", "Roles", "PortState", "ScsiTargetId")]
        for r in obj[sanview.FC_I]["RemotePorts"]]
    assert (wwpn, roles, state, target_id) == (S.initiator_wwpn, ["FCP Initiator"], "Online", -1)


def test_mapped_lun_appears_after_a_scan(run: ScenarioRun) -> None:
    step = run.data["map_scan"]
    added = [s for s in step["signals"] if s["member"] == "InterfacesAdded"]
    assert [(s["object"], s["interfaces"]) for s in added] == [(step["path"], [sanview.LUN_I])]
    # driven by udev: the daemon can learn of the LUN only from an event after the scan began
    run.assert_udev_first("add", f"host{step['host']}", added[0], after=step["t0"])
    lun = added[0]["properties"][sanview.LUN_I]
    assert (lun["HCTL"], lun["Lun"], lun["TargetPortName"], lun["Vendor"]) == (
        step["hctl"], S.mapped_later, S.target_wwpn, S.vendor)
    assert not [s for s in step["signals"] if s["member"] == "InterfacesRemoved"]
    final = run.snapshot("final")["objects"][step["path"]][sanview.LUN_I]
    assert final["Size"] == S.lun_mb << 20 and final["BlockDevice"].startswith("/dev/sd")


def test_unmapped_deleted_lun_goes_and_a_scan_does_not_bring_it_back(run: ScenarioRun) -> None:
    step = run.data["unmap_delete_scan"]
    removed = [s for s in step["signals"] if s["member"] == "InterfacesRemoved"]
    assert [(s["object"], s["interfaces"]) for s in removed] == [(step["path"], [sanview.LUN_I])]
    run.assert_udev_first("remove", step["hctl"], removed[0], after=step["t0"])
    assert not [s for s in step["after_scan"] if s["member"] in ("InterfacesAdded", "InterfacesRemoved")]
    host, channel, target, _ = step["hctl"].split(":")
    assert step["luns"] == [f"{host}:{channel}:{target}:{n}" for n in S.luns]

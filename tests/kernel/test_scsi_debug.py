"""scsi_debug on the real kernel, through sanbusd (scenarios/scsi_debug.py).

That the objects match sysfs and lsscsi at every checkpoint is test_kernel_tree.py's job; here:
the scenario's own facts, and the InterfacesAdded/InterfacesRemoved a client saw when a host was
added and a LUN deleted (real udev events, through pyudev).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import sanview
from sanscenario import ScenarioRun
from scenarios.scsi_debug import SCENARIO as S

pytestmark = pytest.mark.kernel_lab


@pytest.fixture(scope="module")
def run(scenario_run: Callable[[str], ScenarioRun]) -> ScenarioRun:
    return scenario_run(S.name)


def luns_of(objects: sanview.Tree, hosts: list[int]) -> dict[str, dict]:
    return {o[sanview.LUN_I]["HCTL"]: o[sanview.LUN_I] for p, o in objects.items()
            if "/luns/" in p and int(o[sanview.LUN_I]["HCTL"].split(":")[0]) in hosts}


def test_scenario_checks_pass(run: ScenarioRun) -> None:
    assert run.checks and not run.failed_checks, run.describe()


def test_hosts_and_luns_published_at_start(run: ScenarioRun) -> None:
    objects = run.snapshot("initial")["objects"]
    hosts = run.hosts("initial")
    assert len(hosts) == S.hosts
    for n in hosts:
        host = objects[sanview.host_path(f"host{n}")]
        assert set(host) == {sanview.HOST_I}, host  # no FcHost on a scsi_debug host
        assert (host[sanview.HOST_I]["Driver"], host[sanview.HOST_I]["Transport"],
                host[sanview.HOST_I]["State"]) == ("scsi_debug", "other", "running")
        assert host[sanview.HOST_I]["Luns"] == [sanview.lun_path(f"{n}:0:{t}:{lun}") for t, lun in S.lun_ids()]
    luns = luns_of(objects, hosts)
    assert sorted(luns) == sorted(f"{n}:0:{t}:{lun}" for n in hosts for t, lun in S.lun_ids())
    for hctl, lun in luns.items():
        _, _, t, n = map(int, hctl.split(":"))
        assert (lun["Vendor"], lun["Model"], lun["Revision"], lun["Type"], lun["State"]) == (
            S.vendor, S.model, S.rev, 0, "running"), lun
        assert lun["WWID"] == S.wwid(t, n), lun
        assert lun["Size"] == S.dev_size_mb << 20, lun
        assert lun["BlockDevice"].startswith("/dev/sd"), lun
        assert (lun["TargetPortName"], lun["MultipathMap"]) == ("", "/"), lun
    # one LUN, one WWID, a path on every host
    assert len({lun["WWID"] for lun in luns.values()}) == S.targets * S.luns
    assert len({lun["BlockDevice"] for lun in luns.values()}) == len(luns)


def test_added_host_appears_with_its_luns(run: ScenarioRun) -> None:
    step = run.data["add_host"]
    (new,) = step["hosts"]
    host_path = sanview.host_path(f"host{new}")
    lun_paths = {sanview.lun_path(f"{new}:0:{t}:{lun}") for t, lun in S.lun_ids()}
    added = [s for s in step["signals"] if s["member"] == "InterfacesAdded"]
    # exactly one InterfacesAdded per new object, with all its interfaces, and nothing else added
    assert sorted(s["object"] for s in added) == sorted({host_path} | lun_paths)
    for s in added:
        assert s["interfaces"] == ([sanview.HOST_I] if s["object"] == host_path else [sanview.LUN_I]), s
    assert not [s for s in step["signals"] if s["member"] == "InterfacesRemoved"]
    # driven by udev: every object came after udev announced the new host. (A LUN may come before
    # udev is done with it: the host's event makes sanbusd read the host's LUNs from sysfs, and
    # the kernel has created them there before udevd has run its rules for each.)
    for s in added:
        run.assert_udev_first("add", f"host{new}", s, after=step["t0"])
        assert run.udev_events("add", s["object"].rsplit("/", 1)[1].replace("_", ":")), s["object"]
    # the objects carry the kernel's facts from their first signal on
    host = next(s for s in added if s["object"] == host_path)["properties"][sanview.HOST_I]
    assert (host["Name"], host["Driver"], host["State"]) == (f"host{new}", "scsi_debug", "running")
    for s in added:
        if s["object"] in lun_paths:
            lun = s["properties"][sanview.LUN_I]
            _, _, t, n = map(int, lun["HCTL"].split(":"))
            assert (lun["Host"], lun["WWID"], lun["Vendor"]) == (host_path, S.wwid(t, n), S.vendor), lun
    # the final tree has the host with all its LUNs (and test_kernel_tree: exactly as in sysfs)
    final = run.snapshot("final")["objects"]
    assert final[host_path][sanview.HOST_I]["Luns"] == sorted(lun_paths, key=lambda p: sanview.hctl_key(
        p.rsplit("/", 1)[1].replace("_", ":")))
    assert step["seconds"] < 30, step["seconds"]


def test_deleted_lun_disappears(run: ScenarioRun) -> None:
    step = run.data["delete"]
    removed = [s for s in step["signals"] if s["member"] == "InterfacesRemoved"]
    assert [(s["object"], s["interfaces"]) for s in removed] == [(step["path"], [sanview.LUN_I])]
    assert not [s for s in step["signals"] if s["member"] == "InterfacesAdded"]
    run.assert_udev_first("remove", step["hctl"], removed[0], after=step["t0"])
    host, _, _, _ = step["hctl"].split(":")
    host_path = sanview.host_path(f"host{host}")
    luns_changes = [s["changed"]["Luns"] for s in step["signals"] if s["member"] == "PropertiesChanged"
                    and s["object"] == host_path and "Luns" in s["changed"]]
    assert luns_changes and step["path"] not in luns_changes[-1], step["signals"]
    final = run.snapshot("final")
    assert step["path"] not in final["objects"]
    assert step["hctl"] not in final["sysfs"]["luns"]
    assert len(luns_of(final["objects"], run.hosts("final"))) == (S.hosts + S.added_hosts) * len(S.lun_ids()) - 1


def test_resolve_device_with_real_device_nodes(run: ScenarioRun) -> None:
    r = run.data["resolve"]
    assert r["by_dev"] == [sanview.lun_path(r["hctl"])]
    # udev's by-id link points at one of the LUN's paths (they compete for it); it resolves to that one
    objects = run.snapshot("final")["objects"]
    with_block = {o[sanview.LUN_I]["BlockDevice"]: p for p, o in objects.items() if "/luns/" in p}
    assert r["by_id_target"] in with_block, r
    assert r["by_link"] == [with_block[r["by_id_target"]]]
    # the WWID gives every path of the LUN (at that moment: the first hosts plus the added one)
    assert r["by_wwid"] == sorted(sanview.lun_path(f"{n}:0:0:0") for n in run.hosts("final"))

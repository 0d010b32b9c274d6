"""Targeted and wildcard scans, Lun.Rescan and Lun.Delete on scsi_debug, through sanbusd
(scenarios/scsi_debug_scan.py). test_kernel_tree.py checks every checkpoint against sysfs and
lsscsi, test_conformance.py against the simulated SAN."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import sanview
from sanscenario import ScenarioRun
from scenarios.scsi_debug_scan import SCENARIO as S

pytestmark = pytest.mark.kernel_lab


@pytest.fixture(scope="module")
def run(scenario_run: Callable[[str], ScenarioRun]) -> ScenarioRun:
    return scenario_run(S.name)


def hctls(hosts: list[int], targets: range, luns) -> list[str]:
    return sorted((f"{h}:0:{t}:{n}" for h in hosts for t in targets for n in luns), key=sanview.hctl_key)


def test_scenario_checks_pass(run: ScenarioRun) -> None:
    assert run.checks and not run.failed_checks, run.describe()


def test_more_luns_are_attached_by_nobody_but_reported_by_a_unit_attention(run: ScenarioRun) -> None:
    """scsi_debug queues REPORTED LUNS DATA HAS CHANGED when max_luns grows; the kernel attaches
    nothing, and a TEST UNIT READY to LUN 0 of each target delivers it: RescanSuggested on every host."""
    hosts = run.hosts("initial")
    raised = run.data["raise"]
    everything = hctls(hosts, range(S.targets), range(S.luns))
    assert raised["before"] == raised["without_io"]["attached"] == everything
    assert raised["without_io"]["suggested"] == [False] * len(hosts)
    assert raised["suggested"] == [True] * len(hosts)
    assert all(changes == [True] for changes in raised["changes"].values()), raised["changes"]
    for h in hosts:
        events = [e for e in run.udev_events("change", f"host{h}")
                  if e.get("ua") == "REPORTED_LUNS_DATA_HAS_CHANGED"]
        # SPC-4: reported once per target (the first command to any of its LUNs)
        assert sorted(e["devpath"].rsplit("/", 1)[1] for e in events) == [f"{h}:0:{t}:0" for t in range(S.targets)]


def test_bad_input_and_a_refused_scan_attach_nothing(run: ScenarioRun) -> None:
    hosts = run.hosts("initial")
    bad = run.data["bad_input"]
    answers = bad["answers"]
    assert (answers["lun out of range"]["error"], answers["unknown option"]["error"]) == (
        "org.example.SanStorage.Error.InvalidArgument", "org.freedesktop.DBus.Error.InvalidArgs")
    # the kernel refuses "3 - -" (channel > max_channel): named after its errno, for that host
    refused = answers["channel the kernel refuses"]
    assert refused["error"] == "org.example.SanStorage.Error.InvalidArgument", refused
    assert f"host{hosts[0]}: scan '3 - -' was refused: the kernel answered EINVAL" in refused["message"]
    assert bad["attached"] == hctls(hosts, range(S.targets), range(S.luns))
    # a refused scan is no scan: the host still suggests one
    assert bad["suggested"] == [True] * len(hosts)


def test_scan_all_for_lun_5_attaches_it_on_every_target_of_every_host(run: ScenarioRun) -> None:
    hosts = run.hosts("initial")
    targeted = run.data["targeted"]
    wanted = [sanview.lun_path(h) for h in hctls(hosts, range(S.targets), [S.asked])]
    assert targeted["reply"]["ok"] and targeted["reply"]["body"] == [wanted]
    assert targeted["attached"] == hctls(hosts, range(S.targets), [*range(S.luns), S.asked])
    assert all(b.startswith("/dev/sd") for b in targeted["ready"].values()) and len(targeted["ready"]) == len(wanted)
    assert targeted["suggested"] == [False] * len(hosts)
    assert all(changes == [False] for changes in targeted["changes"].values()), targeted["changes"]
    objects = run.snapshot("targeted")["objects"]
    for p in wanted:
        lun = objects[p][sanview.LUN_I]
        _, _, t, n = map(int, lun["HCTL"].split(":"))
        assert (lun["Lun"], lun["WWID"], lun["Size"]) == (S.asked, S.wwid(t, n), S.dev_size_mb << 20)


def test_a_wildcard_scan_of_one_host_attaches_the_rest_there_only(run: ScenarioRun) -> None:
    hosts = run.hosts("initial")
    step = run.data["host_scan"]
    host = hosts[S.wildcard_host]
    others = [h for h in hosts if h != host]
    rest = [n for n in range(S.max_luns) if n not in (*range(S.luns), S.asked)]
    assert step["reply"]["ok"], step["reply"]
    assert step["reply"]["body"] == [[sanview.lun_path(h) for h in hctls([host], range(S.targets), rest)]]
    assert step["attached"] == sorted(hctls(others, range(S.targets), [*range(S.luns), S.asked])
                                      + hctls([host], range(S.targets), range(S.max_luns)), key=sanview.hctl_key)
    # ready to hand to a VM: udev had finished every new disk when the scan answered
    assert sorted(step["udev_done"]) == sorted(step["reply"]["body"][0])
    assert all(step["udev_done"].values()), step["udev_done"]


def test_lun_delete_removes_the_object_and_the_sysfs_entry(run: ScenarioRun) -> None:
    step = run.data["delete"]
    assert step["reply"]["ok"], step["reply"]
    assert not step["on_bus"] and not step["in_sysfs"] and step["hctl"] not in step["attached"]
    assert sanview.lun_path(step["hctl"]) not in run.snapshot("final")["objects"]
    signals = [s for s in run.report["data"]["signals"] if s.get("object") == sanview.lun_path(step["hctl"])]
    assert len([s for s in signals if s["member"] == "InterfacesRemoved"]) == 1
    # never published half-read while the kernel tore it down (test_kernel_tree checks every LUN)
    assert not [s for s in signals if s["member"] == "PropertiesChanged" and s["changed"].get("Vendor") == ""]


def test_lun_rescan_updates_the_size_before_it_returns(run: ScenarioRun) -> None:
    step = run.data["rescan"]
    grown = S.virtual_gb << 30
    assert step["reply"]["ok"], step["reply"]
    assert (step["size_before"], step["size_after"], step["sysfs_size"]) == (S.dev_size_mb << 20, grown, grown)
    assert step["size_changes"] == [grown]
    # the kernel re-reads a capacity only when asked: every other LUN still has its old size
    assert {h: s for h, s in step["sizes"].items() if h != step["hctl"]} == {
        h: S.dev_size_mb << 20 for h in step["sizes"] if h != step["hctl"]}

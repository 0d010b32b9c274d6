"""Targeted and wildcard scans, Lun.Rescan and Lun.Delete on scsi_debug, through sanbusd, and
Lun.Delete while a process holds the disk open (scenarios/scsi_debug_scan.py). test_kernel_tree.py
checks every checkpoint against sysfs and lsscsi, test_conformance.py against the simulated SAN
(and replays the held-open story there)."""

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
    # the disk came with the scan just before: the scenario waited until udev had let go of it
    # (a worker, or `multipath -u` that its rules run; else Delete is Busy and names them), and
    # nobody but udev ever held it
    released = step["released"]
    assert released["still"] == [], released
    assert all(e["udev"] is not False for e in released["held_by"]), released  # None: gone, unknown
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


# -- the story: Lun.Delete while a process holds the disk open --------------------------------


def test_lun_delete_is_busy_while_a_process_holds_the_disk_open_and_names_it(run: ScenarioRun) -> None:
    held = run.data["held_kernel"]
    busy = run.data["held_busy"]
    kept = busy["hctl"]
    node = run.snapshot("final")["objects"][sanview.lun_path(kept)][sanview.LUN_I]["BlockDevice"]
    # the holder: sleep, with both disks open, and nobody else had them open
    assert held["before"]["still"] == [] and held["comm"] == "sleep", held
    name = f"sleep (pid {held['pid']})"
    assert sorted(held["nodes"]) == sorted(n for n in held["fds"] if n.startswith("/dev/sd")), held
    assert all(openers == [name] for openers in held["openers"].values()), held
    assert busy["error"] == "org.example.SanStorage.Error.Busy", busy
    # the kernel's holder by name and pid (the record compared with the simulated SAN has "pid N")
    assert run.data["held_busy_message"] == (f"{kept} ({node}) is in use by {name}; stop using it first, "
                                             "or pass force=true to remove it anyway"), busy
    assert busy["message"] == run.data["held_busy_message"].replace(name, "sleep (pid N)")
    # nothing removed: still on the bus, still in /sys/class/scsi_device, no InterfacesRemoved
    assert busy["on_bus"] and busy["in_sysfs"] and busy["removed"] == [], busy


def test_lun_delete_force_removes_a_disk_held_open(run: ScenarioRun) -> None:
    held = run.data["held_kernel"]
    force = run.data["held_force"]
    assert force["ok"] and force["error"] is None, force
    assert not force["on_bus"] and not force["in_sysfs"], force
    assert force["removed"] == [sanview.lun_path(force["hctl"])]
    assert held["alive_at_release"], held  # sleep still held it when force removed it


def test_a_plain_delete_works_once_the_process_has_closed_the_disk(run: ScenarioRun) -> None:
    held = run.data["held_kernel"]
    plain = run.data["held_release"]
    assert held["openers_after"] == {n: [] for n in held["nodes"]}, held
    assert plain["hctl"] == run.data["held_busy"]["hctl"]
    assert plain["ok"] and not plain["on_bus"] and not plain["in_sysfs"], plain
    assert plain["removed"] == [sanview.lun_path(plain["hctl"])]
    # the held checkpoint: both gone, everything else as at "final"; each removed exactly once
    gone = {sanview.lun_path(plain["hctl"]), sanview.lun_path(run.data["held_force"]["hctl"])}
    final, after = run.snapshot("final")["objects"], run.snapshot("held")["objects"]
    assert gone <= set(final) and set(final) - set(after) == gone and set(after) <= set(final)
    for path in gone:
        signals = [s for s in run.report["data"]["signals"] if s.get("object") == path]
        assert [s["member"] for s in signals if s["member"] == "InterfacesRemoved"] == ["InterfacesRemoved"]

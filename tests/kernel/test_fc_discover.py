"""Discover new SAN storage on the real kernel: LIO maps LUNs after boot, sanbusd scans for them
(scenarios/fc_discover.py). That the objects match sysfs and lsscsi at every checkpoint is
test_kernel_tree.py's job, that the simulated SAN tells the same story test_conformance.py's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import sanview
from sanscenario import ScenarioRun
from scenarios.fc_discover import SCENARIO as S
from simstory import SimContext

pytestmark = pytest.mark.kernel_lab

LUNS_CHANGED = "REPORTED_LUNS_DATA_HAS_CHANGED"


@pytest.fixture(scope="module")
def run(scenario_run: Callable[[str], ScenarioRun]) -> ScenarioRun:
    return scenario_run(S.name)


def hctl(run: ScenarioRun, lun: int) -> str:
    story = run.data["story"]
    return f"{story['host']}:0:{story['target_id']}:{lun}"


def path(run: ScenarioRun, lun: int) -> str:
    return sanview.lun_path(hctl(run, lun))


def luns_changed(run: ScenarioRun, after: float, before: float = float("inf")) -> list[dict]:
    """udev's change events with SDEV_UA=REPORTED_LUNS_DATA_HAS_CHANGED on the initiator's LUNs."""
    host = f"host{run.data['story']['host']}"
    return [e for e in run.udev_events("change", host) if e.get("ua") == LUNS_CHANGED and after <= e["t"] < before]


def test_scenario_checks_pass(run: ScenarioRun) -> None:
    assert run.checks and not run.failed_checks, run.describe()


def test_mapping_luns_attaches_nothing_and_raises_no_unit_attention_without_io(run: ScenarioRun) -> None:
    """LIO queues REPORTED LUNS DATA HAS CHANGED on the initiator's existing LUNs when its ACL
    changes, and says nothing until a command reaches one of them: the kernel neither hears of
    the change nor scans by itself."""
    ua = run.data["unit_attention"]
    assert ua["luns_without_scan"] == [hctl(run, n) for n in S.luns]
    assert luns_changed(run, ua["t_mapped"], ua["t_io"]) == []
    assert ua["suggested_without_io"] is False
    assert [c for c in ua["signals"] if c["t"] < ua["t_io"]] == []


def test_the_next_io_brings_the_unit_attention_and_rescan_suggested(run: ScenarioRun) -> None:
    """A read of LUN 0 gets the unit attention: the kernel logs "LUN assignments on this target
    have changed", udev sends a change with SDEV_UA, and sanbusd's RescanSuggested turns true."""
    ua = run.data["unit_attention"]
    events = luns_changed(run, ua["t_io"], run.data["targeted_kernel"]["t0"])
    assert [e["devpath"].rsplit("/", 1)[1] for e in events] == [hctl(run, 0)], events
    assert ua["suggested_after_io"] is True
    (change,) = ua["signals"]
    assert change["value"] is True and change["t"] >= events[0]["t"]


def test_the_scan_clears_rescan_suggested(run: ScenarioRun) -> None:
    targeted = run.data["targeted"]
    kernel = run.data["targeted_kernel"]
    assert [c["value"] for c in kernel["suggested_changes"]] == [False]
    assert targeted["suggested"] is False
    # While the scan probed them, each new LUN reported the unit attention its later siblings'
    # mapping had queued on it (LIO: one per LUN, on every LUN of the ACL but the new one); sanbusd
    # heard these before the call returned, and the flag stays cleared.
    t0 = kernel["t0"]
    reported = {e["devpath"].rsplit("/", 1)[1] for e in luns_changed(run, t0, t0 + kernel["seconds"])}
    assert reported == {hctl(run, n) for n in S.asked}
    assert run.data["wildcard"]["suggested"] is False


def test_bad_input_is_refused_with_named_errors_and_attaches_nothing(run: ScenarioRun) -> None:
    bad = run.data["bad_input"]
    assert [(a["what"], a["error"]) for a in bad["answers"]] == [
        ("a LUN out of range", "org.example.SanStorage.Error.InvalidArgument"),
        ("no LUNs", "org.example.SanStorage.Error.InvalidArgument"),
        ("LUNs of the wrong type", "org.freedesktop.DBus.Error.InvalidArgs"),
        ("an unknown option", "org.freedesktop.DBus.Error.InvalidArgs"),
        ("a host that does not exist", "org.example.SanStorage.Error.NotFound"),
        ("a timeout out of range", "org.example.SanStorage.Error.InvalidArgument"),
        ("a channel the kernel refuses", "org.example.SanStorage.Error.InvalidArgument"),
    ]
    messages = [a["message"] for a in bad["answers"]]
    assert "LUN 70000 is out of range" in messages[0] and "unknown option 'lun'" in messages[3]
    host = run.data["story"]["host"]
    assert messages[-1] == (f"host{host}: scan '3 - -' was refused: the kernel answered EINVAL (Invalid argument). "
                            "0 LUN paths appeared on the other hosts")
    assert bad["attached"] == []  # LUNs 27-53 and 30 were mapped: any scan would have attached them
    assert bad["suggested"] is True  # nothing was scanned (the refused "3 - -" is no scan)


def test_scan_all_answers_exactly_the_luns_asked_for_ready_to_use(run: ScenarioRun) -> None:
    targeted = run.data["targeted"]
    wanted = [path(run, n) for n in S.asked]
    assert targeted["ok"] and targeted["added"] == wanted
    assert sorted(targeted["ready"]) == wanted
    for p, lun in targeted["ready"].items():  # read right after the answer
        assert lun["BlockDevice"].startswith("/dev/sd") and lun["Size"] == S.lun_mb << 20, (p, lun)
        assert (lun["Vendor"], lun["TargetPortName"]) == (S.vendor, S.target_wwpn)
    assert targeted["attached"] == [hctl(run, n) for n in (*S.luns, *S.asked)]
    assert not targeted["decoy_attached"] and not targeted["decoy_on_bus"]
    assert path(run, S.decoy) not in run.snapshot("targeted")["busctl_tree"].split()
    # ready to hand to a VM: udev had finished every new disk when ScanAll answered
    udev = run.data["targeted_kernel"]["udev_done"]
    assert sorted(udev) == wanted and all(udev.values()), udev


def test_delete_then_sanctl_scan_brings_them_back(run: ScenarioRun) -> None:
    delete = run.data["delete"]
    assert all(a["ok"] for a in delete["answers"].values()) and len(delete["answers"]) == len(S.asked)
    assert delete["attached"] == [hctl(run, n) for n in S.luns] and delete["on_bus"] == []
    sanctl = run.data["sanctl"]
    assert sanctl["rc"] == 0, run.data["sanctl_run"]
    lines = sanctl["stdout"].splitlines()
    assert lines[0] == f"{len(S.asked)} new LUNs, {len(S.asked)} paths"
    assert lines[1].split() == ["HCTL", "LUN", "DEVICE", "SIZE", "WWID", "TARGET", "PORT"]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1], r[3:5], r[5], r[6]) for r in rows] == [
        (hctl(run, n), str(n), ["8", "MiB"], "-", S.target_wwpn) for n in S.asked]
    assert all(r[2].startswith("/dev/sd") for r in rows)
    assert "scanning all hosts for LUNs 27,28,29,53" in run.data["sanctl_run"]["stderr"]
    assert sanctl["attached"] == [hctl(run, n) for n in (*S.luns, *S.asked)]


def test_a_wildcard_scan_attaches_lun_30(run: ScenarioRun) -> None:
    wildcard = run.data["wildcard"]
    assert wildcard["ok"] and wildcard["added"] == [path(run, S.decoy)]
    assert wildcard["attached"] == sorted((hctl(run, n) for n in (*S.luns, *S.asked, S.decoy)),
                                          key=sanview.hctl_key)
    lun = run.snapshot("wildcard")["objects"][path(run, S.decoy)][sanview.LUN_I]
    assert lun["BlockDevice"].startswith("/dev/sd") and lun["Lun"] == S.decoy


def test_the_simulated_san_wrote_exactly_the_asked_luns_and_no_wildcard(
        story_replay: Callable[[str], SimContext]) -> None:
    """The kernel's writes cannot be seen; the simulated SAN records them. Bad input wrote nothing
    but the one scan string the kernel refuses; the targeted scans wrote one "C T L" per LUN."""
    writes = [(w["path"], w["data"], w["result"]) for w in story_replay(S.name).writes]
    scan = "class/scsi_host/host0/scan"
    targeted = [(scan, f"0 0 {n}", "ok") for n in S.asked]
    deletes = [(f"class/scsi_device/0:0:0:{n}/device/delete", "1", "ok") for n in S.asked]
    assert writes == [(scan, "3 - -", "EINVAL"), *targeted, *deletes, *targeted, (scan, "- - -", "ok")]

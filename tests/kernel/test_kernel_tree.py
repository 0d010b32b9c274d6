"""Every group boot: sanbusd on the real kernel publishes exactly what sysfs and lsscsi show.

At every checkpoint of every scenario (sanscenario.GroupRunner.snapshot) the guest recorded the
object tree (dbus-fast and busctl), a sysfs snapshot read independently of sanbusd (guestlib), and
lsscsi. These tests hold for any scenario; test_<scenario>.py adds the scenario's own assertions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

import lab
import sanview
import scenarios
from sanscenario import completed_report

pytestmark = pytest.mark.kernel_lab

CHECKPOINTS = [(group, key) for group, names in scenarios.GROUPS.items()
               for key in ("initial", *(f"{n}:{cp}" for n in names for cp in scenarios.ALL[n].checkpoints
                                        if cp != "initial"))]


def ids(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.fixture(params=sorted(scenarios.GROUPS))
def group(request: pytest.FixtureRequest, group_boot: Callable[[str], lab.GuestResult]) -> lab.GuestResult:
    return group_boot(request.param)


@pytest.fixture(params=CHECKPOINTS, ids=ids)
def snapshot(request: pytest.FixtureRequest, group_boot: Callable[[str], lab.GuestResult]) -> dict:
    group, key = request.param
    report = completed_report(group_boot(group))
    assert key in report["data"]["checkpoints"], group_boot(group).describe()
    return report["data"]["checkpoints"][key]


def test_group_ran_and_sanbusd_stopped_cleanly(group: lab.GuestResult) -> None:
    report = completed_report(group)
    shared = [c for c in report["checks"] if not any(c["name"].startswith(f"{n}: ") for n in scenarios.ALL)]
    assert shared and all(c["ok"] for c in shared), group.describe()
    assert report["data"]["daemon_exit_code"] == 0
    log = (group.outdir / "sanbusd.log").read_text(errors="replace")
    assert "owns org.example.SanStorage (kernel backend)" in log, log
    assert not re.search(r"Traceback|ERROR|WARNING", log), log  # e.g. "sysfs: cannot read …"


def test_manager_says_kernel_backend(group: lab.GuestResult) -> None:
    manager = completed_report(group)["data"]["manager"]
    assert manager["Backend"] == "kernel", manager


def test_objects_match_sysfs_exactly(snapshot: dict) -> None:
    assert sanview.sysfs_differences(snapshot["objects"], snapshot["sysfs"]) == []
    # and the comparison is not vacuous
    assert snapshot["sysfs"]["luns"] and snapshot["sysfs"]["hosts"]
    assert len([p for p in snapshot["objects"] if "/luns/" in p]) == len(snapshot["sysfs"]["luns"])


def _settled(tree: dict) -> dict:
    """The tree without Manager.Multipathd: multipathd's status as the daemon last polled it
    ("unknown" until its first answer, about a second after start when multipathd is absent) may
    change between the two reads of a checkpoint."""
    manager = f"{sanview.ROOT}/Manager"
    out = dict(tree)
    if manager in out:
        out[manager] = {i: {k: v for k, v in props.items() if k != "Multipathd"}
                        for i, props in out[manager].items()}
    return out


def test_busctl_sees_the_same_tree(snapshot: dict) -> None:
    assert _settled(snapshot["busctl_objects"]) == _settled(snapshot["objects"])
    tree = set(snapshot["busctl_tree"].split())
    assert set(snapshot["objects"]) <= tree
    assert {p for p in tree if p.count("/") > 4} == set(snapshot["objects"]) - {f"{sanview.ROOT}/Manager"}


def test_objects_match_lsscsi(snapshot: dict) -> None:
    objects = snapshot["objects"]
    hosts = sanview.parse_lsscsi_hosts(snapshot["lsscsi_H"])
    assert hosts == {o[sanview.HOST_I]["Name"]: o[sanview.HOST_I]["Driver"]
                     for p, o in objects.items() if "/hosts/" in p}
    luns = {o[sanview.LUN_I]["HCTL"]: o[sanview.LUN_I] for p, o in objects.items() if "/luns/" in p}
    listed = sanview.parse_lsscsi(snapshot["lsscsi"])
    assert listed == {hctl: {"type": "disk", "vendor": lun["Vendor"], "model": lun["Model"], "rev": lun["Revision"],
                             "device": lun["BlockDevice"]} for hctl, lun in luns.items()}, snapshot["lsscsi"]
    # lsscsi -t: FC LUNs show "<driver>:0x<target WWPN>,<port id>", iSCSI LUNs "<target>,t,0x<tpgt>"
    # (their session's), others nothing
    transport = sanview.parse_lsscsi_transport(snapshot["lsscsi_t"])
    assert set(transport) == set(luns)
    sessions = {o[sanview.SESSION_I]["Host"]: o[sanview.SESSION_I] for o in objects.values()
                if sanview.SESSION_I in o}
    for hctl, lun in luns.items():
        if lun["Host"] in sessions:
            s = sessions[lun["Host"]]
            assert transport[hctl]["transport"] == f"{s['TargetName']},t,0x{s['Tpgt']:x}", (hctl, transport[hctl])
        elif lun["TargetPortName"]:
            assert re.fullmatch(rf"\w+:0x0*{lun['TargetPortName'].lstrip('0')},0x[0-9a-f]{{6}}",
                                transport[hctl]["transport"]), (hctl, transport[hctl])
        else:
            assert transport[hctl]["transport"] == "", (hctl, transport[hctl])


def test_signals_come_from_the_manager_path_of_the_daemon(group: lab.GuestResult) -> None:
    data = completed_report(group)["data"]
    signals = data["signals"]
    assert signals, "no signal was recorded"
    assert {s["sender"] for s in signals} == {data["daemon_owner"]}
    om = [s for s in signals if s["member"] in ("InterfacesAdded", "InterfacesRemoved")]
    assert om and all(s["path"] == sanview.ROOT for s in om)
    changed = [s for s in signals if s["member"] == "PropertiesChanged"]
    assert all(s["path"] == s["object"] and s["path"].startswith(sanview.ROOT + "/") for s in changed)


def test_no_lun_is_ever_published_half_read(group: lab.GuestResult) -> None:
    """A LUN read while the kernel removes it (its attributes go before its directory) is gone,
    not a LUN with empty INQUIRY data: no signal ever carries an empty Vendor or Model."""
    signals = completed_report(group)["data"]["signals"]
    added = [s["properties"][sanview.LUN_I] for s in signals
             if s["member"] == "InterfacesAdded" and sanview.LUN_I in s["properties"]]
    assert added and all(lun["Vendor"] and lun["Model"] for lun in added)
    emptied = [s for s in signals if s["member"] == "PropertiesChanged" and s["interface"] == sanview.LUN_I
               and ("" in (s["changed"].get("Vendor"), s["changed"].get("Model")))]
    assert emptied == []


def test_console_log_is_kept(group: lab.GuestResult) -> None:
    log = Path(group.console_log).read_text(errors="replace")
    assert "KLAB-SCENARIO-START" in log and "KLAB-SCENARIO-EXIT rc=0" in log, group.console_tail()

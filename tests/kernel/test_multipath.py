"""multipath on scsi_debug (scenarios/multipath.py): maps created, a path offline and back, flushes."""

from __future__ import annotations

import re

import pytest

import sanview
from scenarios.multipath import ERR, SCENARIO as S

pytestmark = pytest.mark.kernel_lab

MAPS = sorted(sanview.map_path(S.mpath_wwid(0, n)) for n in range(S.luns))


@pytest.fixture(scope="module")
def run(scenario_run):
    return scenario_run(S.name)


def test_checks_pass(run):
    assert run.checks and not run.failed_checks, run.describe()


def test_create_all_makes_one_healthy_map_per_wwid_with_two_paths(run):
    created = run.data["created"]
    assert created["ok"] and created["maps"] == MAPS, created
    for path, view in created["views"].items():
        assert view["TotalPaths"] == view["ActivePaths"] == 2 and view["Health"] == "healthy", view
        assert all(p["Up"] and p["DmState"] == "active" and p["DeviceState"] == "running"
                   and p["CheckerState"] == "ready" for p in view["Paths"]), view
        assert view["Size"] == S.dev_size_mb << 20
    assert set(created["backrefs"].values()) == set(MAPS)
    assert run.data["again"] == {"ok": True, "maps": MAPS}


def test_a_path_offline_degrades_its_map_and_running_heals_it(run):
    offline = run.data["offline"]
    assert offline["map"]["Health"] == "degraded" and offline["map"]["ActivePaths"] == 1, offline
    assert offline["lun_state"] == "offline"
    down = [p for p in offline["map"]["Paths"] if not p["Up"]]
    assert len(down) == 1 and down[0]["DeviceState"] == "offline" and down[0]["DmState"] == "failed", down
    assert offline["health_changes"][:1] == ["degraded"], offline
    assert run.data["running"]["map"]["Health"] == "healthy"
    assert run.data["running"]["lun_state"] == "running"


def test_flush_of_an_unused_map(run):
    flush = run.data["flush"]
    assert flush["ok"] and not flush["on_bus"], flush
    assert set(flush["luns"].values()) == {sanview.NO_OBJECT}, flush


def test_flush_of_a_held_map_is_busy_naming_the_holder_then_deferred(run):
    busy = run.data["busy"]
    assert busy["error"] == ERR + "Busy" and busy["on_bus"] and busy["removed"] == [], busy
    assert re.search(r"in use by sleep \(pid \d+\)", run.data["busy_message"]), run.data["busy_message"]
    deferred = run.data["deferred"]
    assert deferred["ok"] and deferred["on_bus_while_held"] and deferred["gone_after_release"], deferred
    assert not deferred["on_bus"] and set(deferred["luns"].values()) == {sanview.NO_OBJECT}


def test_flush_remove_paths_removes_the_map_then_its_luns(run):
    retire = run.data["retire"]
    assert retire["ok"] and retire["on_bus"] == [] and retire["in_sysfs"] == [], retire
    assert len(retire["removed"]) == 3 and retire["map_first"], retire

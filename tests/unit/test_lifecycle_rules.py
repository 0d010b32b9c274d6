"""The life cycle's pure logic: the idle rule, the watchdog interval and pings, the state kept
across an idle exit (snapshot, parse, restore, a corrupt file), and the idle_exit setting."""

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from sanbusd import config, lifecycle
from sanbusd.model.ids import HCTL
from sanbusd.ops.jobs import Jobs

OM = "org.freedesktop.DBus.ObjectManager"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_idle_after_the_timeout_counted_from_the_last_call():
    clock = Clock()
    t = lifecycle.IdleTracker(10, clock)
    assert t.due(0) == 10
    clock.now += 4
    release, watch = t.call_started(":1.5", "org.example.SanStorage.Lun", "Rescan")
    assert not watch and t.due(0) is None and t.busy(0) == "1 calls in flight"
    clock.now += 100                    # a long call holds it however long it takes
    assert t.due(0) is None
    release()
    release()                           # twice is once
    assert t.in_flight == 0
    assert t.due(0) == 10               # counted from the answer
    clock.now += 10
    assert t.due(0) == 0


def test_a_running_job_holds_it_and_the_idle_time_starts_when_it_ends():
    clock = Clock()
    t = lifecycle.IdleTracker(5, clock)
    clock.now += 3
    assert t.due(1) is None and "1 jobs running" in t.busy(1)
    clock.now += 50
    assert t.due(1) is None
    assert t.due(0) == 5


def test_an_object_manager_client_holds_it_until_it_leaves():
    clock = Clock()
    t = lifecycle.IdleTracker(5, clock)
    release, watch = t.call_started(":1.7", OM, "GetManagedObjects")
    assert watch
    release()
    assert t.call_started(":1.7", None, "GetManagedObjects")[1] is False    # known already
    assert t.in_flight == 1
    t.in_flight = 0
    clock.now += 60
    assert t.due(0) is None and "1 ObjectManager clients" in t.busy(0)
    t.watcher_gone(":1.7")
    t.watcher_gone(":1.99")             # not one: nothing
    assert t.due(0) == 5
    # other calls make no watcher
    assert t.call_started(":1.8", "org.freedesktop.DBus.Properties", "GetAll")[1] is False
    assert t.watchers == set()


@pytest.mark.parametrize("env,pid,expected", [
    ({}, 7, None),
    ({"WATCHDOG_USEC": "500000"}, 7, 0.25),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7, None),    # another process's
    ({"WATCHDOG_USEC": "soon"}, 7, None),
    ({"WATCHDOG_USEC": "0"}, 7, None),
])
def test_watchdog_interval(env, pid, expected):
    assert lifecycle.watchdog_interval(env, pid) == expected


def test_watchdog_pings_from_the_event_loop():
    sent = []

    async def go():
        w = lifecycle.Watchdog(0.02, sent.append)
        w.start()
        await asyncio.sleep(0.11)
        w.stop()
        n = len(sent)
        await asyncio.sleep(0.05)
        return n
    n = asyncio.run(go())
    assert 2 <= n <= 7 and set(sent) == {"WATCHDOG=1"} and len(sent) == n


def test_a_blocked_loop_sends_no_pings():
    sent = []

    async def go():
        w = lifecycle.Watchdog(0.02, sent.append)
        w.start()
        import time
        time.sleep(0.2)                 # the loop is stuck: no ping meanwhile
        n = len(sent)
        w.stop()
        return n
    assert asyncio.run(go()) == 1       # only the one at start


# -- state across an idle exit ------------------------------------------------------------------

@dataclass
class Host:
    number: int
    driver: str = "lpfc"
    unique_id: int = 0
    fc: object = None


@dataclass
class Inv:
    hosts: dict = field(default_factory=dict)


def inventory(*hosts):
    return Inv({h.number: h for h in hosts})


def fc(wwpn):
    return SimpleNamespace(wwpn=wwpn)


def test_snapshot_and_restore_round_trip_with_the_same_hosts():
    async def go():
        inv = inventory(Host(1, fc=fc("10")), Host(2, fc=fc("20")), Host(3))
        jobs = Jobs(60)
        done = jobs.start("scan", [("host", 1), ("lun", HCTL(1, 0, 0, 27))], 0)
        jobs.finish(done, True, "1 new LUN path")
        jobs.start("scan", [("host", 2)], 1000)     # still running: not kept
        data = json.loads(json.dumps(lifecycle.snapshot(inv, {1, 3, 9}, jobs, "b1")))
        assert [h["host"] for h in data["rescan_suggested"]] == [1, 3]   # 9 is gone
        assert [j["number"] for j in data["jobs"]] == [1]
        assert data["next_job"] == 3

        # host 3 was replaced by another host that got its number: not the same host
        later = inventory(Host(1, fc=fc("10")), Host(2, fc=fc("20")), Host(3, unique_id=4))
        got = set()
        jobs2 = Jobs(60)
        said = lifecycle.restore(data, later, got.update, jobs2, "b1")
        assert got == {1}
        assert said == "RescanSuggested on 1 of 2 hosts, 1 of 1 finished jobs"
        job = jobs2.get(1)
        assert (job.operation, job.objects, job.success, job.message, job.finished) == (
            "scan", [("host", 1), ("lun", HCTL(1, 0, 0, 27))], True, "1 new LUN path", True)
        assert jobs2.start("scan", [], 0).number == 3       # numbers are not reused
    asyncio.run(go())


def test_restore_skips_expired_jobs_and_another_boot():
    async def go():
        jobs = Jobs(60)
        j = jobs.start("scan", [("host", 1)], 0)
        jobs.finish(j, False, "failed")
        j.finished_at -= 61                 # its retention ran out while sanbusd was down
        data = lifecycle.snapshot(inventory(Host(1)), {1}, jobs, "b1")
        fresh = Jobs(60)
        got = set()
        assert "0 of 1 finished jobs" in lifecycle.restore(data, inventory(Host(1)),
                                                           got.update, fresh, "b1")
        assert fresh.jobs == {} and got == {1}
        got.clear()
        said = lifecycle.restore(data, inventory(Host(1)), got.update, Jobs(60), "b2")
        assert said.startswith("nothing") and got == set()
    asyncio.run(go())


def test_run_state_file_is_read_once_and_a_corrupt_one_is_set_aside(tmp_path, caplog):
    rs = lifecycle.RunState(str(tmp_path / "run"))
    assert rs.take() is None                # none yet
    good = {"version": 1, "boot": "", "rescan_suggested": [], "jobs": [], "next_job": 1}
    assert rs.save(good)
    assert (tmp_path / "run" / "state.json").stat().st_mode & 0o777 == 0o600
    assert rs.take() == good
    assert rs.take() is None                # read once
    for bad in ('{"version": 1', '{"version": 2}', '{"version": 1, "jobs": 3}', "\udcff"):
        (tmp_path / "run" / "state.json").write_text(bad, errors="surrogateescape")
        caplog.clear()
        with caplog.at_level(logging.WARNING, "sanbusd.lifecycle"):
            assert rs.take() is None
        assert "is corrupt" in caplog.text and "starting without" in caplog.text, bad
        assert (tmp_path / "run" / "state.json.corrupt").exists()
        assert not (tmp_path / "run" / "state.json").exists()


def test_an_unwritable_run_directory_is_a_log_line(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    rs = lifecycle.RunState(str(tmp_path / "file" / "run"))
    with caplog.at_level(logging.WARNING, "sanbusd.lifecycle"):
        assert rs.save({"version": 1}) is False
    assert "cannot keep RescanSuggested" in caplog.text


# -- the setting ----------------------------------------------------------------------------------

def test_idle_exit_setting_sources(tmp_path):
    assert config.from_sources({}, {}).idle_exit == 0               # by hand: never
    by_systemd = {"SYSTEMD_EXEC_PID": str(os.getpid())}
    assert config.from_sources({}, by_systemd).idle_exit == config.SERVICE_IDLE_EXIT
    inherited = {"SYSTEMD_EXEC_PID": "1"}                          # a unit's descendant
    assert config.from_sources({}, inherited).idle_exit == 0
    f = tmp_path / "s.conf"
    f.write_text("[service]\nidle_exit = 0\n")
    assert config.from_sources({}, by_systemd, str(f)).idle_exit == 0   # the admin said never
    f.write_text("[service]\nidle_exit = 45\n")
    assert config.from_sources({}, {}, str(f)).idle_exit == 45
    assert config.from_sources({}, {"SANBUSD_IDLE_EXIT": "7"}, str(f)).idle_exit == 7
    assert config.from_sources({"idle_exit": 2.5}, {}, str(f)).idle_exit == 2.5
    f.write_text("[service]\nidle_exit = -1\n")
    with pytest.raises(ValueError, match=r"\[service\] idle_exit: idle_exit = -1"):
        config.from_sources({}, {}, str(f))


def test_runtime_directory():
    assert config.Settings(simulate="f.toml", sim_dir="/x").runtime_directory == "/x/run"
    assert config.Settings().runtime_directory in (
        config.RUNTIME_DIR, os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0])

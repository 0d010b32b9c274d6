"""Verdicts real polkitd cannot be made to give on demand (challenge, dismissed, error, a hang),
forced with a python-dbusmock polkitd that also records what sanbusd asked it."""

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant
from sanbusd.client import connect

from sanbus_testing import DEMO_FABRIC, ROOT, busctl, fc_fabric, run, start_daemon, wait_until

from sanbusd.devbus import PrivateBus

HERE = Path(__file__).parent
MGR = f"{ROOT}/Manager"
MOCK = "org.freedesktop.DBus.Mock"
PK = ("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority")


POLKIT_TIMEOUT = 2.0        # s sanbusd waits for the mock before answering TimedOut


def _mocked(tmp_path, fabric=DEMO_FABRIC):
    bus = PrivateBus().start()          # in /tmp: the test users must reach its socket
    bus.allow_test_owner("org.freedesktop.PolicyKit1")
    mock = subprocess.Popen([sys.executable, "-m", "dbusmock", "--system", "--template",
                             str(HERE / "polkit_mock_template.py")], env=bus.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bus.wait_for_name("org.freedesktop.PolicyKit1", 15)
        d = start_daemon(bus, tmp_path, fabric,
                         env={"SANBUSD_POLKIT_TIMEOUT": str(POLKIT_TIMEOUT)})
        try:
            yield d
        finally:
            assert d.stop() == 0
        assert "Traceback" not in d.log()
    finally:
        mock.terminate()
        mock.wait(10)
        bus.stop()


@pytest.fixture
def mocked(tmp_path):
    yield from _mocked(tmp_path)


@pytest.fixture
def mocked_slow(tmp_path):
    """One FC port whose scans block it for 3 s: a scan job stays long enough to cancel."""
    yield from _mocked(tmp_path, fc_fabric(tmp_path / "slow.toml", scan_delay=3.0))


def mock_call(d, member, *args):
    return busctl(d, "call", *PK, MOCK, member, *args).stdout


def verdict(d, v):
    mock_call(d, "SetVerdict", "s", v)


def recorded(d):
    out = json.loads(busctl(d, "--json=short", "call", *PK, MOCK, "GetCalls").stdout)
    return json.loads(out["data"][0])


def cancelled_checks(d):
    out = json.loads(busctl(d, "--json=short", "call", *PK, MOCK, "GetCancelled").stdout)
    return out["data"][0]


async def _scan(address, options):
    bus = await connect(address)
    msg = Message(destination="org.example.SanStorage", path=f"{ROOT}/hosts/host1",
                  interface="org.example.SanStorage.ScsiHost", member="Scan", signature="a{sv}",
                  body=[options])
    reply = await asyncio.wait_for(bus.call(msg), 60)
    name = bus.unique_name
    bus.disconnect()
    return reply, name


def scan(d, **options):
    opts = {"luns": Variant("at", [27])}
    if options.get("no_interaction"):
        opts["auth.no_user_interaction"] = Variant("b", True)
    return asyncio.run(_scan(d.bus.address, opts))


@pytest.mark.parametrize("v,error", [
    ("deny", "NotAuthorized"), ("challenge", "NotAuthorizedCanObtain"),
    ("dismissed", "NotAuthorizedDismissed"), ("error", "Failed")])
def test_each_verdict_maps_to_its_error_and_nothing_is_written(mocked, v, error):
    verdict(mocked, v)
    reply, _ = scan(mocked)
    assert reply.message_type == MessageType.ERROR
    assert reply.error_name == f"org.example.SanStorage.Error.{error}"
    assert "Traceback" not in reply.body[0]
    assert mocked.writes() == []


def test_the_check_asks_about_the_real_caller_with_details_and_flags(mocked):
    verdict(mocked, "allow")
    reply, sender = scan(mocked)
    assert reply.message_type == MessageType.METHOD_RETURN
    reply2, sender2 = scan(mocked, no_interaction=True)
    first, second = recorded(mocked)[-2:]
    assert first["subject"] == ["system-bus-name", {"name": sender}]
    assert second["subject"] == ["system-bus-name", {"name": sender2}]
    assert first["action"] == "org.example.sanstorage.rescan"
    assert first["flags"] == 1 and second["flags"] == 0       # auth.no_user_interaction
    assert first["details"]["host"] == "host1"
    assert first["details"]["wwpn"] == "10000090fa1b2c01"
    assert "rescan" in first["details"]["polkit.message"]
    assert first["id"] and first["id"] != second["id"]


def test_a_hanging_polkit_times_out_is_cancelled_and_others_are_still_served(mocked):
    verdict(mocked, "hang")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                             "import test_polkit_verdicts as t, asyncio; from dbus_fast import "
                             "Variant; r, _ = asyncio.run(t._scan(%r, {'luns': Variant('at', "
                             "[27])})); print(r.error_name)" % (str(HERE), mocked.bus.address)],
                            stdout=subprocess.PIPE, text=True,
                            env={**mocked.env, "PYTHONPATH": str(HERE.parent)})
    try:
        # Once polkit has the question (not after a sleep, which may land after the timeout):
        wait_until(lambda: recorded(mocked), what="the authorization check to reach polkit")
        # while the check hangs, reads are answered at once ...
        t1 = time.monotonic()
        busctl(mocked, "get-property", "org.example.SanStorage", MGR,
               "org.example.SanStorage.Manager", "Version")
        assert time.monotonic() - t1 < 1
        # ... and it did still hang: sanbusd had not given up on it yet
        assert cancelled_checks(mocked) == [] and proc.poll() is None
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.strip() == "org.example.SanStorage.Error.TimedOut"
    assert POLKIT_TIMEOUT < time.monotonic() - t0 < 10
    (call,) = recorded(mocked)
    assert cancelled_checks(mocked) == [call["id"]]             # no dialog left behind
    assert mocked.writes() == []


def test_a_caller_that_left_during_authorization_gets_nothing_done(mocked):
    verdict(mocked, "hang")

    async def rescan_and_leave():
        bus = await connect(mocked.bus.address)
        await bus.send(Message(destination="org.example.SanStorage",
                               path=f"{ROOT}/luns/1_0_0_0", interface="org.example.SanStorage.Lun",
                               member="Rescan", signature="a{sv}", body=[{}]))
        # leave once polkit has the question
        await asyncio.to_thread(wait_until, lambda: recorded(mocked),
                                what="the authorization check to reach polkit")
        seen = time.monotonic()
        name = bus.unique_name
        bus.disconnect()
        return name, seen
    name, seen = asyncio.run(rescan_and_leave())
    wait_until(lambda: not mocked.bus.has_name(name), what="the caller to leave the bus")
    assert len(recorded(mocked)) == 1
    mock_call(mocked, "ReleaseHangingAllowed")                  # the admin said yes, too late
    # ... but in time for sanbusd, which was still waiting for the answer:
    assert time.monotonic() - seen < POLKIT_TIMEOUT - 0.5
    time.sleep(seen + POLKIT_TIMEOUT + 1 - time.monotonic())    # past any timeout: all settled
    assert cancelled_checks(mocked) == []                       # it got the yes, not a timeout
    assert mocked.writes() == []                                # and did nothing with it


def calls_as(d, user, specs):
    r = run(sys.executable, str(HERE / "client_calls.py"), d.bus.address, json.dumps(specs),
            user=user, env=d.env)
    return json.loads(r.stdout)


def test_cancelling_ones_own_job_needs_no_authorization_anothers_does(mocked_slow):
    """polkit allows sanbob to scan, then says no to everything: sanbob may still cancel the
    job he started (the own-job exemption; polkit is not asked), sanalice may not (she would
    need org.example.sanstorage.cancel-job-other-user)."""
    d = mocked_slow
    verdict(d, "allow")
    out = {}
    t = threading.Thread(target=lambda: out.update(scan=calls_as(d, "sanbob", [[
        MGR, "org.example.SanStorage.Manager", "ScanAll", "a{sv}", [{}]]])))
    t.start()
    try:
        job = wait_until(lambda: next((line.split("─")[-1] for line in busctl(
            d, "tree", "org.example.SanStorage").stdout.splitlines() if "/jobs/" in line), None),
            what="sanbob's scan job")
        started_by = busctl(d, "get-property", "org.example.SanStorage", job,
                            "org.example.SanStorage.Job", "StartedByUID").stdout.split()[1]
        assert int(started_by) == int(run("id", "-u", "sanbob").stdout)
        verdict(d, "deny")
        asked = len(recorded(d))
        cancel = [job, "org.example.SanStorage.Job", "Cancel", "a{sv}", [{}]]
        (res,) = calls_as(d, "sanalice", [cancel])
        assert res["error"] == "org.example.SanStorage.Error.NotAuthorized", res
        assert [c["action"] for c in recorded(d)[asked:]] == [
            "org.example.sanstorage.cancel-job-other-user"]
        (res,) = calls_as(d, "sanbob", [cancel])
        assert res["error"] is None, res
        assert len(recorded(d)) == asked + 1                    # sanbob's cancel asked nobody
    finally:
        t.join(30)
    assert not t.is_alive(), "the cancelled scan did not answer"
    assert out["scan"][0]["error"] == "org.example.SanStorage.Error.Cancelled", out

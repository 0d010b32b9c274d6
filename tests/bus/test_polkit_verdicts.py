"""Verdicts real polkitd cannot be made to give on demand (challenge, dismissed, error, a hang),
forced with a python-dbusmock polkitd that also records what sanbusd asked it."""

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant
from sanbusd.client import connect

from sanbus_testing import ROOT, busctl, start_daemon

from sanbusd.devbus import PrivateBus

HERE = Path(__file__).parent
MGR = f"{ROOT}/Manager"
MOCK = "org.freedesktop.DBus.Mock"
PK = ("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority")


@pytest.fixture
def mocked(tmp_path):
    bus = PrivateBus().start()
    bus.allow_test_owner("org.freedesktop.PolicyKit1")
    mock = subprocess.Popen([sys.executable, "-m", "dbusmock", "--system", "--template",
                             str(HERE / "polkit_mock_template.py")], env=bus.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bus.wait_for_name("org.freedesktop.PolicyKit1", 15)
    d = start_daemon(bus, tmp_path, env={"SANBUSD_POLKIT_TIMEOUT": "2"})
    yield d
    assert d.stop() == 0
    assert "Traceback" not in d.log()
    mock.terminate()
    mock.wait(10)
    bus.stop()


def mock_call(d, member, *args):
    return busctl(d, "call", *PK, MOCK, member, *args).stdout


def verdict(d, v):
    mock_call(d, "SetVerdict", "s", v)


def recorded(d):
    out = json.loads(busctl(d, "--json=short", "call", *PK, MOCK, "GetCalls").stdout)
    return json.loads(out["data"][0])


async def _scan(address, options):
    bus = await connect(address)
    msg = Message(destination="org.example.SanStorage", path=f"{ROOT}/hosts/host1",
                  interface="org.example.SanStorage.ScsiHost", member="Scan", signature="a{sv}",
                  body=[options])
    reply = await bus.call(msg)
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
    time.sleep(0.5)
    # while the check hangs, reads are answered at once
    t1 = time.monotonic()
    busctl(mocked, "get-property", "org.example.SanStorage", MGR,
           "org.example.SanStorage.Manager", "Version")
    assert time.monotonic() - t1 < 1
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "org.example.SanStorage.Error.TimedOut"
    assert 1.5 < time.monotonic() - t0 < 10
    (call,) = recorded(mocked)
    cancelled = busctl(mocked, "call", *PK, MOCK, "GetCancelled").stdout
    assert call["id"] in cancelled                              # no dialog left behind
    assert mocked.writes() == []


def test_a_caller_that_left_during_authorization_gets_nothing_done(mocked):
    verdict(mocked, "hang")

    async def rescan_and_leave():
        bus = await connect(mocked.bus.address)
        await bus.send(Message(destination="org.example.SanStorage",
                               path=f"{ROOT}/luns/1_0_0_0", interface="org.example.SanStorage.Lun",
                               member="Rescan", signature="a{sv}", body=[{}]))
        await asyncio.sleep(0.3)
        bus.disconnect()
    asyncio.run(rescan_and_leave())
    time.sleep(0.3)
    assert len(recorded(mocked)) == 1
    mock_call(mocked, "ReleaseHangingAllowed")                  # the admin said yes, too late
    time.sleep(1.0)
    assert mocked.writes() == []

"""sanbusd on Debian 12's own dbus-fast (python3-dbus-fast 1.84), as the Debian package runs it,
next to the newest release (the venv's, 5.2).

Debian's /usr/bin/python3 sees only /usr/lib/python3/dist-packages (1.84, with python3-pyudev,
-systemd and -libvirt); PYTHONPATH adds this checkout. The daemon runs on the simulated SAN on the
private bus, and the venv's client (the newest dbus-fast) checks what it serves: the same
GetManagedObjects and introspection as the daemon on the newest release for the same fabric, the
same named errors, a ScanAll that adds 1,024 LUN paths at once without losing the connection and
with every signal ahead of the reply, and sanctl (run by Debian's python3 too) printing what it
prints on the newest. The bus layer's unit tests (tests/unit/bus: the GetManagedObjects cache
against the library's marshalling, the writer and marshalling fixes) run under Debian's python3
as well.

1.84 needs more than 5.2 (sanbusd/bus/dbusfix.py): its marshaller writes a non-ASCII string's
length in characters (the bus drops the connection that sends it: a malformed WWID in a call was
enough), and its writer sends queued messages newest first, besides the full-socket flaw 5.2
shares. The fabric here has non-ASCII text in LUN properties, so every InterfacesAdded,
GetManagedObjects and some errors carry it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant

from sanbusd import client
from sanbusd.sim.generate import small_fc_fabric_toml

from sanbus_testing import DEMO_FABRIC, ROOT, start_daemon

TOP = Path(__file__).resolve().parents[2]
DEBIAN_PY = "/usr/bin/python3"
DIST_PACKAGES = "/usr/lib/python3/dist-packages/"
BUS_NAME = "org.example.SanStorage"
MANAGER = ROOT + "/Manager"
MGR_I = "org.example.SanStorage.Manager"
PROPS = "org.freedesktop.DBus.Properties"
MODEL = "LUN C-Mode «é…»"            # non-ASCII, in every LUN's Model
CALL_TIMEOUT = 120
BURST = 1024


def debian_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONPATH": str(TOP), **extra}


def run(cmd, env=None, check=True, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=TOP)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


PROBE = ("import json, dbus_fast, pyudev, systemd.daemon, libvirt, sanbusd.daemon, "
         "sanbusd.cli.sanctl; from sanbusd.bus import dbusfix; dbusfix.apply(); "
         "print(json.dumps({**dbusfix.status(), 'file': dbus_fast.__file__}))")


@pytest.fixture(scope="module")
def versions() -> dict[str, dict]:
    """What each interpreter imports and what dbusfix finds there."""
    r = run([DEBIAN_PY, "-c", PROBE], env=debian_env(), check=False)
    assert r.returncode == 0, ("Debian's python3 cannot import sanbusd with Debian's packages "
                               f"(packaging/setup-dev.sh installs them):\n{r.stderr}")
    debian = json.loads(r.stdout)
    newest = json.loads(run([sys.executable, "-c", PROBE]).stdout)
    return {"debian": debian, "newest": newest}


def test_debians_python_runs_sanbusd_on_debians_dbus_fast(versions):
    debian, newest = versions["debian"], versions["newest"]
    assert debian["file"].startswith(DIST_PACKAGES), debian       # python3-dbus-fast's
    assert debian["version"].startswith("1.84"), debian           # Debian 12's
    assert int(newest["version"].split(".")[0]) >= 5, newest      # the venv's: the newest
    # what dbusfix found, by the code of each: both writers drop the connection on a full
    # socket; 1.84's also sends queued messages newest first and miscounts non-ASCII strings
    assert debian["writer"] == newest["writer"] == "patched"
    assert debian["flaws"] == "eagain,lifo" and newest["flaws"] == "eagain"
    assert debian["marshal"] == "ours" and newest["marshal"] == "library"


def test_the_bus_unit_tests_pass_on_debians_dbus_fast(versions):
    """tests/unit/bus under Debian's python3 and pytest: the GetManagedObjects cache against
    1.84's marshalling path, and the writer and marshalling fixes on 1.84's library."""
    r = run([DEBIAN_PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/bus"],
            env=debian_env(), check=False, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary) and "failed" not in summary, summary
    mine = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "tests/unit/bus"], check=False, timeout=600)
    assert mine.stdout.strip().splitlines()[-1].split(" in ")[0] == summary.split(" in ")[0]


def comparison_fabric(path: Path) -> Path:
    path.write_text(DEMO_FABRIC.read_text().replace('model = "LUN C-Mode"',
                                                    f'model = "{MODEL}"'))
    return path


ERROR_CALLS = [
    (MANAGER, MGR_I, "ScanAll", "s", ["not options"]),
    (MANAGER, MGR_I, "ScanAll", "a{sv}", [{"lüns": Variant("at", [1])}]),
    (MANAGER, MGR_I, "Frob", "", []),
    (ROOT + "/nowhere", PROPS, "Get", "ss", [MGR_I, "Version"]),
    (MANAGER, PROPS, "Set", "ssv", [MGR_I, "Version", Variant("s", "x")]),
    (MANAGER, PROPS, "Get", "ss", [MGR_I, "Nö"]),
    (MANAGER, MGR_I, "CreateAllMultipathMaps", "a{sv}",
     [{"wwids": Variant("as", ["bad wwid é"])}]),
]


async def collect(address: str) -> dict:
    """What the venv's client (the newest dbus-fast) gets from the daemon."""
    bus = await client.connect(address)
    try:
        async def call(path, iface, member, sig="", body=None) -> Message:
            return await asyncio.wait_for(bus.call(Message(
                destination=BUS_NAME, path=path, interface=iface, member=member,
                signature=sig, body=body or [])), CALL_TIMEOUT)

        reply = await call(ROOT, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        objects = client.plain(reply.body[0])
        order = list(reply.body[0])
        luns = sorted(p for p in objects if "/luns/" in p)
        hosts = sorted(p for p in objects if "/hosts/" in p)
        intro = {}
        for path in ["/", "/org", ROOT, MANAGER, luns[0], hosts[0], ROOT + "/nowhere"]:
            r = await call(path, "org.freedesktop.DBus.Introspectable", "Introspect")
            intro[path] = (r.message_type.name, r.error_name, r.body)
        errs = []
        for path, iface, member, sig, body in ERROR_CALLS:
            r = await call(path, iface, member, sig, body)
            errs.append((r.message_type.name, r.error_name, r.body))
        return {"objects": objects, "order": order, "introspect": intro, "errors": errs}
    finally:
        bus.disconnect()


def sanctl(python: str, env: dict, address: str, *args: str) -> tuple[int, str, str]:
    r = run([python, "-m", "sanbusd.cli.sanctl", "--bus", address, *args], env=env,
            check=False, timeout=120)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def served(system_bus, tmp_path_factory, versions) -> dict:
    """The same fabric served by sanbusd on the newest dbus-fast, then on Debian's."""
    tmp = tmp_path_factory.mktemp("debian-dbus-fast")
    fabric = comparison_fabric(tmp / "fabric.toml")
    out = {}
    for name, python, env in (("newest", sys.executable, {}),
                              ("debian", DEBIAN_PY, {"PYTHONPATH": str(TOP)})):
        d = start_daemon(system_bus, tmp / name, fabric, python=python, env=env)
        try:
            seen = asyncio.run(collect(d.bus.address))
            seen["sanctl"] = {
                client_name: [sanctl(py, cenv, d.bus.address, *args) for args in
                              (["status"], ["status", "--json"],
                               ["multipath", "flush", "--no-user-interaction", "mpäth"])]
                for client_name, py, cenv in (("newest", sys.executable, None),
                                              ("debian", DEBIAN_PY, debian_env()))}
            seen["alive"] = d.process.poll() is None
        finally:
            rc = d.stop()
        # the one difference: where each simulated SAN lives (Manager.MultipathConfig.DropIn)
        seen = json.loads(json.dumps(seen).replace(str(tmp / name), "TMP"))
        seen["rc"], seen["log"] = rc, d.log()
        out[name] = seen
    return out


def test_the_daemon_on_debians_dbus_fast_says_what_it_fixed_and_stays_up(served):
    for name, seen in served.items():
        assert seen["alive"] and seen["rc"] == 0, (name, seen["log"])
        assert "Traceback" not in seen["log"] and "lost the bus" not in seen["log"], seen["log"]
    assert re.search(r"dbus-fast 1\.84\.\d+: fixed: a full socket waits; queued messages go "
                     "out in order; strings are marshalled", served["debian"]["log"])


def test_getmanagedobjects_is_the_same_on_both(served):
    newest, debian = served["newest"], served["debian"]
    differ = {p: (newest["objects"].get(p), debian["objects"].get(p))
              for p in newest["objects"].keys() | debian["objects"].keys()
              if newest["objects"].get(p) != debian["objects"].get(p)}
    assert not differ, differ               # (newest, debian) for each object that differs
    assert debian["order"] == newest["order"]
    models = {o["org.example.SanStorage.Lun"]["Model"] for o in newest["objects"].values()
              if "org.example.SanStorage.Lun" in o}
    assert MODEL in models                  # non-ASCII text went through both
    assert len(newest["objects"]) >= 14


def test_introspection_is_the_same_on_both(served):
    assert served["debian"]["introspect"] == served["newest"]["introspect"]
    kind, _, body = served["debian"]["introspect"][MANAGER]
    assert kind == "METHOD_RETURN" and "ScanAll" in body[0]
    assert served["debian"]["introspect"][ROOT + "/nowhere"][1] == \
        "org.freedesktop.DBus.Error.UnknownObject"


def test_errors_reach_callers_as_named_errors_on_both(served):
    newest, debian = served["newest"]["errors"], served["debian"]["errors"]
    assert debian == newest
    for kind, name, body in debian:
        assert kind == "ERROR" and name, (name, body)
        assert name.startswith(("org.freedesktop.DBus.Error.",
                                "org.example.SanStorage.Error.")), name
        assert "Traceback" not in body[0] and "internal error" not in body[0], body
    assert [name.rsplit(".", 1)[1] for _, name, _ in debian] == [
        "InvalidArgs", "InvalidArgs", "UnknownMethod", "UnknownObject", "PropertyReadOnly",
        "UnknownProperty", "InvalidArgument"]
    # the texts that 1.84 could not send: the caller's "é" and the daemon's own "…"
    assert "bad wwid é" in debian[-1][2][0] and "…" in debian[-1][2][0]
    assert "lüns" in debian[1][2][0]


def test_sanctl_works_on_debians_dbus_fast(served):
    for daemon in ("newest", "debian"):
        runs = served[daemon]["sanctl"]
        assert runs["debian"] == runs["newest"], daemon
        (rc, status, err), (rc_json, as_json, _), (rc_flush, _, flush_err) = runs["debian"]
        assert rc == 0 and err == "" and "LUN paths" in status and MODEL in status, err
        assert rc_json == 0 and json.loads(as_json) == served[daemon]["objects"]
        assert rc_flush != 0 and "mpäth" in flush_err and "Traceback" not in flush_err


def test_a_scan_adding_1024_luns_on_debians_dbus_fast(system_bus, tmp_path, versions):
    """The burst that dropped the connection (1.84 as 5.2): 1,024 InterfacesAdded at once,
    each with non-ASCII text. The daemon stays on the bus, the client gets every signal, and
    all of them before the ScanAll reply (the daemon sends the reply after them; 1.84's own
    writer would send queued messages newest first)."""
    fabric = tmp_path / "burst.toml"
    fabric.write_text(small_fc_fabric_toml().replace('name = "arr"\n',
                                                     f'name = "arr"\nmodel = "{MODEL}"\n'))
    d = start_daemon(system_bus, tmp_path, fabric, python=DEBIAN_PY,
                     env={"PYTHONPATH": str(TOP)})
    try:
        d.sim({"command": "provision", "array": "arr", "luns": list(range(BURST)),
               "initiators": ["1000000000000001"]})

        async def go():
            bus = await client.connect(d.bus.address)
            await client.add_match(bus, f"type='signal',sender='{BUS_NAME}',path='{ROOT}'")
            added: list[str] = []
            models: set[str] = set()

            def on_signal(m: Message):
                if m.member == "InterfacesAdded" and "/luns/" in m.body[0]:
                    added.append(m.body[0])
                    models.add(m.body[1]["org.example.SanStorage.Lun"]["Model"].value)
            bus.add_message_handler(on_signal)
            t0 = time.monotonic()
            reply = await asyncio.wait_for(bus.call(Message(
                destination=BUS_NAME, path=MANAGER, interface=MGR_I, member="ScanAll",
                signature="a{sv}", body=[{}])), CALL_TIMEOUT)
            took = time.monotonic() - t0
            at_reply = list(added)
            version = await asyncio.wait_for(bus.call(Message(
                destination=BUS_NAME, path=MANAGER, interface=PROPS, member="Get",
                signature="ss", body=[MGR_I, "Version"])), CALL_TIMEOUT)
            bus.disconnect()
            return reply, at_reply, models, version, took
        reply, at_reply, models, version, took = asyncio.run(go())
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        assert len(reply.body[0]) == BURST
        assert sorted(at_reply) == sorted(reply.body[0])        # every one, before the reply
        assert len(set(at_reply)) == BURST and models == {MODEL}
        assert version.message_type == MessageType.METHOD_RETURN   # still on the bus
        assert d.process.poll() is None
        print(f"ScanAll of {BURST} LUN paths on dbus-fast 1.84: {took:.2f} s")
    finally:
        assert d.stop() == 0
    log = d.log()
    assert "lost the bus" not in log and "Traceback" not in log, log

"""The life cycle as systemd sees it, on the simulated SAN: idle exit (not while a call or a job
runs, not while an ObjectManager client is connected), nothing lost across it (RescanSuggested, a
finished job), sd_notify READY/WATCHDOG/STOPPING, and a corrupt state file."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant

from sanbus_testing import LineReader, ROOT, busctl, fc_fabric, start_daemon, wait_until
from sanbusd.client import connect

MGR = f"{ROOT}/Manager"
HOST_I = "org.example.SanStorage.ScsiHost"
JOB_I = "org.example.SanStorage.Job"
A1, A2 = "10000090fa1b2c01", "10000090fa1b2c02"     # the demo host's two HBA ports
H1, H2 = f"{ROOT}/hosts/host1", f"{ROOT}/hosts/host2"
IDLE = "1.5"
EXIT_WAIT = 20          # s; an idle daemon must be gone well within this


def prop(d, path, iface, name):
    out = busctl(d, "--json=short", "get-property", "org.example.SanStorage", path, iface, name)
    return json.loads(out.stdout)["data"]


def name_owned(d) -> bool:
    out = busctl(d, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                 "org.freedesktop.DBus", "NameHasOwner", "s", "org.example.SanStorage")
    return out.stdout.strip() == "b true"


def exited(d, timeout=EXIT_WAIT) -> int:
    try:
        return d.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"sanbusd did not exit by itself within {timeout} s:\n"
                             f"{d.log()}") from None


def clean(d):
    log = d.log()
    assert "Traceback" not in log, log
    return log


def scan(d, hosts, luns):
    async def go():
        bus = await connect(d.bus.address)
        try:
            return await asyncio.wait_for(bus.call(Message(
                destination="org.example.SanStorage", path=MGR,
                interface="org.example.SanStorage.Manager", member="ScanAll", signature="a{sv}",
                body=[{"hosts": Variant("ao", hosts), "luns": Variant("at", luns)}])), 60)
        finally:
            bus.disconnect()
    return asyncio.run(go())


def test_idle_exit_keeps_rescan_suggested_and_finished_jobs(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path, extra=["--idle-exit", IDLE])
    try:
        d.sim({"command": "provision", "array": "netapp1", "luns": [27], "initiators": [A1, A2],
               "size": "5G"})
        wait_until(lambda: prop(d, H1, HOST_I, "RescanSuggested")
                   and prop(d, H2, HOST_I, "RescanSuggested"), what="RescanSuggested")
        reply = scan(d, [H2], [27])                 # clears host2's, leaves host1's
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        assert reply.body[0] == [f"{ROOT}/luns/2_0_0_27"]
        job = wait_until(lambda: [p for p in busctl(d, "tree", "org.example.SanStorage")
                                  .stdout.split() if "/jobs/" in p], what="the job")[0]
        job = job[job.index("/org"):]
        message = prop(d, job, JOB_I, "Message")
        assert prop(d, job, JOB_I, "Finished") is True and message
        assert exited(d) == 0                       # by itself: no signal was sent
        log = clean(d)
        assert "idle for 1.5 s" in log
        assert not name_owned(d)
        assert (d.sim_dir / "run" / "state.json").exists()
    finally:
        d.stop()

    d = start_daemon(system_bus, tmp_path)          # the same SAN, as the next call would
    try:
        assert "restored from" in d.log()
        assert prop(d, H1, HOST_I, "RescanSuggested") is True
        assert prop(d, H2, HOST_I, "RescanSuggested") is False
        assert prop(d, job, JOB_I, "Finished") is True
        assert prop(d, job, JOB_I, "Success") is True
        assert prop(d, job, JOB_I, "Message") == message
        assert not (d.sim_dir / "run" / "state.json").exists()     # read once
    finally:
        assert d.stop() == 0
        clean(d)


def test_no_idle_exit_while_a_scan_runs(system_bus, tmp_path):
    fabric = fc_fabric(tmp_path / "slow.toml", hosts=1, scan_delay=4.0, luns=(0,))
    d = start_daemon(system_bus, tmp_path, fabric, extra=["--idle-exit", "1"])
    try:
        out = {}
        t = threading.Thread(target=lambda: out.update(r=busctl(
            d, "--timeout=60", "call", "org.example.SanStorage", MGR,
            "org.example.SanStorage.Manager", "ScanAll", "a{sv}", "0", check=False)))
        t0 = time.monotonic()
        t.start()
        t.join(30)
        assert not t.is_alive(), "the scan did not answer"
        assert out["r"].returncode == 0, out["r"].stderr   # answered by the daemon, not cut off
        assert time.monotonic() - t0 >= 3.5
        assert d.process.poll() is None or "idle for" in d.log()
        assert exited(d) == 0
        log = clean(d)
        assert log.count("idle for") == 1
    finally:
        d.stop()


def test_an_object_manager_client_keeps_it_running(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path, extra=["--idle-exit", "1"])
    try:
        async def watch_then_leave():
            bus = await connect(d.bus.address)
            reply = await bus.call(Message(
                destination="org.example.SanStorage", path=ROOT,
                interface="org.freedesktop.DBus.ObjectManager", member="GetManagedObjects"))
            assert reply.message_type == MessageType.METHOD_RETURN
            await asyncio.sleep(4)                  # more than twice the idle time
            alive = d.process.poll() is None
            bus.disconnect()
            return alive
        assert asyncio.run(watch_then_leave()), d.log()
        assert exited(d) == 0                       # the watcher left: idle again
        clean(d)
    finally:
        d.stop()


def notify_socket():
    """A datagram socket like systemd's NOTIFY_SOCKET, in a short path (sun_path is 108
    bytes)."""
    where = Path(tempfile.mkdtemp(prefix="sbn."))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(where / "notify"))
    return sock, str(where / "notify"), where


def read_notes(sock, until, timeout=20.0):
    notes = []
    deadline = time.monotonic() + timeout
    while not until(notes):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not the expected sd_notify messages within {timeout} s: "
                                 f"{notes}")
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        notes.append((time.monotonic(), data.decode()))
    return notes


def test_notify_ready_watchdog_pings_and_stopping(system_bus, tmp_path):
    sock, path, where = notify_socket()
    try:
        d = start_daemon(system_bus, tmp_path, env={"NOTIFY_SOCKET": path,
                                                    "WATCHDOG_USEC": "500000"})
        try:
            notes = read_notes(sock, lambda n: sum(t == "WATCHDOG=1" for _, t in n) >= 5)
            texts = [t for _, t in notes]
            assert texts[0].startswith("READY=1\nSTATUS=Publishing ")
            pings = [at for at, t in notes if t == "WATCHDOG=1"]
            gaps = [b - a for a, b in zip(pings, pings[1:])]
            assert all(0.1 < g < 1.0 for g in gaps), gaps       # every 0.25 s, give or take load
            d.process.send_signal(signal.SIGTERM)
            notes = read_notes(sock, lambda n: any(t.startswith("STOPPING=1") for _, t in n))
            assert exited(d) == 0
            clean(d)
        finally:
            d.stop()
    finally:
        sock.close()
        for f in where.iterdir():
            f.unlink()
        where.rmdir()


def test_no_watchdog_pings_without_watchdog_usec(system_bus, tmp_path):
    sock, path, where = notify_socket()
    try:
        d = start_daemon(system_bus, tmp_path, env={"NOTIFY_SOCKET": path})
        try:
            notes = read_notes(sock, lambda n: n)
            sock.settimeout(1.0)
            with pytest.raises(socket.timeout):
                sock.recv(4096)
            assert notes[0][1].startswith("READY=1")
        finally:
            assert d.stop() == 0
    finally:
        sock.close()
        for f in where.iterdir():
            f.unlink()
        where.rmdir()


@pytest.mark.parametrize("content", [b'{"version": 1, "rescan_sugg', b"[1, 2, 3]\n",
                                     b'{"version": 1, "boot": "", "rescan_suggested": '
                                     b'[{"host": "x"}], "jobs": [], "next_job": 1}',
                                     b"\xff\xfe\x00garbage"])
def test_a_corrupt_state_file_is_set_aside_with_a_log_line(system_bus, tmp_path, content):
    run = tmp_path / "sim" / "run"
    run.mkdir(parents=True)
    (run / "state.json").write_bytes(content)
    d = start_daemon(system_bus, tmp_path)
    try:
        log = d.log()
        assert "state.json is corrupt" in log and "starting without" in log, log
        assert (run / "state.json.corrupt").read_bytes() == content
        assert not (run / "state.json").exists()
        assert prop(d, H1, HOST_I, "RescanSuggested") is False
    finally:
        assert d.stop() == 0
        clean(d)
    assert os.path.exists(run / "state.json")       # this clean exit wrote a good one


def test_sanctl_monitor_keeps_it_running_while_it_watches(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path, extra=["--idle-exit", "1"])
    mon = subprocess.Popen([sys.executable, "-m", "sanbusd.cli.sanctl", "--bus", d.bus.address,
                            "monitor"], stdout=subprocess.PIPE, text=True, env=d.env)
    try:
        out = LineReader(mon.stdout)
        assert "monitoring" in out.until(lambda lines: lines, what="sanctl monitor to start")[0]
        time.sleep(3)                               # three idle times
        assert d.process.poll() is None, d.log()
        d.sim({"command": "port-down", "wwpn": "500a098101a1b2c3"})    # it still sees events
        out.until(lambda lines: any(f"- {ROOT}/luns/1_0_0_2" in line for line in lines),
                  what="1:0:0:2 removed")
        mon.terminate()
        mon.wait(10)
        assert exited(d) == 0
        clean(d)
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait(10)
        d.stop()

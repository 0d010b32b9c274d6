"""Lun.Delete and Lun.Rescan against what else is going on: a scan of the same host, another
call on the same LUN."""

import json
import sys
import threading
import time
from pathlib import Path

from sanbus_testing import ROOT, busctl, fc_fabric, run, start_daemon, wait_until

HERE = Path(__file__).parent
LUN_I = "org.example.SanStorage.Lun"
BUSY = "org.example.SanStorage.Error.Busy"
NOT_FOUND = "org.example.SanStorage.Error.NotFound"


def calls(d, specs, concurrency=1):
    """[path, interface, member, signature, body] each, sent at once; their answers."""
    r = run(sys.executable, str(HERE / "client_calls.py"), d.bus.address, json.dumps(specs),
            str(concurrency), env=d.env)
    return json.loads(r.stdout)


def delete(path, force=False):
    return [path, LUN_I, "Delete", "a{sv}", [{"force": {"$v": ["b", force]}}] if force else [{}]]


def rescan(path):
    return [path, LUN_I, "Rescan", "a{sv}", [{}]]


def listed(d, path):
    return path in busctl(d, "tree", "org.example.SanStorage").stdout


def deletes(d):
    return [(w["path"], w["result"]) for w in d.writes() if w["path"].endswith("/delete")]


def test_delete_while_a_scan_of_its_host_runs_is_busy_at_once(system_bus, tmp_path):
    # Two FC ports with LUN 0 each; a scan write blocks its host for 3 s.
    fabric = fc_fabric(tmp_path / "slow.toml", hosts=2, scan_delay=3.0, luns=(0,))
    d = start_daemon(system_bus, tmp_path, fabric)
    try:
        scanning, other = f"{ROOT}/luns/0_0_0_0", f"{ROOT}/luns/1_0_0_0"
        assert listed(d, scanning) and listed(d, other)
        out = {}
        t = threading.Thread(target=lambda: out.update(scan=calls(d, [[
            f"{ROOT}/hosts/host0", "org.example.SanStorage.ScsiHost", "Scan", "a{sv}", [{}]]])))
        t.start()
        wait_until(lambda: "/jobs/" in busctl(d, "tree", "org.example.SanStorage").stdout,
                   what="the scan's job")
        t0 = time.monotonic()
        (res,) = calls(d, [delete(scanning)])
        assert time.monotonic() - t0 < 2.5           # at once, not after the scan or a timeout
        assert res["error"] == BUSY, res
        assert "a scan of host0 is running" in res["body"][0]
        # Another host's LUN is not in the way of this scan.
        (res,) = calls(d, [delete(other)])
        assert res["error"] is None, res
        t.join(20)
        assert not t.is_alive(), "the scan did not answer"
        assert out["scan"][0]["error"] is None, out["scan"]
        # The scan is over: the LUN is still there and can be deleted now.
        assert listed(d, scanning)
        assert deletes(d) == [("class/scsi_device/1:0:0:0/device/delete", "ok")]
        (res,) = calls(d, [delete(scanning)])
        assert res["error"] is None, res
        assert not listed(d, scanning)
    finally:
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_calls_racing_a_delete_of_the_same_lun_say_not_found(daemon):
    """Eight Deletes and a Rescan of one LUN at once: one Delete removes it; every other call
    finds it gone (NotFound), also the ones that looked it up before it went and reached the
    kernel after (the kernel's ENOENT), never NotSupported or Failed."""
    lun = f"{ROOT}/luns/1_0_0_2"
    daemon.sim({"command": "unprovision", "array": "netapp1", "luns": [2]})
    results = calls(daemon, [delete(lun)] * 4 + [rescan(lun)] + [delete(lun)] * 4,
                    concurrency=9)
    errs = [r["error"] for r in results]
    assert errs.count(None) in (1, 2), results            # one Delete, maybe the Rescan first
    assert [e for e in errs[:4] + errs[5:] if e is None] == [None], results
    # (a call that arrives once the object is gone is UnknownObject, from the bus layer)
    assert set(errs) <= {None, NOT_FOUND, "org.freedesktop.DBus.Error.UnknownObject"}, results
    assert NOT_FOUND in errs, results
    for r in results:
        if r["error"] == NOT_FOUND:
            assert "1:0:0:2 is gone" in r["body"][0]
    assert not listed(daemon, lun)
    # At least one loser got past the lookup and met the kernel's answer for a gone device.
    writes = deletes(daemon) + [(w["path"], w["result"]) for w in daemon.writes()
                                if w["path"].endswith("/rescan")]
    assert ("class/scsi_device/1:0:0:2/device/delete", "ok") in writes
    assert any(result == "ENOENT" for _, result in writes), writes
